"""A spec's sampler and pruner as Optuna objects: the one place spec names meet Optuna classes."""

from __future__ import annotations

import importlib.util

import numpy as np
import optuna

from aeopt.config import SearchSpec
from aeopt.errors import ConfigError
from aeopt.search.space import grid


def sampler_seed(seed: int | None, worker_index: int = 0, salt: tuple[int, ...] = ()) -> int | None:
    """One worker's sampler seed: the spec's seed plus the worker's index, so workers started together
    on a fresh study propose different points, reproducibly. A `salt` (the trials a study already
    holds, a process's identity) is mixed in where that sum alone would repeat an earlier worker's
    proposals: a rerun or a restart on the same study, workers started without an index."""
    if seed is None:
        return None
    if not salt:
        return (seed + worker_index) % 2**32  # numpy's seed range
    # SeedSequence hashes its words: no two salts map to neighbouring seeds.
    return int(np.random.SeedSequence([seed, worker_index, *salt]).generate_state(1)[0])


def build_sampler(spec: SearchSpec, worker_index: int = 0,
                  salt: tuple[int, ...] = ()) -> optuna.samplers.BaseSampler:
    s = spec.sampler
    seed = sampler_seed(s.seed, worker_index, salt)
    startup = {} if s.n_startup_trials is None else {"n_startup_trials": s.n_startup_trials}
    if s.name == "tpe":
        # multivariate + constant_liar: model parameter interactions, and let running trials of
        # other workers count as bad so parallel workers spread out (Optuna's own advice).
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                          **startup)
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.name == "grid":
        return optuna.samplers.GridSampler(grid(spec), seed=seed)
    if s.name == "cmaes":
        # Optuna imports cmaes only when the second trial asks for points: fail before the first.
        if importlib.util.find_spec("cmaes") is None:
            raise ConfigError("sampler cmaes needs the Python package 'cmaes'; pip install cmaes, "
                              "or pick another sampler (--set sampler.name=tpe)")
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False, **startup)
    if s.name == "gp":
        return optuna.samplers.GPSampler(seed=seed, **startup)
    return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)


def build_pruner(spec: SearchSpec) -> optuna.pruners.BasePruner:
    p = spec.pruner
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.min_resource, max_resource=spec.max_epochs,
                                              reduction_factor=p.reduction_factor)
    median = {"n_startup_trials": p.n_startup_trials, "n_warmup_steps": p.n_warmup_steps}
    if p.name == "median":
        return optuna.pruners.MedianPruner(**median)
    if p.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=p.min_resource,
                                                      reduction_factor=p.reduction_factor)
    if p.name == "patient":
        inner = optuna.pruners.MedianPruner(**median)
        return optuna.pruners.PatientPruner(inner, patience=p.patience, min_delta=p.min_delta)
    return optuna.pruners.NopPruner()
