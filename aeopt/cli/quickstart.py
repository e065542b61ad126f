"""`aeopt quickstart`: a first complete study on the embedded defaults."""

from __future__ import annotations

from typing import Annotated

import typer

from aeopt.cli.common import DataDirOpt, DeviceOpt, StorageOpt
from aeopt.files import output_folder
from aeopt.search.quickstart import (
    QUICKSTART_EPOCHS,
    QUICKSTART_SUBSET,
    QUICKSTART_TRIALS,
    pick_dataset,
    run_quickstart,
    summary_table,
)
from aeopt.search.storage import open_storage
from aeopt.search.studies import storage_flag

NTrialsOpt = Annotated[int, typer.Option("--n-trials", min=1, help="Finished trials to reach.")]
WorkersOpt = Annotated[int, typer.Option("--workers", "-w", min=1, help="Worker processes.")]  # -w as launch
SubsetOpt = Annotated[int, typer.Option("--train-subset", min=100,
                                        help="Fashion-MNIST training images to use.")]
EpochsOpt = Annotated[int, typer.Option("--max-epochs", min=1, help="Epochs a trial may run before pruning.")]
TimeoutOpt = Annotated[float | None, typer.Option(
    "--timeout", min=1,
    help="Wall-clock budget in seconds: the running trial stops at its next epoch's end, then the summary "
         "and the export of the best so far. Exits 0.")]
OutOpt = Annotated[str, typer.Option("--out", "-o",
                                     help="Folder for the exported best config and its refit.")]
RefitOpt = Annotated[bool, typer.Option(
    "--refit/--no-refit",
    help="End by refitting the best config on the search's images and testing it once (OUT/refit).")]


def quickstart(
    data_dir: DataDirOpt = None,
    storage: StorageOpt = None,
    n_trials: NTrialsOpt = QUICKSTART_TRIALS,
    workers: WorkersOpt = 1,
    train_subset: SubsetOpt = QUICKSTART_SUBSET,
    max_epochs: EpochsOpt = QUICKSTART_EPOCHS,
    device: DeviceOpt = None,
    out: OutOpt = "quickstart",
    timeout: TimeoutOpt = None,
    refit: RefitOpt = True,
) -> None:
    """Run a small pruned, cross-validated study end to end and export the best config.

    Uses SQLite (studies/aeopt.db) and a 5,000-image Fashion-MNIST subset (or scikit-learn's digits
    when Fashion-MNIST is not on disk). Rerunning continues the same study up to --n-trials; with another
    --max-epochs or --train-subset (or dataset) it stops and says how to start afresh.

    Ctrl-C (or SIGTERM) stops it cleanly: the summary of what finished and the export of the best
    complete trial so far, then exit 130 (143).

    Example: aeopt quickstart --data-dir ../shared/data
    """
    output_folder(out)  # before the study runs, not after it
    # The data before the storage: a data error must not leave a new, empty studies/aeopt.db behind.
    dataset = pick_dataset(data_dir)
    opened = open_storage(storage)
    res = run_quickstart(opened, n_trials=n_trials, train_subset=train_subset, max_epochs=max_epochs,
                         workers=workers, data_dir=data_dir, device=device, out=out, timeout=timeout,
                         refit=refit, dataset=dataset)
    if res.stopped_because:
        typer.echo(f"{res.stopped_because}; what finished:")
    typer.echo(summary_table(res.study))
    flag = storage_flag(opened)  # the URL to paste, unless it holds a password
    typer.echo("")
    if res.best_path is None:
        typer.echo(f"best config: none yet (no trial completed); rerun the same command to continue "
                   f"the study up to {n_trials} trials")
    else:
        typer.echo(f"best config: {res.best_path}  (retrain it: aeopt train {res.best_path}"
                   + (f" --data-dir {data_dir}" if data_dir else "") + ")")
    data_flag = f" --data-dir {data_dir}" if data_dir else ""
    if res.refit_path is not None:
        typer.echo(f"refit:       {res.refit_headline}  ({res.refit_path}; on the full training split: "
                   f"aeopt refit --study {res.study.study_name}{flag}{data_flag})")
    typer.echo(f"dashboard:   aeopt dashboard{flag}   then open http://127.0.0.1:8080")
    typer.echo(f"report:      aeopt report --study {res.study.study_name}{flag} -o report{data_flag}")
    if opened.kind == "sqlite":
        typer.echo(f"storage:     {opened.display}")
    if res.signal is not None:
        # Re-raised after the summary: the CLI turns it into its one line and exit code 130 / 143.
        raise KeyboardInterrupt(f"signal {res.signal}")


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart)
