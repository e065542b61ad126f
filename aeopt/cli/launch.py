"""`aeopt launch`: N worker processes on this machine."""

from __future__ import annotations

from typing import Annotated

import typer

from aeopt.cli.common import AmpOpt, DataDirOpt, StorageOpt, StudyOpt
from aeopt.errors import AeoptError
from aeopt.files import output_folder
from aeopt.search.launch import launch as run
from aeopt.search.storage import open_storage

WorkersOpt = Annotated[str, typer.Option(
    "--workers", "-w",
    help="Worker processes to start, or auto: one per idle core on CPU, up to 4 per GPU (by free memory "
         "and cores).")]
DevicesOpt = Annotated[str | None, typer.Option(
    "--devices",
    help="Comma-separated, round-robin: cpu or cuda:0,cuda:1 (repeat a GPU to put several workers on it). "
         "Default: every GPU of this machine, else cpu.")]
NTrialsOpt = Annotated[int | None, typer.Option(
    "--n-trials", min=1,
    help="Study-wide target of finished trials. Left out: no target, the workers run until Ctrl-C or "
         "--timeout (a grid study stops when its grid is done).")]
TimeoutOpt = Annotated[float | None, typer.Option(
    "--timeout", min=1,
    help="Wall-clock budget in seconds for all workers: no trial starts after it, running trials stop at "
         "their next epoch's end (pruned). Exits 0.")]
LogDirOpt = Annotated[str | None, typer.Option("--log-dir", help="Worker logs (default logs/STUDY/).")]


def launch(
    study: StudyOpt,
    workers: WorkersOpt = "2",
    devices: DevicesOpt = None,
    n_trials: NTrialsOpt = None,
    timeout: TimeoutOpt = None,
    storage: StorageOpt = None,
    data_dir: DataDirOpt = None,
    log_dir: LogDirOpt = None,
    amp: AmpOpt = False,
) -> None:
    """Start several workers on this machine and show the study's progress live.

    CPU threads are divided among CPU workers, each following the cores free now. Every CUDA device
    named must exist here (checked before any worker starts). Ctrl-C, SIGTERM, SIGHUP or SIGQUIT stops
    all workers (their running trials end as failed) and exits 128 + the signal's number (130 after
    Ctrl-C); a launch killed outright stops its workers too (on Linux). Otherwise the exit code is
    non-zero if any worker failed. Worker logs go to logs/STUDY/ (the name made a safe folder name) unless
    --log-dir says otherwise.

    Example: aeopt launch --study conv_ae --workers 4 --devices cuda:0,cuda:1 --n-trials 100
    (--workers auto: one per idle core on CPU; per GPU, up to 4 as free memory and cores allow)
    """
    if workers != "auto" and not (workers.isdigit() and int(workers) >= 1):
        raise AeoptError(f"--workers {workers}: give a number of workers (at least 1) or auto")
    count = workers if workers == "auto" else int(workers)
    if devices is not None and not devices.replace(",", "").strip():
        # Empty items are dropped, so "," or "" would quietly fall back to the default devices.
        raise AeoptError(f"--devices {devices!r}: names no device; give cpu or cuda:0,cuda:1 (or leave "
                         "it out for every GPU here, else cpu)")
    if log_dir is not None:
        output_folder(log_dir)  # a file of that name, say: one line before the study is loaded
    code = run(open_storage(storage, create=False), study, count, devices=devices, n_trials=n_trials,
               timeout=timeout, data_dir=data_dir, log_dir=log_dir, amp=amp)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("launch")(launch)
