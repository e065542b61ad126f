"""A worker never loops on failures, and every trial it fails says why: the failure limits and the
fail reasons of the trial loop, on real in-memory studies with plain objectives (no training)."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from aeopt.errors import AeoptError, ConfigError
from aeopt.search.objective import SurplusTrialError
from aeopt.search.records import StudyCounts
from aeopt.search.worker import FailureLimits, StopSignal, TooManyFailuresError, run_trials
from aeopt.training.engine import NonFiniteLossError

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _always_nan(trial: optuna.Trial) -> float:
    trial.suggest_float("x", 0, 1)
    raise NonFiniteLossError("validation loss is nan at epoch 1")


def test_a_worker_stops_after_k_failures_in_a_row_naming_the_last_reason():
    study = optuna.create_study()
    with pytest.raises(TooManyFailuresError) as err:
        run_trials(study, _always_nan, target=2, heartbeat=None, limits=FailureLimits(consecutive=3))
    assert StudyCounts.of(study) == StudyCounts(failed=3)
    message = str(err.value)
    assert isinstance(err.value, AeoptError) and len(message.splitlines()) == 1
    assert "3 trials in a row failed" in message
    assert "NonFiniteLossError: validation loss is nan at epoch 1" in message
    # The objective recorded nothing itself: the worker did, for every failed trial.
    assert all(t.user_attrs["fail_reason"].startswith("NonFiniteLossError") for t in study.trials)


def test_a_success_resets_the_streak():
    outcomes = iter([0, 0, 1, 0, 0, 1, 1])  # 1: complete, 0: NaN

    def objective(trial: optuna.Trial) -> float:
        if next(outcomes):
            return 0.5
        raise NonFiniteLossError("nan")

    study = optuna.create_study()
    why = run_trials(study, objective, target=3, heartbeat=None, limits=FailureLimits(consecutive=3))
    assert why == "the study holds 3 finished trials"
    assert StudyCounts.of(study) == StudyCounts(complete=3, failed=4)


def _add_failed(study: optuna.Study, n: int, reason: str = "NonFiniteLossError: nan") -> None:
    for _ in range(n):
        study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": reason}))


def test_the_study_budget_stops_every_worker_before_a_new_trial():
    study = optuna.create_study()
    _add_failed(study, 10)  # max(10, 2 x 2): ten failed trials are still within the budget
    assert run_trials(study, lambda t: 0.5, target=2, heartbeat=None,
                      limits=FailureLimits()) == "the study holds 2 finished trials"
    study = optuna.create_study()
    _add_failed(study, 11)
    with pytest.raises(TooManyFailuresError, match=r"holds 11 failed trials \(more than 10\), the last: "
                                                   r"NonFiniteLossError: nan"):
        run_trials(study, lambda t: 0.5, target=2, heartbeat=None, limits=FailureLimits())
    assert StudyCounts.of(study).total == 11  # no trial started
    # A configured budget, and a budget that grows with the target.
    with pytest.raises(TooManyFailuresError, match="more than 4"):
        run_trials(study, lambda t: 0.5, target=2, heartbeat=None, limits=FailureLimits(study=4))
    assert run_trials(study, lambda t: 0.5, target=6, heartbeat=None,
                      limits=FailureLimits()) == "the study holds 6 finished trials"


@pytest.mark.parametrize("reason", [
    "SurplusTrialError: the study already has 2 trials finished or running",
    "stopped by signal 15",  # Ctrl-C, `aeopt launch` stopping, a preempted machine: not the spec's fault
    "worker lost: no heartbeat for 120 s",  # a dead worker's trial, re-queued at most 3 times
    "deadline",
])
def test_trials_that_say_nothing_of_the_study_count_against_no_budget(reason):
    study = optuna.create_study()
    _add_failed(study, 12, reason=reason)
    assert run_trials(study, lambda t: 0.5, target=2, heartbeat=None,
                      limits=FailureLimits()) == "the study holds 2 finished trials"


def test_surplus_trials_count_against_no_streak():

    def surplus(trial: optuna.Trial) -> float:
        raise SurplusTrialError("raced")

    # Nor against a worker's streak: a raced-for trial says nothing about the spec.
    fresh = optuna.create_study()
    assert run_trials(fresh, surplus, target=None, heartbeat=None, timeout=0.5,
                      limits=FailureLimits(consecutive=1)) == "timeout"


def test_limits_from_arguments_env_and_defaults(monkeypatch):
    monkeypatch.delenv("AEOPT_MAX_CONSECUTIVE_FAILURES", raising=False)
    monkeypatch.delenv("AEOPT_MAX_FAILED_TRIALS", raising=False)
    assert FailureLimits.from_env() == FailureLimits(consecutive=5, study=None)
    assert FailureLimits().study_budget(None, 0) == 10 and FailureLimits().study_budget(30, 0) == 60
    assert FailureLimits().study_budget(None, 40) == 80  # no target: twice the finished trials
    monkeypatch.setenv("AEOPT_MAX_CONSECUTIVE_FAILURES", "2")
    monkeypatch.setenv("AEOPT_MAX_FAILED_TRIALS", "7")
    assert FailureLimits.from_env() == FailureLimits(consecutive=2, study=7)
    assert FailureLimits.from_env(9, 3) == FailureLimits(consecutive=9, study=3)  # arguments win
    monkeypatch.setenv("AEOPT_MAX_FAILED_TRIALS", "many")
    with pytest.raises(ConfigError, match="AEOPT_MAX_FAILED_TRIALS='many' is not a whole number"):
        FailureLimits.from_env()


def test_a_signal_fails_the_trial_with_its_number_and_stops_the_loop():
    def objective(trial: optuna.Trial) -> float:
        raise StopSignal(15)

    study = optuna.create_study()
    with pytest.raises(KeyboardInterrupt):
        run_trials(study, objective, target=3, heartbeat=None)
    (trial,) = study.trials
    assert trial.state == TrialState.FAIL and trial.user_attrs["fail_reason"] == "stopped by signal 15"


def test_an_unexpected_error_fails_the_trial_with_its_type_and_first_line():
    def objective(trial: optuna.Trial) -> float:
        raise ValueError("shapes do not match\nsecond line")

    study = optuna.create_study()
    with pytest.raises(ValueError):
        run_trials(study, objective, target=3, heartbeat=None)
    assert study.trials[0].user_attrs["fail_reason"] == "ValueError: shapes do not match"


def test_the_objectives_own_reason_is_kept_and_a_rerun_starts_without_one():
    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("fail_reason", "OutOfMemoryError: 2 GiB more")
        raise NonFiniteLossError("not this one")

    study = optuna.create_study()
    with pytest.raises(TooManyFailuresError, match="the last: OutOfMemoryError: 2 GiB more"):
        run_trials(study, objective, target=None, heartbeat=None, limits=FailureLimits(consecutive=1))
    # A re-queued copy of a failed trial (its attrs copied) completes without the old reason.
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, user_attrs={"fail_reason": "old"}))
    run_trials(study, lambda t: 0.5, target=1, heartbeat=None)
    rerun = study.trials[-1]
    assert rerun.state == TrialState.COMPLETE and rerun.user_attrs.get("fail_reason") is None


def _failed_meanwhile(reason: str):
    """An objective whose trial another worker fails while it runs (as a stale-trial check would)."""
    def objective(trial: optuna.Trial) -> float:
        if trial.number == 0:
            storage = trial.study._storage
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        return 0.5
    return objective


def test_a_trial_failed_as_stale_while_running_is_dropped_not_a_crash():
    study = optuna.create_study()
    why = run_trials(study, _failed_meanwhile("worker lost: no heartbeat for 60 s"), target=1,
                     heartbeat=None, limits=FailureLimits(consecutive=1))
    assert why == "the study holds 1 finished trials"
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]


def test_a_trial_failed_meanwhile_for_another_reason_still_stops_the_worker():
    with pytest.raises((ValueError, AssertionError)):
        run_trials(optuna.create_study(), _failed_meanwhile("something else"), target=1, heartbeat=None)
