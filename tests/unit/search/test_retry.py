"""The retrying storage: which errors are waited out, backoff bounds, the outage window, idempotent
writes after a lost reply, and `open_storage(create=False)`."""

from __future__ import annotations

import logging
import random
import sqlite3

import optuna
import psycopg
import pytest
import sqlalchemy
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.storages import InMemoryStorage
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.study import StudyDirection
from optuna.trial import TrialState

from aeopt.errors import StorageError
from aeopt.search.heartbeat import grace_seconds
from aeopt.search.retry import (
    CREATE_TOKEN_ATTR,
    RetryingStorage,
    RetryPolicy,
    is_restarting,
    is_transient,
    outage_seconds,
)
from aeopt.search.storage import open_storage
from tests.conftest import _missing


def _refused() -> Exception:
    """A real refused connection, as psycopg raises it."""
    try:
        psycopg.connect("host=127.0.0.1 port=1 user=postgres dbname=postgres", connect_timeout=2)
    except psycopg.OperationalError as exc:
        return exc
    raise AssertionError("port 1 accepted a connection")


def _wrapped(cause: Exception, message: str = "(psycopg.OperationalError)") -> StorageInternalError:
    """Optuna's StorageInternalError raised from SQLAlchemy's error raised from the driver's, as
    RDBStorage's sessions raise them."""
    try:
        try:
            raise sqlalchemy.exc.OperationalError("SELECT 1", {}, cause) from cause
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise StorageInternalError("An exception is raised during the commit.") from exc
    except StorageInternalError as exc:
        return exc


def test_connection_outages_are_transient():
    refused = _refused()
    assert is_transient(refused) and is_transient(_wrapped(refused))
    assert is_transient(psycopg.errors.AdminShutdown("terminating connection due to administrator command"))
    assert is_transient(psycopg.errors.SerializationFailure("could not serialize access"))
    assert is_transient(psycopg.errors.DeadlockDetected("deadlock detected"))
    assert is_transient(psycopg.OperationalError("server closed the connection unexpectedly"))
    assert is_transient(psycopg.OperationalError("the database system is shutting down"))
    closed = psycopg.InterfaceError("connection is closed")
    assert is_transient(sqlalchemy.exc.InterfaceError("SELECT 1", {}, closed))
    invalidated = sqlalchemy.exc.DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True)
    assert is_transient(invalidated)
    assert is_transient(sqlite3.OperationalError("database is locked"))
    assert is_transient(ConnectionResetError(104, "Connection reset by peer"))
    import redis

    with pytest.raises(redis.exceptions.ConnectionError) as caught:
        redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1).ping()
    assert is_transient(caught.value)


def test_grpc_unavailable_is_transient():
    proxy = optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=1)
    try:
        proxy.get_all_studies()
    except Exception as exc:
        assert is_transient(exc), repr(exc)
    else:
        pytest.fail("a proxy on port 1 answered")


def test_configuration_errors_are_not_transient(tmp_path):
    login = psycopg.OperationalError('connection failed: connection to server at "127.0.0.1", port 5432 '
                                     'failed: FATAL:  password authentication failed for user "aeopt"')
    assert not is_transient(login) and not is_transient(_wrapped(login))
    missing_db = psycopg.OperationalError('connection failed: FATAL:  database "nodb" does not exist')
    assert not is_transient(_wrapped(missing_db))
    with pytest.raises(sqlalchemy.exc.OperationalError) as caught:
        with sqlalchemy.create_engine(f"sqlite:///{tmp_path}/x.db").connect() as conn:
            conn.execute(sqlalchemy.text("SELECT * FROM trials"))
    assert not is_transient(caught.value)  # no such table
    assert not is_transient(KeyError("No study with name 'nope'"))
    assert not is_transient(ValueError("bad value")) and not is_transient(UpdateFinishedTrialError("done"))
    assert not is_restarting(_refused())  # a refusal at first contact is a wrong URL until proven otherwise
    assert is_restarting(psycopg.errors.CannotConnectNow("the database system is starting up"))


def test_backoff_doubles_with_jitter_within_bounds():
    policy = RetryPolicy(window=60, base=0.25, cap=5.0, rng=random.Random(0))
    for attempt in range(12):
        ceiling = min(5.0, 0.25 * 2 ** attempt)
        delays = [policy.delay(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), attempt
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not one fixed value
    assert policy.delay(10_000) <= 5.0


def test_outage_window_from_the_environment(monkeypatch):
    monkeypatch.delenv("AEOPT_OUTAGE_SECONDS", raising=False)
    assert outage_seconds() == 180
    monkeypatch.setenv("AEOPT_OUTAGE_SECONDS", "0")
    assert outage_seconds() == 0
    for bad in ("-1", "soon", "nan"):
        monkeypatch.setenv("AEOPT_OUTAGE_SECONDS", bad)
        with pytest.raises(StorageError, match="AEOPT_OUTAGE_SECONDS must be a number"):
            outage_seconds()


class _Flaky(InMemoryStorage):
    """An in-memory storage whose named calls fail `failures` times with a real driver error; with
    `lost_reply`, a failing write is applied first (the server committed it, the reply was lost)."""

    def __init__(self, error: Exception, failures: int, methods: tuple[str, ...], lost_reply: bool = False):
        super().__init__()
        self.error, self.failures, self.methods, self.lost_reply = error, failures, methods, lost_reply
        self.calls = 0

    def _maybe_fail(self, name: str, apply):
        if name in self.methods:
            self.calls += 1
            if self.failures > 0:
                self.failures -= 1
                if self.lost_reply:
                    apply()
                raise self.error
        return apply()

    def get_all_studies(self):
        return self._maybe_fail("get_all_studies", super().get_all_studies)

    def create_new_trial(self, study_id, template_trial=None):
        return self._maybe_fail("create_new_trial", lambda: super(_Flaky, self).create_new_trial(study_id,
                                                                                                  template_trial))

    def set_trial_state_values(self, trial_id, state, values=None):
        return self._maybe_fail("set_trial_state_values",
                                lambda: super(_Flaky, self).set_trial_state_values(trial_id, state, values))


def _retrying(inner, window: float = 30.0, sleeps: list | None = None) -> RetryingStorage:
    record = sleeps if sleeps is not None else []
    return RetryingStorage(inner, display="test://db", reached=True,
                           policy=RetryPolicy(window=window, base=0.01, cap=0.05), sleep=record.append)


def test_transient_errors_are_retried_and_logged_once(caplog):
    inner = _Flaky(_wrapped(_refused()), failures=4, methods=("get_all_studies",))
    sleeps: list[float] = []
    with caplog.at_level(logging.WARNING, logger="aeopt.search.retry"):
        assert _retrying(inner, sleeps=sleeps).get_all_studies() == []
    assert inner.calls == 5 and len(sleeps) == 4 and all(0 < s <= 0.05 for s in sleeps)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("storage test://db unreachable (OperationalError: connection failed")
    assert lines[0].endswith("retrying for up to 30 s")
    assert lines[1].startswith("storage test://db reachable again after")


def test_other_errors_are_raised_at_once():
    error = KeyError("No study named 'nope'")
    inner = _Flaky(error, failures=1, methods=("get_all_studies",))
    with pytest.raises(KeyError):
        _retrying(inner).get_all_studies()
    assert inner.calls == 1


def test_no_retries_with_a_zero_window_or_before_first_contact():
    error = _wrapped(_refused())
    inner = _Flaky(error, failures=1, methods=("get_all_studies",))
    with pytest.raises(StorageError) as caught:
        _retrying(inner, window=0).get_all_studies()
    assert caught.value.__cause__ is error and inner.calls == 1
    assert str(caught.value).startswith("storage test://db unreachable (retries are off: "
                                        "AEOPT_OUTAGE_SECONDS=0)")
    fresh = RetryingStorage(_Flaky(error, failures=1, methods=("get_all_studies",)), display="x",
                            policy=RetryPolicy(window=30), sleep=lambda s: None)
    with pytest.raises(StorageInternalError):
        fresh.get_all_studies()  # never reached: a refusal is a wrong URL, said at once


def test_an_outage_longer_than_the_window_is_one_line_from_the_original_error():
    error = _wrapped(_refused())
    inner = _Flaky(error, failures=10**9, methods=("get_all_studies", "set_trial_state_values"))
    storage = RetryingStorage(inner, display="postgresql://u:***@db/x", reached=True,
                              policy=RetryPolicy(window=0.3, base=0.01, cap=0.05),
                              url="postgresql://u:hunter2@db/x")
    study_id = storage.create_new_study([StudyDirection.MINIMIZE], "s")
    trial_id = storage.create_new_trial(study_id)  # asked just before the outage
    with pytest.raises(StorageError) as caught:
        storage.get_all_studies()
    assert caught.value.__cause__ is error and 4 < inner.calls < 200
    said = ('storage postgresql://u:***@db/x unreachable for more than 0.3 s (OperationalError: connection '
            'failed: connection to server at "127.0.0.1", port 1 failed: Connection refused)')
    # The window runs from the outage's start: a later call gives up at once, and says that this
    # worker's running trial is lost (no heartbeats here: nobody re-queues it).
    calls = inner.calls
    with pytest.raises(StorageError) as caught:
        storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [1.0])
    assert inner.calls == calls + 1
    assert str(caught.value) == (f"{said}; the running trial is lost to this worker and stays RUNNING in the "
                                 "study; rerun the worker when the storage is back")
    # A process with no trial running (a reader) is told to rerun.
    reader = RetryingStorage(_Flaky(error, failures=10**9, methods=("get_all_studies",)), display="test://db",
                             reached=True, policy=RetryPolicy(window=0.1, base=0.01, cap=0.05))
    with pytest.raises(StorageError, match=r"^storage test://db unreachable for more than 0.1 s \(.*\); "
                       r"rerun when it is back \(AEOPT_OUTAGE_SECONDS sets how long to wait\)$"):
        reader.get_all_studies()


class _FlakyBeats(_Flaky, BaseHeartbeat):
    """`_Flaky` with heartbeats (every second), which fail as its named calls do."""

    def record_heartbeat(self, trial_id):
        return self._maybe_fail("record_heartbeat", lambda: None)

    def _get_stale_trial_ids(self, study_id):
        return []

    def get_heartbeat_interval(self):
        return 1

    def get_heartbeat_stale_trial_callback(self):
        return None


def test_a_heartbeat_past_the_window_is_skipped_and_the_reason_scrubbed(caplog):
    """Optuna's heartbeat thread must not die with a traceback; the trial's own call says that the trial
    is lost and that another worker re-queues it; a password the driver repeats is masked."""
    error = _wrapped(psycopg.OperationalError("connection to server failed: no route for hunter2"))
    inner = _FlakyBeats(error, failures=10**9, methods=("record_heartbeat", "set_trial_state_values"))
    storage = RetryingStorage(inner, display="postgresql://u:***@db/x", reached=True,
                              policy=RetryPolicy(window=0.2, base=0.01, cap=0.05),
                              url="postgresql://u:hunter2@db/x")
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    with caplog.at_level(logging.DEBUG, logger="aeopt.search.retry"):
        storage.record_heartbeat(trial._trial_id)  # gives up after the window, quietly
        with pytest.raises(StorageError) as caught:
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    said = str(caught.value)
    assert said == ("storage postgresql://u:***@db/x unreachable for more than 0.2 s (OperationalError: "
                    "connection to server failed: no route for ***); the running trial is lost to this "
                    "worker (another worker re-queues it when the storage is back); rerun the worker then")
    assert "hunter2" not in said + caplog.text
    assert [r.levelname for r in caplog.records if r.name == "aeopt.search.retry"] == ["WARNING", "DEBUG"]


def test_a_tell_whose_reply_was_lost_is_done_not_an_error():
    inner = _Flaky(_wrapped(_refused()), failures=1, methods=("set_trial_state_values",), lost_reply=True)
    storage = _retrying(inner)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    study.tell(trial, 0.5)  # committed, reply lost, retried: "already COMPLETE with 0.5" is success
    assert inner.calls == 2
    (done,) = study.get_trials()
    assert done.state == TrialState.COMPLETE and done.value == 0.5
    # A tell of a trial finished differently (another worker failed it) still raises.
    other = study.ask()
    study_id = storage.get_study_id_from_name(study.study_name)
    other_id = storage.get_trial_id_from_study_id_trial_number(study_id, other.number)
    inner.set_trial_state_values(other_id, TrialState.FAIL)
    with pytest.raises(UpdateFinishedTrialError):
        storage.set_trial_state_values(other_id, TrialState.COMPLETE, [1.0])


def test_an_ask_whose_reply_was_lost_leaves_no_extra_trial():
    inner = _Flaky(_wrapped(_refused()), failures=1, methods=("create_new_trial",), lost_reply=True)
    study = optuna.create_study(storage=_retrying(inner))
    trial = study.ask()
    trials = study.get_trials()
    assert len(trials) == 1 and trials[0].number == trial.number
    assert trials[0].state == TrialState.RUNNING and CREATE_TOKEN_ATTR in trials[0].system_attrs
    study.enqueue_trial({"x": 1.0})  # a template trial keeps its own fields, plus the token
    (waiting,) = study.get_trials(states=(TrialState.WAITING,))
    assert waiting.system_attrs["fixed_params"] == {"x": 1.0} and CREATE_TOKEN_ATTR in waiting.system_attrs


def test_create_and_delete_study_after_a_lost_reply():
    class LostStudyReply(InMemoryStorage):
        lost = 2

        def create_new_study(self, directions, study_name=None):
            study_id = super().create_new_study(directions, study_name)
            if self.lost:
                self.lost -= 1
                raise _wrapped(_refused())
            return study_id

        def delete_study(self, study_id):
            super().delete_study(study_id)
            if self.lost:
                self.lost -= 1
                raise _wrapped(_refused())

    inner = LostStudyReply()
    storage = _retrying(inner)
    study_id = storage.create_new_study([StudyDirection.MINIMIZE], "s")
    assert storage.get_study_id_from_name("s") == study_id
    storage.delete_study(study_id)
    assert storage.get_all_studies() == []


def test_open_storage_wraps_every_storage_and_keeps_heartbeats(tmp_path, monkeypatch):
    monkeypatch.setenv("AEOPT_HEARTBEAT_INTERVAL", "3")
    monkeypatch.setenv("AEOPT_GRACE_PERIOD", "11")
    for url in (f"sqlite:///{tmp_path}/s.db", f"journal:///{tmp_path}/j.log"):
        storage = open_storage(url)
        assert isinstance(storage.optuna, RetryingStorage) and isinstance(storage.optuna, BaseHeartbeat)
        assert storage.heartbeat and is_heartbeat_enabled(storage.optuna)
        assert grace_seconds(storage.optuna) == 11 and storage.optuna.get_heartbeat_interval() == 3
        study = optuna.create_study(storage=storage.optuna, study_name="s")
        assert study._storage is storage.optuna  # Optuna uses the wrapper as it is
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 2
    no_heartbeat = RetryingStorage(InMemoryStorage(), display="mem")
    assert not is_heartbeat_enabled(no_heartbeat)


def test_open_storage_on_postgresql(pg_url):
    storage = open_storage(pg_url)
    assert storage.kind == "postgresql" and storage.heartbeat and not storage.single_machine
    optuna.create_study(storage=storage.optuna, study_name="retry_pg").optimize(lambda t: 1.0, n_trials=1)
    assert "retry_pg" in [s.study_name for s in storage.optuna.get_all_studies()]
    optuna.delete_study(study_name="retry_pg", storage=storage.optuna)


@pytest.mark.parametrize("url", ["sqlite:///{d}/typo/x.db", "sqlite:///{d}/x.db", "journal:///{d}/typo/j.log"])
def test_read_only_open_of_a_missing_file_creates_nothing(url, tmp_path):
    url = url.format(d=tmp_path)
    with pytest.raises(StorageError) as caught:
        open_storage(url, create=False)
    where = url.split(":///", 1)[1]
    assert str(caught.value) == (f"no study storage at {url} (no file {where}): create a study first "
                                 "with `aeopt study create conv_ae`")
    assert list(tmp_path.iterdir()) == []
    open_storage(url)  # create=True (study create) makes it, and then a reader opens it
    assert open_storage(url, create=False).optuna.get_all_studies() == []


def test_connections_terminated_by_the_server_are_replaced(pg_url):
    """Every connection of this storage is terminated by the server (as a restart does)."""
    try:
        admin = psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True)
    except psycopg.OperationalError:
        _missing("PostgreSQL at 127.0.0.1:5432 is needed to terminate connections")
    storage = open_storage(pg_url)
    study = optuna.create_study(storage=storage.optuna)
    with admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE application_name = 'aeopt' AND datname = %s", (pg_url.rpartition("/")[2],))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 2
