"""The training engine: whole on-device tensors, random-permutation batches, an `on_epoch` seam.

Knows nothing about Optuna: studies plug in through `on_epoch(epoch, train_loss, val_loss)`,
which may raise to stop a run (the objective raises `optuna.TrialPruned` there).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from aeopt import threads
from aeopt.config import RunConfig
from aeopt.errors import AeoptError
from aeopt.training.contrastive import ContrastiveTerm
from aeopt.training.data import add_noise
from aeopt.training.kinds import Autoencoder, kind_of
from aeopt.training.kinds.base import random_stream
from aeopt.training.layout import for_device, fused_optimizer_ok
from aeopt.training.losses import reconstruction_loss
from aeopt.training.models import build_model, reconstruct
from aeopt.training.schedules import StepSchedule

log = logging.getLogger(__name__)

EVAL_BATCH = 4096
OnEpoch = Callable[[int, float, float], None]


class NonFiniteLossError(AeoptError, RuntimeError):
    """The loss became NaN or infinite: the run diverged (learning rate too high, usually).

    An AeoptError, so `aeopt train` prints one line and exits 2; the Optuna objective catches it
    and fails the trial instead of stopping the study.
    """


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str | None = None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AeoptError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if dev.type == "cuda" and dev.index is not None:
        count = torch.cuda.device_count()
        if dev.index >= count:
            raise AeoptError(f"--device {device}: this machine has {count} GPU(s), cuda:0 to "
                             f"cuda:{count - 1}")
        # The process's current device too: what names no index (torch's CUDA context, the side stream
        # a CUDA graph is captured on) would otherwise go to cuda:0, another worker's GPU.
        torch.cuda.set_device(dev)
    return dev


def epoch_images(n: int, batch_size: int) -> int:
    """How many of an epoch's n images (in its random order) train: all, but a last batch of one.
    Batch norm cannot train on a single image (the AAE's code norm, the contrastive head raise), and
    one image's gradient at the full learning rate is noise; the order is new each epoch, so no image
    is always the one left out. The fused path (aeopt.training.fused) leaves out the same."""
    return n - 1 if n > 1 and n % batch_size == 1 else n


def make_optimizer(params, cfg: RunConfig) -> torch.optim.Optimizer:
    o = cfg.optim
    params = list(params)
    # torch's fused Adam kernel where it exists (aeopt.training.layout): same update, fewer passes.
    fused = fused_optimizer_ok(params) or None
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay, fused=fused)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay, fused=fused)
    return torch.optim.SGD(params, lr=o.lr, weight_decay=o.weight_decay, momentum=o.momentum,
                           nesterov=o.momentum > 0)


_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def contrastive_term(model: Autoencoder, cfg: RunConfig, device: torch.device) -> ContrastiveTerm | None:
    """The run's contrastive auxiliary term on the model's encoder (None when its weight is 0).
    Horizontal flips only for Fashion-MNIST: a mirrored digit is another digit or none."""
    c = cfg.contrastive
    if c.weight <= 0:
        return None
    return ContrastiveTerm(model.encoder, model.latent_dim, weight=c.weight, temperature=c.temperature,
                           projection=c.projection, flip=cfg.data.dataset == "fashion_mnist",
                           optimizer=_OPTIMIZERS[cfg.optim.name], lr=cfg.optim.lr, device=device,
                           crop=c.crop)


def noise_std(cfg: RunConfig) -> float:
    """The std of the Gaussian noise on training inputs (0: none; the denoising AE's noise_std)."""
    return kind_of(cfg).noise_std(cfg.model)


class Trainer:
    """One model, its optimizer and RNG; trains epochs over on-device float tensors.

    Each batch is one training step of the model's kind (`Kind.step`, given this trainer as its
    `StepContext`): one gradient step on the kind's loss unless the kind trains otherwise.
    """

    def __init__(self, model: Autoencoder, cfg: RunConfig, device: torch.device, *, seed: int,
                 amp: bool = False):
        # On the CPU in channels-last layout (aeopt.training.layout): oneDNN's faster kernels here.
        self.model = for_device(model, device)
        self.cfg = cfg
        self.device = device
        self.optimizer = make_optimizer(self.model.parameters(), cfg)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        # bf16 autocast needs no loss scaling; only worth it on CUDA.
        self.amp = amp and device.type == "cuda"
        self.kind = kind_of(self.model)
        self.noise = noise_std(cfg)
        self.schedule: StepSchedule | None = None  # planned at the first epoch, when the size is known
        self.kind_state: dict[str, Any] = {}  # the kind's own training state (StepContext.kind_state)
        # Its own step after the kind's, so every kind gets it whatever its step does.
        self.contrastive = contrastive_term(self.model, cfg, device)

    def _set_lr(self) -> None:
        """The scheduled learning rate for the step about to be taken."""
        factor = self.schedule.next()
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.optim.lr * factor
        if self.contrastive is not None:
            self.contrastive.set_lr_factor(factor)

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def train_epoch(self, x: torch.Tensor) -> float:
        """One pass over `x` in a random order; returns the mean training loss."""
        self.model.train()
        bs = self.cfg.budget.batch_size
        n = epoch_images(x.shape[0], bs)
        if self.schedule is None:
            o = self.cfg.optim
            self.schedule = StepSchedule(o.schedule, math.ceil(n / bs), self.cfg.budget.max_epochs,
                                         warmup_epochs=o.warmup_epochs, pct_start=o.pct_start)
        perm = torch.randperm(x.shape[0], device=self.device, generator=self.generator)
        total = torch.zeros((), device=self.device)
        # Dropout masks and a VAE's samples from this run's generator too, not torch's global one:
        # the same numbers whatever else the process runs (fold models in concurrent lanes, say).
        with random_stream(self.generator):
            for start in range(0, n, bs):
                threads.tick()  # follow the cores free now (aeopt.threads; a clock read when not due)
                target = x[perm[start : start + bs]]
                if not self.schedule.constant:
                    self._set_lr()
                loss = self.kind.step(self, add_noise(target, self.noise, self.generator), target)
                if self.contrastive is not None:
                    self.contrastive.step(target, self.generator, self.autocast())
                # Accumulate on the device: a .item() per step would sync the GPU every batch.
                total += loss * target.shape[0]
        value = float(total) / n
        if not math.isfinite(value):
            raise NonFiniteLossError(f"training loss is {value}: the run diverged; lower optim.lr "
                                     f"(now {self.cfg.optim.lr:g})")
        return value

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, *, noise: float | None = None, seed: int = 0) -> float:
        """Mean loss over `x` in eval mode. Validation noise is drawn from a fixed seed so every
        epoch (and every trial) is scored on the same noisy images."""
        self.model.eval()
        std = self.noise if noise is None else noise
        g = torch.Generator(device=self.device).manual_seed(seed)
        total = 0.0
        for start in range(0, x.shape[0], EVAL_BATCH):
            target = x[start : start + EVAL_BATCH]
            with self.autocast():
                loss = reconstruction_loss(self.model, add_noise(target, std, g), target, beta=1.0)
            total += float(loss) * target.shape[0]
        return total / x.shape[0]

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val: float = math.inf
    epochs: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    stopped_early: bool = False


def fit(
    cfg: RunConfig,
    train_x: torch.Tensor,
    val_x: torch.Tensor,
    device: torch.device,
    *,
    model: Autoencoder | None = None,
    on_epoch: OnEpoch | None = None,
    amp: bool = False,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[Autoencoder, FitResult]:
    """Train one model with early stopping (budget.patience; 0 = off); restores the best weights.

    `train_x` and `val_x` are float images in [0, 1] already on `device`.
    """
    set_seed(cfg.seed)
    model = model if model is not None else build_model(cfg)
    trainer = Trainer(model, cfg, device, seed=cfg.seed, amp=amp)
    result = FitResult()
    best_state = trainer.state()
    bad_epochs = 0
    train_time = 0.0
    start = time.perf_counter()
    for epoch in range(1, cfg.budget.max_epochs + 1):
        t0 = time.perf_counter()
        train_loss = trainer.train_epoch(train_x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_time += time.perf_counter() - t0
        val_loss = trainer.evaluate(val_x)
        if not math.isfinite(val_loss):
            raise NonFiniteLossError(f"validation loss is {val_loss} at epoch {epoch}: the run diverged; "
                                     f"lower optim.lr (now {cfg.optim.lr:g})")
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss}
        result.history.append(row)
        result.epochs = epoch
        if progress:
            progress(epoch, row)
        if on_epoch:
            on_epoch(epoch, train_loss, val_loss)
        if val_loss < result.best_val:
            result.best_val, result.best_epoch, bad_epochs = val_loss, epoch, 0
            best_state = trainer.state()
        else:
            bad_epochs += 1
            if cfg.budget.patience and bad_epochs >= cfg.budget.patience:
                result.stopped_early = True
                log.info("early stop at epoch %d (best %d)", epoch, result.best_epoch)
                break
    model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - start
    result.images_per_second = result.epochs * train_x.shape[0] / max(train_time, 1e-9)
    return model, result


def evaluate_loss(model: Autoencoder, cfg: RunConfig, x: torch.Tensor, device: torch.device, *,
                  noise: float | None = None) -> float:
    """Loss of a trained model on float images `x` (on `device`)."""
    return Trainer(model, cfg, device, seed=0).evaluate(x, noise=noise)


@torch.no_grad()
def mse(model: nn.Module, x: torch.Tensor, *, noise: float = 0.0, seed: int = 0) -> float:
    """Mean squared reconstruction error of clean `x` from (optionally noisy) inputs."""
    model.eval()
    g = torch.Generator(device=x.device).manual_seed(seed)
    total = 0.0
    for start in range(0, x.shape[0], EVAL_BATCH):
        target = x[start : start + EVAL_BATCH]
        out = reconstruct(model, add_noise(target, noise, g))
        total += float(torch.nn.functional.mse_loss(out.float(), target, reduction="sum"))
    return total / x.numel()
