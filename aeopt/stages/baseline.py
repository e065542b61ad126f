"""The report's comparison model: a plain supervised CNN trained from scratch, and `compare`.

The network (the "Homework 1" CNN of the report, reconstructed as a standard small CNN):

    conv 3x3 (c1) - batch norm - ReLU - max-pool 2   28 -> 14
    conv 3x3 (c2) - batch norm - ReLU - max-pool 2   14 -> 7
    flatten (c2 * 7 * 7) - linear (fc) - ReLU - dropout - linear (10)

It is trained exactly like the fine-tuned classifier (aeopt.training.supervised.fit_classifier: the same
stratified 80/20 split, optimizer, schedule, epoch budget, early stopping on validation
accuracy, augmentation) and evaluated once on the test split, so the two are compared on equal
terms; only the initialisation and the architecture differ.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from aeopt.config import BaselineRun
from aeopt.errors import AeoptError
from aeopt.progress import progress
from aeopt.training.engine import resolve_device, set_seed
from aeopt.training.models import count_parameters
from aeopt.training.supervised import BaselineCNN, augmentation_for, confusion_matrix, evaluate, fit_classifier, per_class_accuracy


def train_baseline(cfg: BaselineRun, *, data_dir: str | None = None, device: str | None = None, out: str | Path | None = None,
                   amp: bool = False, show_progress: bool = True) -> dict[str, Any]:
    """Train the CNN from scratch on the (labelled) 80/20 split, evaluate on test once."""
    from aeopt.config import FinetuneRun
    from aeopt.stages.finetune import labelled_split, write_classifier_outputs

    t_start = time.perf_counter()
    dev = resolve_device(device)
    # The same labelled split as the fine-tune stage, chosen by the same data and label settings.
    split_cfg = FinetuneRun.model_validate({"data": cfg.data.model_dump(), "finetune": {"labels": cfg.train.labels}})
    train, val, test, classes, source = labelled_split(split_cfg, data_dir)
    set_seed(cfg.seed)
    model = BaselineCNN(cfg.model, len(classes)).to(dev)

    def xy(s):
        return s.x.to(dev).float().div_(255.0), s.y.to(dev)

    train_xy, val_xy = xy(train), xy(val)
    with progress(cfg.train.max_epochs, "baseline cnn", enabled=show_progress) as bar:
        model, fit = fit_classifier(model, train_xy, val_xy, cfg.train, dev, seed=cfg.seed,
                                    augmentation=augmentation_for(cfg.train.augment, cfg.data.dataset, len(train)), amp=amp,
                                    progress=lambda e, row: bar.update({"val_acc": row["val_acc"], "loss": row["train_loss"]}))
    # The test split is touched once, after training.
    test_eval = evaluate(model, *xy(test), amp=amp)
    matrix = confusion_matrix(test.y, test_eval.predictions, len(classes))
    metrics: dict[str, Any] = {
        "task": "baseline",
        "model": "cnn",
        "mode": "scratch",
        "init": "random",
        "dataset": cfg.data.dataset,
        "labels": cfg.train.labels if cfg.train.labels is not None else len(train) + len(val),
        "train_acc": evaluate(model, *train_xy, amp=amp).accuracy,
        "val_acc": fit.best_val_acc,
        "test_acc": test_eval.accuracy,
        "test_loss": test_eval.loss,
        "per_class_acc": per_class_accuracy(matrix, classes),
        "epochs": fit.epochs,
        "best_epoch": fit.best_epoch,
        "seconds": round(fit.seconds, 3),
        "pretrain_seconds": 0.0,
        "total_seconds": round(time.perf_counter() - t_start, 3),
        "n_train": len(train),
        "n_val": len(val),
        "n_test": len(test),
        "parameters": count_parameters(model),
        "trainable_parameters": count_parameters(model),
        "device": str(dev),
        "config": cfg.model_dump(mode="json"),
        "history": fit.history,
    }
    if out is not None:
        write_classifier_outputs(Path(out), metrics, matrix, classes, model, cfg.model_dump(mode="json"), source)
    return metrics


# ----- compare -----------------------------------------------------------------------------------


def read_run(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "metrics.json"
    if not path.is_file():
        raise AeoptError(f"{folder}: no metrics.json; pass folders written by `aeopt finetune --out` "
                         "or `aeopt baseline cnn --out`")
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise AeoptError(f"{path}: not valid JSON; rerun the command that wrote it") from None
    if "test_acc" not in metrics:
        raise AeoptError(f"{path}: has no test_acc (an autoencoder run?); "
                         "pass classifier runs from `aeopt finetune` or `aeopt baseline`")
    return metrics


def compare_rows(folders: list[str | Path]) -> list[dict[str, Any]]:
    rows = []
    for folder in folders:
        m = read_run(folder)
        cv = m.get("cv") or {}
        rows.append({
            "run": str(folder),
            "model": f"{m.get('task', '?')} {m.get('model', '?')}" + (
                f" ({m['mode']}{', random init' if m.get('init') == 'random' else ''})" if m.get("task") == "finetune" else ""),
            "labels": m.get("labels"),
            "train_acc": m.get("train_acc"),
            "val_acc": cv.get("val_acc_mean", m.get("val_acc")),
            "val_std": cv.get("val_acc_std"),
            "test_acc": m["test_acc"],
            "epochs": m.get("epochs"),
            "seconds": m.get("seconds"),
            "total_seconds": m.get("total_seconds"),
            "device": m.get("device"),
        })
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table like the report's: accuracy and time side by side."""
    def acc(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, (int, float)) else "-"

    def secs(v: Any) -> str:
        if not isinstance(v, (int, float)):
            return "-"
        return f"{v:.1f} s" if v < 120 else f"{v / 60:.1f} min"

    header = ["run", "model", "labels", "train acc", "val acc", "test acc", "epochs", "train time", "total time", "device"]
    body = []
    for r in rows:
        val = acc(r["val_acc"]) + (f" +- {r['val_std']:.4f}" if r.get("val_std") is not None else "")
        body.append([r["run"], r["model"], str(r["labels"] if r["labels"] is not None else "-"), acc(r["train_acc"]), val,
                     acc(r["test_acc"]), str(r["epochs"] if r["epochs"] is not None else "-"), secs(r["seconds"]),
                     secs(r["total_seconds"]), str(r["device"] or "-")])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    numeric = {2, 3, 4, 5, 6, 7, 8}

    def line(cells: list[str]) -> str:
        padded = (c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        return "  ".join(padded).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(b) for b in body)])
