"""Shared fixtures. Tests never download: the cache is a temp folder and AEOPT_OFFLINE is set.

Real-data tests use ../shared/data (or AEOPT_DATA_DIR); PostgreSQL tests use the server at
127.0.0.1:5432 (AEOPT_TEST_PG_URL names a database; otherwise one is created per session).
Outside CI those tests skip with the reason when the data or the server is missing; in CI
(CI=true) they fail instead, so nothing is silently skipped there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("AEOPT_OFFLINE", "1")
    monkeypatch.delenv("AEOPT_STORAGE", raising=False)
    monkeypatch.delenv("AEOPT_DEVICE", raising=False)


def find_real_data() -> Path | None:
    for candidate in (os.environ.get("AEOPT_DATA_DIR"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "FashionMNIST" / "raw").is_dir():
            return Path(candidate).resolve()
    return None


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    path = find_real_data()
    if path is None:
        _missing("real Fashion-MNIST not found (set AEOPT_DATA_DIR or put shared/data beside the repo)")
    return path


def _pg_reachable() -> bool:
    try:
        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """A PostgreSQL database for this test session (created here unless AEOPT_TEST_PG_URL is set)."""
    url = os.environ.get("AEOPT_TEST_PG_URL")
    if url:  # CI's own fresh database (.ci/run creates and drops it)
        yield url
        return
    if not _pg_reachable():
        _missing("PostgreSQL is not reachable at 127.0.0.1:5432 (start it, or set AEOPT_TEST_PG_URL)")
    import psycopg

    name = f"aeopt_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_url(pg_server_url) -> str:
    """The session's PostgreSQL URL; each test uses its own study names (uuid) inside it."""
    return pg_server_url


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run the real `aeopt` console entry point in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "aeopt", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def tiny_spec(**sections: dict) -> dict:
    """A study spec of a tiny conv AE on 300 synthetic images, 2 folds, 1 epoch, random sampler, no
    pruner, lr searched: each keyword's keys replace those of its section (`budget={"max_epochs": 500}`),
    and a top-level value (`name="s"`) is set as it is."""
    spec = {
        "model": {"kind": "conv_ae", "c1": 4, "c2": 8, "c3": 8, "fc": 16, "latent_dim": 4},
        "data": {"dataset": "synthetic", "train_subset": 300},
        "budget": {"max_epochs": 1, "batch_size": 64},
        "cv": {"folds": 2},
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "space": {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
    }
    for key, value in sections.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) and key in spec else value
    return spec
