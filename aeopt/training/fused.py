"""k fold models trained as one: stacked parameters, one vmapped step per batch, one optimizer.

Small models on a GPU are bound by kernel launches, not arithmetic: stepping k fold models one
after another costs k times the launches. Here the k models' parameters are stacked
(`torch.func.stack_module_state`) and each batch is one `vmap`ped forward/backward over the folds
(`randomness="different"`: each fold draws its own dropout masks) and one optimizer step over the
stacked tensors. Adam, AdamW and SGD are elementwise, so one update of the stacked tensors equals
k separate updates; `StackedOptimizer` adds a per-fold mask so a fold can sit a step out.

Exactness against k separate `Trainer`s (the sequential path): the same initial weights (each
fold's model is built under the same seed), the same per-fold batch order (each fold's permutation
comes from its own generator seeded like the sequential trainer's) and the same optimizer
arithmetic. Folds of unequal size: the steps where every fold has a full batch run fused; the rest
of each fold's epoch (its last, partial batch, and a last full batch that only larger folds have)
runs fold by fold, with the other folds masked out of the update. Batch-norm statistics stay per
fold (stacked buffers). What differs: dropout masks and denoising noise come from other random
streams, so with dropout or noise the two paths agree in distribution, not bit for bit.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from aeopt import threads
from aeopt.config import OptimConfig, RunConfig
from aeopt.training.data import add_noise
from aeopt.training.engine import EVAL_BATCH, NonFiniteLossError, noise_std
from aeopt.training.losses import reconstruction_loss
from aeopt.training.schedules import StepSchedule

Tensors = dict[str, torch.Tensor]


class StackedOptimizer:
    """Adam, AdamW or SGD (with Nesterov momentum) over tensors whose first dimension is the fold.

    The arithmetic follows `torch.optim` (Adam's L2 weight decay on the gradient, AdamW's decoupled
    decay on the weights, bias correction with each fold's own step count), so a fold's update is
    the one its own `torch.optim` optimizer would make. `step(active)` updates only the folds whose
    entry of `active` is True: the others keep their weights, moments and step counts.
    """

    def __init__(self, params: Tensors, cfg: OptimConfig, k: int, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, lr_factors: dict[str, float] | None = None):
        self.params, self.cfg, self.k = params, cfg, k
        # Per-parameter multipliers of the learning rate (a parameter group's lr, as torch.optim has).
        self.lr_factors = lr_factors or {}
        self.betas, self.eps = betas, eps
        device = next(iter(params.values())).device
        self.steps = torch.zeros(k, device=device)
        self.state: dict[str, Tensors] = {name: {} for name in params}
        # Per-fold multipliers of cfg.lr for the next step (a schedule); None: the plain lr.
        self.lr_scale: torch.Tensor | None = None

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    def _mask(self, active: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
        return None if active is None else active.view(-1, *([1] * (like.dim() - 1)))

    @torch.no_grad()
    def step(self, active: torch.Tensor | None = None) -> None:
        """One update of every fold, or of the folds where `active` ([k] bool) is True."""
        self.steps += 1 if active is None else active.to(self.steps.dtype)
        for name, p in self.params.items():
            if p.grad is None:
                continue
            new_p, new_state = self._update(p, p.grad, self.state[name], self.lr_factors.get(name, 1.0))
            mask = self._mask(active, p)
            if mask is None:
                p.copy_(new_p)
                self.state[name] = new_state
            else:
                p.copy_(torch.where(mask, new_p, p))
                old = self.state[name]
                self.state[name] = {key: torch.where(mask, value, old.get(key, torch.zeros_like(value)))
                                    for key, value in new_state.items()}

    def _update(self, p: torch.Tensor, g: torch.Tensor, state: Tensors, factor: float = 1.0
                ) -> tuple[torch.Tensor, Tensors]:
        cfg = self.cfg
        shape = (-1, *([1] * (p.dim() - 1)))
        t = self.steps.view(shape)
        base = cfg.lr * factor
        lr = base if self.lr_scale is None else base * self.lr_scale.view(shape)
        if cfg.name == "sgd":
            g = g + cfg.weight_decay * p if cfg.weight_decay else g
            if not cfg.momentum:
                return p - lr * g, state
            buf = state.get("momentum")
            # torch.optim.SGD starts the buffer at the first gradient, not at zero.
            buf = g.clone() if buf is None else torch.where(t <= 1, g, cfg.momentum * buf + g)
            return p - lr * (g + cfg.momentum * buf), {"momentum": buf}
        b1, b2 = self.betas
        if cfg.name == "adamw":
            p = p * (1 - lr * cfg.weight_decay)
        elif cfg.weight_decay:
            g = g + cfg.weight_decay * p
        m = state.get("m", torch.zeros_like(p)).lerp(g, 1 - b1)
        v = state.get("v", torch.zeros_like(p)) * b2 + (1 - b2) * g * g
        bias1 = 1 - b1 ** t
        bias2 = 1 - b2 ** t
        denom = v.sqrt() / bias2.sqrt() + self.eps
        return p - (lr / bias1) * m / denom, {"m": m, "v": v}


class _Bound(nn.Module):
    """A stand-in for one fold's model inside the vmapped step: calls the shared architecture
    with that fold's parameters, so the kind's loss function needs no functional variant."""

    def __init__(self, base: nn.Module, params: Tensors, buffers: Tensors):
        super().__init__()
        object.__setattr__(self, "_base", base)
        object.__setattr__(self, "_tensors", {**params, **buffers})

    def __getattr__(self, name: str):
        return getattr(object.__getattribute__(self, "_base"), name)

    def forward(self, *args):
        base = object.__getattribute__(self, "_base")
        return functional_call(base, object.__getattribute__(self, "_tensors"), args)


class FusedFolds:
    """k models of one architecture, trained together. `models[i]` is fold i's initial model."""

    def __init__(self, models: list[nn.Module], cfg: RunConfig, device: torch.device, *, seeds: list[int],
                 amp: bool = False):
        self.k, self.cfg, self.device = len(models), cfg, device
        models = [m.to(device) for m in models]
        params, buffers = stack_module_state(models)
        self.params = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
        self.buffers = {n: b.detach().clone() for n, b in buffers.items()}
        # The architecture, with its tensors on the meta device: only its code is used.
        self.base = copy.deepcopy(models[0]).to("meta")
        self.optimizer = StackedOptimizer(self.params, cfg.optim, self.k)
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.noise = noise_std(cfg)
        self.amp = amp and device.type == "cuda"
        self.schedules: list[StepSchedule] | None = None  # per fold, planned at the first epoch
        self._fused_loss = vmap(self._loss, in_dims=(0, 0, 0, 0), randomness="different")

    def _loss(self, params: Tensors, buffers: Tensors, x_in: torch.Tensor,
              target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return reconstruction_loss(_Bound(self.base, params, buffers), x_in, target)

    def _plan(self, steps_per_epoch: int) -> StepSchedule:
        o = self.cfg.optim
        return StepSchedule(o.schedule, steps_per_epoch, self.cfg.budget.max_epochs,
                            warmup_epochs=o.warmup_epochs, pct_start=o.pct_start)

    def _schedule_step(self, fold: int | None = None) -> None:
        """Set each fold's learning-rate multiplier for the coming step (only `fold`'s, for a tail step).
        The factors are computed on the host: reading step counts back from the device would sync it."""
        if self.schedules[0].constant:
            return
        factors = [1.0] * self.k
        for i, schedule in enumerate(self.schedules):
            if fold is None or i == fold:
                factors[i] = schedule.next()
        self.optimizer.lr_scale = torch.tensor(factors, device=self.device)

    def _fold(self, i: int) -> tuple[Tensors, Tensors]:
        """Fold i's parameters and buffers: views into the stacked tensors (gradients flow back)."""
        return {n: p[i] for n, p in self.params.items()}, {n: b[i] for n, b in self.buffers.items()}

    def _inputs(self, target: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return add_noise(target, self.noise, gen)

    def _step_fold(self, i: int, target: torch.Tensor) -> torch.Tensor:
        """One step of fold i alone (the tail of an epoch); the other folds are masked out."""
        loss = self._loss(*self._fold(i), self._inputs(target, self.generators[i]), target)
        self.optimizer.zero_grad()
        loss.backward()
        self._schedule_step(i)
        active = torch.zeros(self.k, dtype=torch.bool, device=self.device)
        active[i] = True
        self.optimizer.step(active)
        return loss.detach()

    def train_epoch(self, x: torch.Tensor, folds: list[torch.Tensor]) -> list[float]:
        """One epoch of every fold over its own training indices into `x`; mean loss per fold."""
        self.base.train()
        bs = self.cfg.budget.batch_size
        perms = [idx.to(self.device)[torch.randperm(idx.numel(), device=self.device, generator=g)]
                 for idx, g in zip(folds, self.generators, strict=True)]
        if self.schedules is None:
            self.schedules = [self._plan(math.ceil(p.numel() / bs)) for p in perms]
        full = min(p.numel() for p in perms) // bs
        totals = torch.zeros(self.k, device=self.device)
        for s in range(full):
            threads.tick()  # follow the cores free now (aeopt.threads)
            idx = torch.stack([p[s * bs:(s + 1) * bs] for p in perms])
            target = x[idx]
            x_in = torch.stack([self._inputs(target[i], g) for i, g in enumerate(self.generators)]) \
                if self.noise > 0 else target
            losses = self._fused_loss(self.params, self.buffers, x_in, target)
            self.optimizer.zero_grad()
            losses.sum().backward()
            self._schedule_step()
            self.optimizer.step()
            totals += losses.detach() * bs
        for i, p in enumerate(perms):
            for start in range(full * bs, p.numel(), bs):
                batch = p[start:start + bs]
                totals[i] += self._step_fold(i, x[batch]) * batch.numel()
        means = (totals / torch.tensor([p.numel() for p in perms], device=self.device)).tolist()
        if not all(math.isfinite(v) for v in means):
            raise NonFiniteLossError(f"training loss is {means}: the run diverged; lower optim.lr "
                                     f"(now {self.cfg.optim.lr:g})")
        return means

    @torch.no_grad()
    def evaluate(self, i: int, x: torch.Tensor, *, seed: int = 0) -> float:
        """Fold i's mean validation loss on `x` (eval mode, noise from a fixed seed, beta 1)."""
        self.base.eval()
        model = _Bound(self.base, *self._fold(i))
        g = torch.Generator(device=self.device).manual_seed(seed)
        total = 0.0
        for start in range(0, x.shape[0], EVAL_BATCH):
            target = x[start:start + EVAL_BATCH]
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                loss = reconstruction_loss(model, add_noise(target, self.noise, g), target, beta=1.0)
            total += float(loss) * target.shape[0]
        return total / x.shape[0]

    def state(self, i: int) -> Tensors:
        """Fold i's weights and buffers as a plain state dict (copies)."""
        return {n: t[i].detach().clone() for n, t in {**self.params, **self.buffers}.items()}

    def load_into(self, model: nn.Module, i: int) -> nn.Module:
        model.load_state_dict(self.state(i))
        return model


OnFoldsEpoch = Callable[[int, list[float]], None]
