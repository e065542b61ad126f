"""Per-trial artifacts through Optuna's artifact store, so optuna-dashboard shows them.

Each finished trial uploads a PNG of validation reconstructions; a trial that is the best so far
also uploads a self-describing checkpoint of its model, which `aeopt report` reuses instead of
training the best configuration again. Files live in a folder (a FileSystemArtifactStore); the
storage records which trial owns which file, so every worker must see the same folder (a shared
disk, or one machine).

Where the folder is: AEOPT_ARTIFACTS, else the study's user attr "aeopt:artifacts" (chosen at
`study create`), else nowhere (no uploads).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta, upload_artifact

from aeopt.config import RunConfig

log = logging.getLogger(__name__)

ENV = "AEOPT_ARTIFACTS"
ATTR = "aeopt:artifacts"
RECONSTRUCTIONS_PREFIX = "reconstructions"
CHECKPOINT_PREFIX = "checkpoint"
N_IMAGES = 10


def artifact_dir(study: optuna.Study) -> Path | None:
    """The study's artifact folder: AEOPT_ARTIFACTS, else the study's "aeopt:artifacts" attr, else None."""
    env = os.environ.get(ENV)
    if env:
        return Path(env).expanduser()
    attr = study.user_attrs.get(ATTR)
    if attr:
        return Path(str(attr)).expanduser()
    return None


def default_artifact_dir(storage_url: str | None) -> Path:
    """Beside the database for SQLite (sqlite:///path/x.db -> path/artifacts), else ./artifacts.

    A server database (PostgreSQL, MySQL) says nothing about a disk the workers share, so the
    default there is the working directory; pass --artifacts to point at a shared folder.
    """
    url = storage_url or ""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path and path != ":memory:":
            return Path(path).expanduser().parent / "artifacts"
    return Path("artifacts")


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


def _reconstruction_png(path: Path, model: torch.nn.Module, cfg: RunConfig, x: torch.Tensor, title: str) -> float:
    """Write originals (noisy inputs for a denoising AE) and reconstructions; returns their MSE."""
    from aeopt.figures import reconstruction_figure, save_figure
    from aeopt.training.data import add_noise
    from aeopt.training.engine import noise_std
    from aeopt.training.models import reconstruct

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            std = noise_std(cfg)
            noisy = add_noise(x, std, torch.Generator(device=x.device).manual_seed(0)) if std > 0 else None
            recon = reconstruct(model, noisy if noisy is not None else x)
            err = float(torch.nn.functional.mse_loss(recon.float(), x))
    finally:
        model.train(was_training)
    save_figure(reconstruction_figure(x, recon, noisy, f"{title} (MSE {err:.4f})"), path)
    return err


def upload_trial_artifacts(study: optuna.Study, trial: optuna.Trial, model: torch.nn.Module, cfg: RunConfig,
                           val_images: torch.Tensor, is_best: bool) -> None:
    """Upload the trial's reconstruction PNG, and its checkpoint when `is_best`. Never raises.

    Call it from the objective before it returns: Optuna refuses to attach artifacts (system
    attrs) to a trial that is already finished.
    """
    try:
        folder = artifact_dir(study)
        if folder is None:
            log.debug("study %s has no artifact folder; not uploading trial %d's artifacts", study.study_name, trial.number)
            return
        store = open_store(folder)
        device = next(model.parameters()).device
        with tempfile.TemporaryDirectory(prefix="aeopt-artifacts-") as tmp:
            png = Path(tmp) / artifact_name(RECONSTRUCTIONS_PREFIX, trial.number, ".png")
            title = f"trial {trial.number}: {cfg.model.kind} validation reconstructions"
            val_mse = _reconstruction_png(png, model, cfg, _images(val_images, device), title)
            upload_artifact(artifact_store=store, file_path=str(png), study_or_trial=trial, storage=study._storage)
            if is_best:
                ckpt = Path(tmp) / artifact_name(CHECKPOINT_PREFIX, trial.number, ".pt")
                from aeopt.training.checkpoint import save_checkpoint

                extra: dict[str, Any] = {"study": study.study_name, "trial": trial.number, "params": dict(trial.params)}
                save_checkpoint(ckpt, model, cfg, {"val_mse_sample": val_mse}, extra=extra)
                upload_artifact(artifact_store=store, file_path=str(ckpt), study_or_trial=trial, storage=study._storage)
        log.debug("uploaded trial %d's artifacts to %s", trial.number, folder)
    except Exception as exc:  # artifacts are a convenience: a full disk must not fail the trial
        log.warning("could not upload trial %d's artifacts: %s: %s", getattr(trial, "number", -1), type(exc).__name__, exc)


def checkpoint_meta(study: optuna.Study, trial: optuna.trial.FrozenTrial):
    """The trial's checkpoint artifact meta (the newest, if several), or None."""
    metas = get_all_artifact_meta(trial, storage=study._storage)
    found = [m for m in metas if m.filename.startswith(CHECKPOINT_PREFIX) and m.filename.endswith(".pt")]
    return found[-1] if found else None


def find_best_checkpoint(study: optuna.Study, dest: str | Path | None = None, storage_url: str | None = None) -> Path | None:
    """Download the best trial's checkpoint artifact into `dest` (a temp folder by default).

    None when the study has no finished trial, no artifact folder, or the best trial uploaded no
    checkpoint (it was not the best at the time it finished, or the upload failed). With
    `storage_url`, the folder beside a SQLite file is tried too: a relative folder recorded at
    `study create` points elsewhere when the command runs from another directory.
    """
    try:
        best = study.best_trial
    except ValueError:
        return None
    meta = checkpoint_meta(study, best)
    if meta is None:
        return None
    candidates = [f for f in (artifact_dir(study), default_artifact_dir(storage_url) if storage_url else None) if f is not None]
    folder = next((f for f in candidates if (f / meta.artifact_id).is_file()), candidates[0] if candidates else None)
    if folder is None:
        return None
    out = Path(dest) if dest is not None else Path(tempfile.mkdtemp(prefix="aeopt-best-"))
    out.mkdir(parents=True, exist_ok=True)
    path = out / meta.filename
    path.unlink(missing_ok=True)  # download_artifact refuses to overwrite; a stale copy must not win
    try:
        download_artifact(artifact_store=FileSystemArtifactStore(folder), file_path=str(path), artifact_id=meta.artifact_id)
    except Exception as exc:
        log.warning("the best trial's checkpoint %s is not in %s (%s); training the best configuration instead",
                    meta.filename, folder, type(exc).__name__)
        return None
    return path
