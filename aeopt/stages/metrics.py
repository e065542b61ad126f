"""The outputs of a classifier run (`aeopt finetune`, `aeopt baseline cnn`): one schema, writer and readers.

A run folder holds `metrics.json` (a `ClassifierMetrics`) and `confusion_matrix.json` (a
`ConfusionMatrix`), written by `write_classifier_json`; `aeopt compare` and `aeopt report --finetune`
read them back with `read_classifier_run`, so no reader guesses key names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aeopt.errors import AeoptError
from aeopt.files import atomic_write_text

METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion_matrix.json"


class CVSummary(BaseModel):
    """The fine-tune repeated over k stratified folds of the labelled training images."""

    model_config = ConfigDict(extra="forbid")

    folds: int
    val_acc_mean: float
    val_acc_std: float
    fold_val_acc: list[float]
    fold_epochs: list[int]
    # Per fold: the epoch whose weights it kept, and its training / validation images (None: written
    # by an aeopt that did not record them).
    fold_best_epoch: list[int] | None = None
    fold_n_train: list[int] | None = None
    fold_n_val: list[int] | None = None
    # How test_acc was obtained: no single model is tested, the fold models' ensemble is.
    test_protocol: str = "mean of the fold models' softmax outputs, evaluated once"


class ClassifierMetrics(BaseModel):
    """metrics.json of a classifier run."""

    # Unknown keys are allowed on read (a newer aeopt may add some); every known key is typed.
    model_config = ConfigDict(extra="allow")

    task: Literal["finetune", "baseline"]
    model: str  # the autoencoder kind for a fine-tune, "cnn" for the baseline
    mode: str  # full | frozen | scratch
    init: str  # pretrained | random
    dataset: str
    labels: int
    train_acc: float | None = None  # None with cv (the folds' training sets differ)
    val_acc: float
    test_acc: float
    test_loss: float
    per_class_acc: dict[str, float]
    epochs: int  # with cv: the folds' epochs added up (cv.fold_epochs has each)
    best_epoch: int | None = None  # None with cv: each fold kept its own (cv.fold_best_epoch)
    seconds: float
    pretrain_seconds: float = 0.0
    total_seconds: float
    n_train: int | None = None  # None with cv: each fold trained on its own (cv.fold_n_train)
    n_val: int | None = None  # None with cv: cv.fold_n_val
    n_test: int
    test_set: str | None = None  # Split.digest() of the test images: None in runs before it was recorded
    parameters: int
    trainable_parameters: int
    device: str
    host: str | None = None
    autoencoder: dict[str, Any] | None = None  # fine-tune only: where the autoencoder came from
    finetune: dict[str, Any] | None = None  # fine-tune only: its settings
    config: dict[str, Any] | None = None  # baseline only: its config
    cv: CVSummary | None = None
    # One row per epoch: epoch (an int), train_loss, train_acc_augmented, val_loss, val_acc.
    history: list[dict[str, int | float]] = Field(default_factory=list)

    @property
    def label(self) -> str:
        """'finetune conv_ae (full)', 'finetune conv_ae (full, random init)', 'baseline cnn'."""
        if self.task != "finetune":
            return f"{self.task} {self.model}"
        return f"finetune {self.model} ({self.mode}{', random init' if self.init == 'random' else ''})"

    @property
    def val_acc_mean(self) -> float:
        return self.cv.val_acc_mean if self.cv is not None else self.val_acc


class ConfusionMatrix(BaseModel):
    """confusion_matrix.json: rows are true classes, columns predicted classes, on the test split."""

    model_config = ConfigDict(extra="forbid")

    classes: list[str]
    rows: Literal["true class"] = "true class"
    columns: Literal["predicted class"] = "predicted class"
    matrix: list[list[int]]


def write_classifier_json(folder: str | Path, metrics: ClassifierMetrics, confusion: ConfusionMatrix) -> None:
    """metrics.json and confusion_matrix.json of a run folder, through the schemas (unset fields left out)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, doc in ((METRICS_FILE, metrics.model_dump(mode="json", exclude_none=True)),
                      (CONFUSION_FILE, confusion.model_dump(mode="json"))):
        atomic_write_text(folder / name, json.dumps(doc, indent=2) + "\n")


@dataclass
class ClassifierRun:
    folder: Path
    metrics: ClassifierMetrics
    confusion: ConfusionMatrix | None


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise AeoptError(f"{path}: not valid JSON; rerun the command that wrote it") from None
    except OSError as exc:
        raise AeoptError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None


def read_classifier_run(folder: str | Path) -> ClassifierRun:
    """A folder written by `aeopt finetune --out` or `aeopt baseline cnn --out`, checked by the schemas."""
    folder = Path(folder)
    path = folder / METRICS_FILE
    if not path.is_file():
        raise AeoptError(f"{folder}: no {METRICS_FILE}; pass a folder written by `aeopt finetune --out` "
                         "or `aeopt baseline cnn --out`")
    raw = _read_json(path, "the metrics")
    if isinstance(raw, dict) and "test_acc" not in raw:
        raise AeoptError(f"{path}: has no test_acc (an autoencoder run?); "
                         "pass classifier runs from `aeopt finetune` or `aeopt baseline`")
    try:
        metrics = ClassifierMetrics.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise AeoptError(f"{path}: {where}: {first['msg']} (written by another aeopt version?)") from None
    confusion = None
    cpath = folder / CONFUSION_FILE
    if cpath.is_file():
        try:
            confusion = ConfusionMatrix.model_validate(_read_json(cpath, "the confusion matrix"))
        except ValidationError as exc:
            why = exc.errors()[0]["msg"]
            raise AeoptError(f"{cpath}: {why} (written by another aeopt version?)") from None
    return ClassifierRun(folder, metrics, confusion)
