"""Faults, with real `aeopt worker` processes on real storages and a tiny synthetic-data study: a worker
SIGKILLed mid-trial on every storage, a study whose every trial fails, eight workers started at once
on a fresh PostgreSQL database, a truncated data file. Each ends with 0 lost trials, 0 zombie
RUNNING (or WAITING) trials and exactly the target finished."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from optuna.trial import FrozenTrial, TrialState

from aeopt.search.records import StudyCounts
from aeopt.search.storage import open_storage
from aeopt.search.studies import load_study
from tests.conftest import _missing, run_cli

pytestmark = pytest.mark.slow

INTERVAL, GRACE = 1, 3  # heartbeat settings of every worker here: a dead worker's trial is stale in 3 s
FAST = {"AEOPT_HEARTBEAT_INTERVAL": str(INTERVAL), "AEOPT_GRACE_PERIOD": str(GRACE), "OMP_NUM_THREADS": "1"}


def _spec(name: str, **sections) -> dict:
    spec = {
        "name": name,
        "model": {"kind": "conv_ae", "c1": 4, "c2": 8, "c3": 8, "fc": 16, "latent_dim": 4, "dropout": 0.0},
        "data": {"dataset": "synthetic", "train_subset": 300},
        "budget": {"max_epochs": 1, "batch_size": 64},
        "cv": {"folds": 2, "seed": 0},
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "space": {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
                  "model.c1": {"type": "int", "low": 2, "high": 6}},
    }
    spec.update(sections)
    return spec


def _create(tmp_path: Path, url: str, spec: dict) -> None:
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    r = run_cli("study", "create", str(path), "--storage", url, cwd=tmp_path, env=FAST)
    assert r.returncode == 0, r.stderr


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_worker_left_behind():
    """A failed assertion must not leave worker processes running into the next test."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _worker(tmp_path: Path, url: str, name: str, n_trials: int, *extra: str,
            env: dict[str, str] | None = None) -> subprocess.Popen:
    args = [sys.executable, "-m", "aeopt", "worker", "--study", name, "--n-trials", str(n_trials),
            "--device", "cpu", "--threads", "1", *extra]
    env = {**os.environ, **FAST, "AEOPT_STORAGE": url, **(env or {})}
    proc = subprocess.Popen(args, cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _STARTED.append(proc)
    return proc


def _trials(url: str, name: str) -> list[FrozenTrial]:
    study, _ = load_study(open_storage(url), name)
    return study.get_trials(deepcopy=False)


def _assert_clean(trials: list[FrozenTrial], target: int) -> StudyCounts:
    counts = StudyCounts.of(trials)
    assert counts.finished == target, counts.text()  # N met exactly, none lost
    assert counts.running == 0 and counts.waiting == 0, counts.text()  # no zombies
    assert all(t.user_attrs.get("fail_reason") for t in trials if t.state == TrialState.FAIL)
    return counts


# ----- a worker SIGKILLed mid-trial, on every storage -------------------------------------------


@pytest.fixture
def redis_url() -> str:
    try:
        import redis

        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2).ping()
    except Exception as exc:
        _missing(f"Redis is not reachable at 127.0.0.1:6379 with the redis package ({type(exc).__name__})")
    return "redis://127.0.0.1:6379/0"


@pytest.fixture
def grpc_url(tmp_path):
    """`aeopt storage proxy` in front of an SQLite file, on a free port, for the test's duration."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proxy = subprocess.Popen([sys.executable, "-m", "aeopt", "storage", "proxy", "--storage",
                              f"sqlite:///{tmp_path}/behind_proxy.db", "--port", str(port)],
                             cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proxy.poll() is None, proxy.communicate()[1][-2000:]
            time.sleep(0.2)
        yield f"grpc://127.0.0.1:{port}"
    finally:
        proxy.terminate()
        proxy.communicate(timeout=30)


def _storage_url(kind: str, tmp_path: Path, request) -> str:
    if kind == "postgresql":
        return request.getfixturevalue("pg_url")
    if kind in ("redis", "grpc"):
        return request.getfixturevalue(f"{kind}_url")
    return {"sqlite": f"sqlite:///{tmp_path}/s.db", "journal": f"journal:///{tmp_path}/j.log"}[kind]


def _wait_mid_trial(url: str, name: str, proc: subprocess.Popen, timeout: float = 40) -> FrozenTrial:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        running = [t for t in _trials(url, name) if t.state == TrialState.RUNNING and t.intermediate_values]
        if running:
            return running[0]
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"the worker never got into a trial: {proc.communicate()[1][-2000:]}")


@pytest.mark.parametrize("kind", [pytest.param("postgresql", marks=pytest.mark.postgres),
                                  "sqlite", "journal", "redis", "grpc"])
def test_a_killed_workers_trial_is_failed_and_rerun(kind, tmp_path, request):
    """The next worker either waits for the dead one's trial (it started before the grace period
    ran out) or fails it as soon as it starts (after): either way it is re-run once and N is met."""
    url, name = _storage_url(kind, tmp_path, request), f"kill_{kind}_{uuid.uuid4().hex[:8]}"
    # About 0.1 s an epoch (unloaded): long enough to be killed in the middle, short enough to re-run.
    _create(tmp_path, url, _spec(name, budget={"max_epochs": 15, "batch_size": 32}))
    victim = _worker(tmp_path, url, name, 2)
    killed = _wait_mid_trial(url, name, victim)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    killed_at = time.time()
    assert [t.state for t in _trials(url, name)] == [TrialState.RUNNING]  # nobody told the storage

    waits = kind in ("postgresql", "redis", "grpc")
    if not waits:
        time.sleep(GRACE + 0.5)
    r = _worker(tmp_path, url, name, 2)
    out, err = r.communicate(timeout=180)
    assert r.returncode == 0, err[-3000:]
    trials = _trials(url, name)
    counts = _assert_clean(trials, target=2)
    assert counts.failed == 1
    dead = trials[killed.number]
    assert dead.state == TrialState.FAIL
    assert dead.user_attrs["fail_reason"] == f"worker lost: no heartbeat for {GRACE} s"
    (rerun,) = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert rerun.state == TrialState.COMPLETE and rerun.params == killed.params
    assert "fail_reason" not in {k for k, v in rerun.user_attrs.items() if v is not None}
    if waits:
        # The new worker ran a trial of its own meanwhile; then, waiting, it looks every 2 s: the dead
        # trial is failed at the first look after it turned stale (GRACE s after its last beat).
        own = next(t for t in trials if t.number not in (dead.number, rerun.number))
        stale_at = max(killed_at + GRACE, own.datetime_complete.timestamp())
        assert dead.datetime_complete.timestamp() <= stale_at + 2 + 3, (dead.datetime_complete, killed_at)
        assert rerun.datetime_start >= dead.datetime_complete
    else:
        # Failed at the new worker's start, before it asked for anything: the first trial it ran.
        assert rerun.number == killed.number + 1, [(t.number, t.state.name) for t in trials]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_workers_trial_says_which_signal(signum, tmp_path):
    url, name = f"sqlite:///{tmp_path}/s.db", "stopped"
    _create(tmp_path, url, _spec(name, budget={"max_epochs": 15, "batch_size": 32}))
    worker = _worker(tmp_path, url, name, 2)
    stopped = _wait_mid_trial(url, name, worker)
    worker.send_signal(signum)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode != 0 and "Traceback" not in err, err[-3000:]
    trial, copy = _trials(url, name)  # the copy: re-queued for the next worker (test_stop_requeue.py)
    assert trial.number == stopped.number and trial.state == TrialState.FAIL
    assert copy.state == TrialState.WAITING and copy.params == trial.params
    assert trial.user_attrs["fail_reason"] == f"stopped by signal {signum.value}"


# ----- a study whose every trial fails -------------------------------------------------------------


def test_an_always_nan_study_stops_by_itself(tmp_path):
    url, name = f"sqlite:///{tmp_path}/s.db", "nan"
    # Plain SGD at a huge learning rate: every trial's loss is NaN in the first epoch.
    _create(tmp_path, url, _spec(name, model={"kind": "vae", "hidden1": 16, "hidden2": 8, "latent_dim": 2},
                                 optim={"name": "sgd", "lr": 1.0, "momentum": 0.0},
                                 space={"optim.lr": {"type": "float", "low": 8.0, "high": 10.0}}))
    started = time.monotonic()
    r = run_cli("worker", "--study", name, "--storage", url, "--n-trials", "2", "--device", "cpu",
                cwd=tmp_path, env=FAST, timeout=120)
    assert r.returncode == 2, r.stderr
    assert time.monotonic() - started < 90  # about 12 s on 2 idle cores
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "5 trials in a row failed" in errors[0] and "NonFiniteLossError" in errors[0], errors
    counts = StudyCounts.of(_trials(url, name))
    assert counts == StudyCounts(failed=5), counts.text()  # within K, and no zombie

    # The next worker finds the study over its failure budget once it holds more than max(10, 2 x 2).
    r = run_cli("worker", "--study", name, "--storage", url, "--n-trials", "2", "--device", "cpu",
                cwd=tmp_path, env={**FAST, "AEOPT_MAX_FAILED_TRIALS": "4"}, timeout=120)
    assert r.returncode == 2 and "holds 5 failed trials (more than 4)" in r.stderr, r.stderr
    assert StudyCounts.of(_trials(url, name)).total == 5  # no trial started


# ----- eight workers started at once on a fresh PostgreSQL database --------------------------------


@pytest.fixture
def fresh_pg_url(pg_server_url) -> str:
    """A new, empty database on the same server (dropped afterwards)."""
    import psycopg

    base, _, _ = pg_server_url.rpartition("/")
    db = f"aeopt_fresh_{uuid.uuid4().hex[:10]}"
    admin = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE DATABASE {db}")
    except Exception as exc:
        _missing(f"cannot create a database on 127.0.0.1:5432 ({type(exc).__name__})")
    yield f"{base}/{db}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    except psycopg.OperationalError:  # the server is busy: an empty test database is harmless
        pass


@pytest.mark.postgres
def test_eight_workers_start_at_once_on_a_fresh_database(tmp_path, fresh_pg_url):
    name, target = "eight", 16
    _create(tmp_path, fresh_pg_url, _spec(name))
    # Eight processes on a small machine: heartbeats may come late, and no worker dies here, so a
    # grace period that a starved (live) worker's heartbeat thread can keep.
    slow = {"AEOPT_GRACE_PERIOD": "20"}
    workers = [_worker(tmp_path, fresh_pg_url, name, target, "--worker-index", str(i), env=slow)
               for i in range(8)]
    for w in workers:
        _, err = w.communicate(timeout=300)  # about 40 s on 2 idle cores; far longer on a busy machine
        assert w.returncode == 0, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        assert not [line for line in err.splitlines() if line.startswith("error")], err[-3000:]
    trials = _trials(fresh_pg_url, name)
    counts = _assert_clean(trials, target)
    # The only failures allowed are surplus trials: two workers raced for the last one.
    assert all(t.user_attrs["fail_reason"].startswith("SurplusTrialError") for t in trials
               if t.state == TrialState.FAIL), counts.text()


# ----- a truncated data file ----------------------------------------------------------------------


def _idx(path: Path, dims: tuple[int, ...], data: bytes) -> None:
    header = (0x0800 + len(dims)).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    path.write_bytes(header + data)


def test_a_truncated_data_file_is_one_line_and_no_trial(tmp_path):
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    _idx(raw / "train-images-idx3-ubyte", (100, 28, 28), bytes(100 * 28 * 28 - 500))  # cut short
    _idx(raw / "train-labels-idx1-ubyte", (100,), bytes(100))
    _idx(raw / "t10k-images-idx3-ubyte", (10, 28, 28), bytes(10 * 28 * 28))
    _idx(raw / "t10k-labels-idx1-ubyte", (10,), bytes(10))
    url, name = f"sqlite:///{tmp_path}/s.db", "truncated"
    _create(tmp_path, url, _spec(name, data={"dataset": "fashion_mnist", "train_subset": 50}))
    r = run_cli("worker", "--study", name, "--storage", url, "--n-trials", "2", "--device", "cpu",
                "--data-dir", str(tmp_path / "data"), cwd=tmp_path, env=FAST, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "train-images-idx3-ubyte" in errors[0] and "truncated" in errors[0], r.stderr
    assert StudyCounts.of(_trials(url, name)).total == 0  # nothing started, nothing left RUNNING


def test_a_redis_storage_rides_out_a_refusal_right_after_it_opened(redis_url, monkeypatch):
    # Opening read the journal from Redis: the server was reached, so a refused call after it is an
    # outage to wait out, as on every other storage (it was raised at once on Redis alone).
    import redis

    monkeypatch.setenv("AEOPT_OUTAGE_SECONDS", "20")
    storage = open_storage(redis_url)
    inner = storage.optuna.inner
    real, calls = inner.get_all_studies, []

    def refused_once():
        calls.append(1)
        if len(calls) == 1:
            raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379.")
        return real()

    monkeypatch.setattr(inner, "get_all_studies", refused_once)
    assert isinstance(storage.optuna.get_all_studies(), list) and len(calls) == 2
