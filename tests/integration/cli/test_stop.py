"""Stopping on request, with real processes: SIGTERM exits 143 and Ctrl-C (SIGINT) 130, for `aeopt worker`,
`aeopt launch`, `aeopt quickstart`, `aeopt train`, `aeopt report` and `aeopt dashboard`; each says
"stopped by signal" in one line and prints no traceback; a worker first logs what it finished; the
quickstart prints its summary and exports the best trial so far; train and report leave no half-written
output folder; launch reports no stopped worker as failed and writes its logs inside logs/ whatever the
study is called."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

from aeopt.config import StudySpec
from aeopt.search.storage import open_storage
from aeopt.search.studies import SPEC_ATTR, create_study
from tests.conftest import REPO, run_cli, tiny_spec

pytestmark = pytest.mark.slow

# Long trials on tiny synthetic data: a trial is still running when the signal comes.
SPEC = tiny_spec(budget={"max_epochs": 500})


def _study(tmp_path: Path, name: str) -> str:
    url = f"sqlite:///{tmp_path}/s.db"
    spec = StudySpec.model_validate({**SPEC, "name": "s"})
    if name == "s":
        create_study(open_storage(url), spec, name)
    else:  # a name aeopt no longer accepts, as a study made before the check (or by Optuna) has
        study = optuna.create_study(study_name=name, storage=open_storage(url).optuna)
        study.set_user_attr(SPEC_ATTR, spec.model_dump(mode="json"))
    return url


def _start(args: list[str], url: str | None, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if url:
        env["AEOPT_STORAGE"] = url
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
    name = signal.Signals(signum).name
    assert err.strip().splitlines()[-1] == f"stopped by signal {name}"
    assert f"worker 0 stopped: no trials (stopped by signal {name})" in err  # its counts, then the line
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    trials = optuna.load_study(study_name="s", storage=open_storage(url).optuna).get_trials()
    # Not left RUNNING; its copy waits for the next worker (test_stop_requeue.py).
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]


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


class _Lines:
    """A running process's stderr, read line by line in a thread (so the test can wait for a line)."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.lines = proc, []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                self.thread.join(5)
                pytest.fail(f"exited {self.proc.returncode} before '{text}':\n{''.join(self.lines)[-3000:]}")
            time.sleep(0.2)
        self.proc.kill()
        pytest.fail(f"no '{text}' in {timeout:.0f} s:\n{''.join(self.lines)[-3000:]}")

    def stopped(self, timeout: float = 120) -> tuple[str, str]:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"still running {timeout:.0f} s after the signal:\n{''.join(self.lines)[-3000:]}")
        self.thread.join(10)
        return self.proc.stdout.read(), "".join(self.lines)


def _clean_stop(proc: subprocess.Popen, err: str, signum: int) -> None:
    assert proc.returncode == 128 + signum, err
    assert err.strip().splitlines()[-1] == f"stopped by signal {signal.Signals(signum).name}", err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_quickstart_stops_with_its_summary_and_the_best_so_far(tmp_path, signum, monkeypatch):
    url = f"sqlite:///{tmp_path}/qs.db"
    # No Fashion-MNIST (no AEOPT_DATA_DIR, the session's cache empty): the digits, seconds per trial.
    monkeypatch.delenv("AEOPT_DATA_DIR", raising=False)
    proc = _start(["quickstart", "--n-trials", "40", "--max-epochs", "4",
                   "--device", "cpu", "--storage", url, "--out", "qs"], None, tmp_path)
    err = _Lines(proc)
    err.wait_for(" complete: ")  # a trial has completed; the next one starts
    proc.send_signal(signum)
    out, err_text = err.stopped()
    _clean_stop(proc, err_text, signum)
    name = signal.Signals(signum).name
    assert out.startswith(f"stopped by signal {name}; what finished:\n"), out
    study = optuna.load_study(study_name="quickstart", storage=open_storage(url).optuna)
    complete = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete and all(t.state != optuna.trial.TrialState.RUNNING for t in study.get_trials())
    best = tmp_path / "qs" / "best.yaml"
    assert best.is_file() and "best config: qs/best.yaml" in out
    assert f"  trial: {study.best_trial.number}\n" in best.read_text()


def _no_partial(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".partial-" in p.name]


def test_train_stops_in_one_line_and_writes_nothing(tmp_path):
    proc = _start(["train", str(REPO / "configs" / "conv_ae.yaml"), "--set", "data.dataset=digits",
                   "--set", "budget.max_epochs=500", "--set", "budget.patience=500", "--device", "cpu",
                   "-o", "run"], None, tmp_path)
    err = _Lines(proc)
    err.wait_for("train conv_ae 2/500")  # training: two epochs done
    proc.send_signal(signal.SIGINT)
    out, err_text = err.stopped()
    _clean_stop(proc, err_text, signal.SIGINT)
    assert not (tmp_path / "run").exists() and not _no_partial(tmp_path)


def test_report_stops_in_one_line_and_leaves_no_half_written_folder(tmp_path):
    trained = run_cli("train", str(REPO / "configs" / "conv_ae.yaml"), "--set", "data.dataset=digits",
                      "--set", "budget.max_epochs=1", "--device", "cpu", "-o", "run", cwd=tmp_path,
                      timeout=600)
    assert trained.returncode == 0, trained.stderr
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "checkpoint.pt", "metrics.json", "reconstructions.png"]
    # An earlier report in the folder: a stopped rebuild leaves it as it was.
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep" / "report.html").write_text("the earlier report")
    proc = _start(["report", "--checkpoint", "run/checkpoint.pt", "--device", "cpu", "-o", "rep"], None,
                  tmp_path)
    err = _Lines(proc)
    deadline = time.monotonic() + 300
    while not any(tmp_path.glob(".rep.partial-*/*.png")):  # part-way: some figures written
        assert proc.poll() is None and time.monotonic() < deadline, "".join(err.lines)
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err_text = err.stopped()
    _clean_stop(proc, err_text, signal.SIGINT)
    assert [p.name for p in (tmp_path / "rep").iterdir()] == ["report.html"]
    assert (tmp_path / "rep" / "report.html").read_text() == "the earlier report"
    assert not _no_partial(tmp_path)


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_dashboard_stops_with_the_signals_exit_code_even_started_with_sigint_ignored(tmp_path, signum, code):
    url = _study(tmp_path, "s")
    # As `aeopt dashboard &` from a script: a non-interactive shell starts it with SIGINT ignored.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "AEOPT_STORAGE": url}
    proc = subprocess.Popen([sys.executable, "-m", "aeopt", "dashboard", "--port", "0"], cwd=tmp_path,
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    err = _Lines(proc)
    err.wait_for("optuna-dashboard for")
    proc.send_signal(signum)
    out, err_text = err.stopped()
    _clean_stop(proc, err_text, signum)
    assert proc.returncode == code


def _children(pid: int) -> list[int]:
    """The live processes whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    """Running, not a zombie: an orphan's zombie waits for whoever reaps orphans here."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _launch_two_workers(tmp_path: Path) -> tuple[str, subprocess.Popen, list[int]]:
    """`aeopt launch` of two CPU workers, each with a trial running: its URL, process and workers' pids."""
    url = _study(tmp_path, "s")
    proc = _start(["launch", "--study", "s", "--workers", "2", "--devices", "cpu", "--n-trials", "4"], url,
                  tmp_path)
    _wait_for_running_trials(url, "s", proc, n=2)
    workers = _children(proc.pid)
    assert len(workers) == 2
    return url, proc, workers


def test_launch_stops_its_workers_on_sighup(tmp_path):
    # The terminal closed or the SSH link dropped: the workers, in their own sessions, hear nothing of it
    # but what the launcher forwards.
    url, proc, workers = _launch_two_workers(tmp_path)
    proc.send_signal(signal.SIGHUP)
    out, err = _stopped(proc)
    assert proc.returncode == 128 + signal.SIGHUP, err
    assert "exited with code" not in err and "Traceback" not in err, err
    assert not [pid for pid in workers if _alive(pid)]
    for log in sorted((tmp_path / "logs").rglob("*.log")):
        assert log.read_text().strip().splitlines()[-1] == "stopped by signal SIGTERM"
    trials = optuna.load_study(study_name="s", storage=open_storage(url).optuna).get_trials()
    assert trials and all(t.state != optuna.trial.TrialState.RUNNING for t in trials)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal")
def test_a_killed_launch_stops_its_workers(tmp_path):
    # SIGKILL (or the OOM killer) gives the launcher no chance to forward anything: each worker gets
    # SIGTERM from the kernel instead, and stops as it would on the launcher's.
    url, proc, workers = _launch_two_workers(tmp_path)
    proc.kill()
    proc.communicate()
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in workers if _alive(pid)]
    for pid in left:  # no orphans left behind by the test itself
        os.kill(pid, signal.SIGKILL)
    assert not left, "workers still running 60 s after their launcher was killed"
    for log in sorted((tmp_path / "logs").rglob("*.log")):
        text = log.read_text()
        assert text.strip().splitlines()[-1] == "stopped by signal SIGTERM", text[-2000:]
    trials = optuna.load_study(study_name="s", storage=open_storage(url).optuna).get_trials()
    assert trials and all(t.state != optuna.trial.TrialState.RUNNING for t in trials)
    assert all(t.user_attrs.get("fail_reason", "").startswith("stopped by signal 15")
               for t in trials if t.state == optuna.trial.TrialState.FAIL), [t.user_attrs for t in trials]
