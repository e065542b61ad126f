"""k-fold cross-validation with the fold models trained in lockstep, epoch by epoch.

After each epoch the mean validation loss across folds goes to `on_epoch`, so a caller can stop
the whole run there (the Optuna objective prunes through it). Knows nothing about Optuna.

Three ways to train the folds, with the same results (tests/unit/training/test_fused.py,
test_lanes.py): one `Trainer` per fold, one after another; the same Trainers side by side in CPU
lanes (aeopt.training.lanes), numbers equal to the sequential path's; or all folds fused into one
vmapped step per batch (aeopt.training.fused). Fused is the default on CUDA, where small models are
bound by kernel launches. On the CPU the fused step's grouped convolutions measured slower than
sequential (0.64-0.93x, benchmarks/fused_folds.py), and lanes faster, so the CPU default is lanes
wherever the process may use two cores or more, else one fold after another.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from aeopt.config import RunConfig
from aeopt.switches import turned_off
from aeopt.training.data import Split, stratified_folds, to_float
from aeopt.training.engine import Trainer, set_seed
from aeopt.training.fused import FusedFolds
from aeopt.training.kinds import gradient_step, kind_of
from aeopt.training.lanes import Lanes, fold_lanes
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
    fused: bool = False  # whether the folds trained fused (one vmapped step per batch)
    lanes: int = 1  # how many folds trained side by side (aeopt.training.lanes; 1: one after another)
    # What the kind's `score` says of fold 0's best model (Kind.score): added to the value by studies.
    penalty: float = 0.0
    measures: dict[str, float] = field(default_factory=dict)
    # Fold 0's weights as they are now (fused folds train stacked copies, not `model`): for a pruned
    # trial's preview.
    current_state: Callable[[], dict[str, torch.Tensor]] | None = None

    @property
    def std(self) -> float:
        return statistics.pstdev(self.fold_losses) if len(self.fold_losses) > 1 else 0.0


def use_fused(cfg: RunConfig, device: torch.device, fused: bool | None = None) -> bool:
    """Whether to fuse the folds: as asked, else on CUDA only (AEOPT_FUSED=0 turns that off: the
    benchmarks' "today" path). A kind with its own training step (more than one optimizer, say)
    never fuses its folds, nor does a run with the contrastive term (the engine's `Trainer` takes
    its step; the fused step does not): they train one fold after another, or in lanes on the CPU."""
    if kind_of(cfg).train_step is not gradient_step or cfg.contrastive.weight > 0:
        return False
    if fused is None:
        return device.type == "cuda" and not turned_off("AEOPT_FUSED")
    return fused


class _SequentialFolds:
    """One Trainer per fold, each over its own copy of its training images."""

    def __init__(self, models: list[torch.nn.Module], cfg: RunConfig, device: torch.device, x: torch.Tensor,
                 train_idx: list[torch.Tensor], *, amp: bool):
        self.trainers = [Trainer(m, cfg, device, seed=cfg.seed + k, amp=amp) for k, m in enumerate(models)]
        self.train_x = [x[idx] for idx in train_idx]

    def train_epoch(self) -> None:
        for trainer, x in zip(self.trainers, self.train_x, strict=True):
            trainer.train_epoch(x)

    def evaluate(self, fold: int, x: torch.Tensor) -> float:
        return self.trainers[fold].evaluate(x)

    def evaluate_all(self, val_x: list[torch.Tensor]) -> list[float]:
        return [self.evaluate(k, x) for k, x in enumerate(val_x)]

    def state(self, fold: int) -> dict[str, torch.Tensor]:
        return self.trainers[fold].state()


class _ConcurrentFolds(_SequentialFolds):
    """The same Trainers, stepped side by side: each fold's epoch (and its validation) in a lane
    (aeopt.training.lanes). Every fold draws from its own generator, so the numbers are those of
    the sequential path, whichever lane runs a fold."""

    def __init__(self, models: list[torch.nn.Module], cfg: RunConfig, device: torch.device, x: torch.Tensor,
                 train_idx: list[torch.Tensor], *, amp: bool, lanes: Lanes):
        super().__init__(models, cfg, device, x, train_idx, amp=amp)
        self.lanes = lanes

    def train_epoch(self) -> None:
        self.lanes.map(lambda job: job[0].train_epoch(job[1]), zip(self.trainers, self.train_x, strict=True))

    def evaluate_all(self, val_x: list[torch.Tensor]) -> list[float]:
        return self.lanes.map(lambda pair: pair[0].evaluate(pair[1]), zip(self.trainers, val_x, strict=True))


class _FusedFolds:
    """The same interface over FusedFolds: every fold's batch in one step."""

    def __init__(self, models: list[torch.nn.Module], cfg: RunConfig, device: torch.device, x: torch.Tensor,
                 train_idx: list[torch.Tensor], *, amp: bool):
        seeds = [cfg.seed + k for k in range(len(models))]
        self.fused = FusedFolds(models, cfg, device, seeds=seeds, amp=amp)
        self.x, self.train_idx = x, train_idx

    def train_epoch(self) -> None:
        self.fused.train_epoch(self.x, self.train_idx)

    def evaluate(self, fold: int, x: torch.Tensor) -> float:
        return self.fused.evaluate(fold, x)

    def evaluate_all(self, val_x: list[torch.Tensor]) -> list[float]:
        return [self.evaluate(k, x) for k, x in enumerate(val_x)]

    def state(self, fold: int) -> dict[str, torch.Tensor]:
        return self.fused.state(fold)


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
    fused: bool | None = None,
    concurrent: bool | None = None,
    result: CVResult | None = None,
) -> CVResult:
    """Train one model per stratified fold of `pool` (the training split only), in lockstep.

    `patience` > 0 stops when the mean validation loss has not improved for that many epochs
    (the report's early stopping); studies with a pruner leave it at 0 and prune instead.
    `fused`: train the folds in one vmapped step (None: on CUDA only; see `use_fused`).
    `concurrent`: on the CPU, train unfused folds side by side in lanes (None: where the cores
    allow; see `aeopt.training.lanes.fold_lanes`).
    `result`: a CVResult to fill in place, so the caller reaches fold 0's model while the folds train
    (the objective draws it when the trial is pruned).
    """
    set_seed(cfg.seed)
    x_all = to_float(pool.x, device)
    train_idx, val_x, models = [], [], []
    for k, (tr, va) in enumerate(stratified_folds(pool.y, folds, fold_seed)):
        train_idx.append(tr.to(device))
        val_x.append(x_all[va.to(device)])
        torch.manual_seed(cfg.seed + k)
        models.append(build_model(cfg).to(device))
    fuse = use_fused(cfg, device, fused)
    lanes = None if fuse else fold_lanes(folds, device, concurrent)
    try:
        if lanes is not None:
            backend = _ConcurrentFolds(models, cfg, device, x_all, train_idx, amp=amp, lanes=lanes)
        else:
            path = _FusedFolds if fuse else _SequentialFolds
            backend = path(models, cfg, device, x_all, train_idx, amp=amp)
        # Filled in place when the caller passes one: it reaches fold 0's model while the folds train.
        result = result if result is not None else CVResult()
        result.model, result.sample, result.fused = models[0], val_x[0][:16], isinstance(backend, _FusedFolds)
        result.lanes = lanes.n if lanes is not None else 1
        result.current_state = lambda: backend.state(0)
        best_state = _run_epochs(backend, cfg, val_x, sum(idx.numel() for idx in train_idx), device, result,
                                 on_epoch=on_epoch, patience=patience)
    finally:
        if lanes is not None:
            lanes.close()
    if best_state is not None:
        result.model.load_state_dict(best_state)
    score = kind_of(cfg).score
    if score is not None and result.epochs:
        result.penalty, result.measures = score(result.model, val_x[0])
    return result


def _run_epochs(backend: _SequentialFolds | _FusedFolds, cfg: RunConfig, val_x: list[torch.Tensor],
                n_train: int, device: torch.device, result: CVResult, *, on_epoch: OnCVEpoch | None,
                patience: int) -> dict[str, torch.Tensor] | None:
    """The epoch loop; fills `result` and returns fold 0's state at the best mean epoch."""
    train_time = 0.0
    start = time.perf_counter()
    best_state = None
    for epoch in range(1, cfg.budget.max_epochs + 1):
        t0 = time.perf_counter()
        backend.train_epoch()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_time += time.perf_counter() - t0
        losses = backend.evaluate_all(val_x)
        mean = sum(losses) / len(losses)
        result.history.append(mean)
        result.epochs = epoch
        if mean < result.value:
            result.value, result.best_epoch, result.fold_losses = mean, epoch, losses
            best_state = backend.state(0)
        result.seconds = time.perf_counter() - start
        result.images_per_second = epoch * n_train / max(train_time, 1e-9)
        if on_epoch:
            on_epoch(epoch, mean, losses)
        if patience and epoch - result.best_epoch >= patience:
            break
    return best_state
