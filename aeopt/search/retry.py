"""Storage calls that ride out outages: a database restart, a failover, a link down for a while.

`RetryingStorage` wraps the Optuna storage `open_storage` builds and delegates every call to it; a call
that fails with a transient error (the server is gone, restarting or shutting down, a connection was
refused, reset or closed, a serialization failure or deadlock) is retried with exponential backoff and
jitter until the outage has lasted `window` seconds (`AEOPT_OUTAGE_SECONDS`, default 180; 0 turns
retries off); then the call raises a `StorageError` (one line for the CLI: the storage, how long it was
waited for, the driver's reason, what to do) from the error it got. Anything else (a wrong password, a
missing table, an unknown study) raises at once, as it is. One warning line per outage, one line when
the storage is back. A heartbeat that cannot be recorded once the window is spent is skipped, not
raised: it would end Optuna's heartbeat thread with a traceback, and the trial's own calls fail anyway.

Writes a retry could apply twice, when the first try's reply was lost after the server committed it:
- `set_trial_state_values` (tell): a retry that finds the trial already in the requested finished
  state, with the requested values, is that first write: it returns True instead of raising.
- `create_new_trial` (ask): every new trial carries a unique system attr `aeopt:create_token`; a retry
  first looks for a trial holding its token and returns it, so no extra RUNNING trial is left behind
  (an RDB trial that never got a heartbeat is never judged stale by Optuna: it would stay RUNNING).
- `create_new_study` / `delete_study`: a retry that finds the study already created / already gone
  is the first try's work.
One case stays open: a worker taking a re-queued (WAITING) trial whose reply is lost sees the trial
taken and asks for another; the first stays RUNNING without a heartbeat. It needs the reply lost in
the instant after the commit, and the study's counts then show one RUNNING trial too many.

A trial in flight during an outage longer than the storage's grace period can be judged stale by
another worker that reaches the database first; it is then failed with its reason and re-queued.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy.exc
from optuna.distributions import BaseDistribution
from optuna.exceptions import DuplicatedStudyError, UpdateFinishedTrialError
from optuna.storages import BaseStorage

# Optuna's heartbeat contract lives in a private module (see search/heartbeat.py).
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

from aeopt.errors import StorageError
from aeopt.search.heartbeat import FAIL_REASON, LOST_REASON, grace_seconds
from aeopt.search.urls import scrub

log = logging.getLogger(__name__)

OUTAGE_ENV = "AEOPT_OUTAGE_SECONDS"
DEFAULT_OUTAGE_SECONDS = 180.0
CREATE_TOKEN_ATTR = "aeopt:create_token"

T = TypeVar("T")

# PostgreSQL SQLSTATEs worth waiting for: class 08 (connection exception), admin/crash shutdown,
# "cannot connect now" (starting up), serialization failure, deadlock, too many connections.
_TRANSIENT_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "40001", "40P01", "53300"})
# Phrases of errors that waiting does not fix, checked first: a failed login or a missing object reads
# as an OperationalError too. A host name that does not resolve is taken for a typo.
_PERMANENT_TEXT = (
    "authentication failed", "no password supplied", "does not exist", "no such table", "no such column",
    "unable to open database file", "readonly database", "permission denied", "no pg_hba.conf entry",
    "could not translate host name", "name or service not known", "invalid dsn", "syntax error",
)
_TRANSIENT_TEXT = (
    "connection refused", "connection reset", "connection is closed", "connection already closed",
    "server closed the connection", "terminating connection", "shutting down", "starting up",
    "could not connect", "could not receive data", "could not send data", "connection timed out",
    "timeout expired", "no route to host", "network is unreachable", "database is locked", "deadlock",
    "could not serialize access", "ssl syscall error", "consuming input failed", "broken pipe",
    "the connection is lost", "lost connection", "gone away", "connection failed",
)


def outage_seconds() -> float:
    """The outage window from AEOPT_OUTAGE_SECONDS (seconds, 0 = no retries), else 180."""
    raw = os.environ.get(OUTAGE_ENV, "").strip()
    if not raw:
        return DEFAULT_OUTAGE_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise StorageError(f"{OUTAGE_ENV} must be a number of seconds >= 0 (0 turns retries off), "
                           f"got {raw!r}")
    return value


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The error and those it was raised from or during (Optuna wraps SQLAlchemy, which wraps psycopg)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen or len(seen) > 20:
            continue
        seen.add(id(e))
        yield e
        todo.extend([e.__cause__, e.__context__, getattr(e, "orig", None)])


def _text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".lower()


def _transient_one(e: BaseException) -> bool:
    sqlstate = getattr(e, "sqlstate", None)
    if isinstance(sqlstate, str) and (sqlstate.startswith("08") or sqlstate in _TRANSIENT_SQLSTATES):
        return True
    if isinstance(e, sqlalchemy.exc.DBAPIError) and e.connection_invalidated:
        return True
    if isinstance(e, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, ConnectionError)):
        return True  # builtin ConnectionError: refused, reset, aborted, broken pipe
    if type(e).__module__.startswith("redis") and type(e).__name__ in ("ConnectionError", "TimeoutError"):
        return True
    code = getattr(e, "code", None)
    if type(e).__module__.startswith("grpc") and callable(code):
        return getattr(code(), "name", "") == "UNAVAILABLE"
    return type(e).__name__ in ("OperationalError", "InterfaceError") and any(
        p in _text(e) for p in _TRANSIENT_TEXT)


def is_transient(exc: BaseException) -> bool:
    """Whether waiting may fix `exc`: the database or the link is down, not the request wrong."""
    chain = list(_chain(exc))
    if any(p in _text(e) for e in chain for p in _PERMANENT_TEXT):
        return False
    return any(_transient_one(e) for e in chain)


def is_restarting(exc: BaseException) -> bool:
    """Whether the server said it is shutting down or starting up: worth waiting for even on a first
    contact (a refused connection on a first contact is more likely a wrong URL than an outage)."""
    for e in _chain(exc):
        sqlstate = getattr(e, "sqlstate", None)
        if sqlstate in ("57P01", "57P02", "57P03") or any(
                p in _text(e) for p in ("shutting down", "starting up", "terminating connection")):
            return True
    return False


def reason(exc: BaseException) -> str:
    """One short line for the log: the first line of the innermost error that says something (SQLAlchemy
    chains errors with nothing to say, such as its pool's `InvalidatePoolError: ()`)."""
    chain = list(_chain(exc))
    for inner in reversed(chain):
        text = str(inner).strip()
        if text and text != "()":
            return f"{type(inner).__name__}: {text.splitlines()[0]}"[:160]
    return type(chain[-1]).__name__


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded by an outage window.

    The k-th wait (k from 0) is drawn in [c/2, c] with c = min(cap, base * 2**k): spread so that the
    workers that lost the database together do not all knock at once when it returns, and capped so
    that a worker is back within `cap` s of the database."""

    window: float = DEFAULT_OUTAGE_SECONDS
    base: float = 0.25
    cap: float = 5.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, attempt: int) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(attempt, 30))
        return ceiling * (0.5 + 0.5 * self.rng.random())


class _Outage:
    """When this storage was first found down (shared by the threads of a process), for the log lines
    and the window: the window runs from the outage's start, whichever call saw it first."""

    def __init__(self, display: str, window: float, url: str | None = None) -> None:
        self.display = display
        self.window = window
        self.since: float | None = None
        self._url = url
        self._lock = threading.Lock()

    def reason(self, exc: BaseException) -> str:
        return scrub(reason(exc), self._url) if self._url else reason(exc)

    def failed(self, exc: BaseException) -> float:
        with self._lock:
            if self.since is None:
                self.since = time.monotonic()
                log.warning("storage %s unreachable (%s); retrying for up to %g s", self.display,
                            self.reason(exc), self.window)
            return self.since

    def recovered(self) -> None:
        with self._lock:
            if self.since is not None:
                log.warning("storage %s reachable again after %.1f s", self.display,
                            time.monotonic() - self.since)
                self.since = None


class RetryingStorage(BaseStorage, BaseHeartbeat):
    """An Optuna storage that delegates every call to `inner`, retrying transient errors (module doc).

    It is a `BaseHeartbeat` whatever `inner` is, so that Optuna's `is_heartbeat_enabled` reads the inner
    storage's interval (None when `inner` has no heartbeats). Attributes it does not define (an RDB
    storage's `grace_period`, `engine`) are read from `inner`."""

    def __init__(self, inner: BaseStorage, *, display: str, policy: RetryPolicy | None = None,
                 reached: bool = False, sleep: Callable[[float], None] = time.sleep,
                 url: str | None = None) -> None:
        self._inner = inner
        # An outage is a storage that answered and then went away; until it has answered once, a
        # refused connection is taken for a wrong URL and raised at once (a server that says it is
        # restarting is still waited for).
        self._reached = reached
        self._policy = policy or RetryPolicy(window=outage_seconds())
        self._outage = _Outage(display, self._policy.window, url)  # url: to scrub a driver's reason
        self._sleep = sleep
        # The trials this process has running (asked, not yet told): what an outage takes from it.
        self._running: set[int] = set()

    @property
    def inner(self) -> BaseStorage:
        return self._inner

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_inner", "_policy", "_outage", "_sleep", "_reached",
                                             "_running"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        attempt = 0
        while True:
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                if not is_transient(exc) or (not self._reached and not is_restarting(exc)):
                    raise
                if self._policy.window <= 0:
                    raise self._given_up(exc) from exc
                left = self._outage.failed(exc) + self._policy.window - time.monotonic()
                if left <= 0:
                    raise self._given_up(exc) from exc
                self._sleep(min(self._policy.delay(attempt), left))
                attempt += 1
                continue
            self._reached = True
            if self._outage.since is not None:
                self._outage.recovered()
            return result

    def _given_up(self, exc: BaseException) -> StorageError:
        """The one line for an outage that outlasted the window (or any, with retries off)."""
        window = self._policy.window
        waited = f"for more than {window:g} s" if window > 0 else f"(retries are off: {OUTAGE_ENV}=0)"
        where = f"storage {self._outage.display} unreachable {waited} ({self._outage.reason(exc)})"
        if not self._running:
            return StorageError(f"{where}; rerun when it is back ({OUTAGE_ENV} sets how long to wait)")
        if self.get_heartbeat_interval() is None:  # no heartbeats: nobody will notice the trial is dead
            return StorageError(f"{where}; the running trial is lost to this worker and stays RUNNING in the "
                                "study; rerun the worker when the storage is back")
        return StorageError(f"{where}; the running trial is lost to this worker (another worker re-queues it "
                            "when the storage is back); rerun the worker then")

    # Studies.
    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        tries = 0

        def attempt() -> int:
            nonlocal tries
            tries += 1
            try:
                return self._inner.create_new_study(directions, study_name=study_name)
            except DuplicatedStudyError:
                if tries > 1 and study_name is not None:  # our first try created it; its reply was lost
                    return self._inner.get_study_id_from_name(study_name)
                raise

        return self._call(attempt)

    def delete_study(self, study_id: int) -> None:
        tries = 0

        def attempt() -> None:
            nonlocal tries
            tries += 1
            try:
                self._inner.delete_study(study_id)
            except KeyError:
                if tries == 1:  # after a lost reply, "no such study" is our first try's work
                    raise

        self._call(attempt)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._call(self._inner.set_study_user_attr, study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._call(self._inner.set_study_system_attr, study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._call(self._inner.get_study_id_from_name, study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._call(self._inner.get_study_name_from_id, study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._call(self._inner.get_study_directions, study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._call(self._inner.get_study_user_attrs, study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._call(self._inner.get_study_system_attrs, study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._call(self._inner.get_all_studies)

    # Trials.
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        token = uuid.uuid4().hex
        tagged = _tagged(template_trial, token)
        tries = 0

        def attempt() -> int:
            nonlocal tries
            tries += 1
            if tries > 1:  # the first try may have created the trial before its reply was lost
                found = self._find_token(study_id, token)
                if found is not None:
                    return found
            return self._inner.create_new_trial(study_id, tagged)

        trial_id = self._call(attempt)
        if template_trial is None or template_trial.state == TrialState.RUNNING:
            self._running.add(trial_id)
        return trial_id

    def _find_token(self, study_id: int, token: str) -> int | None:
        for trial in self._inner.get_all_trials(study_id, deepcopy=False):
            if trial.system_attrs.get(CREATE_TOKEN_ATTR) == token:
                return self._inner.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        return None

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: BaseDistribution) -> None:
        self._call(self._inner.set_trial_param, trial_id, param_name, param_value_internal, distribution)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self._call(self._inner.get_trial_id_from_study_id_trial_number, study_id, trial_number)

    def get_trial_number_from_id(self, trial_id: int) -> int:
        return self._call(self._inner.get_trial_number_from_id, trial_id)

    def get_trial_param(self, trial_id: int, param_name: str) -> float:
        return self._call(self._inner.get_trial_param, trial_id, param_name)

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Sequence[float] | None = None) -> bool:
        tries = 0

        def attempt() -> bool:
            nonlocal tries
            tries += 1
            try:
                return self._inner.set_trial_state_values(trial_id, state=state, values=values)
            except UpdateFinishedTrialError:
                if tries > 1 and _already(self._inner.get_trial(trial_id), state, values):
                    return True  # our first try finished the trial; its reply was lost
                raise

        try:
            done = self._call(attempt)
        except UpdateFinishedTrialError:
            self._running.discard(trial_id)  # finished by another worker: no longer this one's
            raise
        if state == TrialState.RUNNING and done:
            self._running.add(trial_id)  # a WAITING (re-queued) trial this worker took
        elif state.is_finished():
            self._running.discard(trial_id)
        return done

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self._call(self._inner.set_trial_intermediate_value, trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._call(self._inner.set_trial_user_attr, trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._call(self._inner.set_trial_system_attr, trial_id, key, value)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._call(self._inner.get_trial, trial_id)

    def get_all_trials(self, study_id: int, deepcopy: bool = True,
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self._call(self._inner.get_all_trials, study_id, deepcopy=deepcopy, states=states)

    def get_n_trials(self, study_id: int, state: tuple[TrialState, ...] | TrialState | None = None) -> int:
        return self._call(self._inner.get_n_trials, study_id, state)

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        return self._call(self._inner.get_best_trial, study_id)

    def get_trial_params(self, trial_id: int) -> dict[str, Any]:
        return self._call(self._inner.get_trial_params, trial_id)

    def get_trial_user_attrs(self, trial_id: int) -> dict[str, Any]:
        return self._call(self._inner.get_trial_user_attrs, trial_id)

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, Any]:
        return self._call(self._inner.get_trial_system_attrs, trial_id)

    def remove_session(self) -> None:
        self._inner.remove_session()

    def check_trial_is_updatable(self, trial_id: int, trial_state: TrialState) -> None:
        self._inner.check_trial_is_updatable(trial_id, trial_state)

    # Heartbeats: delegated when `inner` has them; `get_heartbeat_interval` None turns them off.
    def record_heartbeat(self, trial_id: int) -> None:
        assert isinstance(self._inner, BaseHeartbeat)
        try:
            self._call(self._inner.record_heartbeat, trial_id)
        except StorageError as exc:
            # Optuna's heartbeat thread would die with a traceback; it tries again at its next beat,
            # and the trial's own next call says what happened, once (the CLI's one line).
            log.debug("heartbeat of trial %d skipped: %s", trial_id, exc)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        assert isinstance(self._inner, BaseHeartbeat)
        stale = self._call(self._inner._get_stale_trial_ids, study_id)
        # Optuna's own check at the start of every `study.optimize` fails these trials with no reason,
        # often before aeopt's: the worker that still runs one (stalled past the grace period) then
        # cannot tell why its trial was failed. The reason goes on first, whoever fails the trial.
        reason = f"{LOST_REASON}: no heartbeat for {grace_seconds(self._inner)} s"
        for trial_id in stale:
            try:
                self._call(self._inner.set_trial_user_attr, trial_id, FAIL_REASON, reason)
            except (UpdateFinishedTrialError, KeyError):
                pass  # already failed by another worker, with its reason
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._inner.get_heartbeat_interval() if isinstance(self._inner, BaseHeartbeat) else None

    def get_heartbeat_stale_trial_callback(self) -> Callable | None:
        if isinstance(self._inner, BaseHeartbeat):
            return self._inner.get_heartbeat_stale_trial_callback()
        return None


def _tagged(template: FrozenTrial | None, token: str) -> FrozenTrial:
    """The trial to create, with its creation token (a plain RUNNING trial when no template is given)."""
    if template is None:
        return FrozenTrial(number=-1, state=TrialState.RUNNING, value=None, datetime_start=datetime.now(),
                           datetime_complete=None, params={}, distributions={}, user_attrs={},
                           system_attrs={CREATE_TOKEN_ATTR: token}, intermediate_values={}, trial_id=-1)
    tagged = copy.copy(template)  # a shallow copy: only its system attrs are replaced, not changed
    tagged.system_attrs = {**template.system_attrs, CREATE_TOKEN_ATTR: token}
    return tagged


def _already(trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> bool:
    if trial.state != state:
        return False
    return values is None or list(trial.values or []) == [float(v) for v in values]
