"""Consistency regularisation with unlabelled images (FixMatch: Sohn et al., "FixMatch: Simplifying
Semi-Supervised Learning with Consistency and Confidence", NeurIPS 2020).

Each step takes a batch of labelled images and `ratio` times as many unlabelled ones:
1. cross-entropy on the labelled batch, weakly augmented (the fine-tune's shifts and flips);
2. the classifier labels a weakly augmented view of each unlabelled image (no gradient, eval mode,
   so dropout does not blur the guess); where its confidence is >= `threshold` that guess is the
   target of a cross-entropy on a *strongly* augmented view of the same image (`strong_augment`),
   weighted by `weight`. Images below the threshold add nothing, so the unlabelled term grows as
   the classifier becomes sure, and a wrong but confident guess must survive the strong view.
The classifier is any images -> logits module (here the fine-tune's `Classifier`, usually already
fine-tuned on the labels: a warm start, because on a CPU budget of a few hundred steps a random
head would stay below the threshold for most of them). AdamW, cosine learning rate to zero over
`steps`; the returned classifier is the last step's or the one with the best validation accuracy
(`select`), optionally the moving average of the weights (`ema`). All augmentation is whole-batch
tensor work on the images' device (no PIL).

Knows nothing of Optuna or of label draws (`aeopt.stages.few_labels` calls it).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from aeopt import threads
from aeopt.errors import AeoptError
from aeopt.switches import word
from aeopt.training.layout import adam
from aeopt.training.supervised import augment, evaluate
from aeopt.training.views import strong_augment

XY = tuple[torch.Tensor, torch.Tensor]


ALIGN_MOMENTUM = 0.99  # of the running mean of the guesses: about the last 100 steps


class ConsistencyError(AeoptError):
    pass


@dataclass(frozen=True)
class ConsistencySettings:
    steps: int = 600
    labelled_batch: int = 64  # drawn with replacement: 80 labels fill a batch
    ratio: int = 3  # unlabelled images per labelled one in a step (FixMatch's mu)
    threshold: float = 0.95  # confidence a weak-view guess needs to become a target
    weight: float = 1.0  # of the unlabelled term (FixMatch's lambda_u)
    lr: float = 1e-3
    weight_decay: float = 0.01
    eval_every: int = 50
    # > 0: an exponential moving average of the weights (mean teacher: Tarvainen & Valpola 2017)
    # makes the guesses and is the classifier returned and evaluated; smoother than the last step.
    ema: float = 0.0
    # Distribution alignment (Berthelot et al., ReMixMatch, ICLR 2020): each guess is divided by the
    # running mean of the guesses (then renormalised), so classes the classifier under-predicts (on
    # Fashion-MNIST the shirt-like ones) still reach the threshold; labels are balanced here.
    align: bool = False
    select: str = "last"  # "last" step, or the "best" validation accuracy of every eval_every
    # Strong augmentation (`strong_augment`)
    shift: int = 4
    rotate: float = 15.0  # degrees
    cutout: int = 12  # side of the grey square (pixels; 0: none)
    jitter: float = 0.4  # contrast in [1 - j, 1 + j], brightness in [-j / 2, j / 2]

    def __post_init__(self) -> None:
        if self.select not in ("last", "best"):
            raise ConsistencyError(f"consistency select must be 'last' or 'best', not {self.select!r}")
        if not 0.0 < self.threshold <= 1.0 or min(self.steps, self.ratio, self.eval_every) < 1:
            raise ConsistencyError("consistency needs 0 < threshold <= 1, and steps, ratio and "
                                   "eval_every >= 1")


@dataclass
class ConsistencyFit:
    best_val_acc: float = -1.0
    best_step: int = 0
    val_acc: float = 0.0  # of the returned classifier
    history: list[dict[str, float]] = field(default_factory=list)  # every eval_every steps
    seconds: float = 0.0


def settings_from(steps: int, options: list[str] | None = None) -> ConsistencySettings:
    """Settings from `steps` and KEY=VALUE strings naming `ConsistencySettings` fields (the CLI's
    --consistency-opt); an unknown key or a bad value is a one-line error."""
    kinds = {f.name: f.type for f in dataclasses.fields(ConsistencySettings)}
    cast = {"int": int, "float": float, "str": str, "bool": _boolean}
    values: dict[str, object] = {"steps": steps}
    for option in options or []:
        key, sep, value = option.partition("=")
        if not sep or key not in kinds:
            raise ConsistencyError(f"consistency option {option!r}: give KEY=VALUE, KEY one of "
                                   f"{', '.join(sorted(kinds))}")
        try:
            values[key] = cast[str(kinds[key])](value)
        except ValueError:
            raise ConsistencyError(f"consistency option {option!r}: {value!r} is not "
                                   f"a {kinds[key]}") from None
    return ConsistencySettings(**values)  # type: ignore[arg-type]


def _boolean(value: str) -> bool:
    on = word(value)
    if on is None:
        raise ValueError(value)
    return on


def consistency_loss(model: nn.Module, weak: torch.Tensor, strong: torch.Tensor, threshold: float,
                     teacher: nn.Module | None = None, running: torch.Tensor | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean over the batch of the masked cross-entropy, fraction of images above the threshold):
    the targets are the confident guesses on `weak` (of `teacher`, else of the model itself), the
    loss is the model's on `strong`. `running` (the running mean of the guesses, updated in place)
    turns on distribution alignment."""
    guesser = teacher if teacher is not None else model
    was_training = guesser.training
    guesser.eval()
    with torch.no_grad():
        probs = guesser(weak).float().softmax(1)
        if running is not None:
            running.mul_(ALIGN_MOMENTUM).add_(probs.mean(0), alpha=1 - ALIGN_MOMENTUM)
            probs = probs / running
            probs = probs / probs.sum(1, keepdim=True)
    guesser.train(was_training)
    confidence, target = probs.max(1)
    mask = (confidence >= threshold).float()
    loss = (F.cross_entropy(model(strong).float(), target, reduction="none") * mask).mean()
    return loss, mask.mean()


def fit_consistency(model: nn.Module, train: XY, val: XY, unlabelled: torch.Tensor, *, seed: int,
                    settings: ConsistencySettings = ConsistencySettings(),
                    weak: tuple[int, bool] = (2, True),
                    on_eval: Callable[[int, dict[str, float]], None] | None = None,
                    ) -> tuple[nn.Module, ConsistencyFit]:
    """Train `model` (in place) on labelled `train` and float images `unlabelled` (all on one
    device); `weak` is the labelled and guessing views' (shift, flip). Returns the classifier chosen
    by `settings.select` (with `ema` > 0 a copy, the averaged weights; else `model` itself) and the
    fit's record (validation accuracy every `eval_every` steps)."""
    s = settings
    dev = train[0].device
    gen = torch.Generator(device=dev).manual_seed(seed)
    opt = adam([p for p in model.parameters() if p.requires_grad], decoupled=True, lr=s.lr,
               weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, s.steps) / s.steps)))
    fit = ConsistencyFit()
    teacher = _frozen_copy(model) if s.ema > 0 else None
    out = teacher if teacher is not None else model  # what is evaluated and returned
    best_state = copy.deepcopy(out.state_dict())
    running = None
    if s.align:  # starts at the labels' class frequencies
        running = torch.bincount(train[1], minlength=int(train[1].max()) + 1).float().to(dev)
        running /= running.sum()
    n_lab, n_unl = train[0].shape[0], unlabelled.shape[0]
    started = time.perf_counter()
    sums = torch.zeros(3, device=dev)  # labelled loss, unlabelled loss, mask fraction since the last eval
    for step in range(1, s.steps + 1):
        threads.tick()
        model.train()
        li = torch.randint(0, n_lab, (s.labelled_batch,), device=dev, generator=gen)
        ui = torch.randint(0, n_unl, (s.labelled_batch * s.ratio,), device=dev, generator=gen)
        xl = augment(train[0][li], gen, *weak)
        sup = F.cross_entropy(model(xl).float(), train[1][li])
        xu = unlabelled[ui]
        strong = strong_augment(xu, gen, s, flip=weak[1])
        unsup, frac = consistency_loss(model, augment(xu, gen, *weak), strong, s.threshold, teacher,
                                       running)
        loss = sup + s.weight * unsup
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if teacher is not None:
            _ema_update(teacher, model, s.ema)
        sums += torch.stack([sup.detach(), unsup.detach(), frac])
        if step % s.eval_every == 0 or step == s.steps:
            acc = evaluate(out, *val).accuracy
            k = step % s.eval_every or s.eval_every
            row = {"step": step, "val_acc": acc, "sup_loss": float(sums[0]) / k,
                   "unsup_loss": float(sums[1]) / k, "mask": float(sums[2]) / k}
            sums.zero_()
            fit.history.append(row)
            if on_eval is not None:
                on_eval(step, row)
            if acc > fit.best_val_acc:
                fit.best_val_acc, fit.best_step = acc, step
                if s.select == "best":
                    best_state = copy.deepcopy(out.state_dict())
    if s.select == "best":
        out.load_state_dict(best_state)
        fit.val_acc = fit.best_val_acc
    else:
        fit.val_acc = fit.history[-1]["val_acc"]
    fit.seconds = time.perf_counter() - started
    return out, fit


def _frozen_copy(model: nn.Module) -> nn.Module:
    teacher = copy.deepcopy(model)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


@torch.no_grad()
def _ema_update(teacher: nn.Module, model: nn.Module, decay: float) -> None:
    for t, p in zip(teacher.parameters(), model.parameters(), strict=True):
        t.lerp_(p, 1 - decay)
    for t, b in zip(teacher.buffers(), model.buffers(), strict=True):
        t.copy_(b)  # batch-norm statistics: the student's
