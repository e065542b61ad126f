"""The classifier section: an `aeopt finetune --out` (or `aeopt baseline cnn --out`) folder, read with
the schema its writer uses (`aeopt.stages.metrics`), as a confusion matrix and per-class accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aeopt.errors import AeoptError
from aeopt.figures import confusion_figure
from aeopt.report.drawing import accuracy_bars, confusion_heatmap, figure_item
from aeopt.report.page import Section
from aeopt.stages.metrics import ClassifierRun, read_classifier_run


def read_run(folder: str | Path) -> ClassifierRun:
    """The folder's metrics and confusion matrix; a one-line error naming --finetune when it is not one."""
    try:
        return read_classifier_run(folder)
    except AeoptError as exc:
        raise AeoptError(f"--finetune {exc}") from None


def _table(run: ClassifierRun) -> list[tuple[str, str]]:
    m = run.metrics
    rows = [("run", m.label), ("dataset", m.dataset), ("labelled images", str(m.labels))]
    if m.cv is not None:
        # k fold models, each with its own epochs: no single best epoch; the test split scores their ensemble.
        per_fold = ", ".join(map(str, m.cv.fold_epochs))
        rows.append(("epochs", f"{m.epochs} over {m.cv.folds} folds ({per_fold})"))
        rows.append((f"validation accuracy ({m.cv.folds}-fold CV)",
                     f"{m.cv.val_acc_mean:.4f} ± {m.cv.val_acc_std:.4f}"))
        rows.append(("test protocol", m.cv.test_protocol))
    else:
        rows.append(("epochs", f"{m.epochs} (best {m.best_epoch})"))
        rows.append(("validation accuracy", f"{m.val_acc:.4f}"))
    rows.append(("test accuracy", f"{m.test_acc:.4f}"))
    if m.autoencoder and m.autoencoder.get("source"):
        rows.append(("autoencoder", str(m.autoencoder["source"])))
    return rows


def finetune_section(run: ClassifierRun, out: Path) -> tuple[Section, dict[str, Any]]:
    m = run.metrics
    section = Section("Fine-tuned classifier" if m.task == "finetune" else "Classifier",
                      f"From {run.folder}: {m.label}, test accuracy {m.test_acc:.4f}.", key="finetune")
    section.table = _table(run)
    if run.confusion is not None:
        cm = run.confusion
        title = "Confusion matrix on the test split"
        section.items.append(figure_item(out, "confusion_matrix", "Confusion matrix",
                                         confusion_figure(cm.matrix, cm.classes, title),
                                         confusion_heatmap(cm.matrix, cm.classes, title),
                                         "Rows: true class; columns: predicted class; colour: the share of "
                                         "the row."))
    if m.per_class_acc:
        fig, pfig = accuracy_bars(m.per_class_acc, "Per-class test accuracy", m.test_acc)
        section.items.append(figure_item(out, "per_class_accuracy", "Per-class accuracy", fig, pfig))
    numbers = {"folder": str(run.folder), "run": m.label, "test_acc": m.test_acc,
               "per_class_acc": m.per_class_acc}
    return section, numbers
