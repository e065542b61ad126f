"""The journal lease: a journal storage with heartbeats as RDB storages have them, on a real journal
file; a trial whose worker went silent is failed with a reason and re-queued with its parameters."""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from aeopt.search.heartbeat import HEARTBEAT_ATTR, HeartbeatJournalStorage, fail_stale_trials, grace_seconds
from aeopt.search.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _storage(tmp_path, grace: int = 1) -> HeartbeatJournalStorage:
    return HeartbeatJournalStorage(
        JournalFileBackend(str(tmp_path / "j.log")), heartbeat_interval=1, grace_period=grace,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3))


def _tid(storage, number: int) -> int:
    """The storage's id of trial `number` of study "s" (public API only)."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("s"), number)


def test_journal_storages_have_heartbeats(tmp_path, monkeypatch):
    monkeypatch.setenv("AEOPT_HEARTBEAT_INTERVAL", "2")
    monkeypatch.setenv("AEOPT_GRACE_PERIOD", "7")
    storage = open_storage(f"journal:///{tmp_path}/j.log")
    assert storage.heartbeat and isinstance(storage.optuna.inner, HeartbeatJournalStorage)
    assert storage.optuna.get_heartbeat_interval() == 2 and grace_seconds(storage.optuna) == 7
    assert storage.optuna.get_heartbeat_stale_trial_callback() is not None
    assert grace_seconds(optuna.storages.InMemoryStorage()) is None


def test_a_silent_trial_is_failed_with_a_reason_and_requeued(tmp_path):
    storage = _storage(tmp_path)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    storage.record_heartbeat(_tid(storage, 0))
    assert fail_stale_trials(study, storage) == []  # beating: not stale
    time.sleep(1.3)  # longer than the grace period without a beat
    assert fail_stale_trials(study, storage) == [0]
    assert fail_stale_trials(study, storage) == []  # once
    dead, copy = study.trials
    assert dead.state == TrialState.FAIL
    assert dead.user_attrs["fail_reason"] == "worker lost: no heartbeat for 1 s"
    assert copy.state == TrialState.WAITING and copy.params == dead.params
    assert copy.system_attrs["failed_trial"] == 0
    # The copy carries the dead trial's last beat; popped now, it is not stale before its own first beat.
    rerun = study.ask()
    assert rerun.number == 1 and HEARTBEAT_ATTR in storage.get_trial(_tid(storage, 1)).system_attrs
    assert fail_stale_trials(study, storage) == []


def test_optimize_beats_while_a_trial_runs(tmp_path):
    storage = _storage(tmp_path, grace=2)
    study = optuna.create_study(storage=storage, study_name="s")
    seen = []

    def objective(trial: optuna.Trial) -> float:
        time.sleep(2.5)  # past the grace period: only the heartbeat thread keeps the trial alive
        seen.append(fail_stale_trials(study, storage))
        return 0.0

    study.optimize(objective, n_trials=1)
    assert seen == [[]] and study.trials[0].state == TrialState.COMPLETE
    assert HEARTBEAT_ATTR in study.trials[0].system_attrs


def test_a_beat_after_the_trial_was_failed_elsewhere_is_ignored(tmp_path):
    storage = _storage(tmp_path)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    study.tell(trial, state=TrialState.FAIL)
    storage.record_heartbeat(_tid(storage, 0))  # no UpdateFinishedTrialError from the heartbeat thread


@pytest.mark.parametrize("interval,grace", [(0, 5), (5, 0)])
def test_interval_and_grace_must_be_positive(tmp_path, interval, grace):
    with pytest.raises(ValueError):
        HeartbeatJournalStorage(JournalFileBackend(str(tmp_path / "j.log")), heartbeat_interval=interval,
                                grace_period=grace)


def test_the_grace_period_of_an_rdb_study_is_the_storages(tmp_path, monkeypatch):
    monkeypatch.setenv("AEOPT_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("AEOPT_GRACE_PERIOD", "3")
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(storage=storage.optuna, study_name="s")
    assert storage.heartbeat and grace_seconds(study._storage) == 3  # through Optuna's cache wrapper
