"""Classifier run folders: one schema for the writer and the readers (`aeopt compare`), the metrics
builder both stages use, and the one evaluation on the test split. No training here."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from aeopt.config import DataConfig
from aeopt.errors import AeoptError, ConfigError
from aeopt.stages.classifier_run import (
    FinalEvaluation,
    LabelledData,
    classifier_metrics,
    evaluate_on_test,
    labelled_split,
)
from aeopt.stages.compare import compare_rows, different_test_sets, format_table
from aeopt.stages.metrics import (
    ClassifierMetrics,
    ConfusionMatrix,
    CVSummary,
    read_classifier_run,
    write_classifier_json,
)
from aeopt.training.data import Split
from aeopt.training.supervised import ClassifierFit

CLASSES = ["a", "b", "c"]


def _metrics(**changes) -> ClassifierMetrics:
    base = dict(task="finetune", model="conv_ae", mode="full", init="pretrained", dataset="synthetic",
                labels=100, train_acc=0.9, val_acc=0.8, test_acc=0.75, test_loss=0.6,
                per_class_acc={"a": 1.0, "b": 0.5, "c": math.nan}, epochs=12, best_epoch=9, seconds=30.0,
                total_seconds=200.0, n_train=80, n_val=20, n_test=30, parameters=1000,
                trainable_parameters=1000, device="cpu", history=[{"epoch": 1, "val_acc": 0.5}])
    return ClassifierMetrics.model_validate({**base, **changes})


def _write(folder: Path, m: ClassifierMetrics) -> Path:
    confusion = ConfusionMatrix(classes=CLASSES, matrix=[[2, 0, 0], [1, 1, 0], [0, 0, 0]])
    write_classifier_json(folder, m, confusion)
    return folder


def test_written_folder_reads_back_as_written(tmp_path):
    m = _metrics(cv=CVSummary(folds=3, val_acc_mean=0.8, val_acc_std=0.01, fold_val_acc=[0.79, 0.8, 0.81],
                              fold_epochs=[4, 4, 4]), train_acc=None)
    run = read_classifier_run(_write(tmp_path / "run", m))
    # NaN (a class absent from the test split) and all: written and read back unchanged.
    assert json.dumps(run.metrics.model_dump(mode="json")) == json.dumps(m.model_dump(mode="json"))
    assert run.confusion is not None and run.confusion.classes == CLASSES
    raw = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # Unset fields are left out (no "train_acc": null with cv), and epochs stay integers.
    assert "train_acc" not in raw and "config" not in raw and raw["history"] == [{"epoch": 1, "val_acc": 0.5}]
    assert json.loads((tmp_path / "run" / "confusion_matrix.json").read_text())["rows"] == "true class"


def test_compare_rows_use_the_schema_labels_and_fold_means(tmp_path):
    ft = _write(tmp_path / "ft", _metrics(init="random"))
    cv = _write(tmp_path / "cv", _metrics(mode="frozen", train_acc=None, val_acc=0.5, cv=CVSummary(
        folds=2, val_acc_mean=0.7, val_acc_std=0.05, fold_val_acc=[0.65, 0.75], fold_epochs=[3, 4])))
    cnn = _write(tmp_path / "cnn", _metrics(task="baseline", model="cnn", mode="scratch", init="random"))
    rows = compare_rows([ft, cv, cnn])
    assert [r["model"] for r in rows] == ["finetune conv_ae (full, random init)", "finetune conv_ae (frozen)",
                                          "baseline cnn"]
    assert rows[1]["val_acc"] == 0.7 and rows[1]["val_std"] == 0.05 and rows[1]["train_acc"] is None
    lines = format_table(rows).splitlines()
    assert lines[0].split()[:6] == ["run", "model", "dataset", "n", "test", "labels"]
    assert set(lines[1]) <= {"-", " "}
    assert "0.7000 +- 0.0500" in lines[3] and "3.3 min" in lines[3] and "30.0 s" in lines[3]
    # The train accuracy of a k-fold run is "-", aligned under its header.
    assert lines[3].split()[7] == "-" and lines[3].split()[4:6] == ["synthetic", "30"]
    assert different_test_sets(rows) is None


def test_compare_warns_in_one_line_when_the_test_sets_differ(tmp_path):
    a = _write(tmp_path / "a", _metrics())
    mnist = _write(tmp_path / "mnist", _metrics(dataset="mnist", n_test=10000))
    fewer = _write(tmp_path / "fewer", _metrics(n_test=100, labels=40))
    other_budget = _write(tmp_path / "budget", _metrics(labels=40, mode="frozen"))
    # Another label budget or mode, the same test set: what a comparison is for.
    assert different_test_sets(compare_rows([a, other_budget])) is None
    line = different_test_sets(compare_rows([a, mnist, fewer]))
    assert line is not None and "\n" not in line
    assert "datasets (mnist, synthetic)" in line and "test-set sizes (30, 100, 10000)" in line
    line = different_test_sets(compare_rows([a, fewer]))
    assert "test-set sizes (30, 100) differ" in line and "datasets" not in line


def test_compare_rejects_folders_that_are_not_classifier_runs(tmp_path):
    with pytest.raises(AeoptError, match="no metrics.json"):
        compare_rows([tmp_path / "missing"])
    (tmp_path / "ae").mkdir()
    (tmp_path / "ae" / "metrics.json").write_text(json.dumps({"model": "conv_ae", "test_mse": 0.01}))
    with pytest.raises(AeoptError, match="no test_acc"):
        compare_rows([tmp_path / "ae"])
    bad = _metrics().model_dump(mode="json")
    bad["epochs"] = "many"
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.json").write_text(json.dumps(bad))
    with pytest.raises(AeoptError, match="epochs") as info:
        compare_rows([tmp_path / "bad"])
    assert "\n" not in str(info.value)


class _Fixed(nn.Module):
    """A 'model' with given logits: row i of `logits` for the image whose first pixel is i / 255."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[(x.flatten(1)[:, 0] * 255).round().long()]


def test_test_evaluation_of_one_model_and_of_a_fold_ensemble():
    x = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.arange(4, dtype=torch.uint8)
    test = Split(x, torch.tensor([0, 1, 2, 2]))
    a = torch.tensor([[5.0, 0, 0], [0, 5, 0], [5, 0, 0], [0, 0, 5]])  # 3 of 4 right
    b = torch.tensor([[0.0, 0, 5], [0, 5, 0], [0, 0, 5], [0, 0, 5]])  # 3 of 4 right
    one = evaluate_on_test([_Fixed(a)], test, 3, torch.device("cpu"))
    assert one.accuracy == 0.75 and one.matrix == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    both = evaluate_on_test([_Fixed(a), _Fixed(b)], test, 3, torch.device("cpu"))
    # The fold ensemble averages the softmax outputs (image 2: classes 0 and 2 tie; argmax takes 0).
    probs = (a.softmax(1) + b.softmax(1)) / 2
    assert both.accuracy == pytest.approx(float((probs.argmax(1) == test.y).float().mean())) == 0.75
    assert both.loss == pytest.approx(float(torch.nn.functional.nll_loss(probs.log(), test.y)))
    assert both.matrix == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]


def test_metrics_builder_counts_labels_parameters_and_time():
    split = Split(torch.zeros(8, 1, 28, 28, dtype=torch.uint8), torch.zeros(8, dtype=torch.long))
    data = LabelledData(split, split.take(torch.arange(2)), split.take(torch.arange(3)), CLASSES, "synthetic")
    net = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 3))
    net[0].weight.requires_grad_(False)
    fit = ClassifierFit(history=[{"epoch": 1, "val_acc": 0.5}], best_epoch=1, best_val_acc=0.5, epochs=1)
    started = time.perf_counter() - 2.0
    test = FinalEvaluation(0.5, 1.0, [[1, 1, 0], [0, 0, 0], [0, 0, 2]])
    m = classifier_metrics(task="baseline", model="cnn", mode="scratch", init="random", dataset="synthetic",
                           data=data, labels=None, classifier=net, fit=fit, test=test, train_acc=0.9,
                           seconds=1.23456, started=started, device=torch.device("cpu"), config={"seed": 0})
    assert m.labels == 10 and (m.n_train, m.n_val, m.n_test) == (8, 2, 3)
    assert m.parameters == 4 * 3 + 3 + 3 * 3 + 3 and m.trainable_parameters == m.parameters - 12
    assert m.seconds == 1.235 and m.total_seconds >= 2.0 and m.host
    assert m.per_class_acc["a"] == 0.5 and math.isnan(m.per_class_acc["b"]) and m.per_class_acc["c"] == 1.0
    assert m.label == "baseline cnn" and m.config == {"seed": 0}


def test_label_budget_errors_name_the_field():
    data = DataConfig(dataset="synthetic", train_subset=200)
    with pytest.raises(ConfigError, match=r"^train\.labels = 10: need at least 2 per class"):
        labelled_split(data, 10, field="train.labels")
    with pytest.raises(ConfigError, match=r"finetune\.labels = 500: the training split has only 200 images"):
        labelled_split(data, 500)
