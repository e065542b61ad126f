"""The adversarial autoencoder as a user runs it: its shipped config trains, its shipped spec searches."""

from __future__ import annotations

import json

import optuna
import pytest

from aeopt.config import load_run_config, load_study_spec
from tests.conftest import REPO, run_cli

TINY = ["data.dataset=digits", "model.c1=4", "model.c2=8", "model.c3=8", "model.fc=16",
        "model.disc_hidden=16", "budget.max_epochs=2", "budget.batch_size=64"]
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def _sets(items: list[str]) -> list[str]:
    return [a for s in items for a in ("--set", s)]


def test_shipped_aae_config_and_spec_load():
    cfg = load_run_config(REPO / "configs" / "aae.yaml")
    assert cfg.model.kind == "aae" and cfg.model.latent_dim == 10
    spec = load_study_spec(REPO / "studies" / "aae.yaml")
    assert {"model.prior", "model.disc_hidden", "model.disc_lr", "model.adv_weight"} <= set(spec.space)


def test_aae_trains_and_a_study_of_it_runs(tmp_path):
    proc = run_cli("train", str(REPO / "configs" / "aae.yaml"), "--device", "cpu", *_sets(TINY),
                   "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["model"] == "aae" and 0 < metrics["test_mse"] < 0.2

    url = f"sqlite:///{tmp_path / 's.db'}"
    spec_sets = _sets([*TINY, "cv.folds=2", "space.model.c1.high=8", "space.model.c2.high=16",
                       "space.model.fc.high=32", "space.model.disc_hidden.high=32",
                       "space.budget.batch_size.choices=[64]"])
    spec = str(REPO / "studies" / "aae.yaml")
    proc = run_cli("study", "create", spec, "--storage", url, *spec_sets, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run_cli("worker", "--study", "aae", "--storage", url, "--n-trials", "2", "--device", "cpu",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    study = optuna.load_study(study_name="aae", storage=url)
    finished = [t for t in study.trials if t.state in FINISHED]
    assert len(finished) == 2
    assert {t.params["model.prior"] for t in finished} <= {"gaussian", "mixture10"}
    # A complete trial's value is its mean CV loss plus the prior penalty, both recorded.
    for t in (t for t in finished if t.state == optuna.trial.TrialState.COMPLETE):
        attrs = t.user_attrs
        assert attrs["prior_mmd"] >= 0 and attrs["penalty"] >= 0
        mean = sum(attrs["fold_losses"]) / len(attrs["fold_losses"])
        assert t.value == pytest.approx(mean + attrs["penalty"], rel=1e-6)
