"""Learning-rate schedules as one pure function of the step: the same in every trainer.

`lr_factor(schedule, step, total)` is the multiplier of the configured learning rate for optimizer
step `step` (0-based) of a run planned for `total` steps. `total` is fixed when a run starts
(epochs budgeted x steps per epoch), never by how long it actually runs: a trial that a pruner
stops at epoch e has been trained exactly as the same trial run to the end was up to epoch e, so
the value it reported at e does not depend on whether it continued (Hyperband compares such
values across trials).

- constant: 1, after an optional linear warm-up;
- cosine: linear warm-up, then a half cosine from 1 to 0 (Loshchilov & Hutter, "SGDR", ICLR 2017);
- onecycle: a half cosine from 1/div up to 1 over the first `pct_start` of the run, then down to
  1/(div * final_div) (Smith & Topin, "Super-Convergence", 2018; the annealing of PyTorch's
  OneCycleLR with its default div 25 and final div 1e4).
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine", "onecycle")
ONECYCLE_DIV = 25.0
ONECYCLE_FINAL_DIV = 1e4


def _cos_between(start: float, end: float, t: float) -> float:
    """From `start` at t=0 to `end` at t=1 along half a cosine."""
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


def lr_factor(schedule: str, step: int, total: int, *, warmup: int = 0, pct_start: float = 0.3) -> float:
    """The learning-rate multiplier for step `step` of `total` (see the module docstring)."""
    total = max(total, 1)
    if schedule == "onecycle":
        up = max(1, round(pct_start * total))
        low = 1.0 / ONECYCLE_DIV
        if step < up:
            return _cos_between(low, 1.0, step / up)
        # The last step (total - 1) takes the final, lowest rate, as PyTorch's OneCycleLR does.
        return _cos_between(1.0, low / ONECYCLE_FINAL_DIV, (step - up) / max(total - 1 - up, 1))
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine":
        return _cos_between(1.0, 0.0, (step - warmup) / max(total - warmup, 1))
    if schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {schedule!r} (known: {', '.join(SCHEDULES)})")


class StepSchedule:
    """The factor for each step of one run: call `next()` before every optimizer step."""

    def __init__(self, schedule: str, steps_per_epoch: int, epochs: int, *, warmup_epochs: float = 0.0,
                 pct_start: float = 0.3):
        self.schedule, self.pct_start = schedule, pct_start
        self.total = max(1, steps_per_epoch * epochs)
        self.warmup = min(self.total, round(warmup_epochs * steps_per_epoch))
        self.step = 0

    @property
    def constant(self) -> bool:
        return self.schedule == "constant" and not self.warmup

    def next(self) -> float:
        factor = lr_factor(self.schedule, self.step, self.total, warmup=self.warmup, pct_start=self.pct_start)
        self.step += 1
        return factor
