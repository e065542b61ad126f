"""A study whose cv.folds the smallest class of its training images is too small for: its worker
stops on the first trial with one line (it was scikit-learn's ValueError traceback in every trial)."""

from __future__ import annotations

from pathlib import Path

import optuna

from aeopt.cli import main

MESSAGE = ("cv.folds = 5: the smallest class of the training images has only 4; lower cv.folds or raise "
           "data.train_subset")


def test_worker_fails_the_trial_with_one_line(tmp_path: Path, monkeypatch, capfd) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/s1.db"
    assert main(["study", "create", "conv_ae", "--storage", url, "-n", "s1", "--set", "data.dataset=digits",
                 "--set", "data.train_subset=40", "--set", "cv.folds=5", "--set", "budget.max_epochs=1",
                 "--set", "enqueue=[]"]) == 0
    capfd.readouterr()
    assert main(["worker", "--study", "s1", "--storage", url, "--n-trials", "3", "--threads", "1",
                 "--device", "cpu"]) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err and "n_splits" not in err
    assert err.splitlines()[-1] == f"error: {MESSAGE}"
    # One trial, failed with the line as its reason; the worker did not go on to fail the others.
    trials = optuna.load_study(study_name="s1", storage=url).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL]
    assert MESSAGE in str(trials[0].user_attrs)
