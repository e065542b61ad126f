"""A spec's sampler and pruner names map to the Optuna classes with the spec's settings, checked
through what each one does (the parameters it proposes, the step at which it prunes)."""

from __future__ import annotations

import importlib.util
import itertools

import optuna
import pytest
from optuna.trial import TrialState

from aeopt.config import StudySpec
from aeopt.errors import ConfigError
from aeopt.search.samplers import build_pruner, build_sampler, sampler_seed
from aeopt.search.space import grid, suggest

optuna.logging.set_verbosity(optuna.logging.WARNING)


def spec(sampler: dict | None = None, pruner: dict | None = None, max_epochs: int = 6) -> StudySpec:
    return StudySpec.model_validate({
        "model": {"kind": "conv_ae"},
        "data": {"dataset": "synthetic"},
        "budget": {"max_epochs": max_epochs},
        "sampler": sampler or {"name": "random", "seed": 0},
        "pruner": pruner or {"name": "none"},
        "space": {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True, "step": None},
                  "model.c1": {"type": "int", "low": 8, "high": 16, "step": 4},
                  "model.activation": {"type": "categorical", "choices": ["relu", "gelu"]}},
    })


GRID_SPACE = {"model.c1": {"type": "int", "low": 8, "high": 16, "step": 4},
              "model.activation": {"type": "categorical", "choices": ["relu", "gelu"]}}


def grid_spec() -> StudySpec:
    return StudySpec.model_validate({**spec().model_dump(), "sampler": {"name": "grid", "seed": 0},
                                     "space": GRID_SPACE})


def proposals(s: StudySpec, sampler: optuna.samplers.BaseSampler, n: int) -> list[tuple]:
    """The parameters the sampler proposes for n trials of the spec's space (told a fixed value)."""
    study = optuna.create_study(sampler=sampler)
    out = []
    for i in range(n):
        trial = study.ask()
        params = suggest(trial, s.space)
        study.tell(trial, float(i % 3))
        out.append(tuple(params.values()))
    return out


@pytest.mark.parametrize("name,cls", [
    ("tpe", optuna.samplers.TPESampler), ("random", optuna.samplers.RandomSampler),
    ("grid", optuna.samplers.GridSampler), ("gp", optuna.samplers.GPSampler),
    ("qmc", optuna.samplers.QMCSampler),
])
def test_each_sampler_name_builds_its_class(name, cls):
    s = spec({"name": name, "seed": 1}) if name != "grid" else grid_spec()
    assert type(build_sampler(s)) is cls


@pytest.mark.parametrize("name", ["tpe", "random", "gp", "qmc"])
def test_the_seed_is_the_spec_seed_plus_the_worker_index(name):
    startup = {"n_startup_trials": 2} if name in ("tpe", "gp") else {}
    s = spec({"name": name, "seed": 7, **startup})
    first = proposals(s, build_sampler(s, worker_index=0), 4)
    assert proposals(s, build_sampler(s, worker_index=0), 4) == first  # reproducible
    assert proposals(s, build_sampler(s, worker_index=1), 4) != first  # another worker explores elsewhere
    shifted = spec({**s.sampler.model_dump(), "seed": 8})
    assert proposals(shifted, build_sampler(shifted, 0), 4) == proposals(s, build_sampler(s, 1), 4)


def test_a_salt_gives_another_seed_and_always_the_same_one():
    assert sampler_seed(7, 2) == 9 and sampler_seed(None, 2, (5,)) is None
    salted = {sampler_seed(7, 0, (n,)) for n in range(1, 50)}
    assert len(salted) == 49 and 7 not in salted  # a rerun at any study size: a seed of its own
    assert sampler_seed(7, 0, (3, 11)) == sampler_seed(7, 0, (3, 11)) != sampler_seed(7, 1, (3, 11))
    assert sampler_seed(2**32 - 1, 1) == 0  # the largest seed a spec takes, at worker 1
    assert all(0 <= sampler_seed(7, i, (i,)) < 2**32 for i in range(5))  # numpy's seed range


def test_tpe_starts_with_the_specs_number_of_random_trials():
    s = spec({"name": "tpe", "seed": 3, "n_startup_trials": 4})
    tpe = proposals(s, build_sampler(s), 6)
    random = proposals(s, optuna.samplers.RandomSampler(seed=3), 6)
    assert tpe[:4] == random[:4]  # the startup trials are the seeded random sampler's
    assert tpe[4:] != random[4:]  # then the model takes over


def test_grid_sampler_walks_the_specs_grid_once():
    s = grid_spec()
    sampler = build_sampler(s)
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: float(len(suggest(t, s.space))), n_trials=6)
    seen = {tuple(t.params[k] for k in ("model.c1", "model.activation")) for t in study.trials}
    assert seen == set(itertools.product([8, 12, 16], ["relu", "gelu"]))
    assert seen == set(itertools.product(*grid(s).values()))
    assert sampler.is_exhausted(study)


@pytest.mark.skipif(importlib.util.find_spec("cmaes") is not None, reason="cmaes is installed here")
def test_cmaes_without_its_package_is_one_actionable_line():
    with pytest.raises(ConfigError, match="pip install cmaes"):
        build_sampler(spec({"name": "cmaes", "seed": 0}))


# ----- pruners: the step at which a bad trial stops ------------------------------------------------


def run_curves(pruner: optuna.pruners.BasePruner, curves: list[list[float]]) -> list[tuple[TrialState, int]]:
    """Each curve as one trial: report per epoch (1-based), prune when told; (state, last epoch)."""
    study = optuna.create_study(pruner=pruner)
    out = []
    for curve in curves:
        trial = study.ask()
        state = TrialState.COMPLETE
        for epoch, value in enumerate(curve, start=1):
            trial.report(value, epoch)
            if trial.should_prune():
                state = TrialState.PRUNED
                break
        study.tell(trial, curve[epoch - 1] if state == TrialState.COMPLETE else None, state=state)
        out.append((state, epoch))
    return out


GOOD, BAD = [0.1] * 6, [1.0] * 6


def test_median_pruner_waits_for_its_startup_trials_and_warmup_steps():
    s = spec(pruner={"name": "median", "n_startup_trials": 2, "n_warmup_steps": 3})
    assert type(build_pruner(s)) is optuna.pruners.MedianPruner
    states = run_curves(build_pruner(s), [GOOD, BAD, GOOD, BAD])
    assert states[1] == (TrialState.COMPLETE, 6)  # one complete trial: below n_startup_trials
    assert states[3] == (TrialState.PRUNED, 3)  # not before step n_warmup_steps


@pytest.mark.parametrize("patience", [1, 3])
def test_patient_pruner_gives_a_worsening_trial_its_patience(patience):
    s = spec(pruner={"name": "patient", "patience": patience, "n_startup_trials": 1, "n_warmup_steps": 0},
             max_epochs=8)
    assert type(build_pruner(s)) is optuna.pruners.PatientPruner
    worse = [1.0 + 0.1 * i for i in range(8)]
    # No better value in the last patience + 1 steps than before them: first true at patience + 2.
    assert run_curves(build_pruner(s), [[0.1] * 8, worse])[1] == (TrialState.PRUNED, patience + 2)


@pytest.mark.parametrize("min_resource", [2, 3])
def test_successive_halving_prunes_at_its_first_rung(min_resource):
    s = spec(pruner={"name": "successive_halving", "min_resource": min_resource, "reduction_factor": 2})
    assert type(build_pruner(s)) is optuna.pruners.SuccessiveHalvingPruner
    assert run_curves(build_pruner(s), [GOOD, BAD])[1] == (TrialState.PRUNED, min_resource)


def test_hyperband_takes_its_maximum_resource_from_the_budget():
    # max_resource = max_epochs = min_resource: a single bracket, which prunes at min_resource like
    # successive halving; with "auto" Optuna would guess the maximum from the first trial instead.
    s = spec(pruner={"name": "hyperband", "min_resource": 2, "reduction_factor": 2}, max_epochs=2)
    assert type(build_pruner(s)) is optuna.pruners.HyperbandPruner
    states = run_curves(build_pruner(s), [[0.1, 0.1], [1.0, 1.0], [0.1, 0.1], [1.0, 1.0]])
    complete, pruned = TrialState.COMPLETE, TrialState.PRUNED
    assert [st for st, _ in states] == [complete, pruned, complete, pruned]


def test_none_never_prunes():
    s = spec(pruner={"name": "none"})
    assert type(build_pruner(s)) is optuna.pruners.NopPruner
    assert run_curves(build_pruner(s), [GOOD, BAD, BAD]) == [(TrialState.COMPLETE, 6)] * 3
