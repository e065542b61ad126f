"""A complete small study for a newcomer: create, run pruned cross-validated trials, summarize, export.

Runs on the embedded defaults (SQLite in studies/aeopt.db) on a Fashion-MNIST subset when the files
are on disk, or on scikit-learn's bundled digits when they are not, in a few minutes on a CPU.

Stopped by Ctrl-C / SIGTERM or by its time budget, it still summarizes what finished and exports the
best complete trial, if there is one (`QuickstartResult.signal` says which signal, for the exit code).
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from aeopt.config import SearchSpec, StudySpec
from aeopt.errors import AeoptError, StudyError
from aeopt.search.dashboard import write_study_note
from aeopt.search.export import export_best, write_export
from aeopt.search.launch import launch, missing_cuda
from aeopt.search.records import StudyCounts, TrialRecord
from aeopt.search.refit import refit_study
from aeopt.search.storage import Storage
from aeopt.search.studies import (
    changes_text,
    create_study,
    default_artifact_dir,
    load_study,
    spec_changes,
    storage_flag,
    study_names,
)
from aeopt.search.worker import StopSignal, run_worker
from aeopt.training.data import NoDataFilesError, load_dataset
from aeopt.training.engine import resolve_device

log = logging.getLogger(__name__)

# The default size: 12 trials (4 random, then TPE) of up to 8 epochs on 5,000 images, 3-fold CV. A
# third smaller than the earlier 12 x 10 epochs x 6,000 (README: about 4 minutes idle, 11 shared;
# 29 minutes once on a loaded machine), for "about 5 minutes on an idle 2-core CPU" with room for a
# busy one; measured in BENCHMARKS.md ("Quickstart").
QUICKSTART_TRIALS, QUICKSTART_SUBSET, QUICKSTART_EPOCHS = 12, 5000, 8


def quickstart_spec(dataset: str, train_subset: int | None, max_epochs: int) -> StudySpec:
    return StudySpec.model_validate({
        "name": "quickstart",
        "description": "aeopt quickstart: conv autoencoder, small search",
        "model": {"kind": "conv_ae", "c1": 16, "c2": 32, "c3": 32, "fc": 32, "latent_dim": 10,
                  "dropout": 0.2},
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
    try:
        load_dataset("fashion_mnist", data_dir, download=False)
        return "fashion_mnist"
    except NoDataFilesError:
        # Only when no copy is anywhere aeopt looks by itself. A corrupt file, or a --data-dir without
        # the data, is the DataNotFoundError's one line: the user meant those files, and a study on
        # the digits instead would hide what is wrong with them.
        log.warning("Fashion-MNIST is not on this machine: the quickstart uses scikit-learn's bundled "
                    "digits. For the real data: `apt-get install dataset-fashion-mnist` (or copy "
                    "FashionMNIST/raw), then set AEOPT_DATA_DIR or pass --data-dir to the folder that "
                    "holds FashionMNIST/raw")
        return "digits"


@dataclass
class QuickstartResult:
    study: optuna.Study
    spec: SearchSpec
    best_path: Path | None  # None: no trial completed (stopped early), nothing exported
    stopped_because: str = ""
    signal: int | None = None  # the signal that stopped the run, if one did

    # The refit of the best config (search/refit.py) on the images the search used, tested once:
    # the model the quickstart ends with. None when it was skipped or nothing completed.
    refit_path: Path | None = None
    refit_headline: str = ""


def run_quickstart(storage: Storage, *, study_name: str = "quickstart", n_trials: int = QUICKSTART_TRIALS,
                   train_subset: int = QUICKSTART_SUBSET, max_epochs: int = QUICKSTART_EPOCHS,
                   workers: int = 1,
                   data_dir: str | None = None, device: str | None = None,
                   out: str | Path = "quickstart", timeout: float | None = None,
                   refit: bool = True, dataset: str | None = None) -> QuickstartResult:
    """Create (or continue, when made with the same settings: `check_rerun`) the quickstart study, run it
    to `n_trials` (or until `timeout` seconds or a stop signal), export the best config and, with
    `refit`, refit it and test it once. `dataset`: what `pick_dataset(data_dir)` picked, when the caller
    picked it already."""
    dataset = dataset or pick_dataset(data_dir)
    subset = train_subset if dataset in ("fashion_mnist", "mnist") else None
    spec = quickstart_spec(dataset, subset, max_epochs)
    check_rerun(storage, study_name, spec)
    study = create_study(storage, spec, study_name, skip_if_exists=True,
                         artifacts=str(default_artifact_dir(storage)))
    write_study_note(study)
    log.info("study '%s' in %s: %d trials of a conv autoencoder on %s, %d-fold CV, TPE + Hyperband",
             study_name, storage.display, n_trials, dataset, spec.cv.folds)
    stopped_because, signum = _run_trials(storage, study_name, n_trials=n_trials, workers=workers,
                                          device=device, data_dir=data_dir, timeout=timeout)
    study, spec = load_study(storage, study_name)
    best_path: Path | None = Path(out) / "best.yaml"
    if best_trial_exists(study):
        write_export(export_best(study, spec), best_path)
    else:
        best_path = None
    result = QuickstartResult(study, spec, best_path, stopped_because, signum)
    if refit and best_path is not None and signum is None and not stopped_because:
        # On the search's own images (the stored spec's subset), so that the quickstart stays minutes
        # long; the printed next step refits on the full training split.
        subset = spec.data.train_subset
        keep = [f"data.train_subset={subset}"] if subset is not None else []
        done = refit_study(storage, study_name, Path(out) / "refit", keep, data_dir=data_dir, device=device,
                           show_progress=False)
        result.refit_path, result.refit_headline = done.checkpoint, done.record["summary"]
    return result


# The quickstart options that set a field of its spec.
_OPTION_OF = {"budget.max_epochs": "--max-epochs", "data.train_subset": "--train-subset"}


def check_rerun(storage: Storage, study_name: str, spec: SearchSpec) -> None:
    """A rerun continues the study only with the spec it was made with, else a one-line StudyError.

    Refused rather than continued on the stored spec: the options a user changed (--max-epochs,
    --train-subset, Fashion-MNIST now on disk) would be dropped, and minutes of trials and a refit
    spent on settings they did not ask for, with one warning line among the progress to tell them.
    Nor can the study take the new spec: its trials would no longer be comparable (TPE, Hyperband)."""
    if study_name not in study_names(storage):
        return
    _, stored = load_study(storage, study_name)
    changes = spec_changes(stored, spec)
    if not changes:
        return
    fresh = f"`aeopt study delete {study_name}{storage_flag(storage)}`"
    where = f"study '{study_name}' in {storage.display}"
    keys = {key for key, _, _ in changes}
    if "data.dataset" in keys:
        old, new = stored.data.dataset, spec.data.dataset
        raise StudyError(f"{where} ran on {old}, and this run would use {new}: start afresh on {new} with "
                         f"{fresh}, or pass another --storage")
    if keys <= _OPTION_OF.keys():
        made = " ".join(f"{_OPTION_OF[key]} {old}" for key, old, _ in changes)
        now = " ".join(f"{_OPTION_OF[key]} {new}" for key, _, new in changes)
        raise StudyError(f"{where} was made with {made}, not {now}: rerun with {made} to continue it, or "
                         f"start afresh with {fresh}")
    raise StudyError(f"{where} was made by another version of the quickstart ({changes_text(changes)}): "
                     f"start afresh with {fresh}")


def _run_trials(storage: Storage, study_name: str, *, n_trials: int, workers: int, device: str | None,
                data_dir: str | None, timeout: float | None) -> tuple[str, int | None]:
    """Run the trials in this process or in `workers` processes: (why it stopped, the stop signal)."""
    if workers > 1:
        code = launch(storage, study_name, workers, devices=launch_devices(device), n_trials=n_trials,
                      data_dir=data_dir, timeout=timeout)
        if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
            return f"stopped by signal {signal.Signals(code - 128).name}", code - 128
        if code:
            raise AeoptError(f"a quickstart worker failed (exit {code}); see logs/{study_name}/")
        return "", None
    try:
        summary = run_worker(storage, study_name, n_trials=n_trials, device=device, data_dir=data_dir,
                             timeout=timeout)
    except StopSignal as stop:
        return f"stopped by signal {signal.Signals(stop.signum).name}", stop.signum
    except KeyboardInterrupt:  # raised outside the worker's handlers (before they were installed)
        return "stopped by signal SIGINT", signal.SIGINT.value
    # Its target reached, the worker's reason says nothing new; a budget that ran out does.
    return ("" if summary.stopped_because.startswith("the study holds") else summary.stopped_because), None


def launch_devices(device: str | None) -> str:
    """The device of every worker process: --device, or when it is left out (or auto) the default one
    worker gets (cuda when available), not launch's own default, the CPU. Errors name --device, the
    option the quickstart has (launch's say --devices)."""
    try:
        resolved = str(resolve_device(device))  # raises for a CUDA device on a machine without CUDA
    except RuntimeError:  # torch's answer to a string that is no device
        raise AeoptError(f"--device {device}: not a device; use cpu, cuda or cuda:N") from None
    problem = missing_cuda([resolved])  # cuda:N beyond the devices this machine has
    if problem:
        raise AeoptError(f"--device {device}: {problem}")
    return resolved


def best_trial_exists(study: optuna.Study) -> bool:
    return any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))


def summary_table(study: optuna.Study, top: int = 8) -> str:
    """The counts, then the best complete trials with their CV loss, epochs and parameters."""
    trials = study.get_trials(deepcopy=False)
    c = StudyCounts.of(trials)
    done = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    keys = list(done[0].params) if done else []
    short = [k.split(".")[-1] for k in keys]
    header = f"{'trial':>5}  {'CV loss':>9}  {'+-':>7}  {'epochs':>6}  "
    header += "  ".join(f"{k:>10}" for k in short)
    lines = [f"{len(trials)} trials: {c.complete} complete, {c.pruned} pruned, {c.failed} failed", "", header]
    for t in done[:top]:
        record = TrialRecord.of(t)
        vals = "  ".join(f"{_fmt(t.params[k]):>10}" for k in keys)
        std, epochs = record.cv_std or 0, record.epochs or 0
        lines.append(f"{t.number:>5}  {t.value:>9.5f}  {std:>7.5f}  {epochs:>6}  {vals}")
    pruned_epochs = [t.last_step for t in trials if t.state == TrialState.PRUNED and t.last_step]
    if pruned_epochs:
        mean = sum(pruned_epochs) / len(pruned_epochs)
        lines.append(f"pruned trials stopped after {mean:.1f} epochs on average")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
