"""A complete small study for a newcomer: create, run pruned cross-validated trials, summarize, export.

Runs on the embedded defaults (SQLite in studies/aeopt.db) on a Fashion-MNIST subset when the files
are on disk, or on scikit-learn's bundled digits when they are not, in a few minutes on a CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from aeopt.config import StudySpec
from aeopt.errors import DataNotFoundError
from aeopt.search.storage import redact, resolve_url
from aeopt.search.studies import create_study, load_study

log = logging.getLogger(__name__)


def quickstart_spec(dataset: str, train_subset: int | None, max_epochs: int) -> StudySpec:
    return StudySpec.model_validate({
        "name": "quickstart",
        "description": "aeopt quickstart: conv autoencoder, small search",
        "model": {"kind": "conv_ae", "c1": 16, "c2": 32, "c3": 32, "fc": 32, "latent_dim": 10, "dropout": 0.2},
        "data": {"dataset": dataset, "train_subset": train_subset},
        "budget": {"max_epochs": max_epochs, "batch_size": 128, "patience": 8},
        "optim": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-5},
        "cv": {"folds": 3, "seed": 0},
        "sampler": {"name": "tpe", "seed": 0, "n_startup_trials": 4},
        "pruner": {"name": "hyperband", "min_resource": 1, "reduction_factor": 3},
        "space": {
            "model.c1": {"type": "int", "low": 8, "high": 32, "log": True},
            "model.c2": {"type": "int", "low": 16, "high": 64, "log": True},
            "model.fc": {"type": "int", "low": 32, "high": 128, "log": True},
            "model.dropout": {"type": "float", "low": 0.0, "high": 0.3},
            "optim.lr": {"type": "float", "low": 5e-4, "high": 1e-2, "log": True},
            "budget.batch_size": {"type": "categorical", "choices": [64, 128, 256]},
        },
    })


def pick_dataset(data_dir: str | None) -> str:
    from aeopt.training.data import load_dataset

    try:
        load_dataset("fashion_mnist", data_dir, download=False)
        return "fashion_mnist"
    except DataNotFoundError:
        log.warning("Fashion-MNIST is not on this machine: the quickstart uses scikit-learn's bundled digits "
                    "(pass --data-dir DIR to use Fashion-MNIST)")
        return "digits"


def run_quickstart(*, storage_url: str | None = None, study_name: str = "quickstart", n_trials: int = 12,
                   train_subset: int = 6000, max_epochs: int = 10, workers: int = 1, data_dir: str | None = None,
                   device: str | None = None, out: str | Path = "quickstart") -> dict[str, Any]:
    from aeopt.search.export import export_best, write_export
    from aeopt.search.launch import launch
    from aeopt.search.worker import run_worker

    dataset = pick_dataset(data_dir)
    spec = quickstart_spec(dataset, train_subset if dataset in ("fashion_mnist", "mnist") else None, max_epochs)
    artifacts = None
    try:
        from aeopt.search.artifacts import default_artifact_dir

        artifacts = str(default_artifact_dir(resolve_url(storage_url)))
    except ImportError:
        pass
    create_study(spec, storage_url, study_name, skip_if_exists=True, artifacts=artifacts)
    log.info("study '%s' in %s: %d trials of a conv autoencoder on %s, %d-fold CV, TPE + Hyperband", study_name,
             redact(resolve_url(storage_url)), n_trials, dataset, spec.cv.folds)
    if workers > 1:
        code = launch(study_name, workers, storage_url=storage_url, devices=device, n_trials=n_trials, data_dir=data_dir)
        if code:
            from aeopt.errors import AeoptError

            raise AeoptError(f"a quickstart worker failed (exit {code}); see logs/{study_name}/")
    else:
        run_worker(study_name, storage_url, n_trials=n_trials, device=device, data_dir=data_dir)
    study, spec = load_study(storage_url, study_name)
    out = Path(out)
    best_path = out / "best.yaml"
    write_export(export_best(study, spec), best_path)
    return {"study": study, "spec": spec, "best_path": best_path}


def summary_table(study, top: int = 8) -> str:
    trials = study.get_trials(deepcopy=False)
    counts = {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    done = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    keys = list(done[0].params) if done else []
    short = [k.split(".")[-1] for k in keys]
    lines = [f"{len(trials)} trials: {counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} pruned, "
             f"{counts[TrialState.FAIL]} failed",
             "", f"{'trial':>5}  {'CV loss':>9}  {'+-':>7}  {'epochs':>6}  " + "  ".join(f"{k:>10}" for k in short)]
    for t in done[:top]:
        vals = "  ".join(f"{_fmt(t.params[k]):>10}" for k in keys)
        lines.append(f"{t.number:>5}  {t.value:>9.5f}  {t.user_attrs.get('cv_std', 0):>7.5f}  "
                     f"{t.user_attrs.get('epochs', 0):>6}  {vals}")
    pruned_epochs = [t.last_step for t in trials if t.state == TrialState.PRUNED and t.last_step]
    if pruned_epochs:
        lines.append(f"pruned trials stopped after {sum(pruned_epochs) / len(pruned_epochs):.1f} epochs on average")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
