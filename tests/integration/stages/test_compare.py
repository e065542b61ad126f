"""`aeopt compare` across test sets: tiny real baseline runs on bundled and synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aeopt.config import load_baseline_config
from aeopt.stages.baseline import train_baseline
from tests.conftest import run_cli

pytestmark = pytest.mark.slow

TINY_CNN = ["data.train_subset=300", "model.c1=4", "model.c2=8", "model.fc=16", "train.max_epochs=1",
            "train.batch_size=64", "train.min_steps_per_epoch=2"]


def _cnn(out: Path, *sets: str) -> Path:
    train_baseline(load_baseline_config(None, [*TINY_CNN, *sets]), device="cpu", out=out, show_progress=False)
    return out


def test_compare_shows_dataset_and_test_size_and_warns_when_they_differ(tmp_path):
    a = _cnn(tmp_path / "a", "data.dataset=synthetic", "data.test_subset=100")
    b = _cnn(tmp_path / "b", "data.dataset=synthetic", "data.test_subset=100", "train.labels=200")
    c = _cnn(tmp_path / "c", "data.dataset=digits", "data.test_subset=200")

    # Same test set, other label budget: a legitimate comparison, no warning.
    proc = run_cli("compare", str(a), str(b), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:5] == ["run", "model", "dataset", "n", "test"]
    assert all(row.split()[3:5] == ["synthetic", "100"] for row in lines[2:])
    assert "warning" not in proc.stderr

    # Another dataset and test-set size: the table still shows them, and one line says so.
    proc = run_cli("compare", str(a), str(c), cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert lines[0] in proc.stdout and "digits" in proc.stdout.splitlines()[3]
    warning = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warning) == 1
    assert "datasets (digits, synthetic)" in warning[0] and "test-set sizes (100, 200)" in warning[0]
    assert "not comparable" in warning[0]

    proc = run_cli("compare", str(a), str(c), "--json", cwd=tmp_path)
    rows = json.loads(proc.stdout)
    assert [(r["dataset"], r["n_test"]) for r in rows] == [("synthetic", 100), ("digits", 200)]
    assert "not comparable" in proc.stderr


def test_compare_warns_when_a_test_subset_of_the_same_size_was_drawn_with_another_split_seed(tmp_path):
    a = _cnn(tmp_path / "a", "data.dataset=digits", "data.test_subset=200")
    b = _cnn(tmp_path / "b", "data.dataset=digits", "data.test_subset=200", "train.labels=300")
    c = _cnn(tmp_path / "c", "data.dataset=digits", "data.test_subset=200", "data.split_seed=7")

    proc = run_cli("compare", str(a), str(b), cwd=tmp_path)  # the same 200 test images: no warning
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr

    proc = run_cli("compare", str(a), str(b), str(c), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert rows[0]["test_set"] == rows[1]["test_set"] != rows[2]["test_set"]
    warning = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warning) == 1 and "data.split_seed" in warning[0] and "not comparable" in warning[0]
