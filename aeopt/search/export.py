"""A study's best trial as a complete, self-describing run config.

An export is what `aeopt train` reads (model, data, budget, optim, contrastive, seed) plus two extra sections
it ignores: `metrics` (the trial's cross-validated loss) and `provenance` (study, trial, sampler,
seeds, dataset, package versions). The storage URL is never written: it may hold a password.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from aeopt.config import ClassifierStudySpec, SearchSpec, dump_yaml
from aeopt.errors import AeoptError, StudyError
from aeopt.files import atomic_write_text, versions
from aeopt.search.records import StudyCounts, TrialRecord
from aeopt.search.storage import Storage
from aeopt.search.studies import load_study, storage_flag

FORMAT = "aeopt.export/1"


def ranked_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials, best first (lowest mean CV loss; ties: the earlier trial)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    trials = [t for t in complete if t.value is not None]
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1.0
    return sorted(trials, key=lambda t: (sign * t.value, t.number))


def trial_metrics(trial: FrozenTrial, classifier: bool = False) -> dict[str, Any]:
    record = TrialRecord.of(trial)
    penalty = record.penalty or 0.0
    penalized = record.penalty is not None  # an adversarial AE: value = mean CV loss + prior penalty
    objective = ("mean cross-validated validation error (1 - accuracy)" if classifier
                 else "mean cross-validated validation loss")
    out: dict[str, Any] = {
        "objective": objective + (" + prior penalty" if penalized else ""),
        "value": float(trial.value) if penalized else None,
        "cv_mean": float(trial.value) - penalty,
        "prior_mmd": record.prior_mmd,
        "penalty": record.penalty,
        "cv_std": record.cv_std,
        "fold_losses": [float(v) for v in record.fold_losses],
        "epochs": record.epochs,
        "best_epoch": record.best_epoch,
        "seconds": record.seconds,
        "images_per_second": record.images_per_second,
    }
    return {k: v for k, v in out.items() if v is not None}


def export_entry(study: optuna.Study, spec: SearchSpec, trial: FrozenTrial, rank: int, n_complete: int,
                 exported_at: str) -> dict[str, Any]:
    run = spec.run_config(trial.params)
    provenance = {
        "format": FORMAT,
        "study": study.study_name,
        "trial": trial.number,
        "rank": rank,
        "complete_trials": n_complete,
        "params": dict(trial.params),
        "sampler": {"name": spec.sampler.name, "seed": spec.sampler.seed},
        "pruner": spec.pruner.name,
        "cv": {"folds": spec.cv.folds, "seed": spec.cv.seed},
        "dataset": {"name": run.data.dataset, "train_subset": run.data.train_subset,
                    "split_seed": run.data.split_seed},
        "seed": run.seed,
        "trial_finished": (trial.datetime_complete.isoformat(timespec="seconds") if trial.datetime_complete
                           else None),
        "device": TrialRecord.of(trial).device,
        "versions": versions(),
        "exported_at": exported_at,
    }
    checkpoint = getattr(spec, "checkpoint", None)  # a classifier study's autoencoder, as workers load it
    if checkpoint:
        provenance["autoencoder_checkpoint"] = checkpoint
    classifier = isinstance(spec, ClassifierStudySpec)
    return {**run.model_dump(mode="json"), "metrics": trial_metrics(trial, classifier),
            "provenance": provenance}


Export = dict[str, Any] | list[dict[str, Any]]


def export_best(study: optuna.Study, spec: SearchSpec, top_k: int = 1,
                storage: Storage | None = None) -> Export:
    """The best trial as a run config with metrics and provenance; with top_k > 1, a list of the
    top_k best (fewer if the study has fewer complete trials). `storage`: where the study lives, for
    the command an error suggests."""
    if top_k < 1:
        raise AeoptError(f"--top {top_k}: must be at least 1")
    if len(study.directions) > 1:
        raise StudyError(f"study '{study.study_name}' has {len(study.directions)} objectives and so no "
                         "single best trial; aeopt exports single-objective studies (those `aeopt study "
                         "create` makes)")
    ranked = ranked_trials(study)
    if not ranked:
        counts = StudyCounts.of(study).text()
        flag = storage_flag(storage) if storage is not None else ""
        raise StudyError(f"study '{study.study_name}' has no complete trial ({counts}); "
                         f"run `aeopt worker --study {study.study_name}{flag}` until one completes")
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    entries = [export_entry(study, spec, t, i + 1, len(ranked), now) for i, t in enumerate(ranked[:top_k])]
    return entries[0] if top_k == 1 else entries


def render(export: dict[str, Any] | list[dict[str, Any]], path: str | Path) -> str:
    """The export as YAML (.yaml, .yml) or JSON (.json), chosen by the file's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return json.dumps(export, indent=2) + "\n"
    if suffix in (".yaml", ".yml"):
        if isinstance(export, list):
            return yaml_list(export)
        return dump_yaml(export)
    raise AeoptError(f"{path}: unknown format '{suffix or '(none)'}'; name the file .yaml, .yml or .json")


def yaml_list(entries: list[dict[str, Any]]) -> str:
    return yaml.safe_dump(entries, sort_keys=False, default_flow_style=False)


def write_export(export: dict[str, Any] | list[dict[str, Any]], path: str | Path) -> Path:
    """Write atomically (a reader never sees half a file), format by suffix."""
    path = Path(path)
    text = render(export, path)
    atomic_write_text(path, text)
    return path


def export_study(storage: Storage, name: str, path: str | Path, top_k: int = 1) -> Export:
    """Load the study from its storage, export its best trial(s) to `path`; returns the export."""
    render({}, path)  # fail on a bad suffix before touching the storage
    study, spec = load_study(storage, name)
    export = export_best(study, spec, top_k, storage)
    write_export(export, path)
    return export
