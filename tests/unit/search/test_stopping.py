"""Stop signals landing in the middle of storage writes leave the SQLite database unlocked."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time

import optuna
import pytest

from aeopt.search.stopping import (
    StopSignal,
    clear_stop_requests,
    install_stop_handlers,
    raise_if_stop_requested,
    stop_is_safe_here,
)
from aeopt.search.storage import open_storage


@pytest.fixture
def stop_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    clear_stop_requests()
    install_stop_handlers()
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)
    clear_stop_requests()


def _writable_at_once(path) -> bool:
    """Whether another connection can write now (a lock left behind by the stop would refuse it)."""
    con = sqlite3.connect(path, timeout=0.5)
    try:
        con.execute("CREATE TABLE IF NOT EXISTS probe (x)")
        con.execute("INSERT INTO probe VALUES (1)")
        con.commit()
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        con.close()


def test_signals_during_storage_writes_leave_no_lock(tmp_path, stop_handlers):
    # Before aeopt.search.stopping, a signal raised inside SQLAlchemy kept the write lock (4 stops
    # of 4 left the database locked); CI saw a quickstart hang on "database is locked" after Ctrl-C.
    path = tmp_path / "s.db"
    study = optuna.create_study(storage=open_storage(f"sqlite:///{path}").optuna, study_name="s")
    done = threading.Event()

    def kick() -> None:
        while not done.wait(0.02):
            os.kill(os.getpid(), signal.SIGINT)

    stops, locked, writes = 0, 0, 0
    kicker = threading.Thread(target=kick, daemon=True)
    kicker.start()
    try:
        end = time.monotonic() + 3
        while time.monotonic() < end and stops < 40:
            try:
                writes += 1
                study.set_user_attr("writes", writes)
                raise_if_stop_requested()
            except StopSignal:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # no stop while probing
                stops += 1
                clear_stop_requests()
                locked += not _writable_at_once(path)
                install_stop_handlers()
    finally:
        done.set()
        kicker.join()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    assert stops >= 5, f"only {stops} stops in {writes} writes: the signals did not arrive"
    assert locked == 0, f"{locked} of {stops} stops left the database locked"


def test_a_stop_raises_at_once_outside_storage_code(stop_handlers):
    with pytest.raises(StopSignal) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises here, long before the sleep ends
    assert stop.value.signum == signal.SIGTERM


def test_frames_inside_sqlalchemy_are_not_safe(tmp_path):
    import sqlalchemy

    seen: list[bool] = []
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path}/e.db")
    # An event listener runs inside SQLAlchemy's connect: the stack a signal would land on.
    sqlalchemy.event.listen(engine, "connect", lambda *_: seen.append(stop_is_safe_here(_caller())))
    with engine.connect():
        pass
    assert seen == [False]
    assert stop_is_safe_here(_caller())


def _caller():
    import sys

    return sys._getframe(1)


def test_frames_inside_an_import_are_not_safe(tmp_path, monkeypatch):
    (tmp_path / "aeopt_probe_module.py").write_text(
        "import sys\nfrom aeopt.search.stopping import stop_is_safe_here\n"
        "SAFE = stop_is_safe_here(sys._getframe())\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import aeopt_probe_module  # noqa: PLC0415 (the import is what is tested)

    assert aeopt_probe_module.SAFE is False


def test_frames_inside_optunas_heartbeat_thread_start_are_not_safe(monkeypatch):
    """A stop raised there would orphan the non-daemon heartbeat thread: the process would never exit."""
    from optuna.storages import _heartbeat

    seen: list[bool] = []

    class _Thread:  # stands in for threading.Thread inside HeartbeatThread.start
        def __init__(self, *args, **kwargs):
            pass

        def start(self):
            seen.append(stop_is_safe_here(_caller()))

    monkeypatch.setattr(_heartbeat, "Thread", _Thread)
    _heartbeat.HeartbeatThread(0, None).start()
    assert seen == [False]


class _SignalWhileAsked(optuna.samplers.RandomSampler):
    """A real sampler that receives SIGINT while Optuna sets a trial up (inside `Study.ask`, after
    the RUNNING trial was created): where CI's Ctrl-C'd quickstart once left a trial RUNNING."""

    def __init__(self, at_trial: int):
        super().__init__(seed=0)
        self.at_trial = at_trial

    def before_trial(self, study, trial):
        super().before_trial(study, trial)
        if trial.number == self.at_trial:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs here, inside Study.ask


def test_a_stop_while_optuna_sets_a_trial_up_fails_that_trial(tmp_path, stop_handlers):
    from aeopt.search.records import TrialRecord
    from aeopt.search.worker import run_trials

    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path}/a.db").optuna,
                                study_name="a", sampler=_SignalWhileAsked(at_trial=1))

    def objective(trial):
        return trial.suggest_float("x", 0.0, 1.0)

    with pytest.raises(StopSignal):
        run_trials(study, objective, target=5, heartbeat=None)
    states = [t.state for t in study.get_trials()]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]
    assert TrialRecord.of(study.trials[1]).fail_reason == f"stopped by signal {signal.SIGINT.value}"
