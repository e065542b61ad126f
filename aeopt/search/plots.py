"""Optuna's own plots of a study, in both renderings: matplotlib for PNG files, plotly for a page.

They live here, not in `aeopt.report`, because only `search/` and `cli/` import optuna; the report
asks for `STUDY_PLOTS` and draws each one both ways.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import optuna
import optuna.visualization as vis
import optuna.visualization.matplotlib as vis_mpl

from aeopt.figures import save_figure
from aeopt.search.studies import objective_name

# A drawer takes one of Optuna's two plotting modules and the study, and returns that module's figure.
Drawer = Callable[[Any, optuna.Study], Any]


@dataclass(frozen=True)
class StudyPlot:
    key: str
    title: str
    caption: str
    size: tuple[float, float]  # inches, for the PNG
    draw: Drawer
    # Why the plot would mislead for this study (then it is not drawn), or None.
    unavailable: Callable[[optuna.Study], str | None] | None = None

    def why_not(self, study: optuna.Study) -> str | None:
        return self.unavailable(study) if self.unavailable is not None else None

    def png(self, study: optuna.Study, path: str | Path) -> Path:
        """Draw with Optuna's matplotlib backend and save to `path`."""
        before = set(plt.get_fignums())
        try:
            # Optuna's matplotlib plots switch the global style to ggplot: keep that to these figures.
            with warnings.catch_warnings(), matplotlib.rc_context():
                # The backend is marked experimental, and degenerate axes (one trial) warn: neither
                # says anything the reader can act on.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)
                ax = self.draw(vis_mpl, study)
                fig = ax.figure if hasattr(ax, "figure") else np.ravel(ax)[0].figure
                fig.set_size_inches(*self.size)
                return save_figure(fig, path)
        finally:
            # pyplot keeps every figure until closed; a plot that failed half-way leaves one behind.
            for num in set(plt.get_fignums()) - before:
                plt.close(num)

    def plotly(self, study: optuna.Study) -> Any:
        """The interactive twin (a plotly Figure)."""
        return self.draw(vis, study)


# Importances as optuna-dashboard computes them (optuna_dashboard/_importance.py): PED-ANOVA with its
# defaults, over complete trials only. It compares where the top 10 % of trials lie with all trials;
# Optuna's docs advise at least 5 trials in that top 10 % for a stable estimate, hence 50 complete
# trials before the report shows any (the dashboard shows them from 2 complete trials on).
IMPORTANCE_TOP_QUANTILE = 0.1
IMPORTANCE_MIN_TOP_TRIALS = 5
MIN_IMPORTANCE_TRIALS = round(IMPORTANCE_MIN_TOP_TRIALS / IMPORTANCE_TOP_QUANTILE)
IMPORTANCE_WHY = (f"importances need at least {MIN_IMPORTANCE_TRIALS} complete trials: PED-ANOVA (what "
                  f"optuna-dashboard uses) compares the top {IMPORTANCE_TOP_QUANTILE:.0%} of trials with "
                  f"all of them, and Optuna advises at least {IMPORTANCE_MIN_TOP_TRIALS} trials in that "
                  f"top {IMPORTANCE_TOP_QUANTILE:.0%}")
LEGEND_MAX_TRIALS = 20  # more lines than this get a label at their end instead of a legend (PNG)


def complete_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def importance_shortfall(study: optuna.Study) -> str | None:
    """Why the study's importances would mean nothing, or None when it has enough complete trials."""
    n = complete_trials(study)
    if n >= MIN_IMPORTANCE_TRIALS:
        return None
    return f"{IMPORTANCE_WHY}; this study has {n}"


def importance_evaluator() -> optuna.importance.BaseImportanceEvaluator:
    return optuna.importance.PedAnovaImportanceEvaluator(target_quantile=IMPORTANCE_TOP_QUANTILE)


def _importances(module: Any, study: optuna.Study) -> Any:
    shortfall = importance_shortfall(study)
    if shortfall is not None:
        raise ValueError(shortfall)
    return module.plot_param_importances(study, evaluator=importance_evaluator(),
                                         target_name=objective_name(study))


def _history(module: Any, study: optuna.Study) -> Any:
    return module.plot_optimization_history(study, target_name=objective_name(study))


def _intermediate(module: Any, study: optuna.Study) -> Any:
    fig = module.plot_intermediate_values(study)
    name = f"{objective_name(study)} per epoch"
    if module is vis:
        # Optuna hides the legend: name each line "trial N" and show it (click an entry to hide a trial).
        for trace in fig.data:
            trace.name = trace.name.replace("Trial", "trial ")
        fig.update_layout(showlegend=True, legend_title_text="trial", xaxis_title="epoch", yaxis_title=name)
        return fig
    fig.set_xlabel("epoch")
    fig.set_ylabel(name)
    _label_line_ends(fig)
    return fig


def _label_line_ends(ax: Any) -> None:
    """Many trials make a legend taller than the plot: label each line's end with its trial instead."""
    lines = ax.get_lines()
    legend = ax.get_legend()
    for line in lines:
        line.set_label(line.get_label().replace("Trial", "trial "))
    if len(lines) <= LEGEND_MAX_TRIALS:
        if legend is not None:
            ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", borderaxespad=0.0, fontsize=8)
        return
    if legend is not None:
        legend.remove()
    for line in lines:
        x, y = line.get_xdata(), line.get_ydata()
        if len(x):
            ax.annotate(line.get_label().removeprefix("trial "), (x[-1], y[-1]), fontsize=6,
                        xytext=(2, 0), textcoords="offset points", color=line.get_color())


def _parallel(module: Any, study: optuna.Study) -> Any:
    return module.plot_parallel_coordinate(study, target_name=objective_name(study))


STUDY_PLOTS: tuple[StudyPlot, ...] = (
    StudyPlot("optimization_history", "Optimization history",
              "The objective of each complete trial and the best so far.", (9, 5), _history),
    StudyPlot("intermediate_values", "Intermediate values",
              "The value each trial reported per epoch: curves that stop early were pruned. One line per "
              "trial, named in the legend (click an entry to hide that trial); in the PNG, a study of more "
              f"than {LEGEND_MAX_TRIALS} trials has the trial's number at the end of its line instead.",
              (10, 5), _intermediate),
    StudyPlot("param_importances", "Parameter importances",
              "PED-ANOVA importance of each searched parameter for the objective, computed as "
              "optuna-dashboard computes it (so both show the same numbers), over complete trials.", (9, 5),
              _importances, importance_shortfall),
    StudyPlot("parallel_coordinate", "Parallel coordinates",
              "Each line is a complete trial through its parameter values, coloured by objective.", (14, 6),
              _parallel),
)
