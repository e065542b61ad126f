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

A choice made once goes stale: a study runs for hours, and other jobs come and go. So while a
command trains, `tick()` (called once per training step; it costs a clock read) re-counts every
second the cores this process could use (the idle ones plus those it used itself) and moves
torch's thread count to that, within this process's cores and `AEOPT_MAX_THREADS` (`aeopt launch`
sets it to each CPU worker's share). Measured (benchmarks/threads.py, BENCHMARKS.md): a trial beside
busy processes, and one whose neighbours arrive after it started, stays within 10 % of the best
fixed thread count for that load.

Where a command has independent work (a trial's k fold models on the CPU), it runs it side by side
in lanes instead (aeopt.training.lanes): one thread each, as many as `lane_budget()` allows; only the
main thread governs, and a lane keeps its one thread.

Whatever the user set wins: OMP_NUM_THREADS (other than aeopt's own choice, which child processes
inherit and re-make), or `--threads N` (`hold_threads`, or any torch.set_num_threads call: the
governor stops at the first thread count it did not set itself).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

from aeopt.errors import ConfigError

log = logging.getLogger(__name__)

AUTO_MARK = "AEOPT_AUTO_THREADS"  # the OMP_NUM_THREADS aeopt chose (not the user): children re-choose
MAX_THREADS = "AEOPT_MAX_THREADS"  # a cap on the thread count (aeopt launch: each CPU worker's share)


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


def max_threads(env: dict[str, str] | None = None) -> int | None:
    """AEOPT_MAX_THREADS as a whole number >= 1, None when unset or empty; anything else is a
    ConfigError worded as aeopt.search.env.env_int's (not imported: this module loads before any
    command, and aeopt.search is the Optuna side)."""
    env = os.environ if env is None else env
    raw = env.get(MAX_THREADS, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{MAX_THREADS}={raw!r} is not a whole number; set it to 1 or more") from None
    if value < 1:
        raise ConfigError(f"{MAX_THREADS}={raw!r} must be 1 or more")
    return value


def thread_cap(env: dict[str, str] | None = None) -> int:
    """The most threads this process may use: its cores, and AEOPT_MAX_THREADS where set (a bad
    value is a ConfigError: a cap the user set and aeopt ignored would be a silent surprise)."""
    cores = usable_cores()
    return min(cores, max_threads(env) or cores)


def default_threads(sample_seconds: float = 0.1, env: dict[str, str] | None = None) -> int:
    """One thread per core that is idle now, within this process's cores (and cap); at least one."""
    cores = thread_cap(env)
    idle = idle_cores(sample_seconds)
    if idle is None:
        return cores
    # Round half up: a core 60 % idle is worth a thread; one 30 % idle would make every
    # parallel region wait for the thread that shares it.
    return max(1, min(cores, int(idle + 0.5)))


def apply_process_defaults(env: dict[str, str] | None = None) -> dict[str, str]:
    """Set OMP_NUM_THREADS in `env` (default: this process's environment) unless the user set it;
    call before torch is imported. Returns what was set. For this process's own environment it
    also turns the governor on (`tick`)."""
    own = env is None
    env = os.environ if env is None else env
    chosen: dict[str, str] = {}
    mine = env.get(AUTO_MARK)
    if "OMP_NUM_THREADS" not in env or (mine is not None and env["OMP_NUM_THREADS"] == mine):
        try:
            n = str(default_threads(env=env))
        except ConfigError:
            # A bad AEOPT_MAX_THREADS: this runs before any command can report it in one line, so the
            # choice ignores the cap here, and the command says what is wrong where it reads it
            # (`thread_cap`: the lanes, the governor, `aeopt launch`).
            n = str(default_threads(env={k: v for k, v in env.items() if k != MAX_THREADS}))
        chosen = {"OMP_NUM_THREADS": n, AUTO_MARK: n}
    env.update(chosen)
    if own:
        GOVERNOR.active = bool(chosen)
    if own and chosen:
        # What torch will run with (or already runs with, when a process calls this again): a
        # torch.set_num_threads before the governor's first look is then seen as the user's choice,
        # not overridden by it.
        torch = sys.modules.get("torch")
        GOVERNOR._set = torch.get_num_threads() if torch is not None else int(chosen["OMP_NUM_THREADS"])
    return chosen


def hold_threads(n: int) -> None:
    """The user's thread count (`--threads N`): set it and stop the governor."""
    import torch  # noqa: PLC0415 (torch loads after apply_process_defaults, by design)

    GOVERNOR.active = False
    torch.set_num_threads(n)


class ThreadGovernor:
    """Moves torch's thread count to the cores this process can use now (see the module docstring).

    Cores usable now = idle cores + the cores this process itself kept busy, both over the last
    interval: beside one busy process on 2 cores, a 2-thread run keeps about 1.3 cores busy (its
    share, spinning included) and leaves none idle, so it drops to 1 thread; when the neighbour
    leaves, the 1-thread run sees a whole idle core beside its own and goes back to 2.
    """

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self.active = False
        self._due = 0.0
        self._last: tuple[float, float, tuple[int, int]] | None = None  # (wall, own CPU s, /proc/stat)
        self._set: int | None = None  # the thread count the governor last set (or found)

    def tick(self) -> None:
        """Cheap unless `interval` has passed since the last look: then `adjust()`."""
        if not self.active:
            return
        now = time.monotonic()
        if now < self._due:
            return
        self._due = now + self.interval
        self.adjust()

    def usable_now(self) -> float | None:
        """Cores this process could have used since the last call (None on the first call)."""
        stat = _cpu_times()
        if stat is None:
            return None
        times = os.times()
        sample = (time.monotonic(), times.user + times.system, stat)
        last, self._last = self._last, sample
        if last is None or sample[2][1] <= last[2][1] or sample[0] <= last[0]:
            return None
        idle = (sample[2][0] - last[2][0]) / (sample[2][1] - last[2][1]) * (os.cpu_count() or 1)
        own = (sample[1] - last[1]) / (sample[0] - last[0])
        return idle + own

    def adjust(self) -> int | None:
        """Set torch's thread count for the cores usable now; returns it (None: left alone)."""
        torch = sys.modules.get("torch")
        if torch is None or not self.active:
            return None
        current = torch.get_num_threads()
        if self._set is not None and current != self._set:
            self.active = False  # someone else chose a thread count: theirs wins
            log.debug("thread count set elsewhere (%d): the governor stops", current)
            return None
        cap = thread_cap()  # before the first sample: a bad AEOPT_MAX_THREADS stops the first step
        usable = self.usable_now()
        self._set = current
        if usable is None:
            return None
        # Round half up, as default_threads: a core 60 % free is worth a thread.
        want = max(1, min(cap, int(usable + 0.5)))
        if want != current:
            torch.set_num_threads(want)
            self._set = want
            log.debug("torch threads %d -> %d (%.2f cores usable)", current, want, usable)
        return self._set


GOVERNOR = ThreadGovernor()


def tick() -> None:
    """Called once per training step by aeopt's training loops (aeopt.training). Only the main
    thread governs: a lane (aeopt.training.lanes) holds its own thread count for its whole run, and
    runs its step check instead (`on_lane_step`)."""
    if threading.current_thread() is _MAIN:
        GOVERNOR.tick()
        return
    check = getattr(_LANE, "check", None)
    if check is not None:
        check()


_MAIN = threading.main_thread()
_LANE = threading.local()


def on_lane_step(check) -> None:
    """Make `tick()` in this (lane) thread call `check()`, which may raise to end the lane's work.
    The training loops' one per-step call is where a lane can stop between batches: a stop signal
    lands in the main thread only, which waits for the lanes, and a lane that ran its epoch to the end
    first kept a stopping worker busy for a whole epoch (aeopt.training.lanes)."""
    _LANE.check = check


def lane_budget() -> int:
    """The cores concurrent lanes may share: this process's cores (and AEOPT_MAX_THREADS) while
    aeopt governs the threads, else the thread count the user (or torch's default) set."""
    if GOVERNOR.active:
        return thread_cap()
    import torch  # noqa: PLC0415 (torch loads after apply_process_defaults, by design)

    return max(1, torch.get_num_threads())
