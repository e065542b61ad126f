"""The second study: tune the fine-tune stage (learning rate, head, frozen or full, epochs, ...)
on a fixed, exported autoencoder, with the same storages, workers and commands as the first.

A classifier spec names the exported autoencoder config (`autoencoder: best.yaml`); its run
sections are copied into the spec when the study is created, so workers need only the storage.
Each worker pretrains that autoencoder once (or loads `checkpoint`) through the fine-tune stage's
own pretraining path, then every trial runs the stage's k-fold fine-tune loop on stratified folds
of the training split and is scored by the mean validation error (1 - accuracy), pruned on the
first fold's curve. The test split is never touched by a study.
"""

from __future__ import annotations

import logging
import math
import statistics
import time

import optuna
import torch

from aeopt.config import ClassifierStudySpec, FinetuneRun
from aeopt.progress import duration_text
from aeopt.search.objective import (
    TRIAL_ERRORS,
    DeadlineError,
    check_surplus,
    fail_reason,
    stop_at_deadline,
)
from aeopt.search.records import TrialRecord
from aeopt.search.space import suggest
from aeopt.search.stopping import raise_if_stop_requested
from aeopt.search.storage import Storage
from aeopt.stages.finetune_fit import FinetuneSetup, finetune_folds
from aeopt.stages.pretrain import autoencoder_state, pretrained_autoencoder
from aeopt.training.data import Split, prepare, stratified_subset, to_float
from aeopt.training.engine import NonFiniteLossError, resolve_device

log = logging.getLogger(__name__)


def _uses_pretrained(spec: ClassifierStudySpec, base: FinetuneRun) -> bool:
    """Whether any trial can start from the pretrained autoencoder (else nothing is pretrained)."""
    return base.finetune.init == "pretrained" or "finetune.init" in spec.space


class _FoldHook:
    """The per-epoch hook of the k-fold loop: a progress line; fail on a diverged run; report and
    prune on fold 0; stop at the worker's deadline after any fold's epoch (as the autoencoder
    objective does)."""

    def __init__(self, trial: optuna.Trial, deadline: float | None, *, folds: int, max_epochs: int):
        self.trial, self.deadline = trial, deadline
        self.folds, self.max_epochs = folds, max_epochs
        self.start = time.monotonic()
        self.reported: int | None = None  # the last epoch reported (fold 0's curve)

    def __call__(self, fold: int, epoch: int, val_acc: float, val_loss: float) -> None:
        # A full fine-tune trial runs minutes on a CPU: a line per fold epoch, as autoencoder trials
        # print per epoch, so a worker's log shows it is alive and how far it got.
        log.info("trial %d fold %d/%d epoch %d/%d: validation accuracy %.4f, %s", self.trial.number, fold + 1,
                 self.folds, epoch, self.max_epochs, val_acc, duration_text(time.monotonic() - self.start))
        raise_if_stop_requested()
        if not math.isfinite(val_loss):
            raise NonFiniteLossError(f"validation loss is {val_loss} at epoch {epoch} of fold {fold}")
        # Pruning watches the first fold's learning curve; later folds run to the end.
        if fold == 0:
            self.trial.report(1.0 - val_acc, epoch)
            self.reported = epoch
        # A later fold's epoch can cross the deadline too: the trial stops there, pruned at the
        # last epoch it reported (fold 0's), so `--timeout` holds inside a trial of any length. A
        # fold's last epoch stops nothing: were it the trial's last, a complete result would be lost
        # (folds in lanes still running stop at their own next epoch).
        if epoch < self.max_epochs:
            stop_at_deadline(self.trial, self.deadline, self.reported)
        if fold == 0 and self.trial.should_prune():
            TrialRecord(epochs=epoch).write(self.trial, "epochs")
            raise optuna.TrialPruned(f"pruned at epoch {epoch} (validation accuracy {val_acc:.4f})")


class ClassifierObjective:
    """Objective for a classifier study: k-fold fine-tuning on one pretrained autoencoder.

    Built like every task's objective (`aeopt.search.objective.ObjectiveFactory`); a classifier
    trial uploads no artifacts, so `upload_artifacts` and `storage` are accepted and not used."""

    def __init__(self, spec: ClassifierStudySpec, *, data_dir: str | None = None, device: str | None = None,
                 amp: bool = False, target_trials: int | None = None, upload_artifacts: bool = True,
                 storage: Storage | None = None):
        del upload_artifacts, storage  # see the class docstring
        self.spec = spec
        self.device = resolve_device(device)
        self.amp = amp
        self.target_trials = target_trials
        self.deadline: float | None = None  # set by the worker from its --timeout
        base = spec.run_config({})
        data = prepare(base.data, data_dir)
        # The labelled pool: the training split only (the autoencoder's train + validation parts).
        self.pool = Split(torch.cat([data.train.x, data.val.x]), torch.cat([data.train.y, data.val.y]))
        self.classes = data.classes
        self._train_images = data.train.x  # unlabelled images for the reconstruction term
        self._unlabelled: torch.Tensor | None = None
        self.ae_state = self._pretrain(base, data_dir) if _uses_pretrained(spec, base) else None

    def _pretrain(self, base: FinetuneRun, data_dir: str | None) -> dict[str, torch.Tensor]:
        if not self.spec.checkpoint:
            log.info("pretraining the %s autoencoder once for this worker", base.model.kind)
        # Pretrained even when the base says init=random: some trials (finetune.init searched) need it.
        cfg = base.model_copy(update={"finetune": base.finetune.model_copy(update={"init": "pretrained"})})
        model, _ = pretrained_autoencoder(cfg, device=self.device, checkpoint=self.spec.checkpoint,
                                          data_dir=data_dir, amp=self.amp, evaluate_test=False)
        return autoencoder_state(model)

    def _setup(self, cfg: FinetuneRun) -> FinetuneSetup:
        ft = cfg.finetune
        unlabelled = None
        if ft.recon_weight > 0 and ft.mode == "full":
            if self._unlabelled is None:  # moved to the device once per worker, on first use
                self._unlabelled = to_float(self._train_images, self.device)
            unlabelled = self._unlabelled
        ae_state = self.ae_state if ft.init == "pretrained" else None
        return FinetuneSetup(cfg, ae_state, len(self.classes), self.device, amp=self.amp,
                             unlabelled=unlabelled)

    def _labelled(self, cfg: FinetuneRun) -> Split:
        if not cfg.finetune.labels:
            return self.pool
        return self.pool.take(stratified_subset(self.pool.y, cfg.finetune.labels, cfg.data.split_seed))

    def __call__(self, trial: optuna.Trial) -> float:
        raise_if_stop_requested()  # one noted as the trial began (aeopt.search.stopping)
        check_surplus(trial, self.target_trials)  # the same study-wide target rule as autoencoder studies
        stop_at_deadline(trial, self.deadline, None)
        cfg: FinetuneRun = self.spec.run_config(suggest(trial, self.spec.space))
        TrialRecord.started(self.device).write(trial)
        start = time.perf_counter()
        try:
            cv = self.spec.cv
            hook = _FoldHook(trial, self.deadline, folds=cv.folds, max_epochs=cfg.finetune.max_epochs)
            folds = finetune_folds(self._setup(cfg), self._labelled(cfg), cv.folds, cv.seed, on_epoch=hook,
                                   keep_models=False)
        except TRIAL_ERRORS as exc:
            if not isinstance(exc, DeadlineError):  # stop_at_deadline wrote its own reason
                TrialRecord(fail_reason=fail_reason(exc)).write(trial)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise
        errors = [1.0 - acc for acc in folds.fold_val_acc]
        TrialRecord(fold_losses=errors, fold_val_acc=folds.fold_val_acc, cv_std=statistics.pstdev(errors),
                    epochs=max(folds.fold_epochs), seconds=round(time.perf_counter() - start, 3)).write(trial)
        return statistics.fmean(errors)
