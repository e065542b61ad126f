"""One plain training run (what `aeopt train` does): fit on the 80/20 split, evaluate once on test."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from typing import Any

import torch

from aeopt.config import RunConfig
from aeopt.figures import reconstruction_figure, save_figure
from aeopt.files import atomic_write_text, staged_folder
from aeopt.progress import progress
from aeopt.training.checkpoint import save_checkpoint
from aeopt.training.data import Prepared, add_noise, prepare, to_float
from aeopt.training.engine import FitResult, evaluate_loss, fit, mse, noise_std, resolve_device
from aeopt.training.models import Autoencoder, count_parameters, reconstruct

log = logging.getLogger(__name__)

# The noise stds at which every run's test MSE from noisy inputs is recorded (issue 13: the
# denoising AE against the plain AE at 0.3 and 0.5). The same seed gives every model the same
# noisy test images, so two runs' figures compare.
NOISY_TEST_STDS = (0.3, 0.5)


def noisy_test_mse(model: Autoencoder, test_x: torch.Tensor) -> dict[str, float]:
    """Test MSE to the clean images from inputs with Gaussian noise, per std ("0.3": ...)."""
    return {f"{std:g}": mse(model, test_x, noise=std) for std in NOISY_TEST_STDS}


def fit_autoencoder(cfg: RunConfig, data: Prepared, device: torch.device, *, amp: bool = False,
                    show_progress: bool = True) -> tuple[Autoencoder, FitResult]:
    """Train `cfg` on the run's training part with early stopping on its validation part; the test
    split is not touched."""
    train_x, val_x = to_float(data.train.x, device), to_float(data.val.x, device)
    with progress(cfg.budget.max_epochs, f"train {cfg.model.kind}", enabled=show_progress) as bar:
        return fit(cfg, train_x, val_x, device, amp=amp, progress=lambda _epoch, row: bar.update(
            {"train": row["train_loss"], "val": row["val_loss"]}))


def train_run(cfg: RunConfig, *, data_dir: str | None = None, device: str | None = None,
              out: str | Path | None = None, amp: bool = False,
              show_progress: bool = True) -> tuple[Autoencoder, dict[str, Any]]:
    """Train `cfg` with early stopping, evaluate on the test split once, write outputs to `out`."""
    dev = resolve_device(device)
    data = prepare(cfg.data, data_dir)
    model, result = fit_autoencoder(cfg, data, dev, amp=amp, show_progress=show_progress)
    # The test split is touched here, once, after training is over.
    train_x, test_x = to_float(data.train.x, dev), to_float(data.test.x, dev)
    metrics: dict[str, Any] = {
        "model": cfg.model.kind,
        "dataset": cfg.data.dataset,
        "train_loss": evaluate_loss(model, cfg, train_x, dev),
        "val_loss": result.best_val,
        "test_loss": evaluate_loss(model, cfg, test_x, dev),
        "test_mse": mse(model, test_x),
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "seconds": round(result.seconds, 3),
        "images_per_second": round(result.images_per_second, 1),
        "n_train": len(data.train),
        "n_val": len(data.val),
        "n_test": len(data.test),
        "parameters": count_parameters(model),
        "device": str(dev),
        "host": socket.gethostname(),
        "history": result.history,
    }
    if noise_std(cfg) > 0:
        metrics["test_mse_noisy_input"] = mse(model, test_x, noise=noise_std(cfg))
    metrics["test_mse_by_input_noise"] = noisy_test_mse(model, test_x)
    if out is not None:
        write_run_outputs(Path(out), model, cfg, metrics, test_x)
    return model, metrics


def write_run_outputs(out: Path, model: Autoencoder, cfg: RunConfig, metrics: dict[str, Any],
                      test_x: torch.Tensor) -> None:
    """checkpoint.pt, reconstructions.png and metrics.json, moved into `out` together once all are
    written: a run stopped part-way leaves no checkpoint without its metrics."""
    with staged_folder(out, keep_existing=False) as staging:
        _write_outputs(staging, model, cfg, metrics, test_x)


def _write_outputs(out: Path, model: Autoencoder, cfg: RunConfig, metrics: dict[str, Any],
                   test_x: torch.Tensor) -> None:
    save_checkpoint(out / "checkpoint.pt", model, cfg, {k: v for k, v in metrics.items() if k != "history"})
    sample = test_x[:10]
    model.eval()
    with torch.no_grad():
        std = noise_std(cfg)
        gen = torch.Generator(device=sample.device).manual_seed(0)
        noisy = add_noise(sample, std, gen) if std > 0 else None
        recon = reconstruct(model, noisy if noisy is not None else sample)
    title = f"{cfg.model.kind}: test reconstructions (test MSE {metrics['test_mse']:.4f})"
    save_figure(reconstruction_figure(sample, recon, noisy, title), out / "reconstructions.png")
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
