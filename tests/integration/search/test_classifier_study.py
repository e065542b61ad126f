"""The second study: fine-tune settings tuned with the same storage, workers and export."""

from __future__ import annotations

import json

import pytest
import yaml
from tests.conftest import REPO, run_cli
from optuna.trial import TrialState

from aeopt.config import ClassifierStudySpec, load_study_spec
from aeopt.errors import ConfigError
from aeopt.search.studies import load_study

pytestmark = pytest.mark.slow

AE = {
    "model": {"kind": "conv_ae", "c1": 4, "c2": 8, "c3": 8, "fc": 16, "latent_dim": 6, "dropout": 0.0},
    "data": {"dataset": "synthetic", "train_subset": 400},
    "budget": {"max_epochs": 4, "batch_size": 64},
}


def test_spec_inlines_the_autoencoder_export(tmp_path):
    (tmp_path / "best.yaml").write_text(yaml.safe_dump({**AE, "metrics": {"cv_mean": 0.1}, "provenance": {"study": "x"}}))
    spec = load_study_spec(REPO / "studies" / "classifier.yaml", [f"autoencoder={tmp_path / 'best.yaml'}"])
    assert isinstance(spec, ClassifierStudySpec)
    assert spec.model.c1 == 4 and spec.data.dataset == "synthetic" and spec.max_epochs == 40
    cfg = spec.run_config({"finetune.lr": 0.001, "finetune.mode": "frozen"})
    assert cfg.finetune.lr == 0.001 and cfg.finetune.mode == "frozen" and cfg.model.fc == 16


def test_missing_autoencoder_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="autoencoder = 'nope.yaml': no such file"):
        load_study_spec(REPO / "studies" / "classifier.yaml", ["autoencoder=nope.yaml"])


def test_classifier_study_end_to_end(tmp_path):
    (tmp_path / "ae.yaml").write_text(yaml.safe_dump(AE))
    spec = {
        "task": "classifier", "name": "clf", "autoencoder": "ae.yaml",
        "finetune": {"max_epochs": 3, "patience": 0, "min_steps_per_epoch": 20, "batch_size": 64},
        "cv": {"folds": 2}, "sampler": {"name": "random", "seed": 0}, "pruner": {"name": "none"},
        "space": {"finetune.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
                  "finetune.mode": {"type": "categorical", "choices": ["full", "frozen"]}},
    }
    (tmp_path / "clf.yaml").write_text(yaml.safe_dump(spec))
    url = f"sqlite:///{tmp_path}/s.db"
    r = run_cli("study", "create", "clf.yaml", "--storage", url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (tmp_path / "ae.yaml").unlink()  # workers need only the storage: the AE config is inside the study
    r = run_cli("worker", "--study", "clf", "--storage", url, "--n-trials", "2", "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study, stored = load_study(url, "clf")
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2 and isinstance(stored, ClassifierStudySpec)
    for t in done:
        accs = t.user_attrs["fold_val_acc"]
        assert len(accs) == 2 and t.value == pytest.approx(1 - sum(accs) / 2)
        assert t.value < 0.9  # better than chance on 10 classes
        assert sorted(t.intermediate_values) == [1, 2, 3]
    # The export is a fine-tune config: `aeopt finetune` runs it as it is.
    r = run_cli("export", "--study", "clf", "--storage", url, "-o", "best_clf.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    exported = yaml.safe_load((tmp_path / "best_clf.yaml").read_text())
    assert exported["finetune"]["lr"] == study.best_trial.params["finetune.lr"]
    assert exported["model"]["c1"] == 4
    r = run_cli("finetune", "best_clf.yaml", "--out", "ft", "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert metrics["mode"] == exported["finetune"]["mode"]
    assert 0.1 < metrics["test_acc"] <= 1.0
