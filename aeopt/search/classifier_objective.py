"""The second study: tune the fine-tune stage (learning rate, head, frozen or full, epochs, ...)
on a fixed, exported autoencoder, with the same storages, workers and commands as the first.

A classifier spec names the exported autoencoder config (`autoencoder: best.yaml`); its run
sections are copied into the spec when the study is created, so workers need only the storage.
Each worker pretrains that autoencoder once (or loads `checkpoint`), then every trial fine-tunes
a classifier on k stratified folds of the training split and scores it by the mean validation
error (1 - accuracy). The test split is never touched by a study.
"""

from __future__ import annotations

import logging
import math
import socket
import statistics

import optuna
import torch

from aeopt.config import ClassifierStudySpec, FinetuneRun, run_config
from aeopt.errors import ConfigError
from aeopt.search.space import suggest
from aeopt.stages.finetune import build_classifier
from aeopt.training.engine import resolve_device, set_seed

log = logging.getLogger(__name__)

class ClassifierObjective:
    """Objective for a classifier study: k-fold fine-tuning on one pretrained autoencoder."""

    def __init__(self, spec: ClassifierStudySpec, *, data_dir: str | None = None, device: str | None = None,
                 amp: bool = False, target_trials: int | None = None, upload_artifacts: bool = True):
        from aeopt.training.data import prepare

        self.spec = spec
        self.device = resolve_device(device)
        self.amp = amp
        self.target_trials = target_trials
        self.data_dir = data_dir
        base = spec.run_config({})
        self.ae_state = self._pretrain(base)
        data = prepare(base.data, data_dir)
        # The labelled pool: the training split only (the autoencoder's train + validation parts).
        from aeopt.training.data import Split

        self.pool = Split(torch.cat([data.train.x, data.val.x]), torch.cat([data.train.y, data.val.y]))
        self.classes = data.classes

    def _pretrain(self, base: FinetuneRun) -> dict[str, torch.Tensor]:
        from aeopt.training.checkpoint import load_checkpoint
        from aeopt.training.data import prepare, to_float
        from aeopt.training.engine import fit

        if self.spec.checkpoint:
            model, cfg, _ = load_checkpoint(self.spec.checkpoint, self.device)
            if cfg.model != base.model:
                raise ConfigError(f"checkpoint {self.spec.checkpoint}: its model differs from the spec's autoencoder")
            return {k: v.detach().clone() for k, v in model.state_dict().items()}
        ae_cfg = run_config(base)
        log.info("pretraining the %s autoencoder once for this worker", ae_cfg.model.kind)
        data = prepare(ae_cfg.data, self.data_dir)
        model, result = fit(ae_cfg, to_float(data.train.x, self.device), to_float(data.val.x, self.device), self.device,
                            amp=self.amp)
        log.info("autoencoder ready: validation loss %.5g after %d epochs", result.best_val, result.epochs)
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    def __call__(self, trial: optuna.Trial) -> float:
        from aeopt.search.objective import check_surplus
        from aeopt.training.data import stratified_folds, stratified_subset, to_float
        from aeopt.training.models import build_model
        from aeopt.training.supervised import augmentation_for, fit_classifier

        check_surplus(trial, self.target_trials)  # the same study-wide target rule as autoencoder studies
        params = suggest(trial, self.spec.space)
        cfg: FinetuneRun = self.spec.run_config(params)
        ft = cfg.finetune
        trial.set_user_attr("device", str(self.device))
        trial.set_user_attr("host", socket.gethostname())
        pool = self.pool
        if ft.labels:
            pool = pool.take(stratified_subset(pool.y, ft.labels, cfg.data.split_seed))
        aug = augmentation_for(ft.augment, cfg.data.dataset, len(pool) * (self.spec.cv.folds - 1) // self.spec.cv.folds)
        errors, epochs = [], []
        for k, (tr, va) in enumerate(stratified_folds(pool.y, self.spec.cv.folds, self.spec.cv.seed)):
            set_seed(cfg.seed)
            ae = build_model(run_config(cfg)).to(self.device)
            ae.load_state_dict(self.ae_state)
            model = build_classifier(ae, ft, len(self.classes)).to(self.device)
            train_xy = (to_float(pool.x[tr], self.device), pool.y[tr].to(self.device))
            val_xy = (to_float(pool.x[va], self.device), pool.y[va].to(self.device))

            def on_epoch(epoch: int, val_acc: float, val_loss: float, fold: int = k) -> None:
                if not math.isfinite(val_loss):
                    from aeopt.training.engine import NonFiniteLossError

                    raise NonFiniteLossError(f"validation loss is {val_loss} at epoch {epoch}")
                # Pruning watches the first fold's learning curve; later folds run to the end.
                if fold == 0:
                    trial.report(1.0 - val_acc, epoch)
                    if trial.should_prune():
                        raise optuna.TrialPruned(f"pruned at epoch {epoch} (validation accuracy {val_acc:.4f})")

            _, fit = fit_classifier(model, train_xy, val_xy, ft, self.device, seed=cfg.seed + k, augmentation=aug,
                                    encoder_lr_scale=ft.encoder_lr_scale, amp=self.amp, on_epoch=on_epoch)
            errors.append(1.0 - fit.best_val_acc)
            epochs.append(fit.epochs)
        trial.set_user_attr("fold_losses", errors)
        trial.set_user_attr("fold_val_acc", [1.0 - e for e in errors])
        trial.set_user_attr("cv_std", statistics.pstdev(errors))
        trial.set_user_attr("epochs", max(epochs))
        return statistics.fmean(errors)
