"""Per-trial artifacts through Optuna's artifact store, so optuna-dashboard shows them.

Each finished trial uploads a PNG of validation reconstructions (a pruned one, of its model when it
was pruned), titled with the trial's value; a trial that is the best so far
also uploads a self-describing checkpoint of its model (fold 0 at the trial's best epoch, the model
its value describes; the checkpoint says which fold and epoch), which `aeopt report` reuses
instead of training the best configuration again. Files live in a folder (a FileSystemArtifactStore); the
storage records which trial owns which file, so every worker must see the same folder (a shared
disk, or one machine).

Where the folder is: AEOPT_ARTIFACTS, else the study's user attr "aeopt:artifacts" (chosen at
`study create`), else nowhere (no uploads).
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path

import optuna
import torch
from optuna.artifacts import (
    ArtifactMeta,
    FileSystemArtifactStore,
    download_artifact,
    get_all_artifact_meta,
    upload_artifact,
)

from aeopt.config import RunConfig
from aeopt.figures import reconstruction_figure, save_figure
from aeopt.search.records import best_trial
from aeopt.search.storage import Storage
from aeopt.search.studies import artifact_dir, default_artifact_dir, kind_metric
from aeopt.training.checkpoint import save_checkpoint
from aeopt.training.cv import CVResult
from aeopt.training.data import add_noise
from aeopt.training.engine import noise_std
from aeopt.training.models import reconstruct

log = logging.getLogger(__name__)

RECONSTRUCTIONS_PREFIX = "reconstructions"
CHECKPOINT_PREFIX = "checkpoint"
N_IMAGES = 10


def open_store(folder: str | Path) -> FileSystemArtifactStore:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(folder)


def artifact_name(prefix: str, trial_number: int, suffix: str) -> str:
    return f"{prefix}_trial{trial_number}{suffix}"


def _images(val_images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The first few validation images as float [n, 1, 28, 28] in [0, 1] on the model's device."""
    x = val_images[:N_IMAGES].detach()
    x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
    return x.to(device)


def _reconstruction_png(path: Path, model: torch.nn.Module, cfg: RunConfig, x: torch.Tensor,
                        title: str) -> None:
    """Write originals (and the noisy inputs of a denoising AE) above their reconstructions."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            std = noise_std(cfg)
            noisy = add_noise(x, std, torch.Generator(device=x.device).manual_seed(0)) if std > 0 else None
            recon = reconstruct(model, noisy if noisy is not None else x)
    finally:
        model.train(was_training)
    save_figure(reconstruction_figure(x, recon, noisy, title), path)


# Content types given at upload (optuna-dashboard serves the one recorded then): a guess from ".pt"
# is a SNES page table.
PNG_TYPE = "image/png"
CHECKPOINT_TYPE = "application/octet-stream"


def artifact_title(trial_number: int, cfg: RunConfig, result: CVResult, *,
                   pruned_at: int | None = None) -> str:
    """The PNG's title: the trial's value as Optuna records it, then what it is made of."""
    name = kind_metric(cfg.model.kind)
    if pruned_at is not None:
        # A pruned trial's value is its last reported one: the mean CV loss of that epoch.
        value = result.history[-1] if result.history else math.nan
        return (f"trial {trial_number}: {cfg.model.kind}, pruned at epoch {pruned_at}, {name} {value:.5g} "
                f"(fold {result.model_fold} at epoch {pruned_at})")
    value = result.value + result.penalty
    parts = f" = CV loss {result.value:.5g} + prior penalty {result.penalty:.3g}" if result.penalty else ""
    return (f"trial {trial_number}: {cfg.model.kind}, {name} {value:.5g}{parts} "
            f"(fold {result.model_fold} at epoch {result.best_epoch})")


def upload_trial_artifacts(trial: optuna.Trial, storage: Storage, cfg: RunConfig, result: CVResult, *,
                           is_best: bool) -> None:
    """Upload the PNG of `result.model`'s validation reconstructions, and its checkpoint when `is_best`.

    `result.model` is one fold's model at the trial's best epoch; the checkpoint records which
    (`fold`, `epoch`) with the study and trial. Never raises: artifacts are a convenience, and a
    full disk must not fail the trial. Call it from the objective before it returns: Optuna
    refuses to attach artifacts (system attrs) to a trial that is already finished.
    """
    _upload(trial, storage, cfg, result, checkpoint=is_best, pruned_at=None)


def upload_pruned_artifacts(trial: optuna.Trial, storage: Storage, cfg: RunConfig, result: CVResult, *,
                            epoch: int) -> None:
    """Upload the PNG of a trial being pruned at `epoch`: `result.model` is fold 0's model as it is
    then (`result` is the CVResult that cross_validate is filling). Call it before raising
    optuna.TrialPruned, for the same reason as above; never raises."""
    # Fused folds train stacked copies of the weights: fold 0's current ones are loaded into the model.
    current = getattr(result, "current_state", None)
    if current is not None and result.model is not None:
        try:
            result.model.load_state_dict(current())
        except Exception as exc:
            log.warning("could not read trial %d's model when pruned: %s: %s", trial.number,
                        type(exc).__name__, exc)
            return
    _upload(trial, storage, cfg, result, checkpoint=False, pruned_at=epoch)


def _upload(trial: optuna.Trial, storage: Storage, cfg: RunConfig, result: CVResult, *, checkpoint: bool,
            pruned_at: int | None) -> None:
    study = trial.study
    try:
        folder = artifact_dir(study)
        if folder is None or result.model is None or result.sample is None:
            log.debug("study %s has no artifact folder; not uploading trial %d's artifacts", study.study_name,
                      trial.number)
            return
        store = open_store(folder)
        with tempfile.TemporaryDirectory(prefix="aeopt-artifacts-") as tmp:
            png = Path(tmp) / artifact_name(RECONSTRUCTIONS_PREFIX, trial.number, ".png")
            images = _images(result.sample, next(result.model.parameters()).device)
            title = artifact_title(trial.number, cfg, result, pruned_at=pruned_at)
            _reconstruction_png(png, result.model, cfg, images, title)
            upload_artifact(artifact_store=store, file_path=str(png), study_or_trial=trial,
                            storage=storage.optuna, mimetype=PNG_TYPE)
            if checkpoint:
                _upload_checkpoint(Path(tmp), store, trial, storage, cfg, result)
        log.debug("uploaded trial %d's artifacts to %s", trial.number, folder)
    except Exception as exc:  # artifacts are a convenience: a full disk must not fail the trial
        log.warning("could not upload trial %d's artifacts: %s: %s", trial.number, type(exc).__name__, exc)


def _upload_checkpoint(tmp: Path, store: FileSystemArtifactStore, trial: optuna.Trial, storage: Storage,
                       cfg: RunConfig, result: CVResult) -> None:
    ckpt = tmp / artifact_name(CHECKPOINT_PREFIX, trial.number, ".pt")
    extra = {"study": trial.study.study_name, "trial": trial.number, "fold": result.model_fold,
             "epoch": result.best_epoch, "params": dict(trial.params)}
    metrics = {"cv_mean": result.value, "fold_loss": _fold_loss(result)}
    save_checkpoint(ckpt, result.model, cfg, metrics, extra=extra)
    upload_artifact(artifact_store=store, file_path=str(ckpt), study_or_trial=trial, storage=storage.optuna,
                    mimetype=CHECKPOINT_TYPE)


def _fold_loss(result: CVResult) -> float | None:
    """The validation loss of the fold whose model is kept, at the best epoch."""
    return result.fold_losses[result.model_fold] if result.model_fold < len(result.fold_losses) else None


def checkpoint_meta(storage: Storage, trial: optuna.trial.FrozenTrial) -> ArtifactMeta | None:
    """The trial's checkpoint artifact meta (the newest, if several), or None."""
    metas = get_all_artifact_meta(trial, storage=storage.optuna)
    found = [m for m in metas if m.filename.startswith(CHECKPOINT_PREFIX) and m.filename.endswith(".pt")]
    return found[-1] if found else None


def find_best_checkpoint(study: optuna.Study, dest: str | Path | None, storage: Storage) -> Path | None:
    """Download the best trial's checkpoint artifact into `dest` (a temp folder when None).

    None when the study has no finished trial, no artifact folder, or the best trial uploaded no
    checkpoint (it was not the best at the time it finished, or the upload failed). The folder
    beside a SQLite file is tried too: a relative folder recorded at `study create` points
    elsewhere when the command runs from another directory.
    """
    best = best_trial(study)
    meta = checkpoint_meta(storage, best) if best is not None else None
    if meta is None:
        return None
    candidates = [f for f in (artifact_dir(study), default_artifact_dir(storage)) if f is not None]
    folder = next((f for f in candidates if (f / meta.artifact_id).is_file()), candidates[0])
    out = Path(dest) if dest is not None else Path(tempfile.mkdtemp(prefix="aeopt-best-"))
    out.mkdir(parents=True, exist_ok=True)
    path = out / meta.filename
    path.unlink(missing_ok=True)  # download_artifact refuses to overwrite; a stale copy must not win
    try:
        download_artifact(artifact_store=FileSystemArtifactStore(folder), file_path=str(path),
                          artifact_id=meta.artifact_id)
    except Exception as exc:
        log.warning("the best trial's checkpoint %s is not in %s (%s); training the best configuration "
                    "instead", meta.filename, folder, type(exc).__name__)
        return None
    return path
