"""Objective(spec)(trial): suggest -> RunConfig -> cross-validation -> report / prune.

Pruning replaces early stopping: after every epoch the mean validation loss across folds is
reported, and the pruner decides whether the trial goes on.
"""

from __future__ import annotations

import logging
import math
import socket

import optuna
import torch

from aeopt.config import StudySpec
from aeopt.search.space import suggest
from aeopt.search.studies import FINISHED
from aeopt.training.cv import cross_validate
from aeopt.training.data import training_pool
from aeopt.training.engine import NonFiniteLossError, resolve_device

log = logging.getLogger(__name__)


class SurplusTrialError(RuntimeError):
    """Two workers asked for the last trial at once: this one is over the study's target."""


def _out_of_memory_types() -> tuple[type[BaseException], ...]:
    return (torch.OutOfMemoryError,) if hasattr(torch, "OutOfMemoryError") else (torch.cuda.OutOfMemoryError,)


# Exceptions that fail one trial but leave the worker running the next.
TRIAL_ERRORS = (NonFiniteLossError, SurplusTrialError, *_out_of_memory_types())


def check_surplus(trial: optuna.Trial, target: int | None) -> None:
    """Fail a trial that two workers' simultaneous asks pushed over the study-wide target."""
    if not target:
        return
    ahead = 0
    for t in trial.study.get_trials(deepcopy=False):
        if t.number < trial.number and (t.state in FINISHED or t.state == optuna.trial.TrialState.RUNNING):
            ahead += 1
    if ahead >= target:
        raise SurplusTrialError(f"the study already has {target} trials finished or running")


def make_objective(spec, **kwargs):
    """The objective for a spec: autoencoder studies cross-validate reconstruction; classifier
    studies cross-validate fine-tuning on a pretrained encoder."""
    if getattr(spec, "task", "autoencoder") == "classifier":
        from aeopt.search.classifier_objective import ClassifierObjective

        return ClassifierObjective(spec, **kwargs)
    return Objective(spec, **kwargs)


class Objective:
    def __init__(self, spec: StudySpec, *, data_dir: str | None = None, device: str | None = None, amp: bool = False,
                 target_trials: int | None = None, upload_artifacts: bool = True):
        self.spec = spec
        self.device = resolve_device(device)
        self.amp = amp
        self.target_trials = target_trials
        self.upload_artifacts = upload_artifacts
        # Loaded once per worker: the training split (or its subset); the test split never enters a study.
        self.pool = training_pool(spec.data, data_dir=data_dir)

    def __call__(self, trial: optuna.Trial) -> float:
        check_surplus(trial, self.target_trials)
        params = suggest(trial, self.spec.space)
        cfg = self.spec.run_config(params)
        trial.set_user_attr("device", str(self.device))
        trial.set_user_attr("host", socket.gethostname())

        def on_epoch(epoch: int, mean: float, losses: list[float]) -> None:
            if not math.isfinite(mean):
                raise NonFiniteLossError(f"validation loss is {mean} at epoch {epoch}")
            trial.report(mean, epoch)
            if trial.should_prune():
                trial.set_user_attr("epochs", epoch)
                trial.set_user_attr("fold_losses", losses)
                raise optuna.TrialPruned(f"pruned at epoch {epoch} (mean validation loss {mean:.5g})")

        try:
            result = cross_validate(cfg, self.pool, self.spec.cv.folds, self.spec.cv.seed, self.device,
                                    on_epoch=on_epoch, amp=self.amp,
                                    # With no pruner, the report's early stopping decides when to stop.
                                    patience=cfg.budget.patience if self.spec.pruner.name == "none" else 0)
        except TRIAL_ERRORS as exc:
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            trial.set_user_attr("fail_reason", reason)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise
        trial.set_user_attr("fold_losses", result.fold_losses)
        trial.set_user_attr("cv_std", result.std)
        trial.set_user_attr("epochs", result.epochs)
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("seconds", round(result.seconds, 3))
        trial.set_user_attr("images_per_second", round(result.images_per_second, 1))
        if self.upload_artifacts:
            self._upload(trial, cfg, result)
        return result.value

    def _upload(self, trial: optuna.Trial, cfg, result) -> None:
        try:
            from aeopt.search.artifacts import upload_trial_artifacts
        except ImportError:
            return
        try:
            best = trial.study.best_value
        except ValueError:
            best = math.inf
        upload_trial_artifacts(trial.study, trial, result.model, cfg, result.sample, result.value < best)
