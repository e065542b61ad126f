"""The worker's decisions without training: the study-wide target (run, wait, stop) as a pure
function of the study's counts, and the trial loop on a real in-memory study with a plain objective."""

from __future__ import annotations

import datetime as dt

import optuna
import pytest
from optuna.trial import TrialState

from aeopt.config import StudySpec
from aeopt.search.objective import SurplusTrialError, check_surplus
from aeopt.search.records import StudyCounts
from aeopt.search.worker import Step, _lost_while_running, next_step, run_trials, study_target, trial_line
from aeopt.training.engine import NonFiniteLossError

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize("counts,target,heartbeat,step", [
    (StudyCounts(), None, True, Step.RUN),  # no target: run until stopped otherwise
    (StudyCounts(complete=500), None, False, Step.RUN),
    (StudyCounts(), 3, False, Step.RUN),
    (StudyCounts(complete=1, pruned=1), 3, True, Step.RUN),
    (StudyCounts(complete=2, failed=5), 3, True, Step.RUN),  # failed trials do not count
    (StudyCounts(complete=2, pruned=1), 3, True, Step.STOP),  # pruned trials do
    (StudyCounts(complete=4), 3, False, Step.STOP),
    # The last trials run elsewhere: wait where a dead worker's trial would come back, else stop.
    (StudyCounts(complete=2, running=1), 3, True, Step.WAIT),
    (StudyCounts(complete=1, running=2), 3, True, Step.WAIT),
    (StudyCounts(complete=2, running=1), 3, False, Step.STOP),
    # A waiting trial (enqueued, or a dead worker's re-queued copy) within the target is this worker's.
    (StudyCounts(complete=1, failed=1, waiting=1), 3, False, Step.RUN),
    # One past the target is left for a later, larger target: run now, it would fail as surplus.
    (StudyCounts(complete=2, running=1, waiting=1), 3, True, Step.WAIT),
    (StudyCounts(complete=2, running=1, waiting=1), 3, False, Step.STOP),
    (StudyCounts(complete=1, running=1), 3, False, Step.RUN),
])
def test_next_step(counts, target, heartbeat, step):
    assert next_step(counts, target, heartbeat).step is step


def test_enqueued_points_past_the_target_stay_waiting():
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(state=TrialState.RUNNING))  # another worker's
    study.enqueue_trial({"x": 0.1})
    study.enqueue_trial({"x": 0.2})

    def objective(trial: optuna.Trial) -> float:
        check_surplus(trial, 1)
        return trial.suggest_float("x", 0, 1)

    why = run_trials(study, objective, target=1, heartbeat=None)
    assert why == "the remaining trials are running in other workers"
    assert StudyCounts.of(study) == StudyCounts(running=1, waiting=2)  # no point used up as a surplus FAIL


def test_stop_and_wait_say_why():
    assert next_step(StudyCounts(complete=3), 3, True).reason == "the study holds 3 finished trials"
    assert "running in other workers" in next_step(StudyCounts(complete=2, running=1), 3, False).reason


def _grid_spec(n_trials_space: list[int]) -> StudySpec:
    return StudySpec.model_validate({
        "model": {"kind": "conv_ae"}, "data": {"dataset": "synthetic"},
        "sampler": {"name": "grid", "seed": 0}, "pruner": {"name": "none"},
        "space": {"model.c1": {"type": "categorical", "choices": n_trials_space}}})


def test_the_grid_caps_the_target():
    spec = _grid_spec([4, 8, 16])
    assert study_target(spec, None) == 3 and study_target(spec, 2) == 2 and study_target(spec, 10) == 3
    other = StudySpec.model_validate({**spec.model_dump(), "sampler": {"name": "random", "seed": 0}})
    assert study_target(other, None) is None and study_target(other, 10) == 10


def _objective(trial: optuna.Trial) -> float:
    c1 = trial.suggest_categorical("model.c1", [4, 8, 16])
    if c1 == 8:
        # One of TRIAL_ERRORS: the trial fails and the worker goes on.
        raise NonFiniteLossError("validation loss is nan at epoch 1")
    return 1.0 / c1


def test_loop_stops_when_the_grid_is_exhausted_even_short_of_the_target():
    study = optuna.create_study(sampler=optuna.samplers.GridSampler({"model.c1": [4, 8, 16]}, seed=0))
    why = run_trials(study, _objective, target=3, heartbeat=False)
    assert why == "the sampler has no more points"
    # Each point once: a failed point is not tried again, and no point is repeated to reach 3.
    assert sorted(t.params["model.c1"] for t in study.trials) == [4, 8, 16]
    assert StudyCounts.of(study) == StudyCounts(complete=2, failed=1)


def test_loop_reaches_the_target_and_counts_callbacks():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    why = run_trials(study, lambda t: t.suggest_float("x", 0, 1), target=4, heartbeat=False,
                     callbacks=[lambda s, t: seen.append(t.number)])
    assert why == "the study holds 4 finished trials" and seen == [0, 1, 2, 3]
    assert run_trials(study, lambda t: 0.0, target=4, heartbeat=False) == "the study holds 4 finished trials"
    assert len(study.trials) == 4  # a second worker with the same target adds nothing


def test_loop_stops_at_the_timeout():
    study = optuna.create_study()
    assert run_trials(study, lambda t: 0.0, target=None, heartbeat=False, timeout=1e-9) == "timeout"


def test_surplus_trial_is_refused():
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(value=0.1))
    first, second = study.ask(), study.ask()  # two workers asked at once for the last trial of 2
    check_surplus(first, 2)
    with pytest.raises(SurplusTrialError):
        check_surplus(second, 2)
    check_surplus(second, None)  # no target: never a surplus


def test_trial_lines():
    start = dt.datetime(2024, 1, 1, 12, 0, 0)
    dists = {"optim.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2),
             "model.c1": optuna.distributions.IntDistribution(8, 32)}
    done = optuna.trial.create_trial(value=0.0213, params={"optim.lr": 0.003, "model.c1": 16},
                                     distributions=dists, user_attrs={"cv_std": 0.0004, "epochs": 10})
    done.number, done.datetime_start, done.datetime_complete = 3, start, start + dt.timedelta(seconds=12.1)
    assert trial_line(done) == "trial 3 complete: 0.0213 +- 0.0004 (10 epochs, 12.1 s) lr=0.003 c1=16"
    failed = optuna.trial.create_trial(state=TrialState.FAIL,
                                       user_attrs={"fail_reason": "OutOfMemoryError: x"})
    failed.number = 4
    assert trial_line(failed) == "trial 4 fail: OutOfMemoryError: x"


@pytest.mark.parametrize(("reason", "lost"), [(None, True), ("worker lost: no heartbeat for 60 s", True),
                                              ("NonFiniteLossError: loss is nan", False)])
def test_a_trial_failed_under_a_running_worker_is_lost_only_when_failed_as_stale(reason, lost):
    # Optuna's own stale check fails a trial with no reason; aeopt's names the lost worker. Any other
    # reason is this worker's own failure, not a trial someone took from it.
    study = optuna.create_study()
    trial = study.ask()
    if reason is not None:
        trial.set_user_attr("fail_reason", reason)
    study.tell(trial, state=TrialState.FAIL)
    assert _lost_while_running(study, trial.number) is lost
    assert _lost_while_running(study, trial.number + 1) is False


def test_a_stopped_trial_is_requeued_with_its_params_at_most_three_times():
    """Each stop re-queues the trial (Optuna's retry attrs); the fourth stop of one point lets it go."""
    from aeopt.search.stopping import StopSignal

    def stopped(trial: optuna.Trial) -> float:
        trial.suggest_float("x", 0.0, 1.0)
        raise StopSignal(15)

    study = optuna.create_study()
    study.enqueue_trial({"x": 0.25})
    for _ in range(4):
        with pytest.raises(KeyboardInterrupt):
            run_trials(study, stopped, target=3, heartbeat=None)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * 4
    assert all(t.params == {"x": 0.25} for t in trials)
    assert trials[3].system_attrs["retry_history"] == [0, 1, 2]
