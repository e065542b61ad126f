"""k classifiers of one architecture trained as one: the supervised counterpart of aeopt.training.fused.

The k-fold fine-tune (and the classifier study's trials) train k classifiers that differ only in their
fold's images. As for the autoencoder folds, their parameters are stacked and each batch is one
`vmap`ped forward/backward over the folds (`randomness="different"`: each fold its own dropout masks)
and one `StackedOptimizer` step (AdamW, the encoder's parameters at `encoder_lr_scale`, as
`fit_classifier`'s parameter groups).

What each fold keeps of `fit_classifier`'s semantics: its own generator (seeded like the sequential
run's) for its batch order and augmentation, its own schedule, its own early stopping (a fold that
stopped sits out every later update: masked) and its own best-epoch weights, restored at the end.
Steps where every fold has a full batch run fused; the rest (a last partial batch) fold by fold.
The optional reconstruction term (semi-supervised fine-tuning) is not fused: such runs train their
folds one after another, or side by side in lanes on the CPU (aeopt.stages.finetune_fit decides).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import stack_module_state, vmap

from aeopt import threads
from aeopt.config import OptimConfig, SupervisedConfig
from aeopt.training.engine import NonFiniteLossError
from aeopt.training.fused import StackedOptimizer, Tensors, _Bound
from aeopt.training.schedules import StepSchedule
from aeopt.training.supervised import ClassifierFit, _record_epoch, augment, evaluate

XY = tuple[torch.Tensor, torch.Tensor]
# on_epoch(fold, epoch, validation accuracy, validation loss); may raise to stop every fold.
OnFoldEpoch = Callable[[int, int, float, float], None]


class _Folds:
    """The stacked classifiers, their optimizer and per-fold training state."""

    def __init__(self, models: list[nn.Module], trains: list[XY], cfg: SupervisedConfig, device: torch.device,
                 *, seeds: list[int], augmentation: tuple[int, bool], encoder_lr_scale: float, amp: bool):
        self.k, self.cfg, self.device = len(models), cfg, device
        params, buffers = stack_module_state(models)
        trainable = {n for n, p in models[0].named_parameters() if p.requires_grad}
        self.params = {n: p.detach().clone().requires_grad_(n in trainable) for n, p in params.items()}
        self.buffers = {n: b.detach().clone() for n, b in buffers.items()}
        self.base = copy.deepcopy(models[0]).to("meta")  # the architecture (and its frozen flag) only
        optim = OptimConfig(name="adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
        factors = {n: encoder_lr_scale for n in self.params if n.startswith("encoder.")}
        self.optimizer = StackedOptimizer(self.params, optim, self.k, lr_factors=factors)
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.trains = trains
        self.shift, self.flip = augmentation
        self.amp = amp and device.type == "cuda"
        self.active = [True] * self.k
        # Per fold, as _EpochLoop plans them: batch size, steps per epoch, passes over the images.
        self.batch = [min(cfg.batch_size, x.shape[0]) for x, _ in trains]
        self.steps = [max(math.ceil(x.shape[0] / b), cfg.min_steps_per_epoch)
                      for (x, _), b in zip(trains, self.batch, strict=True)]
        self.passes = [math.ceil(s * b / x.shape[0]) for (x, _), s, b in zip(trains, self.steps, self.batch,
                                                                              strict=True)]
        self.schedules = [StepSchedule(cfg.schedule, s, cfg.max_epochs, warmup_epochs=cfg.warmup_epochs,
                                       pct_start=cfg.pct_start) for s in self.steps]
        self._fused = vmap(self._loss, in_dims=(0, 0, 0, 0), randomness="different")

    def _loss(self, params: Tensors, buffers: Tensors, xb: torch.Tensor, yb: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = _Bound(self.base, params, buffers)(xb)
        loss = F.cross_entropy(logits.float(), yb, label_smoothing=self.cfg.label_smoothing)
        return loss, (logits.detach().argmax(1) == yb).sum()

    def _fold(self, i: int) -> tuple[Tensors, Tensors]:
        return {n: p[i] for n, p in self.params.items()}, {n: b[i] for n, b in self.buffers.items()}

    def _batch(self, i: int, idx: torch.Tensor) -> XY:
        x, y = self.trains[i]
        xb, yb = x[idx], y[idx]
        if self.shift or self.flip:
            xb = augment(xb, self.generators[i], self.shift, self.flip)
        return xb, yb

    def _lr(self, folds: list[int]) -> None:
        """Each stepping fold's schedule factor for this step (host-side, as FusedFolds does)."""
        if self.schedules[0].constant:
            return
        factors = [1.0] * self.k
        for i in folds:
            factors[i] = self.schedules[i].next()
        self.optimizer.lr_scale.copy_(torch.tensor(factors), non_blocking=True)

    def _step(self, loss: torch.Tensor, folds: list[int]) -> None:
        self.optimizer.zero_grad()
        loss.backward()
        self._lr(folds)
        mask = None
        if len(folds) < self.k:
            mask = torch.zeros(self.k, dtype=torch.bool, device=self.device)
            mask[folds] = True
        self.optimizer.step(mask)

    def train_epoch(self) -> list[tuple[float, float]]:
        """One epoch of every active fold: (mean training loss, accuracy on augmented batches) per fold."""
        self.base.train()
        live = [i for i in range(self.k) if self.active[i]]
        orders = {i: torch.cat([torch.randperm(self.trains[i][0].shape[0], device=self.device,
                                               generator=self.generators[i]) for _ in range(self.passes[i])])
                  for i in live}
        total = torch.zeros(self.k, device=self.device)
        correct = torch.zeros(self.k, device=self.device)
        seen = [0] * self.k
        batch = self.batch[live[0]]
        same = all(self.batch[i] == batch for i in live)
        # Fused while every live fold has a full batch of the same size; the rest fold by fold.
        full = min(min(self.steps[i], orders[i].numel() // batch) for i in live) if same else 0
        for s in range(full):
            threads.tick()
            xs, ys = zip(*(self._batch(i, orders[i][s * batch:(s + 1) * batch]) for i in live), strict=True)
            if len(live) == self.k:
                losses, hits = self._fused(self.params, self.buffers, torch.stack(xs), torch.stack(ys))
            else:  # stopped folds still compute (stacked tensors) but are masked out of the update
                x_all = torch.stack([xs[live.index(i)] if i in live else xs[0] for i in range(self.k)])
                y_all = torch.stack([ys[live.index(i)] if i in live else ys[0] for i in range(self.k)])
                losses, hits = self._fused(self.params, self.buffers, x_all, y_all)
                keep = torch.zeros(self.k, device=self.device)
                keep[live] = 1.0
                losses, hits = losses * keep, hits * keep
            self._step(losses.sum(), live)
            total += losses.detach() * batch
            correct += hits
            for i in live:
                seen[i] += batch
        for i in live:
            b = self.batch[i]
            for s in range(full, self.steps[i]):
                idx = orders[i][s * b:(s + 1) * b]
                if idx.numel() == 0:
                    break
                threads.tick()
                loss, hits = self._loss(*self._fold(i), *self._batch(i, idx))
                self._step(loss, [i])
                total[i] += loss.detach() * idx.numel()
                correct[i] += hits
                seen[i] += idx.numel()
        totals, hits = total.tolist(), correct.tolist()
        return [(totals[i] / max(seen[i], 1), hits[i] / max(seen[i], 1)) for i in range(self.k)]

    def model(self, i: int) -> nn.Module:
        """Fold i as a module over the stacked tensors (for `evaluate`; no copies)."""
        return _Bound(self.base, *self._fold(i))

    def state(self, i: int) -> Tensors:
        return {n: t[i].detach().clone() for n, t in {**self.params, **self.buffers}.items()}


def fit_classifier_folds(
    models: list[nn.Module],
    trains: list[XY],
    vals: list[XY],
    cfg: SupervisedConfig,
    device: torch.device,
    *,
    seeds: list[int],
    augmentation: tuple[int, bool] = (0, False),
    encoder_lr_scale: float = 1.0,
    amp: bool = False,
    on_epoch: OnFoldEpoch | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> list[ClassifierFit]:
    """`fit_classifier` for k folds at once: fold i trains `models[i]` on `trains[i]`, stops early on
    `vals[i]` and gets its best weights back (loaded into `models[i]`). Returns each fold's fit.
    `progress(epoch, row)` is called once per epoch, as `fit_classifier`'s, with the row's figures
    averaged over the folds that trained in it (and "folds": how many did)."""
    for m in models:
        m.to(device)
    folds = _Folds(models, trains, cfg, device, seeds=seeds, augmentation=augmentation,
                   encoder_lr_scale=encoder_lr_scale, amp=amp)
    fits = [ClassifierFit() for _ in models]
    best = [copy.deepcopy(m.state_dict()) for m in models]
    start = time.perf_counter()
    for epoch in range(1, cfg.max_epochs + 1):
        live = [i for i in range(folds.k) if folds.active[i]]
        if not live:
            break
        trained = folds.train_epoch()
        rows = []
        for i in live:
            train_loss, train_acc = trained[i]
            if not math.isfinite(train_loss):
                raise NonFiniteLossError(f"classifier training loss is {train_loss} (lower finetune.lr)")
            folds.base.eval()  # _Bound runs the shared architecture: its mode is the base's
            ev = evaluate(folds.model(i), *vals[i], amp=amp)
            folds.base.train()
            row = {"epoch": epoch, "train_loss": train_loss, "train_acc_augmented": train_acc,
                   "val_loss": ev.loss, "val_acc": ev.accuracy}
            rows.append(row)
            if on_epoch:
                on_epoch(i, epoch, ev.accuracy, ev.loss)
            if _record_epoch(fits[i], row):
                best[i] = folds.state(i)
            elif cfg.patience and epoch - fits[i].best_epoch >= cfg.patience:
                fits[i].stopped_early = True
                folds.active[i] = False
        if progress:
            mean = {key: sum(r[key] for r in rows) / len(rows) for key in rows[0] if key != "epoch"}
            progress(epoch, {**mean, "folds": float(len(rows))})
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    for m, state, fit in zip(models, best, fits, strict=True):
        m.load_state_dict(state)
        fit.seconds = seconds / len(models)  # the folds' shared time, split evenly
    return fits
