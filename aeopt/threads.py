"""CPU threads that do not fight a busy machine: aeopt's default for torch's OpenMP threads.

Measured on the 2-core development machine (benchmarks/threads.py, BENCHMARKS.md): with torch's
default of one thread per core, a training run beside one busy process ran 2.6x slower than with
one thread, beside two 2.7x (once 14x under heavier load): every parallel region waits for the
thread that shares a core. Sleeping instead of spinning (OMP_WAIT_POLICY=PASSIVE) did not fix it
(still 1.7x beside one busy process) and cost 34 % on an idle machine; the thread count does. So
the CLI entry calls `apply_process_defaults()` before torch is imported (OpenMP reads its settings
once, when it loads), which sets OMP_NUM_THREADS to the cores that are idle right now (sampled
from /proc/stat over a tenth of a second; at least 1): every core on an idle machine, only the
free ones beside busy processes.

Whatever the user set (OMP_NUM_THREADS, or `--threads N`, which calls torch.set_num_threads
later) wins.
"""

from __future__ import annotations

import os
import time


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies of all CPUs since boot, or None where /proc/stat does not exist."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return idle, sum(fields[:8])


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def idle_cores(sample_seconds: float = 0.1) -> float | None:
    """How many cores were idle over the last `sample_seconds` (None where it cannot be read)."""
    first = _cpu_times()
    if first is None:
        return None
    time.sleep(sample_seconds)
    second = _cpu_times()
    if second is None or second[1] <= first[1]:
        return None
    idle_share = (second[0] - first[0]) / (second[1] - first[1])
    return idle_share * (os.cpu_count() or 1)


def default_threads(sample_seconds: float = 0.1) -> int:
    """One thread per core that is idle now, within this process's cores; at least one."""
    cores = usable_cores()
    idle = idle_cores(sample_seconds)
    if idle is None:
        return cores
    # Round half up: a core 60 % idle is worth a thread; one 30 % idle would make every
    # parallel region wait for the thread that shares it.
    return max(1, min(cores, int(idle + 0.5)))


def apply_process_defaults(env: dict[str, str] | None = None) -> dict[str, str]:
    """Set OMP_NUM_THREADS in `env` (default: this process's environment) unless already set;
    call before torch is imported. Returns what was set."""
    env = os.environ if env is None else env
    chosen: dict[str, str] = {}
    if "OMP_NUM_THREADS" not in env:
        chosen["OMP_NUM_THREADS"] = str(default_threads())
    env.update(chosen)
    return chosen
