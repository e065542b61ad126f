"""Stop signals for a worker: SIGTERM and SIGINT end the running trial (FAIL, "stopped by signal N")
and the worker, without leaving the storage in a bad state.

The handler raises `StopSignal` where it lands, so that a long epoch stops at once, except where an
exception would do harm; there the stop is only remembered, and raised by `raise_if_stop_requested`
at the next epoch, before the next trial and between a storage's retries:
- inside SQLAlchemy (a session commit, a connection going back to its pool) or a journal storage's
  file lock: interrupted there, a SQLite connection can keep its write lock until it is garbage
  collected, so that the next write of the stopping worker waits out the busy timeout (CI once saw
  a Ctrl-C'd quickstart hang 105 s on "database is locked");
- inside a weakref callback or `__del__`, where Python prints the exception ("Exception ignored")
  and drops it;
- inside an import: raised in a C extension's initialisation it becomes "ImportError:
  initialization failed" (seen when SIGTERM met a worker's first, lazy import of scipy), so the
  worker exits 1 with a traceback instead of stopping cleanly;
- inside Optuna's heartbeat thread's start (`with get_heartbeat_thread(...)` as a trial begins):
  raised after the thread started but before the `with` took it, nothing stops that non-daemon
  thread, so the process never exits (CI saw a SIGTERM'd quickstart print its last line and hang).
  The objective raises the noted stop as it starts (`raise_if_stop_requested`), inside the `with`;
- inside Optuna's setting-up and telling of a trial (`Study.ask`, which creates the RUNNING trial and
  then samples its relative parameters; `_tell.py`; `_optimize.py`'s own lines between them): raised
  there, no `except` of Optuna's fails the trial, so it stays RUNNING for good on a storage without
  heartbeats (CI saw a Ctrl-C'd quickstart leave one). Noted there, the stop is raised as the objective
  starts, and the trial ends FAIL, "stopped by signal N".
"""

from __future__ import annotations

import os
import signal
from types import FrameType


class StopSignal(KeyboardInterrupt):
    """SIGTERM or SIGINT: stop the current trial (FAIL, "stopped by signal N") and the worker."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum


_stop_requests: list[int] = []  # the signals received by this process's worker, oldest first


def note_stop(signum: int) -> None:
    """Remember a stop without raising it: raised later by `raise_if_stop_requested`."""
    _stop_requests.append(signum)


def request_stop(signum: int) -> None:
    note_stop(signum)
    raise StopSignal(signum)


def raise_if_stop_requested() -> None:
    if _stop_requests:
        raise StopSignal(_stop_requests[0])


def clear_stop_requests() -> None:
    _stop_requests.clear()


# Code an exception must not cut through: a storage's transaction or lock (see the module doc).
_UNSAFE_PACKAGES = tuple(os.sep + part + os.sep for part in
                         ("sqlalchemy", "psycopg", os.path.join("optuna", "storages", "journal")))
_UNSAFE_FILES = (os.path.join("optuna", "storages", "_heartbeat.py"),  # (module doc)
                 os.path.join("optuna", "study", "_tell.py"))
_ASK = (os.path.join("optuna", "study", "study.py"), "ask")  # Study.ask: a new trial set up
_TRIAL_LOOP = os.path.join("optuna", "study", "_optimize.py")  # innermost only: the objective runs under it
_DROPPED_HERE = ("weakref.py", "_weakrefset.py")  # where Python drops an exception (module doc)
_IMPORTING = "<frozen importlib"  # the import machinery's frames (module doc)


def stop_is_safe_here(frame: FrameType | None) -> bool:
    """Whether raising in `frame` (a signal handler's) is safe: no frame on its stack is unsafe."""
    if frame is not None and (frame.f_code.co_filename.endswith(_DROPPED_HERE + (_TRIAL_LOOP,))
                              or frame.f_code.co_name == "__del__"):
        return False
    while frame is not None:
        name = frame.f_code.co_filename
        if (name.startswith(_IMPORTING) or any(part in name for part in _UNSAFE_PACKAGES)
                or name.endswith(_UNSAFE_FILES)
                or (name.endswith(_ASK[0]) and frame.f_code.co_name == _ASK[1])):
            return False
        frame = frame.f_back
    return True


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    if stop_is_safe_here(frame):
        request_stop(signum)
    note_stop(signum)


def install_stop_handlers() -> None:
    """SIGTERM (from `aeopt launch`, a scheduler, docker stop) and SIGINT both stop the worker."""
    try:
        signal.signal(signal.SIGTERM, _on_stop_signal)
        signal.signal(signal.SIGINT, _on_stop_signal)
    except ValueError:  # not the main thread (tests calling run_worker from a thread)
        pass
