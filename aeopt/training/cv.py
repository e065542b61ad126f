"""k-fold cross-validation with the fold models trained in lockstep, epoch by epoch.

After each epoch the mean validation loss across folds goes to `on_epoch`, so a caller can stop
the whole run there (the Optuna objective prunes through it). Knows nothing about Optuna.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from aeopt.config import RunConfig
from aeopt.training.data import Split, stratified_folds, to_float
from aeopt.training.engine import Trainer, set_seed
from aeopt.training.models import build_model

# on_epoch(epoch, mean validation loss over folds, per-fold validation losses)
OnCVEpoch = Callable[[int, float, list[float]], None]


@dataclass
class CVResult:
    value: float = math.inf  # best mean validation loss over epochs
    best_epoch: int = 0
    fold_losses: list[float] = field(default_factory=list)  # per fold, at the best epoch
    history: list[float] = field(default_factory=list)  # mean validation loss per epoch
    epochs: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    # The first fold's model restored to `best_epoch` (the epoch the trial's value describes),
    # and a few of its validation images, for previews and the trial's checkpoint.
    model: torch.nn.Module | None = None
    model_fold: int = 0
    sample: torch.Tensor | None = None

    @property
    def std(self) -> float:
        return statistics.pstdev(self.fold_losses) if len(self.fold_losses) > 1 else 0.0


def cross_validate(
    cfg: RunConfig,
    pool: Split,
    folds: int,
    fold_seed: int,
    device: torch.device,
    *,
    on_epoch: OnCVEpoch | None = None,
    amp: bool = False,
    patience: int = 0,
) -> CVResult:
    """Train one model per stratified fold of `pool` (the training split only), in lockstep.

    `patience` > 0 stops when the mean validation loss has not improved for that many epochs
    (the report's early stopping); studies with a pruner leave it at 0 and prune instead.
    """
    set_seed(cfg.seed)
    x_all = to_float(pool.x, device)
    fold_data = []
    trainers = []
    for k, (tr, va) in enumerate(stratified_folds(pool.y, folds, fold_seed)):
        tr, va = tr.to(device), va.to(device)
        fold_data.append((x_all[tr], x_all[va]))
        torch.manual_seed(cfg.seed + k)
        trainers.append(Trainer(build_model(cfg), cfg, device, seed=cfg.seed + k, amp=amp))
    del x_all
    result_sample = fold_data[0][1][:16]

    result = CVResult(model=trainers[0].model, sample=result_sample)
    train_time = 0.0
    start = time.perf_counter()
    n_train = sum(tr.shape[0] for tr, _ in fold_data)
    best_state = None
    for epoch in range(1, cfg.budget.max_epochs + 1):
        t0 = time.perf_counter()
        for trainer, (tr, _) in zip(trainers, fold_data, strict=True):
            trainer.train_epoch(tr)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_time += time.perf_counter() - t0
        losses = [trainer.evaluate(va) for trainer, (_, va) in zip(trainers, fold_data, strict=True)]
        mean = sum(losses) / len(losses)
        result.history.append(mean)
        result.epochs = epoch
        if mean < result.value:
            result.value, result.best_epoch, result.fold_losses = mean, epoch, losses
            best_state = trainers[0].state()
        result.seconds = time.perf_counter() - start
        result.images_per_second = epoch * n_train / max(train_time, 1e-9)
        if on_epoch:
            on_epoch(epoch, mean, losses)
        if patience and epoch - result.best_epoch >= patience:
            break
    if best_state is not None:
        result.model.load_state_dict(best_state)
    return result
