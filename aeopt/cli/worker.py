"""`aeopt worker`: join a study from any machine that reaches its storage."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from aeopt.cli.common import AmpOpt, DataDirOpt, DeviceOpt, StorageOpt, StudyOpt


def worker(
    study: StudyOpt,
    storage: StorageOpt = None,
    n_trials: Annotated[Optional[int], typer.Option("--n-trials", min=1, help="Study-wide target of finished trials "
                                                    "(complete + pruned); all workers together stop there.")] = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", min=1, help="Stop starting trials after S seconds.")] = None,
    device: DeviceOpt = None,
    data_dir: DataDirOpt = None,
    worker_index: Annotated[int, typer.Option("--worker-index", min=0, envvar="AEOPT_WORKER_INDEX",
                                              help="Offsets the sampler seed so workers differ.")] = 0,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads for torch.")] = None,
    amp: AmpOpt = False,
) -> None:
    """Load the study and its spec from the storage and run trials.

    Example: aeopt worker --study conv_ae --n-trials 50 --device cuda:0
    """
    from aeopt.search.worker import run_worker

    summary = run_worker(study, storage, n_trials=n_trials, timeout=timeout, device=device, data_dir=data_dir,
                         worker_index=worker_index, threads=threads, amp=amp)
    done = ", ".join(f"{k.lower()} {v}" for k, v in summary.trials.items()) or "no trials"
    typer.echo(f"worker {worker_index} finished: {done}; {summary.stopped_because}")


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
