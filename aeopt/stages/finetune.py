"""The fine-tune stage: an autoencoder's encoder plus a classification head, trained on labels.

The autoencoder is trained on the training split (or loaded from its checkpoint), the head (one
hidden layer, then 10 classes) goes on its code (the VAE's mean vector), the classifier is trained
on the same stratified 80/20 split as the autoencoder with early stopping on validation accuracy
(or on k folds of those labelled images), and the test split is evaluated once, at the end.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any

import torch

from aeopt.config import FinetuneRun
from aeopt.stages.classifier_run import (
    LabelledData,
    classifier_metrics,
    classifier_run_folder,
    evaluate_on_test,
    labelled_split,
    write_classifier_outputs,
)
from aeopt.stages.finetune_fit import (
    FinetuneSetup,
    OnFoldEpoch,
    finetune_folds,
    finetune_once,
    ignored_settings,
    split_xy,
)
from aeopt.stages.metrics import ClassifierMetrics, CVSummary
from aeopt.stages.pretrain import autoencoder_state, pretrained_autoencoder
from aeopt.training.data import Split, check_folds, prepare, stratified_folds, to_float
from aeopt.training.engine import resolve_device
from aeopt.training.models import Autoencoder
from aeopt.training.supervised import Classifier, ClassifierFit, evaluate

log = logging.getLogger(__name__)


def _starting_autoencoder(cfg: FinetuneRun, given: Autoencoder | None, *, device: torch.device,
                          out: Path | None, **kw: Any) -> tuple[Autoencoder, dict[str, Any]]:
    if given is not None and cfg.finetune.init == "pretrained":
        return given.to(device), {"source": "given"}
    ae_out = out / "autoencoder" if out is not None else None
    return pretrained_autoencoder(cfg, device=device, out=ae_out, **kw)


def _unlabelled(cfg: FinetuneRun, data_dir: str | None, device: torch.device) -> torch.Tensor | None:
    """All of the autoencoder's training images (labels unused), when the reconstruction term is on."""
    if cfg.finetune.recon_weight > 0 and cfg.finetune.mode == "full":
        return to_float(prepare(cfg.data, data_dir).train.x, device)
    return None


def _train(setup: FinetuneSetup, data: LabelledData, desc: str,
           on_epoch: OnFoldEpoch | None) -> tuple[list[Classifier], ClassifierFit, CVSummary | None]:
    """One classifier on the 80/20 split, or (finetune.cv = K) one per fold of those labelled images."""
    cfg = setup.cfg
    if not cfg.finetune.cv:
        hook = functools.partial(on_epoch, 0) if on_epoch is not None else None
        train, val = split_xy(data.train, setup.device), split_xy(data.val, setup.device)
        model, fit = finetune_once(setup, train, val, seed=cfg.seed, desc=desc, on_epoch=hook)
        return [model], fit, None
    pool = Split(torch.cat([data.train.x, data.val.x]), torch.cat([data.train.y, data.val.y]))
    k = cfg.finetune.cv
    folds = finetune_folds(setup, pool, k, cfg.data.split_seed, on_epoch=on_epoch, desc=desc)
    # The folds finetune_folds trained on (the same assignment: the same labels and seed).
    sizes = [(len(tr), len(va)) for tr, va in stratified_folds(pool.y, k, cfg.data.split_seed)]
    cv = CVSummary(folds=k, val_acc_mean=folds.val_acc_mean, val_acc_std=folds.val_acc_std,
                   fold_val_acc=folds.fold_val_acc, fold_epochs=folds.fold_epochs,
                   fold_best_epoch=[f.best_epoch for f in folds.fits],
                   fold_n_train=[n for n, _ in sizes], fold_n_val=[n for _, n in sizes],
                   test_protocol=f"ensemble of the {k} fold models (the mean of their softmax outputs), "
                                 "evaluated once; no single model's test accuracy")
    # No best epoch of its own (metrics.json leaves it out): epochs is the folds' total.
    return folds.models, ClassifierFit(epochs=sum(folds.fold_epochs), best_val_acc=folds.val_acc_mean), cv


def finetune(
    cfg: FinetuneRun,
    *,
    checkpoint: str | Path | None = None,
    autoencoder: Autoencoder | None = None,
    data_dir: str | None = None,
    device: str | None = None,
    out: str | Path | None = None,
    amp: bool = False,
    show_progress: bool = True,
    on_epoch: OnFoldEpoch | None = None,
) -> ClassifierMetrics:
    """Fine-tune a classifier on the autoencoder's encoder; evaluate on the test split once.

    `autoencoder` skips pretraining (several fine-tunes of one trained model); otherwise it is
    loaded from `checkpoint` or trained from `cfg`. Returns the metrics; writes metrics.json,
    confusion_matrix.json / .png, classifier.pt (single runs) and autoencoder/ (when trained here) to
    `out` when given, all at once at the end (`classifier_run_folder`): a run stopped part-way leaves
    `out` as it was, and a finished one leaves no earlier run's file there."""
    kw: dict[str, Any] = {"checkpoint": checkpoint, "autoencoder": autoencoder, "data_dir": data_dir,
                          "device": device, "amp": amp, "show_progress": show_progress, "on_epoch": on_epoch}
    if out is None:
        return _finetune(cfg, out=None, **kw)
    with classifier_run_folder(out, keep=checkpoint) as staging:
        return _finetune(cfg, out=staging, **kw)


def _finetune(cfg: FinetuneRun, *, checkpoint: str | Path | None, autoencoder: Autoencoder | None,
              data_dir: str | None, device: str | None, out: Path | None, amp: bool, show_progress: bool,
              on_epoch: OnFoldEpoch | None) -> ClassifierMetrics:
    started = time.perf_counter()
    dev = resolve_device(device)
    ft = cfg.finetune
    ignored = ignored_settings(ft)
    if ignored:
        given = ", ".join(f"finetune.{name} = {getattr(ft, name)}" for name in ignored)
        one = len(ignored) == 1
        log.warning("warning: finetune.mode = frozen trains the head alone, so %s %s no effect (only when "
                    "the encoder trains); drop %s, or use --mode full", given, "has" if one else "have",
                    "it" if one else "them")
    # The labelled split first: a bad finetune.labels is one line before any pretraining.
    data = labelled_split(cfg.data, ft.labels, data_dir)
    if ft.cv:
        # So is a finetune.cv that a class of those labels is too small for: scikit-learn would refuse
        # the folds only after the autoencoder has trained.
        labelled = torch.cat([data.train.y, data.val.y])
        check_folds(labelled, ft.cv, field="finetune.cv", images=f"the {len(labelled)} labelled images",
                    fix="lower --cv (finetune.cv) or raise --labels (finetune.labels)")
    t_ae = time.perf_counter()
    ae, ae_info = _starting_autoencoder(cfg, autoencoder, device=dev, out=out, checkpoint=checkpoint,
                                        data_dir=data_dir, amp=amp, show_progress=show_progress)
    pretrain_seconds = time.perf_counter() - t_ae if ae_info["source"] == "trained" else 0.0
    setup = FinetuneSetup(cfg, autoencoder_state(ae), len(data.classes), dev, amp=amp,
                          unlabelled=_unlabelled(cfg, data_dir, dev), show_progress=show_progress)
    t_fit = time.perf_counter()
    models, fit, cv = _train(setup, data, f"finetune {cfg.model.kind} ({ft.mode}, {ft.init})", on_epoch)
    seconds = time.perf_counter() - t_fit
    # The test split is touched here, once, after every choice has been made on validation data.
    test = evaluate_on_test(models, data.test, len(data.classes), dev, amp=amp)
    # Accuracy on the fine-tune training images (no augmentation); with cv the folds' training
    # sets differ, so there is no single figure.
    train_acc = evaluate(models[0], *split_xy(data.train, dev), amp=amp).accuracy if cv is None else None
    metrics = classifier_metrics(
        task="finetune", model=cfg.model.kind, mode=ft.mode, init=ft.init, dataset=cfg.data.dataset,
        data=data, labels=ft.labels, classifier=models[0], fit=fit, test=test, train_acc=train_acc,
        seconds=seconds, started=started, device=dev, pretrain_seconds=pretrain_seconds, autoencoder=ae_info,
        # The settings as given, and which of them the mode left unused.
        finetune={**ft.model_dump(mode="json"), **({"ignored": ignored} if ignored else {})}, cv=cv)
    if out is not None:
        # classifier.pt holds one model; a k-fold run has k of them and writes none.
        single = models[0] if len(models) == 1 else None
        write_classifier_outputs(out, metrics, test, data.classes, single, cfg, data.source, staged=False)
    return metrics
