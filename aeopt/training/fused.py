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
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from aeopt import threads
from aeopt.config import OptimConfig, RunConfig
from aeopt.switches import turned_off
from aeopt.training.data import add_noise
from aeopt.training.engine import EVAL_BATCH, NonFiniteLossError, epoch_images, noise_std
from aeopt.training.losses import reconstruction_loss
from aeopt.training.schedules import StepSchedule

Tensors = dict[str, torch.Tensor]
log = logging.getLogger(__name__)


class StackedOptimizer:
    """Adam, AdamW or SGD (with Nesterov momentum) over tensors whose first dimension is the fold.

    The arithmetic follows `torch.optim` (Adam's L2 weight decay on the gradient, AdamW's decoupled
    decay on the weights, bias correction with each fold's own step count), so a fold's update is
    the one its own `torch.optim` optimizer would make. `step(active)` updates only the folds whose
    entry of `active` is True: the others keep their weights, moments and step counts.

    Every update is in place, on tensors made once (moments, step counts, the learning rate and
    decay as device scalars, the per-fold schedule factors): a CUDA graph of the step replays on the
    same memory, and `reset` readies the same tensors for another trial's hyperparameters.
    """

    def __init__(self, params: Tensors, cfg: OptimConfig, k: int, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, lr_factors: dict[str, float] | None = None):
        self.params, self.k = params, k
        self.betas, self.eps = betas, eps
        # Per-parameter multipliers of the learning rate (a parameter group's lr, as torch.optim has).
        self.lr_factors = lr_factors or {}
        device = next(iter(params.values())).device
        self.steps = torch.zeros(k, device=device)
        self.hyper = torch.zeros(3, device=device)  # lr, weight decay, momentum
        # Per-fold multipliers of the learning rate for the next step (a schedule); ones: the plain lr.
        self.lr_scale = torch.ones(k, device=device)
        self.state: dict[str, Tensors] = {}
        self.reset(cfg)

    @property
    def structure(self) -> tuple:
        """What the update's code depends on beyond tensor values (a graph is valid for one)."""
        c = self.cfg
        return (c.name, c.weight_decay > 0, c.momentum > 0, tuple(sorted(self.lr_factors.items())))

    @torch.no_grad()
    def reset(self, cfg: OptimConfig) -> None:
        """Fresh state for `cfg` (zero moments and step counts), on the same tensors."""
        self.cfg = cfg
        self.hyper.copy_(torch.tensor([cfg.lr, cfg.weight_decay, cfg.momentum]))
        self.steps.zero_()
        self.lr_scale.fill_(1.0)
        keys = ("momentum",) if cfg.name == "sgd" else ("m", "v")
        for name, p in self.params.items():
            held = self.state.setdefault(name, {})
            for key in keys:
                if key in held:
                    held[key].zero_()
                else:
                    held[key] = torch.zeros_like(p)

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    def _mask(self, active: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
        return None if active is None else active.view(-1, *([1] * (like.dim() - 1)))

    def step(self, active: torch.Tensor | None = None) -> None:
        """One update of every fold, or of the folds where `active` ([k] bool) is True."""
        self.apply({n: p.grad for n, p in self.params.items() if p.grad is not None}, active)

    @torch.no_grad()
    def apply(self, grads: Tensors, active: torch.Tensor | None = None) -> None:
        """`step` with the gradients given (by name), not read from `.grad`: all in place."""
        self.steps += 1 if active is None else active.to(self.steps.dtype)
        for name, g in grads.items():
            p, state = self.params[name], self.state[name]
            new_p, new_state = self._update(p, g, state, self.lr_factors.get(name, 1.0))
            mask = self._mask(active, p)
            p.copy_(new_p if mask is None else torch.where(mask, new_p, p))
            for key, value in new_state.items():
                state[key].copy_(value if mask is None else torch.where(mask, value, state[key]))

    def _update(self, p: torch.Tensor, g: torch.Tensor, state: Tensors, factor: float = 1.0
                ) -> tuple[torch.Tensor, Tensors]:
        cfg = self.cfg
        shape = (-1, *([1] * (p.dim() - 1)))
        t = self.steps.view(shape)
        lr_value, wd, momentum = self.hyper[0], self.hyper[1], self.hyper[2]
        lr = lr_value * factor * self.lr_scale.view(shape)
        if cfg.name == "sgd":
            g = g + wd * p if cfg.weight_decay else g
            if not cfg.momentum:
                return p - lr * g, {}
            # torch.optim.SGD starts the buffer at the first gradient, not at zero.
            buf = torch.where(t <= 1, g, momentum * state["momentum"] + g)
            return p - lr * (g + momentum * buf), {"momentum": buf}
        b1, b2 = self.betas
        if cfg.name == "adamw":
            p = p * (1 - lr * wd)
        elif cfg.weight_decay:
            g = g + wd * p
        m = state["m"].lerp(g, 1 - b1)
        v = state["v"] * b2 + (1 - b2) * g * g
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


def use_graphs(device: torch.device, graphs: bool | None = None) -> bool:
    """Whether the fused step is replayed as a CUDA graph: as asked, else on CUDA unless
    AEOPT_CUDA_GRAPHS=0. Never on the CPU (CUDA graphs are a CUDA feature)."""
    if device.type != "cuda":
        return False
    if graphs is None:
        return not turned_off("AEOPT_CUDA_GRAPHS")
    return graphs


class CudaGraph:
    """A replayable training step on CUDA, behind the three calls FusedFolds makes: `warm_up(device,
    fn)` runs fn eagerly off the default stream (as capture needs), `capture(fn)` records fn's kernels
    without running them and returns its outputs (tensors the graph owns), `replay()` runs them again
    on the same memory. `GRAPH` names the class in use; tests put a CPU stand-in with the same three
    calls there to check FusedFolds' bookkeeping around the graph (tests/unit/training/test_fused.py)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.graph = torch.cuda.CUDAGraph()

    @staticmethod
    def warm_up(device: torch.device, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            out = fn()
        torch.cuda.current_stream(device).wait_stream(side)
        return out

    def capture(self, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        torch.cuda.synchronize(self.device)
        # torch.cuda.graph captures on a side stream of the *current* device: on cuda:1 with cuda:0
        # current, the step's kernels would not be recorded.
        with torch.cuda.device(self.device), torch.cuda.graph(self.graph):
            return fn()

    def replay(self) -> None:
        self.graph.replay()


GRAPH = CudaGraph


class _Graphed:
    """One captured fused training step and the tensors it reads and writes, reused by every
    FusedFolds of the same architecture, fold count, batch size and optimizer structure in this
    process: a trial copies its initial weights into `params` and resets the optimizer, so a study's
    trials pay the capture once per architecture (`CAPTURES` counts them)."""

    def __init__(self, params: Tensors, buffers: Tensors, optimizer: StackedOptimizer, base: nn.Module):
        self.params, self.buffers, self.optimizer = params, buffers, optimizer
        self.base = base  # the architecture the step was recorded with (its train / eval mode too)
        self.graph: CudaGraph | None = None
        self.x_in: torch.Tensor | None = None
        self.target: torch.Tensor | None = None
        self.losses: torch.Tensor | None = None
        self.capture_seconds = 0.0
        self.failed = False


# Captured steps per (architecture, k, batch, optimizer, amp, device); a few, least recently used last.
_GRAPHED: OrderedDict[tuple, _Graphed] = OrderedDict()
GRAPH_CACHE_SIZE = 4
WARMUP_STEPS = 3  # eager steps on a side stream before capture (lazy cuBLAS / autograd set-up)
CAPTURES = 0  # captures made in this process (tests and benchmarks read it)


class FusedFolds:
    """k models of one architecture, trained together. `models[i]` is fold i's initial model.

    On CUDA the fused full-batch step can run as a CUDA graph (`graphs`, see `use_graphs`): after
    WARMUP_STEPS eager steps, one step is captured, then each full batch is copied into the graph's
    input tensors and the graph replayed: one launch instead of hundreds per step. The graph covers
    only full batches, whose shape is fixed; each fold's last, partial batch (and any step only some
    folds take) runs eagerly, on the same tensors. Noise for denoising models is drawn outside the
    graph from each fold's generator; dropout inside it from the CUDA generator (graph-safe).
    """

    def __init__(self, models: list[nn.Module], cfg: RunConfig, device: torch.device, *, seeds: list[int],
                 amp: bool = False, graphs: bool | None = None):
        self.k, self.cfg, self.device = len(models), cfg, device
        models = [m.to(device) for m in models]
        params, buffers = stack_module_state(models)
        # The architecture, with its tensors on the meta device: only its code is used.
        self.base = copy.deepcopy(models[0]).to("meta")
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.noise = noise_std(cfg)
        self.amp = amp and device.type == "cuda"
        self.schedules: list[StepSchedule] | None = None  # per fold, planned at the first epoch
        self._fused_loss = vmap(self._loss, in_dims=(0, 0, 0, 0), randomness="different")
        self.graphed: _Graphed | None = None
        if use_graphs(device, graphs):
            self.graphed = self._cached(params, buffers, cfg)
            # The graph's tensors and module: every trial that replays it trains and evaluates those.
            self.params, self.buffers, self.optimizer, self.base = (
                self.graphed.params, self.graphed.buffers, self.graphed.optimizer, self.graphed.base)
        else:
            self.params = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
            self.buffers = {n: b.detach().clone() for n, b in buffers.items()}
            self.optimizer = StackedOptimizer(self.params, cfg.optim, self.k)
        self._steps_taken = 0

    def _cached(self, params: Tensors, buffers: Tensors, cfg: RunConfig) -> _Graphed:
        """The captured step for this architecture (made on first use), loaded with these weights."""
        structure = (cfg.optim.name, cfg.optim.weight_decay > 0, cfg.optim.momentum > 0)
        # The model section (kind, widths, dropout, a VAE's beta, ...) fixes the step's code and constants.
        key = (cfg.model.model_dump_json(), repr(self.base),
               tuple((n, tuple(p.shape)) for n, p in params.items()),
               tuple((n, tuple(b.shape), b.dtype) for n, b in buffers.items()),
               self.k, cfg.budget.batch_size, structure, self.amp, str(self.device))
        entry = _GRAPHED.get(key)
        if entry is None:
            own = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
            entry = _Graphed(own, {n: b.detach().clone() for n, b in buffers.items()},
                             StackedOptimizer(own, cfg.optim, self.k), self.base)
            _GRAPHED[key] = entry
            while len(_GRAPHED) > GRAPH_CACHE_SIZE:
                _GRAPHED.popitem(last=False)
        else:
            _GRAPHED.move_to_end(key)
            with torch.no_grad():
                for n, p in params.items():
                    entry.params[n].copy_(p)
                for n, b in buffers.items():
                    entry.buffers[n].copy_(b)
            entry.optimizer.reset(cfg.optim)
        return entry

    def _loss(self, params: Tensors, buffers: Tensors, x_in: torch.Tensor,
              target: torch.Tensor) -> torch.Tensor:
        # No autocast cache inside a graph capture: cached casts would outlive the capture's pool.
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp,
                            cache_enabled=self.graphed is None):
            return reconstruction_loss(_Bound(self.base, params, buffers), x_in, target)

    def _full_step(self, x_in: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """One fused step over every fold's full batch: the per-fold losses (what a graph captures)."""
        losses = self._fused_loss(self.params, self.buffers, x_in, target)
        names = list(self.params)
        grads = torch.autograd.grad(losses.sum(), [self.params[n] for n in names])
        self.optimizer.apply(dict(zip(names, grads, strict=True)))
        return losses.detach()

    def _graph_step(self, x_in: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """`_full_step` through the cached CUDA graph: eager for the warm-up, then captured once,
        then replayed. A capture that fails leaves this architecture eager (logged once)."""
        g = self.graphed
        if g.failed:
            return self._full_step(x_in, target)
        if g.graph is None and self._steps_taken < WARMUP_STEPS:
            return GRAPH.warm_up(self.device, lambda: self._full_step(x_in, target))
        if g.graph is None:
            self._capture(x_in, target)
            if g.failed:
                return self._full_step(x_in, target)
        g.x_in.copy_(x_in)
        g.target.copy_(target)
        g.graph.replay()
        return g.losses.clone()

    def _capture(self, x_in: torch.Tensor, target: torch.Tensor) -> None:
        global CAPTURES
        g = self.graphed
        start = time.perf_counter()
        g.x_in, g.target = x_in.clone(), target.clone()
        graph = GRAPH(self.device)
        try:
            g.losses = graph.capture(lambda: self._full_step(g.x_in, g.target))
        except RuntimeError as exc:  # an op that cannot be captured: stay eager, correct and slower
            g.failed = True
            log.warning("CUDA graph capture of the fused step failed (%s); training it eagerly",
                        (str(exc).splitlines() or [type(exc).__name__])[0])
            return
        # Capture records the step without running it: this batch's step still has to happen.
        g.graph = graph
        CAPTURES += 1
        g.capture_seconds = time.perf_counter() - start
        log.info("captured the fused training step as a CUDA graph in %.2f s", g.capture_seconds)

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
        self.optimizer.lr_scale.copy_(torch.tensor(factors), non_blocking=True)

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
        # As the sequential Trainer: a fold's last batch of a single image is left out.
        used = [epoch_images(p.numel(), bs) for p in perms]
        if self.schedules is None:
            self.schedules = [self._plan(math.ceil(u / bs)) for u in used]
        full = min(used) // bs
        totals = torch.zeros(self.k, device=self.device)
        for s in range(full):
            threads.tick()  # follow the cores free now (aeopt.threads)
            idx = torch.stack([p[s * bs:(s + 1) * bs] for p in perms])
            target = x[idx]
            x_in = torch.stack([self._inputs(target[i], g) for i, g in enumerate(self.generators)]) \
                if self.noise > 0 else target
            self._schedule_step()
            losses = self._graph_step(x_in, target) if self.graphed else self._full_step(x_in, target)
            self._steps_taken += 1
            totals += losses * bs
        for i, p in enumerate(perms):
            for start in range(full * bs, used[i], bs):
                batch = p[start:min(start + bs, used[i])]
                totals[i] += self._step_fold(i, x[batch]) * batch.numel()
        means = (totals / torch.tensor(used, device=self.device)).tolist()
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
