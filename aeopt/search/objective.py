"""What a worker runs: an objective per study task, behind one protocol.

A study's `task` (in its spec) names its objective in `aeopt.search.tasks.TASKS`:
"autoencoder" cross-validates reconstruction (`AutoencoderObjective`, here), "classifier"
cross-validates fine-tuning (`aeopt.search.classifier_objective.ClassifierObjective`). A worker
builds the objective once (it loads the data, and may pretrain), then calls it once per trial.

An objective:
- suggests its parameters with `aeopt.search.space.suggest(trial, spec.space)`;
- reports one value per epoch (`trial.report`) and raises `optuna.TrialPruned` when the pruner
  says so; the trial's value is a mean cross-validated loss over the training split only;
- fails a trial it cannot finish with one of `TRIAL_ERRORS` (the worker goes on to the next),
  after writing the reason as `TrialRecord(fail_reason=...)`;
- writes what it measured with `TrialRecord.write`, never with bare `set_user_attr`;
- calls `check_surplus` first, so that workers racing for the last trial do not pass the target.

Pruning replaces early stopping in autoencoder studies: after every epoch the mean validation
loss across folds is reported, and the pruner decides whether the trial goes on.

A worker's time budget (`--timeout`) reaches a running trial through the objective's `deadline`
(a `time.monotonic()` instant, None: no budget): the objective calls `stop_at_deadline` after each
epoch's report, so a trial ends at the first epoch boundary past the deadline, pruned and marked
`stopped_by: deadline` (or, had it reported nothing yet, failed with `fail_reason: deadline`).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Protocol

import optuna
import torch

from aeopt.config import RunConfig, SearchSpec, StudySpec
from aeopt.progress import duration_text, ticker
from aeopt.search.artifacts import upload_pruned_artifacts, upload_trial_artifacts
from aeopt.search.records import StudyCounts, TrialRecord, best_trial
from aeopt.search.space import suggest
from aeopt.search.stopping import raise_if_stop_requested
from aeopt.search.storage import Storage
from aeopt.training.cv import CVResult, cross_validate
from aeopt.training.data import training_pool
from aeopt.training.engine import NonFiniteLossError, resolve_device

log = logging.getLogger(__name__)

# User attr of a trial that something other than its pruner stopped early ("deadline").
STOPPED_BY = "stopped_by"
DEADLINE_REASON = "deadline"  # fail_reason of a trial the deadline ended before its first report


class Objective(Protocol):
    """What a worker needs from an objective: the device it trains on (for its log line) and a
    call per trial that returns the trial's value or raises `optuna.TrialPruned` / a TRIAL_ERROR.
    An objective with a `deadline` attribute stops its trials there (see `stop_at_deadline`)."""

    device: torch.device

    def __call__(self, trial: optuna.Trial) -> float: ...


class ObjectiveFactory(Protocol):
    """How a worker builds an objective for a spec: every task's objective class has this signature.

    `target_trials` is the study-wide target (for `check_surplus`); `storage` is the study's storage,
    where trial artifacts are recorded (None, or `upload_artifacts=False`: no uploads)."""

    def __call__(self, spec: SearchSpec, *, data_dir: str | None = None, device: str | None = None,
                 amp: bool = False, target_trials: int | None = None, upload_artifacts: bool = True,
                 storage: Storage | None = None) -> Objective: ...


class SurplusTrialError(RuntimeError):
    """Two workers asked for the last trial at once: this one is over the study's target."""


class DeadlineError(RuntimeError):
    """The worker's time budget ran out before the trial had reported an epoch."""


def _out_of_memory_types() -> tuple[type[BaseException], ...]:
    return (torch.OutOfMemoryError,) if hasattr(torch, "OutOfMemoryError") else (torch.cuda.OutOfMemoryError,)


# Exceptions that fail one trial but leave the worker running the next.
TRIAL_ERRORS = (NonFiniteLossError, SurplusTrialError, DeadlineError, *_out_of_memory_types())


def stop_at_deadline(trial: optuna.Trial, deadline: float | None, epoch: int | None) -> None:
    """End the trial when the worker's time is up: pruned at `epoch` (its last report; the pruner's
    record stays true: the trial got that far), or failed with reason "deadline" before any report."""
    if deadline is None or time.monotonic() < deadline:
        return
    if epoch is None:
        TrialRecord(fail_reason=DEADLINE_REASON).write(trial)
        raise DeadlineError("the time budget ran out before the first epoch")
    # TrialRecord has no field for it yet: written as the one user attr the readers look for.
    trial.set_user_attr(STOPPED_BY, DEADLINE_REASON)
    raise optuna.TrialPruned(f"stopped at the deadline after epoch {epoch}")


def check_surplus(trial: optuna.Trial, target: int | None) -> None:
    """Fail a trial that two workers' simultaneous asks pushed over the study-wide target."""
    if not target:
        return
    ahead = StudyCounts.of([t for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number])
    if ahead.finished + ahead.running >= target:
        raise SurplusTrialError(f"the study already has {target} trials finished or running")


def fail_reason(exc: BaseException) -> str:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}"


class AutoencoderObjective:
    """Objective of an autoencoder study: k-fold cross-validated reconstruction loss."""

    def __init__(self, spec: StudySpec, *, data_dir: str | None = None, device: str | None = None,
                 amp: bool = False, target_trials: int | None = None, upload_artifacts: bool = True,
                 storage: Storage | None = None):
        self.spec = spec
        self.device = resolve_device(device)
        self.amp = amp
        self.target_trials = target_trials
        self.storage = storage if upload_artifacts else None
        self.deadline: float | None = None  # set by the worker from its --timeout
        # Loaded once per worker: the training split (or its subset); the test split never enters a study.
        self.pool = training_pool(spec.data, data_dir=data_dir)

    def __call__(self, trial: optuna.Trial) -> float:
        raise_if_stop_requested()  # one noted as the trial began (aeopt.search.stopping)
        check_surplus(trial, self.target_trials)
        stop_at_deadline(trial, self.deadline, None)
        cfg = self.spec.run_config(suggest(trial, self.spec.space))
        TrialRecord.started(self.device).write(trial)
        clock = EpochClock(trial.number, cfg.budget.max_epochs, len(self.pool) * (self.spec.cv.folds - 1))

        partial = CVResult()  # filled by cross_validate as the folds train: a pruned trial's preview

        def on_epoch(epoch: int, mean: float, losses: list[float]) -> None:
            raise_if_stop_requested()
            if not math.isfinite(mean):
                raise NonFiniteLossError(f"validation loss is {mean} at epoch {epoch}")
            clock.epoch_done(epoch, mean)
            trial.report(mean, epoch)
            # After the last epoch the trial is complete: neither the deadline nor the pruner stops it
            # (every fold has trained by then, so pruning would save nothing and lose the result).
            if epoch >= cfg.budget.max_epochs:
                return
            try:
                stop_at_deadline(trial, self.deadline, epoch)
                if trial.should_prune():
                    TrialRecord(epochs=epoch, fold_losses=losses).write(trial)
                    raise optuna.TrialPruned(f"pruned at epoch {epoch} (mean validation loss {mean:.5g})")
            except optuna.TrialPruned:
                # Before raising: Optuna refuses artifacts on a finished trial.
                if self.storage is not None:
                    upload_pruned_artifacts(trial, self.storage, cfg, partial, epoch=epoch)
                raise

        try:
            # With no pruner, the report's early stopping decides when to stop.
            patience = cfg.budget.patience if self.spec.pruner.name == "none" else 0
            with ticker(clock.running_line) as tick:
                clock.tick = tick
                result = cross_validate(cfg, self.pool, self.spec.cv.folds, self.spec.cv.seed, self.device,
                                        on_epoch=on_epoch, amp=self.amp, patience=patience, result=partial)
        except TRIAL_ERRORS as exc:
            if not isinstance(exc, DeadlineError):
                TrialRecord(fail_reason=fail_reason(exc)).write(trial)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise
        TrialRecord(fold_losses=result.fold_losses, cv_std=result.std, epochs=result.epochs,
                    best_epoch=result.best_epoch, seconds=round(result.seconds, 3),
                    images_per_second=round(result.images_per_second, 1),
                    prior_mmd=result.measures.get("prior_mmd"),
                    penalty=result.penalty if result.measures else None).write(trial)
        if self.storage is not None:
            self._upload(trial, cfg, result, self.storage)
        # The kind's penalty (an adversarial AE whose codes stray from its prior) joins the value.
        return result.value + result.penalty

    @staticmethod
    def _upload(trial: optuna.Trial, cfg: RunConfig, result: CVResult, storage: Storage) -> None:
        # Before returning: Optuna refuses artifacts on a finished trial. The checkpoint only for
        # a trial that beats every complete one so far (the report reads the best trial's).
        best = best_trial(trial.study)
        is_best = best is None or best.value is None or result.value + result.penalty < best.value
        upload_trial_artifacts(trial, storage, cfg, result, is_best=is_best)


class EpochClock:
    """A trial's progress lines: one per epoch (CV loss, images/s, elapsed), and, from the ticker's
    thread, one every 10 s of an epoch that takes longer (`running_line`)."""

    def __init__(self, number: int, max_epochs: int, images_per_epoch: int):
        self.number, self.max_epochs, self.images_per_epoch = number, max_epochs, images_per_epoch
        self.start = self.epoch_start = time.monotonic()
        self.epoch, self.best = 0, math.inf
        self.tick = None  # the Ticker to touch after each epoch line

    def epoch_done(self, epoch: int, mean: float) -> None:
        now = time.monotonic()
        self.epoch, self.best, self.epoch_start = epoch, min(self.best, mean), now
        elapsed = now - self.start
        log.info("trial %d epoch %d/%d: CV loss %.5g (best %.5g), %.0f images/s, %s", self.number, epoch,
                 self.max_epochs, mean, self.best, epoch * self.images_per_epoch / max(elapsed, 1e-9),
                 duration_text(elapsed))
        if self.tick is not None:
            self.tick.touch()

    def running_line(self) -> str:
        now = time.monotonic()
        return (f"trial {self.number} epoch {self.epoch + 1}/{self.max_epochs} running: "
                f"{duration_text(now - self.epoch_start)} into the epoch, {duration_text(now - self.start)} "
                "in the trial")
