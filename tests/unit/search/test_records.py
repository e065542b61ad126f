"""TrialRecord and StudyCounts against a real (in-memory) Optuna study: what the objective
writes is what every reader gets back, and states are counted once, here."""

from __future__ import annotations

import math
import socket
import statistics

import optuna
import pytest
from optuna.trial import TrialState

from aeopt.search.records import StudyCounts, TrialRecord, best_trial, best_value_text, value_text

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_a_written_record_reads_back_whole():
    study = optuna.create_study()
    trial = study.ask()
    TrialRecord.started("cuda:1").write(trial)
    written = TrialRecord(fold_losses=[0.2, 0.25, 0.3], cv_std=0.04, epochs=7, best_epoch=5, seconds=12.5,
                          images_per_second=3400.0)
    written.write(trial)
    study.tell(trial, 0.25)
    back = TrialRecord.of(study.trials[0])
    assert back == TrialRecord(fold_losses=[0.2, 0.25, 0.3], cv_std=0.04, epochs=7, best_epoch=5,
                               seconds=12.5, images_per_second=3400.0, device="cuda:1",
                               host=socket.gethostname())
    # Only set fields become user attrs: no None values or empty lists in the storage.
    assert set(study.trials[0].user_attrs) == {"fold_losses", "cv_std", "epochs", "best_epoch", "seconds",
                                                "images_per_second", "device", "host"}


def test_write_stores_only_the_named_fields():
    study = optuna.create_study()
    trial = study.ask()
    record = TrialRecord(epochs=3, fold_losses=[0.5], fail_reason="NonFiniteLossError: nan")
    record.write(trial, "fail_reason")
    study.tell(trial, state=TrialState.FAIL)
    assert study.trials[0].user_attrs == {"fail_reason": "NonFiniteLossError: nan"}
    assert TrialRecord.of(study.trials[0]).epochs is None


def test_old_or_partial_attrs_still_read():
    study = optuna.create_study()
    # Older aeopt wrote no cv_std; unknown keys and None values are ignored.
    study.add_trial(optuna.trial.create_trial(value=0.3, user_attrs={"fold_losses": [0.2, 0.4], "epochs": 3,
                                                                    "something_else": 1, "device": None}))
    record = TrialRecord.of(study.trials[0])
    assert record.cv_std == pytest.approx(statistics.pstdev([0.2, 0.4]))
    assert record.epochs == 3 and record.device is None and record.fold_val_acc == []


def test_counts_by_state_on_a_real_study():
    study = optuna.create_study()
    for state, value in [(TrialState.COMPLETE, 0.3), (TrialState.COMPLETE, 0.2), (TrialState.PRUNED, None),
                         (TrialState.FAIL, None), (TrialState.FAIL, None), (TrialState.FAIL, None)]:
        steps = {1: 0.9} if state == TrialState.PRUNED else {}
        study.add_trial(optuna.trial.create_trial(state=state, value=value, intermediate_values=steps))
    study.ask()  # running
    study.enqueue_trial({})  # waiting
    counts = StudyCounts.of(study)
    assert counts == StudyCounts(complete=2, pruned=1, failed=3, running=1, waiting=1)
    assert counts.finished == 3 and counts.total == 8
    assert counts == StudyCounts.of(study.get_trials(deepcopy=False))
    assert counts.text() == "2 complete, 1 pruned, 3 failed, 1 running, 1 waiting"
    assert StudyCounts().text() == "no trials"
    assert StudyCounts(pruned=2).text() == "2 pruned"


def test_best_value_text():
    study = optuna.create_study()
    assert best_trial(study) is None and best_value_text(study) == "-"
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
    assert best_value_text(study) == "-"
    study.add_trial(optuna.trial.create_trial(value=0.0123456))
    study.add_trial(optuna.trial.create_trial(value=0.5))
    assert best_value_text(study) == "0.012346 (trial 1)"
    assert best_value_text(study, digits=2) == "0.012 (trial 1)"
    assert value_text(optuna.trial.create_trial(value=math.inf)) == "-"
