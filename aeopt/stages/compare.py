"""`aeopt compare DIR...`: classifier runs side by side, as the report's table.

Each folder is read with `read_classifier_run` (the schema both stages write), so a folder that is
not a classifier run is one line that says what to pass instead. A label-budget folder (label_draws.json,
`aeopt.stages.few_labels`) gives one row per encoder and label budget: test accuracy as mean +- std
over its label draws.

Test accuracy is only comparable on one test set: the table shows each row's dataset and test-set
size, each run records a digest of its test images (`Split.digest`), and `different_test_sets` gives one
line when the rows differ in any of them (a label budget, mode or model may differ: that is what a
comparison is for). It warns rather than refuses: a table across
datasets can be what the user wants, as long as nobody reads it as like for like.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aeopt.stages.few_labels import LABEL_DRAWS_FILE, read_label_draws
from aeopt.stages.metrics import ClassifierMetrics, read_classifier_run

HEADER = ["run", "model", "dataset", "n test", "labels", "train acc", "val acc", "test acc", "epochs",
          "train time", "total time", "device"]
# Columns right-aligned in the table: the numbers.
NUMERIC = {3, 4, 5, 6, 7, 8, 9, 10}


def compare_row(folder: str | Path, m: ClassifierMetrics) -> dict[str, Any]:
    """One row of the table (also the `--json` output): the mean over folds for a k-fold run."""
    return {
        "run": str(folder),
        "model": m.label,
        "dataset": m.dataset,
        "n_test": m.n_test,
        "test_set": m.test_set,
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


def label_draw_rows(folder: str | Path) -> list[dict[str, Any]]:
    """Rows of a label-budget folder: the mean over label draws, with their std."""
    return [{"run": str(folder), "model": f"{r['encoder']} (label draws)",
             # label_draws.json records neither (yet): unknown, and left out of the check.
             "dataset": r.get("dataset"), "n_test": r.get("n_test"), "test_set": r.get("test_set"),
             "labels": r["labels"],
             "train_acc": None, "val_acc": r["val_acc_mean"], "val_std": None, "test_acc": r["test_acc_mean"],
             "test_std": r["test_acc_std"], "draws": r["draws"], "epochs": None, "seconds": r["seconds"],
             "total_seconds": None, "device": None} for r in read_label_draws(folder)]


def compare_rows(folders: list[str | Path]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for folder in folders:
        if (Path(folder) / LABEL_DRAWS_FILE).is_file():
            rows += label_draw_rows(folder)
        else:
            rows.append(compare_row(folder, read_classifier_run(folder).metrics))
    return rows


def different_test_sets(rows: list[dict[str, Any]]) -> str | None:
    """One line when the rows were tested on different test sets (another dataset, another test subset
    size, or the same size drawn with another data.split_seed), naming them; None when they agree. Rows
    that do not record a field are skipped."""
    parts = []
    for key, what in (("dataset", "datasets"), ("n_test", "test-set sizes")):
        seen = sorted({r[key] for r in rows if r.get(key) is not None})
        if len(seen) > 1:
            parts.append(f"{what} ({', '.join(map(str, seen))})")
    if parts:
        return (f"warning: these runs were tested on different test sets: {' and '.join(parts)} differ, so "
                "their test accuracies are not comparable; rerun them with the same data.dataset and "
                "data.test_subset")
    if len({r["test_set"] for r in rows if r.get("test_set") is not None}) > 1:
        return ("warning: these runs were tested on different test images of the same size (a "
                "data.test_subset drawn with another data.split_seed), so their test accuracies are not "
                "comparable; rerun them with the same data.split_seed")
    return None


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
    test = _acc(r["test_acc"]) + (f" +- {r['test_std']:.4f}" if r.get("test_std") is not None else "")
    return [r["run"], r["model"], _text(r.get("dataset")), _text(r.get("n_test")), _text(r["labels"]),
            _acc(r["train_acc"]), val, test,
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
