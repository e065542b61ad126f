"""What every classifier run shares (`aeopt finetune` and `aeopt baseline cnn`): the labelled split,
the one evaluation on the test split, the metrics builder and the run folder.

Both stages fill the same `ClassifierMetrics` through `classifier_metrics`, so `aeopt compare` and
the report read one schema whichever stage wrote the folder. Both write it through
`classifier_run_folder`: a reused folder then holds one run's outputs, all of them or the earlier
run's untouched, never a mix.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from aeopt.config import DataConfig
from aeopt.errors import ConfigError
from aeopt.figures import confusion_figure, save_figure
from aeopt.files import cannot_write, staged_folder
from aeopt.stages.metrics import (
    CONFUSION_FILE,
    METRICS_FILE,
    ClassifierMetrics,
    ConfusionMatrix,
    write_classifier_json,
)
from aeopt.training.checkpoint import ClassifierConfig, save_classifier_checkpoint
from aeopt.training.data import Split, prepare, stratified_split, stratified_subset, to_float, training_pool
from aeopt.training.models import count_parameters
from aeopt.training.supervised import ClassifierFit, confusion_matrix, evaluate, per_class_accuracy


class LabelledData(NamedTuple):
    """The labelled images of a classifier run: train and validation from the training split, and test."""

    train: Split
    val: Split
    test: Split
    classes: list[str]
    source: str


def labelled_split(data_cfg: DataConfig, labels: int | None, data_dir: str | None = None, *,
                   field: str = "finetune.labels") -> LabelledData:
    """With all labels, exactly the autoencoder's 80/20 split; with `labels = N`, a stratified
    subset of N training images, split 80/20 the same way. The test split is the run's. `field`
    names the setting in errors."""
    data = prepare(data_cfg, data_dir)
    if labels is None:
        return LabelledData(data.train, data.val, data.test, data.classes, data.source)
    pool = training_pool(data_cfg, data_dir=data_dir)
    n_classes = len(data.classes)
    if labels < 2 * n_classes:
        raise ConfigError(f"{field} = {labels}: need at least 2 per class ({2 * n_classes}) "
                          "for an 80/20 split")
    if labels > len(pool):
        raise ConfigError(f"{field} = {labels}: the training split has only {len(pool)} images; "
                          "lower it or drop it")
    labelled = pool.take(stratified_subset(pool.y, labels, data_cfg.split_seed))
    tr, va = stratified_split(labelled.y, data_cfg.val_fraction, data_cfg.split_seed)
    return LabelledData(labelled.take(tr), labelled.take(va), data.test, data.classes, data.source)


@dataclass(frozen=True)
class FinalEvaluation:
    accuracy: float
    loss: float
    matrix: list[list[int]]  # rows: true class, columns: predicted class


def evaluate_on_test(models: list[nn.Module], test: Split, n_classes: int, device: torch.device, *,
                     amp: bool = False) -> FinalEvaluation:
    """The test split, touched once: one model's predictions, or the mean of several models'
    softmax outputs (the fold models of a k-fold fine-tune)."""
    x, y = to_float(test.x, device), test.y.to(device)
    if len(models) == 1:
        ev = evaluate(models[0], x, y, amp=amp)
        return FinalEvaluation(ev.accuracy, ev.loss, confusion_matrix(test.y, ev.predictions, n_classes))
    probs = sum(evaluate(m, x, y, probabilities=True, amp=amp).probabilities for m in models) / len(models)
    pred = probs.argmax(1)
    labels = test.y.cpu()
    accuracy = float((pred == labels).float().mean())
    loss = float(F.nll_loss(probs.clamp_min(1e-12).log(), labels))
    return FinalEvaluation(accuracy, loss, confusion_matrix(labels, pred, n_classes))


def classifier_metrics(
    *,
    task: Literal["finetune", "baseline"],
    model: str,
    mode: str,
    init: str,
    dataset: str,
    data: LabelledData,
    labels: int | None,
    classifier: nn.Module,
    fit: ClassifierFit,
    test: FinalEvaluation,
    train_acc: float | None,
    seconds: float,
    started: float,
    device: torch.device,
    pretrain_seconds: float = 0.0,
    **sections: Any,
) -> ClassifierMetrics:
    """metrics.json of a classifier run. `started` is the run's `time.perf_counter()` at its start;
    `sections` are the stage's own (autoencoder, finetune, cv for a fine-tune; config for the baseline).
    With cv, the folds have no single best epoch or training set: those are per fold, in cv."""
    single = sections.get("cv") is None
    return ClassifierMetrics(
        task=task,
        model=model,
        mode=mode,
        init=init,
        dataset=dataset,
        labels=labels if labels is not None else len(data.train) + len(data.val),
        train_acc=train_acc,
        val_acc=fit.best_val_acc,
        test_acc=test.accuracy,
        test_loss=test.loss,
        per_class_acc=per_class_accuracy(test.matrix, data.classes),
        epochs=fit.epochs,
        best_epoch=fit.best_epoch if single else None,
        seconds=round(seconds, 3),
        pretrain_seconds=round(pretrain_seconds, 3),
        total_seconds=round(time.perf_counter() - started, 3),
        n_train=len(data.train) if single else None,
        n_val=len(data.val) if single else None,
        n_test=len(data.test),
        test_set=data.test.digest(),
        parameters=count_parameters(classifier),
        trainable_parameters=sum(p.numel() for p in classifier.parameters() if p.requires_grad),
        device=str(device),
        host=socket.gethostname(),
        history=fit.history,
        **sections,
    )


CLASSIFIER_FILE = "classifier.pt"
AUTOENCODER_FOLDER = "autoencoder"  # a fine-tune's autoencoder, when it trained one
# Everything a classifier run may leave in its folder (either stage); other files are the user's.
RUN_OUTPUTS = (METRICS_FILE, CONFUSION_FILE, "confusion_matrix.png", CLASSIFIER_FILE, AUTOENCODER_FOLDER)


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _remove_stale(out: Path, staged: Path, keep: Path | None) -> None:
    """Remove from `out` the outputs of an earlier run that this run (staged in `staged`) does not
    replace: classifier.pt after a k-fold run (it writes none), autoencoder/ after a run that loaded a
    checkpoint. `keep` (the checkpoint this run read) stays wherever it is."""
    for name in RUN_OUTPUTS:
        old = out / name
        if (staged / name).exists() or not (old.exists() or old.is_symlink()):
            continue
        if keep is not None and _inside(keep, old):
            continue
        try:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
        except OSError as exc:
            raise cannot_write(old, exc) from exc


@contextmanager
def classifier_run_folder(out: str | Path, *, keep: str | Path | None = None) -> Iterator[Path]:
    """A staging folder for one classifier run's outputs (`aeopt.files.staged_folder`): they join
    `out` only if the block completes, and then the outputs of an earlier run there that this run does
    not write are removed, so that `out` holds one run's outputs, complete, or the earlier run's as
    they were (a run stopped part-way). `keep`: a file the run read from inside `out` (its
    --checkpoint), never removed."""
    out = Path(out)
    with staged_folder(out, keep_existing=False) as staging:
        yield staging
        # Last, just before the new files move in: a run that fails leaves the earlier one whole.
        _remove_stale(out, staging, Path(keep) if keep is not None else None)


def write_classifier_outputs(out: str | Path, metrics: ClassifierMetrics, test: FinalEvaluation,
                             classes: list[str], model: nn.Module | None, config: ClassifierConfig,
                             data_source: str, *, staged: bool = True) -> None:
    """metrics.json, confusion_matrix.json / .png and, for a single model, classifier.pt in `out`:
    through `classifier_run_folder`, or (`staged=False`) straight into `out`, a staging folder the
    caller made for the whole run."""
    if staged:
        with classifier_run_folder(out) as folder:
            write_classifier_outputs(folder, metrics, test, classes, model, config, data_source, staged=False)
        return
    out = Path(out)
    confusion = ConfusionMatrix(classes=classes, matrix=test.matrix)
    write_classifier_json(out, metrics, confusion)
    title = f"{metrics.label}: test accuracy {metrics.test_acc:.4f}"
    save_figure(confusion_figure(test.matrix, classes, title), out / "confusion_matrix.png")
    if model is not None:
        summary = metrics.model_dump(mode="json", exclude={"history"}, exclude_none=True)
        save_classifier_checkpoint(out / CLASSIFIER_FILE, model, config, classes=classes, metrics=summary,
                                   data_source=data_source)
