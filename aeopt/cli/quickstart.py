"""`aeopt quickstart`: a first complete study on the embedded defaults."""

from __future__ import annotations

from typing import Annotated

import typer

from aeopt.cli.common import DataDirOpt, DeviceOpt, StorageOpt


def quickstart(
    data_dir: DataDirOpt = None,
    storage: StorageOpt = None,
    n_trials: Annotated[int, typer.Option("--n-trials", min=1, help="Finished trials to reach.")] = 12,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes.")] = 1,
    train_subset: Annotated[int, typer.Option("--train-subset", min=100, help="Fashion-MNIST training images to use.")] = 6000,
    max_epochs: Annotated[int, typer.Option("--max-epochs", min=1, help="Epochs a trial may run before pruning.")] = 10,
    device: DeviceOpt = None,
    out: Annotated[str, typer.Option("--out", "-o", help="Folder for the exported best config.")] = "quickstart",
) -> None:
    """Run a small pruned, cross-validated study end to end and export the best config.

    Uses SQLite (studies/aeopt.db) and a 6,000-image Fashion-MNIST subset (or scikit-learn's digits
    when Fashion-MNIST is not on disk). Rerunning continues the same study up to --n-trials.

    Example: aeopt quickstart --data-dir ../shared/data
    """
    from aeopt.search.quickstart import run_quickstart, summary_table
    from aeopt.search.storage import resolve_url

    res = run_quickstart(storage_url=storage, n_trials=n_trials, train_subset=train_subset, max_epochs=max_epochs,
                         workers=workers, data_dir=data_dir, device=device, out=out)
    study = res["study"]
    typer.echo(summary_table(study))
    url = resolve_url(storage)
    storage_flag = "" if storage is None else " --storage URL"
    typer.echo("")
    typer.echo(f"best config: {res['best_path']}  (retrain it: aeopt train {res['best_path']}"
               + (f" --data-dir {data_dir}" if data_dir else "") + ")")
    typer.echo(f"dashboard:   aeopt dashboard{storage_flag}   then open http://127.0.0.1:8080")
    typer.echo(f"report:      aeopt report --study {study.study_name}{storage_flag} -o report")
    if url.startswith("sqlite"):
        typer.echo(f"storage:     {url}")


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart)
