"""A trial stopped by SIGTERM or Ctrl-C is re-queued with its parameters and re-run by the next worker
(README: "the trial is re-run by the next worker"), with real processes: an enqueued known-good point
is not lost to a stop, and the re-queued copy does not take the study past its target."""

from __future__ import annotations

import signal

import optuna
import pytest
from optuna.trial import TrialState

from aeopt.config import StudySpec
from aeopt.search.storage import open_storage
from aeopt.search.studies import create_study
from tests.conftest import tiny_spec
from tests.integration.cli.test_stop import _start, _stopped, _wait_for_running_trials

pytestmark = pytest.mark.slow

POINT = {"optim.lr": 0.00123}  # the enqueued point: a value random sampling would not draw again


def _study(tmp_path) -> tuple[str, optuna.Study]:
    url = f"sqlite:///{tmp_path}/s.db"
    spec = StudySpec.model_validate(tiny_spec(budget={"max_epochs": 500}, name="s", enqueue=[POINT]))
    return url, create_study(open_storage(url), spec, "s")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_trial_is_rerun_by_the_next_worker(tmp_path, signum):
    url, _ = _study(tmp_path)
    proc = _start(["worker", "--study", "s", "--device", "cpu", "--threads", "1"], url, tmp_path)
    _wait_for_running_trials(url, "s", proc)
    proc.send_signal(signum)
    _, err = _stopped(proc)
    assert proc.returncode == 128 + signum, err
    assert "trial 0 is re-queued with its parameters" in err, err

    study = optuna.load_study(study_name="s", storage=open_storage(url).optuna)
    stopped, copy = study.get_trials()
    assert stopped.state == TrialState.FAIL and stopped.params == POINT
    assert stopped.user_attrs["fail_reason"] == f"stopped by signal {signum.value}"
    assert copy.state == TrialState.WAITING and copy.params == POINT
    # Marked as Optuna's stale-trial retry marks its copies; none of the stopped run's records.
    assert copy.system_attrs["failed_trial"] == 0 and copy.system_attrs["retry_history"] == [0]
    assert "fail_reason" not in copy.user_attrs and "device" not in copy.user_attrs

    # The next worker takes the copy (not a new sample); the budget ends it after an epoch or so.
    proc = _start(["worker", "--study", "s", "--device", "cpu", "--threads", "1", "--n-trials", "1",
                   "--timeout", "8"], url, tmp_path)
    _, err = _stopped(proc, timeout=300)
    assert proc.returncode == 0, err
    trials = optuna.load_study(study_name="s", storage=open_storage(url).optuna).get_trials()
    assert len(trials) == 2 and trials[1].state != TrialState.WAITING and trials[1].params == POINT, err


def test_a_requeued_copy_does_not_pass_the_target(tmp_path):
    """The study holds its target of finished trials: the copy waits for a larger target, unrun."""
    url, study = _study(tmp_path)
    proc = _start(["worker", "--study", "s", "--device", "cpu", "--threads", "1"], url, tmp_path)
    _wait_for_running_trials(url, "s", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = _stopped(proc)
    assert proc.returncode == 143, err
    lr = optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True)
    study.add_trial(optuna.create_trial(value=0.5, params={"optim.lr": 0.005},
                                        distributions={"optim.lr": lr}))
    proc = _start(["worker", "--study", "s", "--device", "cpu", "--threads", "1", "--n-trials", "1"],
                  url, tmp_path)
    _, err = _stopped(proc, timeout=300)
    assert proc.returncode == 0, err
    trials = optuna.load_study(study_name="s", storage=open_storage(url).optuna).get_trials()
    states = [t.state for t in trials]
    assert states == [TrialState.FAIL, TrialState.WAITING, TrialState.COMPLETE], err
