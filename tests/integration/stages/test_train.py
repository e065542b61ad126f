"""`aeopt train` end to end through the real console entry point (a subprocess per call)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
import yaml

from aeopt.config import dump_yaml
from aeopt.training import data as aeopt_data
from aeopt.training.checkpoint import load_checkpoint
from aeopt.training.data import prepare, to_float
from aeopt.training.engine import evaluate_loss
from tests.conftest import run_cli as _run_cli

REPO = Path(__file__).resolve().parents[3]
CONV = str(REPO / "configs" / "conv_ae.yaml")
METRIC_KEYS = {"train_loss", "val_loss", "test_loss", "epochs", "seconds", "images_per_second"}
# Small and quick everywhere: the bundled digits, two epochs.
QUICK = ["--set", "data.dataset=digits", "--set", "budget.max_epochs=2", "--device", "cpu"]


def run_cli(*args: str, cwd: Path):
    # One torch thread per subprocess: on a 2-core machine shared with other jobs, two OpenMP
    # threads spin-waiting for a core make a tiny run several times slower (BENCHMARKS.md).
    return _run_cli(*args, cwd=cwd, env={"OMP_NUM_THREADS": "1"})


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.slow
def test_train_end_to_end_on_digits(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_cli("train", CONV, *QUICK, "--set", "model.latent_dim=4", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr

    printed = json.loads(proc.stdout)
    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(printed) and METRIC_KEYS <= set(metrics)
    assert printed["test_loss"] == metrics["test_loss"]
    assert metrics["epochs"] == 2 and len(metrics["history"]) == 2
    assert metrics["dataset"] == "digits" and metrics["model"] == "conv_ae"
    assert 0 < metrics["test_loss"] < 0.3 and metrics["images_per_second"] > 0
    assert metrics["n_train"] + metrics["n_val"] + metrics["n_test"] == 1797

    # The checkpoint is plain data (loads without running pickled code) and rebuilds the model.
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    assert payload["config"]["model"]["latent_dim"] == 4
    assert "torch" in payload["versions"] and payload["metrics"]["test_loss"] == metrics["test_loss"]
    model, cfg, _ = load_checkpoint(out / "checkpoint.pt")
    assert cfg.data.dataset == "digits" and cfg.budget.max_epochs == 2
    test_x = to_float(prepare(cfg.data).test.x, "cpu")
    loss = evaluate_loss(model, cfg, test_x, torch.device("cpu"))
    assert loss == pytest.approx(metrics["test_loss"], rel=1e-5)

    # Outputs get the mode a plain open() gives (not mkstemp's 0600): dashboards and containers read them.
    mask = os.umask(0o022)
    os.umask(mask)
    for name in ("metrics.json", "checkpoint.pt", "reconstructions.png"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o666 & ~mask, name

    png = (out / "reconstructions.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    assert "wrote" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_denoising_from_an_export_and_vae_from_a_config_with_train_subset(tmp_path: Path) -> None:
    # An export is a run config with metrics and provenance beside it; the same --set works on both.
    run = yaml.safe_load((REPO / "configs" / "denoising_ae.yaml").read_text())
    export = tmp_path / "best.yaml"
    export.write_text(dump_yaml({**run, "metrics": {"test_loss": 0.02}, "provenance": {"study": "s"}}))
    for name, config in (("denoising_ae", export), ("vae", REPO / "configs" / "vae.yaml")):
        out = tmp_path / name
        proc = run_cli("train", str(config), *QUICK, "--set", "budget.max_epochs=1",
                       "--set", "data.train_subset=300", "--set", "data.test_subset=100",
                       "--out", str(out), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["model"] == name
        assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (240, 60, 100)
        _, cfg, _ = load_checkpoint(out / "checkpoint.pt")
        assert cfg.model.kind == name and cfg.data.train_subset == 300
    assert "test_mse_noisy_input" in json.loads((tmp_path / "denoising_ae" / "metrics.json").read_text())


def _bad_yaml(tmp: Path) -> str:
    p = tmp / "bad.yaml"
    p.write_text("model:\n  kind: conv_ae\n  c1: [16\n")
    return str(p)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (lambda tmp: [str(tmp / "missing.yaml")], ["missing.yaml", "no such file"]),
        (lambda tmp: [_bad_yaml(tmp)], ["bad.yaml", "not valid YAML", "line"]),
        (lambda tmp: [CONV, "--set", "model.kind=resnet"], ["model.kind", "resnet"]),
        (lambda tmp: [CONV, "--set", "optim.lr=-0.001"], ["optim.lr", "-0.001"]),
        (lambda tmp: [CONV, "--set", "optimizer.lr=0.1"], ["optimizer", "unknown key"]),
        (lambda tmp: [CONV, "--set", "model.latentdim=3"], ["model.latentdim", "unknown key"]),
    ],
    ids=["missing-file", "bad-yaml", "unknown-model", "negative-lr", "unknown-section", "unknown-field"],
)
def test_config_errors_are_one_line_exit_2_and_write_nothing(tmp_path: Path, args, needles) -> None:
    out = tmp_path / "out"
    proc = run_cli("train", *args(tmp_path), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 2
    lines = _lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not out.exists()
    assert not (tmp_path / "runs").exists()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    proc = run_cli("--debug", "train", CONV, "--set", "optim.lr=-1", "--out", str(tmp_path / "out"),
                   cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "optim.lr" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(aeopt_data.DEBIAN_FASHION_DIR.is_dir(),
                    reason="Debian's dataset-fashion-mnist is installed here")
def test_missing_data_names_the_fixes_and_writes_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    proc = run_cli("train", CONV, "--data-dir", str(empty), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 2
    lines = _lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    for fix in ("--data-dir", "AEOPT_DATA_DIR", "dataset-fashion-mnist", "digits"):
        assert fix in lines[0]
    assert not out.exists() and not any(empty.iterdir())


@pytest.mark.slow
def test_diverged_run_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli("train", str(REPO / "configs" / "vae.yaml"), *QUICK,
                   "--set", "optim.name=sgd", "--set", "optim.lr=10", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 2
    assert [line for line in _lines(proc.stderr) if line.startswith("error: ")] == _lines(proc.stderr)[-1:]
    assert "diverged" in proc.stderr and "optim.lr" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.realdata
def test_train_one_epoch_on_real_fashion_mnist(tmp_path: Path, real_data_dir: Path) -> None:
    out = tmp_path / "real"
    proc = run_cli("train", CONV, "--data-dir", str(real_data_dir), "--device", "cpu",
                   "--set", "budget.max_epochs=1", "--set", "data.train_subset=6000",
                   "--set", "data.test_subset=1000", "--set", "budget.batch_size=64",
                   "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "fashion_mnist"
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (4800, 1200, 1000)
    # One epoch (75 steps) already beats painting every pixel the dataset's mean grey (test MSE
    # 0.124); the untrained network's 0.5-grey output scores 0.170.
    assert metrics["test_loss"] < 0.12
    assert (out / "reconstructions.png").is_file()
