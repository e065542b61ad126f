"""A stale trial failed by Optuna's own check (inside `study.optimize`) still carries its fail_reason."""

from __future__ import annotations

import time

import optuna
from optuna.trial import TrialState

from aeopt.search.heartbeat import FAIL_REASON, LOST_REASON
from aeopt.search.storage import open_storage


def test_optunas_stale_check_leaves_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("AEOPT_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("AEOPT_GRACE_PERIOD", "1")
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}").optuna
    study = optuna.create_study(study_name="s", storage=storage)
    lost = study.ask()  # a worker that beat once, then died
    storage.record_heartbeat(lost._trial_id)
    time.sleep(2.5)  # SQLite keeps heartbeat times in whole seconds
    optuna.storages.fail_stale_trials(study)  # what every `study.optimize` runs first
    trials = study.get_trials(deepcopy=False)
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs[FAIL_REASON] == f"{LOST_REASON}: no heartbeat for 1 s"
    # Its re-queued copy (Optuna's retry callback) runs with the reason of its predecessor attached,
    # which the worker clears when it starts the trial (search/worker.py).
    assert [t.state for t in trials[1:]] == [TrialState.WAITING]
