"""`aeopt quickstart`: a first complete study on the embedded defaults."""

from __future__ import annotations

from typing import Annotated

import typer

from aeopt.cli.common import DataDirOpt, DeviceOpt, StorageOpt
from aeopt.search.quickstart import run_quickstart, summary_table
from aeopt.search.storage import open_storage

NTrialsOpt = Annotated[int, typer.Option("--n-trials", min=1, help="Finished trials to reach.")]
WorkersOpt = Annotated[int, typer.Option("--workers", min=1, help="Worker processes.")]
SubsetOpt = Annotated[int, typer.Option("--train-subset", min=100,
                                        help="Fashion-MNIST training images to use.")]
EpochsOpt = Annotated[int, typer.Option("--max-epochs", min=1, help="Epochs a trial may run before pruning.")]
OutOpt = Annotated[str, typer.Option("--out", "-o", help="Folder for the exported best config.")]


def quickstart(
    data_dir: DataDirOpt = None,
    storage: StorageOpt = None,
    n_trials: NTrialsOpt = 12,
    workers: WorkersOpt = 1,
    train_subset: SubsetOpt = 6000,
    max_epochs: EpochsOpt = 10,
    device: DeviceOpt = None,
    out: OutOpt = "quickstart",
) -> None:
    """Run a small pruned, cross-validated study end to end and export the best config.

    Uses SQLite (studies/aeopt.db) and a 6,000-image Fashion-MNIST subset (or scikit-learn's digits
    when Fashion-MNIST is not on disk). Rerunning continues the same study up to --n-trials.

    Example: aeopt quickstart --data-dir ../shared/data
    """
    opened = open_storage(storage)
    res = run_quickstart(opened, n_trials=n_trials, train_subset=train_subset, max_epochs=max_epochs,
                         workers=workers, data_dir=data_dir, device=device, out=out)
    typer.echo(summary_table(res.study))
    storage_flag = "" if storage is None else " --storage URL"
    typer.echo("")
    typer.echo(f"best config: {res.best_path}  (retrain it: aeopt train {res.best_path}"
               + (f" --data-dir {data_dir}" if data_dir else "") + ")")
    typer.echo(f"dashboard:   aeopt dashboard{storage_flag}   then open http://127.0.0.1:8080")
    typer.echo(f"report:      aeopt report --study {res.study.study_name}{storage_flag} -o report")
    if opened.kind == "sqlite":
        typer.echo(f"storage:     {opened.display}")


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart)
