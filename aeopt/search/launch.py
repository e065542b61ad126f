"""`aeopt launch`: several worker processes on this machine, with live study progress.

Workers are separate processes (not threads): each has its own CUDA context and Python GIL, and
one crashing cannot take the others down. Each runs in its own session so Ctrl-C reaches them
exactly once, through this process, which forwards it as SIGTERM.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna

from aeopt.errors import AeoptError
from aeopt.progress import interactive, progress
from aeopt.search.records import StudyCounts, best_value_text
from aeopt.search.storage import Storage
from aeopt.search.studies import load_study, path_safe

log = logging.getLogger(__name__)


@dataclass
class WorkerProcess:
    index: int
    device: str
    log_path: Path
    proc: subprocess.Popen


def parse_devices(devices: str | None) -> list[str]:
    items = [d.strip() for d in (devices or "cpu").split(",") if d.strip()]
    for d in items:
        if d != "cpu" and not (d == "cuda" or (d.startswith("cuda:") and d[5:].isdigit())):
            raise AeoptError(f"--devices {devices}: '{d}' is not a device; use cpu, cuda or cuda:N, "
                             "comma-separated")
    return items or ["cpu"]


def missing_cuda(devices: list[str]) -> str | None:
    """Why a CUDA device of `devices` is not on this machine (None: every one is)."""
    cuda = [d for d in devices if d.startswith("cuda")]
    if not cuda:
        return None
    # Imported here: torch costs seconds, and only CUDA devices need to be asked about.
    import torch  # noqa: PLC0415

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for d in cuda:
        if (int(d[5:]) if ":" in d else 0) >= count:
            if not count:
                return "this machine has no CUDA device; use cpu"
            return f"{d} is not on this machine (it has cuda:0 to cuda:{count - 1})"
    return None


def check_devices(devices: list[str], given: str | None) -> None:
    """Every CUDA device named must exist here: fail before any worker starts, not in each of them."""
    problem = missing_cuda(devices)
    if problem:
        raise AeoptError(f"--devices {given}: {problem}")


def log_folder(study_name: str) -> Path:
    """logs/<study>: the name made one safe folder name, so no study name can write outside logs/."""
    return Path("logs") / path_safe(study_name)


def worker_command(study_name: str, index: int, device: str, *, threads: int, n_trials: int | None,
                   timeout: float | None, data_dir: str | None, amp: bool) -> list[str]:
    """The argv of one worker process. It names no storage: that travels in the environment."""
    cmd = [sys.executable, "-m", "aeopt", "worker", "--study", study_name, "--worker-index", str(index),
           "--device", device]
    if device == "cpu":
        cmd += ["--threads", str(threads)]
    if n_trials:
        cmd += ["--n-trials", str(n_trials)]
    if timeout:
        cmd += ["--timeout", str(timeout)]
    if data_dir:
        cmd += ["--data-dir", str(data_dir)]
    if amp:
        cmd.append("--amp")
    return cmd


def launch(
    storage: Storage,
    study_name: str,
    workers: int,
    *,
    devices: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    data_dir: str | None = None,
    log_dir: str | Path | None = None,
    amp: bool = False,
    poll_seconds: float = 2.0,
) -> int:
    """Start `workers` worker processes (devices round-robin), show progress, return an exit code."""
    if workers < 1:
        raise AeoptError("--workers must be at least 1")
    device_list = parse_devices(devices)
    check_devices(device_list, devices)
    study, _ = load_study(storage, study_name)  # fail here, once, rather than in every worker
    if storage.single_machine and workers > 4:
        log.warning("%d workers on %s: SQLite and journal files are for one machine and a few processes; "
                    "use PostgreSQL for more", workers, storage.kind)
    assigned = [device_list[i % len(device_list)] for i in range(workers)]
    threads = max(1, (os.cpu_count() or 1) // max(1, assigned.count("cpu")))
    log_dir = Path(log_dir) if log_dir else log_folder(study_name)
    log_dir.mkdir(parents=True, exist_ok=True)
    # The storage URL goes through the environment, not argv: argv is visible to every user in `ps`.
    env = {**os.environ, "AEOPT_STORAGE": storage.url, "PYTHONUNBUFFERED": "1"}
    env.pop("AEOPT_DEADLINE", None)
    if timeout:  # one deadline for all workers, counted from now, not from each one's start-up
        env["AEOPT_DEADLINE"] = f"{time.time() + timeout:.3f}"
    procs: list[WorkerProcess] = []
    for i, dev in enumerate(assigned):
        cmd = worker_command(study_name, i, dev, threads=threads, n_trials=n_trials, timeout=timeout,
                             data_dir=data_dir, amp=amp)
        path = log_dir / f"worker-{i}.log"
        with open(path, "w") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        procs.append(WorkerProcess(i, dev, path, proc))
    log.info("launched %d workers (%s); logs in %s/%s", workers, ", ".join(assigned), log_dir,
             f"; budget {timeout:g} s" if timeout else "")
    started = time.monotonic()
    code = _supervise(study, procs, n_trials, poll_seconds)
    if code == 0 and timeout and time.monotonic() - started >= timeout:
        log.info("the time budget of %g s ran out (%.0f s after the launch)", timeout,
                 time.monotonic() - started)
    return code


def _supervise(study: optuna.Study, procs: list[WorkerProcess], n_trials: int | None,
               poll_seconds: float) -> int:
    """Watch the workers until they exit, forwarding Ctrl-C / SIGTERM; the launch's exit code."""
    stopping: dict[str, int | None] = {"signal": None}

    def forward(signum, frame):  # noqa: ARG001
        stopping["signal"] = signum
        for w in procs:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        _watch(study, procs, n_trials, poll_seconds, stopping)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _reap(procs)

    signum = stopping["signal"]
    # After a requested stop, a worker that exited because of the signal did what it was asked.
    stopped = {0} if signum is None else {0, 128 + signum, -signum, 128 + signal.SIGTERM, -signal.SIGTERM}
    failed = [w for w in procs if w.proc.returncode not in stopped]
    for w in failed:
        tail = w.log_path.read_text(errors="replace").strip().splitlines()[-5:]
        log.error("worker %d (%s) exited with code %s; last lines of %s:\n  %s", w.index, w.device,
                  w.proc.returncode, w.log_path, "\n  ".join(tail))
    log.info(_status_or_reason(study))
    if signum is not None:
        return 128 + signum  # the shell's convention: 130 after Ctrl-C (SIGINT), 143 after SIGTERM
    return 1 if failed else 0


def status_line(study: optuna.Study) -> str:
    c = StudyCounts.of(study)
    return (f"study {study.study_name}: complete {c.complete}, pruned {c.pruned}, failed {c.failed}, "
            f"running {c.running}; best {best_value_text(study)}")


def _status_or_reason(study: optuna.Study) -> str:
    # The monitor only reports: a storage that cannot be read right now (a database restart, a cut
    # link) must not end the launch, whose cleanup would stop workers that are riding it out.
    try:
        return status_line(study)
    except Exception as exc:  # noqa: BLE001 (any storage error; the workers decide for themselves)
        return f"study {study.study_name}: status unavailable ({type(exc).__name__}); workers keep running"


def _finished(study: optuna.Study, last: int) -> int:
    try:
        return StudyCounts.of(study).finished
    except Exception:  # noqa: BLE001 (as in _status_or_reason)
        return last


def _watch(study, procs, n_trials, poll_seconds, stopping) -> None:
    with progress(n_trials, f"study {study.study_name}", unit="trial") as bar:
        last_line, last_done = "", 0
        while any(w.proc.poll() is None for w in procs):
            line = _status_or_reason(study)
            if bar.bar is not None:
                done = _finished(study, last_done)
                bar.bar.set_postfix_str(line.split(": ", 1)[1], refresh=False)
                bar.bar.update(done - last_done)
                last_done = done
            elif line != last_line:
                log.info(line)
            last_line = line
            time.sleep(poll_seconds)
            if stopping["signal"] is not None and not interactive():
                log.info("stopping workers (signal %s)", stopping["signal"])


def _reap(procs: list[WorkerProcess], grace: float = 30.0) -> None:
    deadline = time.monotonic() + grace
    for w in procs:
        try:
            w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("worker %d did not stop in %.0f s; killing it", w.index, grace)
            w.proc.kill()
            w.proc.wait()
