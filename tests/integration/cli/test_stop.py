"""Stopping on request, with real processes: SIGTERM exits 143 and Ctrl-C (SIGINT) 130, for `aeopt worker`
and `aeopt launch`; a worker says "stopped by signal" in one line and prints no traceback; launch reports
no stopped worker as failed; launch writes its logs inside logs/ whatever the study is called."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from aeopt.config import StudySpec
from aeopt.search.storage import open_storage
from aeopt.search.studies import SPEC_ATTR, create_study

pytestmark = pytest.mark.slow

# Long trials on tiny synthetic data: a trial is still running when the signal comes.
SPEC = {
    "model": {"kind": "conv_ae", "c1": 4, "c2": 8, "c3": 8, "fc": 16, "latent_dim": 4},
    "data": {"dataset": "synthetic", "train_subset": 300},
    "budget": {"max_epochs": 500, "batch_size": 64},
    "cv": {"folds": 2},
    "sampler": {"name": "random", "seed": 0},
    "pruner": {"name": "none"},
    "space": {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
}


def _study(tmp_path: Path, name: str) -> str:
    url = f"sqlite:///{tmp_path}/s.db"
    spec = StudySpec.model_validate({**SPEC, "name": "s"})
    if name == "s":
        create_study(open_storage(url), spec, name)
    else:  # a name aeopt no longer accepts, as a study made before the check (or by Optuna) has
        study = optuna.create_study(study_name=name, storage=open_storage(url).optuna)
        study.set_user_attr(SPEC_ATTR, spec.model_dump(mode="json"))
    return url


def _start(args: list[str], url: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "AEOPT_STORAGE": url, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "aeopt", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _stopped(proc: subprocess.Popen, timeout: float = 120) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"still running {timeout:.0f} s after the signal; its stderr ends:\n{err[-3000:]}")


def _wait_for_running_trials(url: str, name: str, proc: subprocess.Popen, n: int = 1,
                             timeout: float = 120) -> None:
    storage = open_storage(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        trials = optuna.load_study(study_name=name, storage=storage.optuna).get_trials(deepcopy=False)
        if sum(t.state == optuna.trial.TrialState.RUNNING for t in trials) >= n:
            time.sleep(1.0)  # into the training loop, where a signal lands in the middle of real work
            return
        time.sleep(0.3)
    pytest.fail("no trial started")


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_worker_stops_quietly_on_a_signal(tmp_path, signum, code):
    url = _study(tmp_path, "s")
    proc = _start(["worker", "--study", "s", "--n-trials", "5"], url, tmp_path)
    _wait_for_running_trials(url, "s", proc)
    proc.send_signal(signum)
    out, err = _stopped(proc)
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == f"stopped by signal {signal.Signals(signum).name}"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    trials = optuna.load_study(study_name="s", storage=open_storage(url).optuna).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL]  # not left RUNNING


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_launch_forwards_a_signal_and_reports_no_failure(tmp_path, signum, code):
    name = "../../escape" if signum == signal.SIGTERM else "/tmp/aeopt-test escape"
    url = _study(tmp_path, name)
    cwd = tmp_path / "work"
    cwd.mkdir()
    proc = _start(["launch", "--study", name, "--workers", "2", "--n-trials", "4"], url, cwd)
    _wait_for_running_trials(url, name, proc, n=2)  # both workers past start-up
    proc.send_signal(signum)
    out, err = _stopped(proc)
    assert proc.returncode == code, err
    logs = sorted((cwd / "logs").rglob("*.log"))
    folder = "_.._escape" if signum == signal.SIGTERM else "_tmp_aeopt-test_escape"
    assert [p.relative_to(cwd).as_posix() for p in logs] == [f"logs/{folder}/worker-0.log",
                                                           f"logs/{folder}/worker-1.log"]
    assert not (tmp_path.parent / "escape").exists() and not Path("/tmp/aeopt-test escape").exists()
    assert "exited with code" not in err and "Traceback" not in err, err
    for log in logs:
        text = log.read_text()
        assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
        assert text.strip().splitlines()[-1] == "stopped by signal SIGTERM"  # launch forwards SIGTERM
    trials = optuna.load_study(study_name=name, storage=open_storage(url).optuna).get_trials()
    assert trials and all(t.state != optuna.trial.TrialState.RUNNING for t in trials)
