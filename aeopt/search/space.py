"""suggest(trial, space) -> params: the only place trial.suggest_* is called."""

from __future__ import annotations

from typing import Any

import optuna

from aeopt.config import CategoricalParam, FloatParam, IntParam, StudySpec


def suggest(trial: optuna.Trial, space: dict[str, Any]) -> dict[str, Any]:
    """Sample every searchable entry of `space`; fixed values are applied by StudySpec.run_config."""
    params: dict[str, Any] = {}
    for path, p in space.items():
        if isinstance(p, IntParam):
            params[path] = trial.suggest_int(path, p.low, p.high, step=p.step, log=p.log)
        elif isinstance(p, FloatParam):
            params[path] = trial.suggest_float(path, p.low, p.high, step=p.step, log=p.log)
        elif isinstance(p, CategoricalParam):
            params[path] = trial.suggest_categorical(path, p.choices)
    return params


def grid(spec: StudySpec) -> dict[str, list[Any]]:
    """The finite search space for the grid sampler."""
    searched = (IntParam, FloatParam, CategoricalParam)
    return {path: p.values() for path, p in spec.space.items() if isinstance(p, searched)}


def grid_size(spec: StudySpec) -> int:
    n = 1
    for values in grid(spec).values():
        n *= len(values)
    return n
