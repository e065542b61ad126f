"""The second study: fine-tune settings tuned with the same storage, workers and export."""

from __future__ import annotations

import json
import statistics
import time

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

from aeopt.config import ClassifierStudySpec, RunConfig, load_study_spec
from aeopt.errors import ConfigError
from aeopt.search.classifier_objective import ClassifierObjective, _FoldHook
from aeopt.search.objective import DEADLINE_REASON, STOPPED_BY, DeadlineError
from aeopt.search.records import TrialRecord
from aeopt.search.storage import open_storage
from aeopt.search.studies import load_study
from aeopt.training.checkpoint import save_checkpoint
from aeopt.training.models import build_model
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow

AE = {
    "model": {"kind": "conv_ae", "c1": 4, "c2": 8, "c3": 8, "fc": 16, "latent_dim": 6, "dropout": 0.0},
    "data": {"dataset": "synthetic", "train_subset": 400},
    "budget": {"max_epochs": 4, "batch_size": 64},
}


def test_spec_inlines_the_autoencoder_export(tmp_path):
    export = {**AE, "metrics": {"cv_mean": 0.1}, "provenance": {"study": "x"}}
    (tmp_path / "best.yaml").write_text(yaml.safe_dump(export))
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
    # --worker-index: the sampled points are the spec's seed's (without it the worker mixes in its pid,
    # and a frozen encoder at the lowest rate sometimes stayed at chance in 3 epochs).
    r = run_cli("worker", "--study", "clf", "--storage", url, "--n-trials", "2", "--device", "cpu",
                "--worker-index", "0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # a progress line per fold epoch (a full fine-tune trial can run minutes without one)
    assert "trial 1 fold 2/2 epoch 3/3: validation accuracy" in r.stdout + r.stderr
    study, stored = load_study(open_storage(url), "clf")
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2 and isinstance(stored, ClassifierStudySpec)
    for t in done:
        accs = t.user_attrs["fold_val_acc"]
        assert len(accs) == 2 and t.value == pytest.approx(1 - sum(accs) / 2)
        # The trial record: per-fold validation error, its spread, epochs, where it ran.
        record = TrialRecord.of(t)
        assert record.fold_losses == pytest.approx([1 - a for a in accs])
        assert record.cv_std == pytest.approx(statistics.pstdev(record.fold_losses))
        assert record.epochs == 3 and record.device == "cpu" and record.host and record.seconds > 0
        assert record.fail_reason is None
        assert sorted(t.intermediate_values) == [1, 2, 3]
    assert min(t.value for t in done) < 0.9  # better than chance on 10 classes
    # The export is a fine-tune config: `aeopt finetune` runs it as it is.
    r = run_cli("export", "--study", "clf", "--storage", url, "-o", "best_clf.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # Named as what it is, with the command that uses it (not `aeopt train`, which ignores finetune:).
    assert ", CV error " in r.stdout and "fine-tune it with: aeopt finetune best_clf.yaml" in r.stderr
    exported = yaml.safe_load((tmp_path / "best_clf.yaml").read_text())
    assert exported["finetune"]["lr"] == study.best_trial.params["finetune.lr"]
    assert exported["model"]["c1"] == 4
    r = run_cli("finetune", "best_clf.yaml", "--out", "ft", "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert metrics["mode"] == exported["finetune"]["mode"]
    assert 0.1 < metrics["test_acc"] <= 1.0


def _spec(**changes) -> ClassifierStudySpec:
    raw = {**AE, "task": "classifier", "name": "clf", "budget": {"max_epochs": 1, "batch_size": 64},
           "finetune": {"max_epochs": 3, "patience": 0, "min_steps_per_epoch": 5, "batch_size": 64},
           "cv": {"folds": 2}, "sampler": {"name": "random", "seed": 0}, "pruner": {"name": "none"},
           "space": {"finetune.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}}
    return ClassifierStudySpec.model_validate({**raw, **changes})


def test_pruning_watches_the_first_fold_only(tmp_path):
    objective = ClassifierObjective(_spec(), device="cpu")
    # Prunes as soon as a reported validation error is above 0: at fold 0's first epoch.
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [1]
    record = TrialRecord.of(trial)
    assert record.epochs == 1 and record.fold_losses == [] and record.device == "cpu"


def test_a_diverged_autoencoder_fails_the_trial_with_its_reason(tmp_path):
    # A checkpoint of an autoencoder whose weights went NaN (a run that diverged): every classifier
    # on it has a NaN loss, and the trial fails with the reason recorded.
    cfg = RunConfig.model_validate(AE)
    model = build_model(cfg)
    with torch.no_grad():
        next(model.encoder.parameters()).fill_(float("nan"))
    save_checkpoint(tmp_path / "nan.pt", model, cfg)
    objective = ClassifierObjective(_spec(checkpoint=str(tmp_path / "nan.pt")), device="cpu")
    study = optuna.create_study()
    study.optimize(objective, n_trials=1, catch=(Exception,))
    trial = study.trials[0]
    assert trial.state == TrialState.FAIL
    assert TrialRecord.of(trial).fail_reason.startswith("NonFiniteLossError: classifier training loss is nan")


def test_the_deadline_stops_a_classifier_trial_at_an_epoch_end(tmp_path):
    # 10,000 epochs a fold cannot finish in 3 s (a fast 2-core VM ran 200 in under 3 s): the trial stops
    # at the first epoch end past the deadline, pruned where it got to and marked, as autoencoder
    # trials are (aeopt.search.objective).
    ft = {"max_epochs": 10_000, "patience": 0, "min_steps_per_epoch": 5, "batch_size": 64}
    objective = ClassifierObjective(_spec(finetune=ft), device="cpu")
    objective.deadline = time.monotonic() + 3.0
    study = optuna.create_study()
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED and trial.user_attrs[STOPPED_BY] == DEADLINE_REASON
    assert 1 <= trial.last_step < 10_000
    # A deadline already past when a trial starts fails it with that reason, before any training.
    study.optimize(objective, n_trials=1, catch=(DeadlineError,))
    assert study.trials[1].state == TrialState.FAIL
    assert study.trials[1].user_attrs["fail_reason"] == DEADLINE_REASON


def test_a_later_folds_epoch_past_the_deadline_stops_the_trial():
    # The hook after fold 1's first epoch (fold 0 finished, reported up to epoch 2): pruned at epoch 2.
    study = optuna.create_study()
    trial = study.ask()
    hook = _FoldHook(trial, deadline=None, folds=2, max_epochs=2)
    hook(0, 1, 0.5, 1.0)
    hook(0, 2, 0.6, 0.9)
    hook.deadline = time.monotonic() - 1.0
    with pytest.raises(optuna.TrialPruned, match="after epoch 2"):
        hook(1, 1, 0.5, 1.0)
    assert trial.user_attrs[STOPPED_BY] == DEADLINE_REASON


def test_a_folds_last_epoch_past_the_deadline_leaves_the_trial_complete():
    # After the last fold's last epoch nothing is left to stop: the result is complete, not pruned.
    study = optuna.create_study()
    trial = study.ask()
    hook = _FoldHook(trial, deadline=None, folds=2, max_epochs=2)
    hook(0, 1, 0.5, 1.0)
    hook(0, 2, 0.6, 0.9)
    hook(1, 1, 0.5, 1.0)
    hook.deadline = time.monotonic() - 1.0
    hook(1, 2, 0.6, 0.9)
    assert STOPPED_BY not in trial.user_attrs
