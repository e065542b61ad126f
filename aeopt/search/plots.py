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

# A drawer takes one of Optuna's two plotting modules and the study, and returns that module's figure.
Drawer = Callable[[Any, optuna.Study], Any]


@dataclass(frozen=True)
class StudyPlot:
    key: str
    title: str
    caption: str
    size: tuple[float, float]  # inches, for the PNG
    draw: Drawer

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


def _importances(module: Any, study: optuna.Study) -> Any:
    # fANOVA with a fixed seed: the same study gives the same importances in both renderings.
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    return module.plot_param_importances(study, evaluator=evaluator)


STUDY_PLOTS: tuple[StudyPlot, ...] = (
    StudyPlot("optimization_history", "Optimization history",
              "The objective of each finished trial and the best so far.", (9, 5),
              lambda m, s: m.plot_optimization_history(s)),
    StudyPlot("intermediate_values", "Intermediate values",
              "The value each trial reported per epoch: curves that stop early were pruned.", (9, 5),
              lambda m, s: m.plot_intermediate_values(s)),
    StudyPlot("param_importances", "Parameter importances",
              "fANOVA importance of each searched parameter for the objective.", (9, 5), _importances),
    StudyPlot("parallel_coordinate", "Parallel coordinates",
              "Each line is a finished trial through its parameter values, coloured by objective.", (14, 6),
              lambda m, s: m.plot_parallel_coordinate(s)),
)
