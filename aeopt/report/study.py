"""The report's search section: a table of the study and Optuna's own plots of it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from aeopt.config import StudySpec
from aeopt.errors import StudyError
from aeopt.report.page import Item, Section
from aeopt.search.plots import STUDY_PLOTS, StudyPlot
from aeopt.search.records import StudyCounts, TrialRecord, best_trial

log = logging.getLogger(__name__)

# Studies and trials are optuna objects, typed Any here: only search/ and cli/ import optuna.

# The best trial's record fields shown in the table, in this order.
RECORD_ROWS = ("cv_std", "epochs", "best_epoch", "seconds", "device")


def require_best(study: Any) -> Any:
    """The study's best trial; a one-line error when no trial has completed."""
    best = best_trial(study)
    if best is None:
        raise StudyError(f"study '{study.study_name}' has no completed trial yet; run `aeopt worker --study "
                         f"{study.study_name}` first")
    return best


def fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def study_table(study: Any, spec: StudySpec) -> list[tuple[str, str]]:
    best = require_best(study)
    rows = [
        ("study", study.study_name),
        ("model", spec.model.kind),
        ("dataset", spec.data.dataset),
        ("trials", StudyCounts.of(study).text()),
        ("best trial", f"#{best.number}: objective {best.value:.6g}"),
    ]
    rows += [(f"best {k}", fmt(v)) for k, v in best.params.items()]
    record = TrialRecord.of(best)
    rows += [(f"best trial {k}", fmt(getattr(record, k)))
             for k in RECORD_ROWS if getattr(record, k) is not None]
    return rows


def _draw(plot: StudyPlot, study: Any, out: Path) -> Item:
    item = Item(plot.key, plot.title, caption=plot.caption)
    item.missing = plot.why_not(study) or ""
    if item.missing:
        log.info("%s not drawn: %s", plot.title.lower(), item.missing)
        return item
    try:
        item.png = plot.png(study, out / f"study_{plot.key}.png")
        item.plotly = plot.plotly(study)
    except Exception as exc:  # e.g. importances with one trial or an empty search space
        first = str(exc).splitlines()[0] if str(exc) else ""
        item.png, item.missing = None, f"{type(exc).__name__}: {first}".rstrip(": ")
        log.info("%s not drawn: %s", plot.title.lower(), item.missing)
    return item


def search_section(study: Any, spec: StudySpec, out: Path) -> Section:
    """The study in a table, and Optuna's plots: history, intermediate values, importances, coordinates."""
    section = Section("The search", "Optuna's own plots of the study.", key="search")
    section.table = study_table(study, spec)
    section.items = [_draw(plot, study, out) for plot in STUDY_PLOTS]
    return section
