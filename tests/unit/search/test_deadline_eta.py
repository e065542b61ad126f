"""The worker's time budget inside a trial (`stop_at_deadline`), the study's time-left estimate and
the in-trial progress lines: pure functions, and real Optuna trials in an in-memory study."""

from __future__ import annotations

import datetime as dt
import logging
import time

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from aeopt.progress import duration_text, ticker, time_left
from aeopt.search.objective import DEADLINE_REASON, STOPPED_BY, DeadlineError, EpochClock, stop_at_deadline
from aeopt.search.worker import TIMEOUT_REASON, run_trials, study_eta_line


def test_time_left_divides_the_remaining_trials_among_workers():
    assert time_left([], 5, 1) is None  # nothing finished: no estimate
    assert time_left([10.0, 30.0], 3, 1) == 60.0
    # 3 trials on 2 workers take two trial-lengths, not one and a half.
    assert time_left([20.0], 3, 2) == 40.0
    assert time_left([20.0], 4, 2) == 40.0
    assert time_left([20.0], 0, 2) == 0.0
    assert time_left([20.0], 3, 0) == 60.0  # no worker counted: at least this one


@pytest.mark.parametrize("seconds,text", [(0, "0 s"), (44.6, "45 s"), (60, "1 min 0 s"), (725, "12 min 5 s"),
                                          (7380, "2 h 03 min"), (-3, "0 s")])
def test_duration_text(seconds, text):
    assert duration_text(seconds) == text


def _trial(state: TrialState, seconds: float | None) -> optuna.trial.FrozenTrial:
    start = dt.datetime(2026, 1, 1, 12, 0, 0)
    end = start + dt.timedelta(seconds=seconds) if seconds is not None else None
    trial = create_trial(state=state, value=0.1 if state == TrialState.COMPLETE else None)
    trial.datetime_start = start
    trial.datetime_complete = end
    return trial


def test_study_eta_line_counts_finished_trials_and_running_workers():
    trials = [_trial(TrialState.COMPLETE, 30), _trial(TrialState.PRUNED, 10), _trial(TrialState.FAIL, 500),
              _trial(TrialState.RUNNING, None)]
    # mean of the finished (complete, pruned) trials: 20 s; 12 - 2 = 10 left on 2 workers: 5 rounds.
    assert study_eta_line(trials, 12) == "study: 2 of 12 trials finished, about 1 min 40 s left (2 workers)"
    assert study_eta_line(trials[:1], 3) == "study: 1 of 3 trials finished, about 1 min 0 s left (1 worker)"
    assert study_eta_line(trials, None) is None  # no target: nothing to count down to
    assert study_eta_line(trials[:2], 2) is None  # the target is reached
    assert study_eta_line([_trial(TrialState.FAIL, 5)], 4) is None  # no finished trial yet


def _running_trial() -> optuna.Trial:
    return optuna.create_study().ask()


def test_stop_at_deadline_prunes_a_trial_that_has_reported():
    trial = _running_trial()
    stop_at_deadline(trial, None, 3)  # no budget
    stop_at_deadline(trial, time.monotonic() + 60, 3)  # not yet
    assert STOPPED_BY not in trial.user_attrs
    trial.report(0.5, 3)
    with pytest.raises(optuna.TrialPruned, match="deadline after epoch 3"):
        stop_at_deadline(trial, time.monotonic() - 1, 3)
    assert trial.user_attrs[STOPPED_BY] == DEADLINE_REASON


def test_stop_at_deadline_fails_a_trial_with_nothing_reported():
    trial = _running_trial()
    with pytest.raises(DeadlineError):
        stop_at_deadline(trial, time.monotonic() - 1, None)
    assert trial.user_attrs["fail_reason"] == DEADLINE_REASON
    assert STOPPED_BY not in trial.user_attrs


def test_epoch_lines_and_the_ticker_for_a_slow_epoch(caplog):
    caplog.set_level(logging.INFO, logger="aeopt")
    clock = EpochClock(7, 10, 4000)
    with ticker(clock.running_line, interval=0.3) as tick:
        clock.tick = tick
        time.sleep(1.0)  # a slow first epoch: the ticker speaks for it
        clock.epoch_done(1, 0.25)
        clock.epoch_done(2, 0.5)
    lines = [r.getMessage() for r in caplog.records]
    running = [line for line in lines if "running" in line]
    assert running and running[0].startswith("trial 7 epoch 1/10 running: ")
    epochs = [line for line in lines if line.startswith("trial 7 epoch 2/10:")]
    assert len(epochs) == 1 and "CV loss 0.5 (best 0.25)" in epochs[0] and "images/s" in epochs[0]
    # Closed with the trial: no line after it.
    count = len(caplog.records)
    time.sleep(0.8)
    assert len(caplog.records) == count


def test_a_spent_budget_starts_no_trial():
    # A worker that starts after its launch's deadline (a slow start on a busy machine) gets a budget
    # of 0 s: it must stop, not run trials that each fail at once as "deadline".
    study = optuna.create_study()
    assert run_trials(study, lambda t: 1.0, target=5, heartbeat=None, timeout=0.0) == TIMEOUT_REASON
    assert study.get_trials() == []
    assert run_trials(study, lambda t: 1.0, target=2, heartbeat=None, timeout=None) != TIMEOUT_REASON
    assert len(study.get_trials()) == 2
