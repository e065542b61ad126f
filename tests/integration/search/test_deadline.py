"""Budgets that hold: `--timeout` stops a running trial at the deadline (pruned at the end of the
epoch it falls in, marked stopped_by=deadline), for `aeopt worker`, `aeopt launch` (one deadline for
all workers) and `aeopt quickstart`; each exits 0 with a line saying the budget ran out. Real
processes, real trials on small data whose trials take far longer than the budget."""

from __future__ import annotations

import os
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from aeopt.config import StudySpec
from aeopt.search.objective import DEADLINE_REASON, STOPPED_BY
from aeopt.search.storage import open_storage
from aeopt.search.studies import create_study
from tests.conftest import run_cli

pytestmark = pytest.mark.slow

# 500 epochs with no pruner and no early stopping (patience 0: with no pruner a trial would otherwise
# stop early, and on an idle machine finish inside the budget): a trial runs for minutes, on all 2,000
# synthetic images so that an idle machine's epochs are not so fast that the deadline lands past 300.
SPEC = {
    "name": "s",
    "model": {"kind": "conv_ae", "c1": 4, "c2": 8, "c3": 8, "fc": 16, "latent_dim": 4},
    "data": {"dataset": "synthetic"},
    "budget": {"max_epochs": 500, "batch_size": 64, "patience": 0},
    "cv": {"folds": 2},
    "sampler": {"name": "random", "seed": 0},
    "pruner": {"name": "none"},
    "space": {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
}
# A trial may run past the deadline by the epoch the deadline falls in: a fraction of a second on an
# idle machine, but up to half a minute for a fresh process's first epoch on a 2-core machine under
# load 14 (measured). The budget counts from the command's start (after its imports), so start-up and
# shut-down come on top: up to two minutes at that load. Hence loose bounds on time, and the tight
# test is the epoch count: a stopped trial ends far short of its 300 or 500 epochs.
TRIAL_MARGIN = 60.0
COMMAND_MARGIN = 180.0


def _study(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/s.db"
    create_study(open_storage(url), StudySpec.model_validate(SPEC), "s")
    return url


def _stopped_at_deadline(url: str, name: str, budget: float) -> list[optuna.trial.FrozenTrial]:
    trials = optuna.load_study(study_name=name, storage=open_storage(url).optuna).get_trials()
    assert trials and all(t.state != TrialState.RUNNING for t in trials), [t.state for t in trials]
    stopped = [t for t in trials if t.user_attrs.get(STOPPED_BY) == DEADLINE_REASON]
    for t in stopped:  # pruned where it got to: its reported epochs are real
        assert t.state == TrialState.PRUNED and t.intermediate_values and 1 <= t.last_step < 300
        ran = (t.datetime_complete - t.datetime_start).total_seconds()
        assert ran < budget + TRIAL_MARGIN, f"trial {t.number} ran {ran:.0f} s in a {budget:g} s budget"
    return stopped


def _within_budget(budget: int, *args: str, **kwargs):
    """Run `aeopt *args --timeout budget`: it exits 0, cleanly, within the budget and its margin."""
    start = time.monotonic()
    r = run_cli(*args, "--timeout", str(budget), timeout=400, **kwargs)
    took = time.monotonic() - start
    assert r.returncode == 0, r.stderr
    assert took < budget + COMMAND_MARGIN, f"took {took:.0f} s for a {budget} s budget"
    assert "Traceback" not in r.stderr, r.stderr
    return r


def test_worker_timeout_stops_the_running_trial(tmp_path):
    url = _study(tmp_path)
    r = _within_budget(12, "worker", "--study", "s", "--storage", url, "--n-trials", "3", "--device", "cpu",
                       cwd=tmp_path)
    assert "the time budget of 12 s ran out" in r.stdout
    stopped = _stopped_at_deadline(url, "s", 12)
    assert len(stopped) == 1  # the one trial that was running; no trial after it
    assert "epoch 1/500: CV loss" in r.stderr  # progress inside the trial


def test_launch_timeout_ends_every_worker_in_time(tmp_path):
    url = _study(tmp_path)
    # 40 s: room for both workers to start (import torch, load the data) on a busy machine.
    r = _within_budget(40, "launch", "--study", "s", "--storage", url, "--workers", "2", "--n-trials", "4",
                       cwd=tmp_path)
    assert "the time budget of 40 s ran out" in r.stderr
    stopped = _stopped_at_deadline(url, "s", 40)
    trials = optuna.load_study(study_name="s", storage=open_storage(url).optuna).get_trials()
    # Every trial that started was stopped by the deadline (pruned where it got to, or failed as
    # "deadline" had it not reported an epoch); none ran its 500 epochs.
    assert stopped and all(t in stopped or t.user_attrs.get("fail_reason") == DEADLINE_REASON
                           for t in trials)
    for log in sorted((tmp_path / "logs" / "s").glob("worker-*.log")):
        # Each worker names the launch's budget, not what was left of it when it started (a number
        # the user never gave).
        text = log.read_text()
        assert "the launch's time budget ran out" in text and "left of the launch's time budget" in text
        assert "the time budget of" not in text


def test_quickstart_timeout_summarizes_what_finished(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/qs.db"
    # The digits, seconds per trial: the commands get this process's environment (CI sets AEOPT_DATA_DIR).
    monkeypatch.delenv("AEOPT_DATA_DIR", raising=False)
    env = dict(os.environ)
    r = _within_budget(15, "quickstart", "--n-trials", "5", "--max-epochs", "300", "--storage", url,
                       "--device", "cpu", "--out", str(tmp_path / "qs"), cwd=tmp_path, env=env)
    assert r.stdout.startswith("the time budget of 15 s ran out; what finished:\n"
                               "1 trials: 0 complete, 1 pruned, 0 failed\n")
    assert "best config: none yet (no trial completed)" in r.stdout
    assert len(_stopped_at_deadline(url, "quickstart", 15)) == 1
    assert not (tmp_path / "qs" / "best.yaml").exists()
