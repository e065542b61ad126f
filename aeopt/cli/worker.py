"""`aeopt worker`: join a study from any machine that reaches its storage."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from aeopt.cli.common import AmpOpt, DataDirOpt, DeviceOpt, StorageOpt, StudyOpt
from aeopt.search.storage import open_storage
from aeopt.search.worker import run_worker

NTrialsOpt = Annotated[int | None, typer.Option(
    "--n-trials", min=1,
    help="Study-wide target of finished trials (complete + pruned); all workers together stop there. "
         "Left out: no target, the worker runs until Ctrl-C or --timeout (a grid study stops when its grid "
         "is done).")]
TimeoutOpt = Annotated[float | None, typer.Option(
    "--timeout", min=1,
    help="Wall-clock budget in seconds: no trial starts after it, and the running trial stops at its next "
         "epoch's end (pruned, user attr stopped_by=deadline). Exits 0.")]
# Set by `aeopt launch` for its workers: the launch's own deadline (Unix time), so a worker's slow
# start (importing torch, loading data) is not added to the budget.
DeadlineOpt = Annotated[float | None, typer.Option("--deadline", envvar="AEOPT_DEADLINE", hidden=True)]
WorkerIndexOpt = Annotated[int | None, typer.Option(
    "--worker-index", min=0, envvar="AEOPT_WORKER_INDEX",
    help="Offsets the sampler seed (the spec's seed plus this) so workers differ, reproducibly on a fresh "
         "study. Without it the worker also mixes in its host and process id: workers started anywhere "
         "still differ, but not reproducibly. `aeopt launch` numbers its workers.")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", min=1, help="CPU threads for torch.")]


def worker(
    study: StudyOpt,
    storage: StorageOpt = None,
    n_trials: NTrialsOpt = None,
    timeout: TimeoutOpt = None,
    device: DeviceOpt = None,
    data_dir: DataDirOpt = None,
    worker_index: WorkerIndexOpt = None,
    threads: ThreadsOpt = None,
    amp: AmpOpt = False,
    deadline: DeadlineOpt = None,
) -> None:
    """Load the study and its spec from the storage and run trials.

    Example: aeopt worker --study conv_ae --n-trials 50 --device cuda:0
    """
    # A worker only joins a study: a typo in --storage must not create an empty database.
    opened = open_storage(storage, create=False)
    # `aeopt launch --timeout`'s deadline, shared by its workers: what is left of it when this one starts.
    shared = deadline is not None and (timeout is None or deadline - time.time() < timeout)
    if deadline is not None:  # at least a moment: a zero timeout would mean no budget at all
        timeout = max(0.01, min(timeout or float("inf"), deadline - time.time()))
    summary = run_worker(opened, study, n_trials=n_trials, timeout=timeout, device=device, data_dir=data_dir,
                         worker_index=worker_index, threads=threads, amp=amp, shared_deadline=shared)
    typer.echo(f"worker {worker_index or 0} finished: {summary.counts.text()}; {summary.stopped_because}")


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
