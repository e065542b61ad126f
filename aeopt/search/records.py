"""What aeopt writes on a trial and reads back: one typed record, and one way to count a study.

A trial's user attrs are a contract between the objective (writer) and the worker, launch, export,
report and dashboard (readers). `TrialRecord` is that contract in one place: the objective fills
one and calls `write(trial)`; every reader calls `TrialRecord.of(frozen_trial)`. Unknown or
missing keys read as None, so studies written by older aeopt versions still load.
"""

from __future__ import annotations

import math
import socket
import statistics
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState


@dataclass
class TrialRecord:
    """The user attrs of one aeopt trial (all optional: a pruned or failed trial has fewer)."""

    # Per-fold validation loss (at the best epoch of the mean, or where the trial was pruned).
    fold_losses: list[float] = field(default_factory=list)
    cv_std: float | None = None
    epochs: int | None = None  # epochs trained
    best_epoch: int | None = None  # epoch of the best mean validation loss (the trial's value)
    seconds: float | None = None
    images_per_second: float | None = None
    device: str | None = None
    host: str | None = None
    fail_reason: str | None = None  # set when the objective fails a trial on purpose (NaN, OOM, surplus)
    fold_val_acc: list[float] = field(default_factory=list)  # classifier studies only
    # Adversarial AE studies: MMD of fold 0's validation codes against the prior, and the penalty
    # it added to the value (the value = mean CV loss + penalty).
    prior_mmd: float | None = None
    penalty: float | None = None

    @classmethod
    def started(cls, device: Any) -> TrialRecord:
        return cls(device=str(device), host=socket.gethostname())

    @classmethod
    def of(cls, trial: FrozenTrial) -> TrialRecord:
        attrs = trial.user_attrs
        values = {f.name: attrs[f.name] for f in fields(cls) if f.name in attrs and attrs[f.name] is not None}
        record = cls(**values)
        if record.cv_std is None and len(record.fold_losses) > 1:
            record.cv_std = statistics.pstdev(record.fold_losses)
        return record

    def as_dict(self) -> dict[str, Any]:
        """The set fields only (no None, no empty lists)."""
        return {k: v for k, v in asdict(self).items() if v is not None and v != []}

    def write(self, trial: optuna.Trial, *names: str) -> None:
        """Store the named fields (all set fields when none are named) on a running trial."""
        data = self.as_dict()
        for name in names or tuple(data):
            if name in data:
                trial.set_user_attr(name, data[name])


@dataclass(frozen=True)
class StudyCounts:
    """Trials of a study by state."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0

    @classmethod
    def of(cls, study_or_trials: optuna.Study | list[FrozenTrial]) -> StudyCounts:
        trials = (study_or_trials.get_trials(deepcopy=False) if isinstance(study_or_trials, optuna.Study)
                  else study_or_trials)
        by_state = {s: 0 for s in TrialState}
        for t in trials:
            by_state[t.state] += 1
        return cls(complete=by_state[TrialState.COMPLETE], pruned=by_state[TrialState.PRUNED],
                   failed=by_state[TrialState.FAIL], running=by_state[TrialState.RUNNING],
                   waiting=by_state[TrialState.WAITING])

    @property
    def finished(self) -> int:
        """Complete + pruned: what a study-wide `--n-trials` target counts."""
        return self.complete + self.pruned

    @property
    def total(self) -> int:
        return self.complete + self.pruned + self.failed + self.running + self.waiting

    def as_dict(self) -> dict[str, int]:
        return {"complete": self.complete, "pruned": self.pruned, "failed": self.failed,
                "running": self.running, "waiting": self.waiting}

    def text(self) -> str:
        """'3 complete, 2 pruned, 1 failed' (states with no trial left out), or 'no trials'."""
        parts = [f"{n} {name}" for name, n in self.as_dict().items() if n]
        return ", ".join(parts) or "no trials"


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial, or None when there is none yet, or no single one (a multi-objective
    study, which aeopt never makes but a shared storage may hold)."""
    if len(study.directions) > 1:
        return None
    try:
        return study.best_trial
    except ValueError:
        return None


def value_text(trial: FrozenTrial | None, digits: int = 5) -> str:
    """A trial's value for a status line ('0.01234 (trial 7)'), or '-' when there is none."""
    if trial is None or trial.value is None or not math.isfinite(trial.value):
        return "-"
    return f"{trial.value:.{digits}g} (trial {trial.number})"


def best_value_text(study: optuna.Study, digits: int = 5) -> str:
    """The best value for a status line ('0.01234 (trial 7)'), or '-' when there is none yet."""
    return value_text(best_trial(study), digits)
