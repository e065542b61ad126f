"""The report's fine-tune table: a k-fold run has no single best epoch, and says how it was tested."""

from __future__ import annotations

from pathlib import Path

from aeopt.report.finetune import _table
from aeopt.stages.metrics import ClassifierMetrics, ClassifierRun, CVSummary

BASE = {"task": "finetune", "model": "conv_ae", "mode": "full", "init": "pretrained", "dataset": "digits",
        "labels": 600, "val_acc": 0.9, "test_acc": 0.88, "test_loss": 0.4, "per_class_acc": {},
        "seconds": 1.0, "total_seconds": 2.0, "n_test": 359, "parameters": 1000, "trainable_parameters": 1000,
        "device": "cpu"}


def _rows(**fields) -> dict[str, str]:
    metrics = ClassifierMetrics.model_validate({**BASE, **fields})
    return dict(_table(ClassifierRun(Path("run"), metrics, None)))


def test_a_single_run_shows_its_best_epoch():
    rows = _rows(epochs=7, best_epoch=5, n_train=480, n_val=120)
    assert rows["epochs"] == "7 (best 5)" and "test protocol" not in rows


def test_a_k_fold_run_shows_each_folds_epochs_and_its_test_protocol():
    cv = CVSummary(folds=2, val_acc_mean=0.9, val_acc_std=0.01, fold_val_acc=[0.89, 0.91], fold_epochs=[3, 4],
                   fold_best_epoch=[2, 4], fold_n_train=[300, 300], fold_n_val=[300, 300])
    rows = _rows(epochs=7, cv=cv.model_dump())
    assert rows["epochs"] == "7 over 2 folds (3, 4)"
    assert rows["test protocol"] == cv.test_protocol and "best" not in rows["epochs"]
