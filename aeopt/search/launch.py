"""`aeopt launch`: several worker processes on this machine, with live study progress.

Workers are separate processes (not threads): each has its own CUDA context and Python GIL, and
one crashing cannot take the others down. Each runs in its own session so Ctrl-C reaches them
exactly once, through this process, which forwards it (and SIGTERM, SIGHUP, SIGQUIT) as SIGTERM.
The workers' own sessions also shield them from a closed terminal, so they must learn of their
launcher's end from it: on Linux each asks the kernel for SIGTERM when the launcher dies, however it
dies (SIGKILL, the OOM killer), and stops cleanly as on any SIGTERM (`_die_with`).

`--workers auto` (`plan_workers`), the rule and what backs it:
- CPU: one single-threaded worker per core idle at launch. On the 2-core machine two 1-thread workers
  finished 1.25x the trials of one 2-thread worker, and 1.01x since one worker trains its folds side
  by side in lanes (BENCHMARKS.md, "Worker scaling"): as fast, more trials at once for the sampler, and
  a thread that shares its core with another process stalls every parallel region (aeopt/threads.py);
  each CPU worker may grow to its share of the cores (AEOPT_MAX_THREADS) when others are idle.
- GPU: per GPU, as many workers as fit three bounds: GPU_WORKERS (small models are bound by kernel
  launches from one Python thread, so a second and third worker fill the gaps one leaves; the issue's
  H100 study: 6 unfused workers kept SMs 52 % busy), one CPU core per worker (each launches its own
  kernels), and WORKER_GPU_BYTES of free GPU memory per worker (CUDA context, data, fused fold models).
  GPU_WORKERS and WORKER_GPU_BYTES are provisional until benchmarks/gpu_suite.sh measures SM
  utilization and memory per worker on an H100 (1 against N workers).
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import optuna

from aeopt.errors import AeoptError
from aeopt.files import cannot_write, make_folder
from aeopt.progress import interactive, progress
from aeopt.search.records import StudyCounts, best_value_text
from aeopt.search.storage import Storage
from aeopt.search.studies import load_study, path_safe
from aeopt.threads import MAX_THREADS, default_threads, thread_cap, usable_cores

log = logging.getLogger(__name__)


@dataclass
class WorkerProcess:
    index: int
    device: str
    log_path: Path
    proc: subprocess.Popen
    log_start: int = 0  # where this launch's part of the log begins (the file keeps earlier launches')


def parse_devices(devices: str | None) -> list[str]:
    """The devices named, in order (a repeat puts another worker there); none named: `default_devices`."""
    items = [d.strip() for d in (devices or "").split(",") if d.strip()]
    for d in items:
        if d != "cpu" and not (d == "cuda" or (d.startswith("cuda:") and d[5:].isdigit())):
            raise AeoptError(f"--devices {devices}: '{d}' is not a device; use cpu, cuda or cuda:N, "
                             "comma-separated")
    return [_canonical(d) for d in items] or default_devices()


def _canonical(device: str) -> str:
    """cuda is torch's current device, cuda:0 in a new process: one name per GPU, so that `plan_workers`
    does not count `--devices cuda,cuda:0` as two GPUs (4 workers on each, 8 on one GPU)."""
    return "cuda:0" if device == "cuda" else device


def default_devices() -> list[str]:
    """Without --devices: every GPU this machine has, round-robin (as `aeopt worker` takes CUDA when
    it is there), else the CPU. torch (seconds to import) is asked only where an NVIDIA driver is."""
    if not Path("/proc/driver/nvidia").exists() and shutil.which("nvidia-smi") is None:
        return ["cpu"]
    import torch  # noqa: PLC0415

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i}" for i in range(count)] or ["cpu"]


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


GPU_WORKERS = 4  # most workers per GPU (see the module docstring)
WORKER_GPU_BYTES = 2 << 30  # GPU memory set aside per worker


@dataclass(frozen=True)
class WorkerPlan:
    devices: list[str]  # one entry per worker
    cpu_threads: int  # each CPU worker's most threads (AEOPT_MAX_THREADS)
    why: str  # one line for the log


def plan_workers(devices: list[str], *, cores: int, idle: int, gpu_free: dict[str, int] | None = None
                 ) -> WorkerPlan:
    """`--workers auto` on `devices` (as parse_devices returns them; a GPU named twice counts once):
    CPU workers on idle cores, GPU workers by the bounds in the module docstring."""
    unique = list(dict.fromkeys(_canonical(d) for d in devices))
    gpus = [d for d in unique if d != "cpu"]
    gpu_free = gpu_free or {}
    assigned: list[str] = []
    notes = []
    if gpus:
        per_core = max(1, cores // len(gpus))
        for d in gpus:
            by_memory = max(1, gpu_free.get(d, WORKER_GPU_BYTES) // WORKER_GPU_BYTES)
            n = min(GPU_WORKERS, per_core, by_memory)
            assigned += [d] * n
            notes.append(f"{n} on {d}")
    if "cpu" in unique:
        # CPU workers on the cores the GPU workers leave idle (each GPU worker keeps one busy).
        n = max(0 if gpus else 1, min(cores, idle) - len(assigned))
        assigned += ["cpu"] * n
        if n:
            notes.append(f"{n} on cpu")
    n_cpu = assigned.count("cpu")
    threads = max(1, cores // max(1, n_cpu))
    if n_cpu:
        notes.append(f"{threads} thread(s) each at most")
    return WorkerPlan(assigned, threads, f"--workers auto: {', '.join(notes)} ({cores} cores, {idle} idle)")


def _gpu_free(devices: list[str]) -> dict[str, int]:
    """Free bytes on each CUDA device named (torch imported only when there is one)."""
    cuda = [d for d in dict.fromkeys(devices) if d != "cpu"]
    if not cuda:
        return {}
    import torch  # noqa: PLC0415

    return {d: torch.cuda.mem_get_info(torch.device(d))[0] for d in cuda}


def auto_plan(devices: list[str]) -> WorkerPlan:
    """`plan_workers` for this machine as it is now."""
    return plan_workers(devices, cores=usable_cores(), idle=default_threads(0.5), gpu_free=_gpu_free(devices))


def worker_command(study_name: str, index: int, device: str, *, threads: int | None, n_trials: int | None,
                   timeout: float | None, data_dir: str | None, amp: bool) -> list[str]:
    """The argv of one worker process. It names no storage: that travels in the environment.
    `threads`: a fixed thread count for a CPU worker (None: the worker's own, aeopt.threads)."""
    cmd = [sys.executable, "-m", "aeopt", "worker", "--study", study_name, "--worker-index", str(index),
           "--device", device]
    if device == "cpu" and threads:
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
    workers: int | str,
    *,
    devices: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    data_dir: str | None = None,
    log_dir: str | Path | None = None,
    amp: bool = False,
    poll_seconds: float = 2.0,
) -> int:
    """Start `workers` worker processes (devices round-robin; "auto": `plan_workers`), show progress,
    return an exit code."""
    device_list = parse_devices(devices)
    check_devices(device_list, devices)
    thread_cap()  # a bad AEOPT_MAX_THREADS: one line now, not a guess (launch sets its workers' own)
    if workers == "auto":
        plan = auto_plan(device_list)
        log.info(plan.why)
    else:
        workers = int(workers)
        if workers < 1:
            raise AeoptError("--workers must be at least 1 (or auto)")
        assigned = [device_list[i % len(device_list)] for i in range(workers)]
        plan = WorkerPlan(assigned, max(1, usable_cores() // max(1, assigned.count("cpu"))), "")
    assigned, workers = plan.devices, len(plan.devices)
    study, _ = load_study(storage, study_name)  # fail here, once, rather than in every worker
    if storage.single_machine and workers > 4:
        log.warning("%d workers on %s: SQLite and journal files are for one machine and a few processes; "
                    "use PostgreSQL for more", workers, storage.kind)
    log_dir = make_folder(Path(log_dir) if log_dir else log_folder(study_name))
    # Every log file opened before any worker starts: one that cannot be written leaves none running.
    logs = _open_logs([log_dir / f"worker-{i}.log" for i in range(workers)], assigned)
    # The storage URL goes through the environment, not argv: argv is visible to every user in `ps`.
    env = {**os.environ, "AEOPT_STORAGE": storage.url, "PYTHONUNBUFFERED": "1"}
    env.pop("AEOPT_DEADLINE", None)
    # Each CPU worker picks its own thread count and follows the free cores (aeopt.threads), up to its
    # share of the machine; a user's OMP_NUM_THREADS still fixes it.
    env[MAX_THREADS] = str(plan.cpu_threads)
    if timeout:  # one deadline for all workers, counted from now, not from each one's start-up
        env["AEOPT_DEADLINE"] = f"{time.time() + timeout:.3f}"
    die_with_me = _die_with(os.getpid())
    procs: list[WorkerProcess] = []
    for i, (dev, fh) in enumerate(zip(assigned, logs, strict=True)):
        cmd = worker_command(study_name, i, dev, threads=None, n_trials=n_trials, timeout=timeout,
                             data_dir=data_dir, amp=amp)
        with fh:
            log_start = fh.tell()
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                    preexec_fn=die_with_me)
        procs.append(WorkerProcess(i, dev, Path(fh.name), proc, log_start))
    log.info("launched %d workers (%s); logs in %s/%s", workers, ", ".join(assigned), log_dir,
             f"; budget {timeout:g} s" if timeout else "")
    started = time.monotonic()
    code = _supervise(study, procs, n_trials, poll_seconds)
    if code == 0 and timeout and time.monotonic() - started >= timeout:
        log.info("the time budget of %g s ran out (%.0f s after the launch)", timeout,
                 time.monotonic() - started)
    return code


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with(launcher_pid: int):
    """A preexec_fn for a worker: SIGTERM to it when the launcher dies (Linux; elsewhere None, and a
    killed launcher's workers run on). Without it a launcher killed with SIGKILL, which it cannot
    forward, leaves its workers training in their own sessions, and nothing stops them."""
    if not sys.platform.startswith("linux"):
        return None
    # Looked up here, in the launcher: the child between fork and exec should do as little as it can.
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # A launcher that died before the line above would send nothing: the worker is now some other
        # process's child, and must not start.
        if os.getppid() != launcher_pid:
            os._exit(1)

    return preexec


def _open_logs(paths: list[Path], devices: list[str]) -> list:
    """The workers' log files, opened for appending, each with a line that says which launch follows
    (each closed once its worker has it); one line if any cannot be (a folder of that name, no
    permission), with none left open. Appended, not rewritten: the logs of a crashed launch are the
    evidence a rerun must not wipe, and a second launch of the same study beside a running one would
    cut the first one's file under its workers (which then write past the new end: NUL bytes)."""
    logs: list = []
    started = datetime.now().astimezone().isoformat(timespec="seconds")
    try:
        for i, (path, device) in enumerate(zip(paths, devices, strict=True)):
            fh = open(path, "a")  # noqa: SIM115
            logs.append(fh)
            fh.write(f"=== {started} aeopt launch (pid {os.getpid()}): worker {i} on {device} ===\n")
            fh.flush()  # before the worker's own lines, which go to the file, not this buffer
    except OSError as exc:
        for fh in logs:
            fh.close()
        raise cannot_write(path, exc) from exc
    return logs


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
                     if hasattr(signal, name))  # SIGHUP and SIGQUIT are POSIX only


def _supervise(study: optuna.Study, procs: list[WorkerProcess], n_trials: int | None,
               poll_seconds: float) -> int:
    """Watch the workers until they exit, forwarding a stop signal as SIGTERM; the launch's exit code."""
    stopping: dict[str, int | None] = {"signal": None}

    def forward(signum, frame):  # noqa: ARG001
        stopping["signal"] = signum
        for w in procs:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)

    # SIGHUP (the terminal closed, an SSH link dropped) and SIGQUIT stop the launch as SIGTERM does: left
    # to their default they would end this process alone, the workers (in their own sessions) training on.
    old = {s: signal.signal(s, forward) for s in STOP_SIGNALS}
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
        with open(w.log_path, "rb") as fh:  # this launch's lines only
            fh.seek(w.log_start)
            tail = fh.read().decode(errors="replace").strip().splitlines()[-5:]
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
