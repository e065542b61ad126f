"""Studies in a storage: create (the spec goes inside), load, list, show, delete; samplers and pruners.

The storage is the single source of truth: `create_study` validates the spec and stores it in
the study's user attrs, so a worker on any machine needs only the storage URL and the name.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from aeopt import __version__
from aeopt.config import StudySpec, format_validation_error
from aeopt.errors import StudyError
from aeopt.search.space import grid
from aeopt.search.storage import open_storage, redact, resolve_url

log = logging.getLogger(__name__)

SPEC_ATTR = "aeopt:spec"
ARTIFACTS_ATTR = "aeopt:artifacts"
VERSION_ATTR = "aeopt:version"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _quiet_optuna() -> None:
    # Optuna logs every trial at INFO; aeopt prints its own one-line summaries instead.
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def create_study(spec: StudySpec, storage_url: str | None = None, name: str | None = None, *,
                 skip_if_exists: bool = False, artifacts: str | None = None) -> optuna.Study:
    _quiet_optuna()
    name = name or spec.name
    if not name:
        raise StudyError("the study needs a name: pass --study-name NAME or set `name:` in the spec")
    storage = open_storage(storage_url).optuna
    existing = {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    if name in existing:
        if not skip_if_exists:
            raise StudyError(f"study '{name}' already exists in {redact(resolve_url(storage_url))}; "
                             "pass --skip-if-exists to reuse it, or `aeopt study delete` it first")
        study = optuna.load_study(study_name=name, storage=storage)
        if SPEC_ATTR not in study.user_attrs:
            raise StudyError(f"study '{name}' exists but was not created by aeopt (no spec inside)")
        return study
    spec = spec.model_copy(update={"name": name})
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize")
    study.set_user_attr(SPEC_ATTR, spec.model_dump(mode="json"))
    study.set_user_attr(VERSION_ATTR, __version__)
    if artifacts:
        study.set_user_attr(ARTIFACTS_ATTR, str(artifacts))
    try:
        from aeopt.search.dashboard import write_study_note

        write_study_note(study, spec)
    except Exception as exc:  # the note is a convenience for the dashboard; never fail creation for it
        log.debug("no dashboard note: %s", exc)
    return study


def spec_of(study: optuna.Study) -> StudySpec:
    raw = study.user_attrs.get(SPEC_ATTR)
    if raw is None:
        raise StudyError(f"study '{study.study_name}' was not created by aeopt (no spec inside); "
                         "create it with `aeopt study create SPEC.yaml`")
    try:
        from aeopt.config import spec_schema

        return spec_schema(raw).model_validate(raw)
    except Exception as exc:
        msg = format_validation_error(exc, f"spec of study '{study.study_name}'") if hasattr(exc, "errors") else str(exc)
        raise StudyError(msg.splitlines()[0] + " (created by another aeopt version?)") from None


def load_study(storage_url: str | None, name: str, *, storage=None) -> tuple[optuna.Study, StudySpec]:
    _quiet_optuna()
    storage = storage or open_storage(storage_url).optuna
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
        hint = f" (studies here: {', '.join(names[:10])})" if names else " (there are none: run `aeopt study create SPEC.yaml`)"
        raise StudyError(f"no study named '{name}' in {redact(resolve_url(storage_url))}{hint}") from None
    return study, spec_of(study)


@dataclass
class StudySummary:
    name: str
    model: str
    counts: dict[str, int]
    best_value: float | None
    best_params: dict[str, Any]
    best_trial: int | None
    n_trials: int

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def summarize(study: optuna.Study) -> StudySummary:
    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name for t in trials)
    model = study.user_attrs.get(SPEC_ATTR, {}).get("model", {}).get("kind", "?")
    try:
        best = study.best_trial
    except ValueError:
        best = None
    return StudySummary(
        name=study.study_name,
        model=model,
        counts={s.name: counts.get(s.name, 0) for s in TrialState},
        best_value=best.value if best else None,
        best_params=dict(best.params) if best else {},
        best_trial=best.number if best else None,
        n_trials=len(trials),
    )


def list_studies(storage_url: str | None) -> list[StudySummary]:
    _quiet_optuna()
    storage = open_storage(storage_url).optuna
    out = []
    for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
        out.append(summarize(optuna.load_study(study_name=s.study_name, storage=storage)))
    return out


def delete_study(storage_url: str | None, name: str) -> None:
    storage = open_storage(storage_url).optuna
    load_study(storage_url, name, storage=storage)  # a clear error when it does not exist
    optuna.delete_study(study_name=name, storage=storage)


# ----- samplers and pruners ----------------------------------------------------------------------


def build_sampler(spec: StudySpec, worker_index: int = 0) -> optuna.samplers.BaseSampler:
    s = spec.sampler
    # Each worker offsets the seed, so workers started together do not propose the same trials.
    seed = None if s.seed is None else s.seed + worker_index
    startup = {} if s.n_startup_trials is None else {"n_startup_trials": s.n_startup_trials}
    if s.name == "tpe":
        # multivariate + constant_liar: model parameter interactions, and let running trials of
        # other workers count as bad so parallel workers spread out (Optuna's own advice).
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True, **startup)
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.name == "grid":
        return optuna.samplers.GridSampler(grid(spec), seed=seed)
    if s.name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False, **startup)
    if s.name == "gp":
        return optuna.samplers.GPSampler(seed=seed, **startup)
    return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)


def build_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    p = spec.pruner
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.min_resource, max_resource=spec.max_epochs,
                                              reduction_factor=p.reduction_factor)
    if p.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
    if p.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=p.min_resource, reduction_factor=p.reduction_factor)
    if p.name == "patient":
        inner = optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
        return optuna.pruners.PatientPruner(inner, patience=p.patience, min_delta=p.min_delta)
    return optuna.pruners.NopPruner()
