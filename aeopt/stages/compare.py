"""`aeopt compare DIR...`: classifier runs side by side, as the report's table.

Each folder is read with `read_classifier_run` (the schema both stages write), so a folder that is
not a classifier run is one line that says what to pass instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aeopt.stages.metrics import ClassifierMetrics, read_classifier_run

HEADER = ["run", "model", "labels", "train acc", "val acc", "test acc", "epochs", "train time", "total time",
          "device"]
# Columns right-aligned in the table: the numbers.
NUMERIC = {2, 3, 4, 5, 6, 7, 8}


def compare_row(folder: str | Path, m: ClassifierMetrics) -> dict[str, Any]:
    """One row of the table (also the `--json` output): the mean over folds for a k-fold run."""
    return {
        "run": str(folder),
        "model": m.label,
        "labels": m.labels,
        "train_acc": m.train_acc,
        "val_acc": m.val_acc_mean,
        "val_std": m.cv.val_acc_std if m.cv is not None else None,
        "test_acc": m.test_acc,
        "epochs": m.epochs,
        "seconds": m.seconds,
        "total_seconds": m.total_seconds,
        "device": m.device,
    }


def compare_rows(folders: list[str | Path]) -> list[dict[str, Any]]:
    return [compare_row(folder, read_classifier_run(folder).metrics) for folder in folders]


def _acc(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) else "-"


def _secs(v: Any) -> str:
    if not isinstance(v, (int, float)):
        return "-"
    return f"{v:.1f} s" if v < 120 else f"{v / 60:.1f} min"


def _text(v: Any) -> str:
    return "-" if v is None else str(v)


def _cells(r: dict[str, Any]) -> list[str]:
    val = _acc(r["val_acc"]) + (f" +- {r['val_std']:.4f}" if r.get("val_std") is not None else "")
    return [r["run"], r["model"], _text(r["labels"]), _acc(r["train_acc"]), val, _acc(r["test_acc"]),
            _text(r["epochs"]), _secs(r["seconds"]), _secs(r["total_seconds"]), _text(r["device"] or None)]


def _line(cells: list[str], widths: list[int]) -> str:
    pairs = enumerate(zip(cells, widths, strict=True))
    padded = (c.rjust(w) if i in NUMERIC else c.ljust(w) for i, (c, w) in pairs)
    return "  ".join(padded).rstrip()


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table like the report's: accuracy and time side by side."""
    body = [_cells(r) for r in rows]
    widths = [max([len(h)] + [len(b[i]) for b in body]) for i, h in enumerate(HEADER)]
    lines = [HEADER, ["-" * w for w in widths], *body]
    return "\n".join(_line(cells, widths) for cells in lines)
