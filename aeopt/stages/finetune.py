"""The fine-tune stage: an autoencoder's encoder plus a classification head, trained on labels.

The autoencoder is trained on the training split (or loaded from its checkpoint), the head (one
hidden layer, then 10 classes) goes on its code (the VAE's mean vector), the classifier is trained
on the same stratified 80/20 split as the autoencoder with early stopping on validation accuracy,
and the test split is evaluated once, at the end.
"""

from __future__ import annotations

import json
import logging
import socket
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from aeopt.config import FinetuneConfig, FinetuneRun, run_config
from aeopt.errors import ConfigError
from aeopt.figures import confusion_figure
from aeopt.files import atomic_write_bytes, atomic_write_text, versions
from aeopt.progress import progress
from aeopt.training.checkpoint import load_checkpoint
from aeopt.training.data import Split, prepare, stratified_folds, stratified_split, stratified_subset, to_float, training_pool
from aeopt.training.engine import resolve_device, set_seed
from aeopt.training.models import Autoencoder, build_model, count_parameters
from aeopt.training.supervised import (
    Classifier,
    ClassifierFit,
    OnClassifierEpoch,
    augmentation_for,
    confusion_matrix,
    evaluate,
    fit_classifier,
    per_class_accuracy,
)

log = logging.getLogger(__name__)

# Top-level keys of an export that are not part of the run (written by `aeopt export`).
_EXPORT_EXTRAS = ("metrics", "provenance")



def build_classifier(ae: Autoencoder, ft: FinetuneConfig, n_classes: int) -> Classifier:
    """A head on `ae`'s encoder; `.encoder` returns the code (the VAE's encoder returns its mean)."""
    clf = Classifier(ae.encoder, ae.latent_dim, ft.head_hidden, n_classes, ft.head_dropout, ft.head_norm)
    if ft.encoder_dropout is not None:
        for module in clf.encoder.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = ft.encoder_dropout
    if ft.mode == "frozen":
        clf.freeze_encoder()
    return clf


# ----- data --------------------------------------------------------------------------------------


def labelled_split(cfg: FinetuneRun, data_dir: str | None = None) -> tuple[Split, Split, Split, list[str], str]:
    """(train, val, test, classes, source). With all labels, exactly the autoencoder's 80/20 split;
    with `finetune.labels = N`, a stratified subset of N training images, split 80/20 the same way."""
    data = prepare(cfg.data, data_dir)
    n_labels = cfg.finetune.labels
    if n_labels is None:
        return data.train, data.val, data.test, data.classes, data.source
    pool = training_pool(cfg.data, data_dir=data_dir)
    n_classes = len(data.classes)
    if n_labels < 2 * n_classes:
        raise ConfigError(f"finetune.labels = {n_labels}: need at least 2 per class ({2 * n_classes}) for an 80/20 split")
    if n_labels > len(pool):
        raise ConfigError(f"finetune.labels = {n_labels}: the training split has only {len(pool)} images; lower it or drop it")
    labelled = pool.take(stratified_subset(pool.y, n_labels, cfg.data.split_seed))
    tr, va = stratified_split(labelled.y, cfg.data.val_fraction, cfg.data.split_seed)
    return labelled.take(tr), labelled.take(va), data.test, data.classes, data.source


def _xy(split: Split, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return to_float(split.x, device), split.y.to(device)


# ----- the stage ---------------------------------------------------------------------------------


def pretrained_autoencoder(cfg: FinetuneRun, *, checkpoint: str | Path | None, data_dir: str | None, device: torch.device,
                           out: Path | None, amp: bool, show_progress: bool) -> tuple[Autoencoder, dict[str, Any]]:
    """The autoencoder to start from: loaded, trained now (via aeopt.stages.train), or fresh (init=random)."""
    ae_cfg = run_config(cfg)
    if cfg.finetune.init == "random":
        set_seed(cfg.seed)
        return build_model(ae_cfg).to(device), {"source": "random init"}
    if checkpoint is not None:
        model, ckpt_cfg, payload = load_checkpoint(checkpoint, device)
        if ckpt_cfg.model != cfg.model:
            raise ConfigError(f"{checkpoint}: its model section differs from the config's; drop the config or match it")
        return model, {"source": "checkpoint", "checkpoint": str(checkpoint), **(payload.get("metrics") or {})}
    from aeopt.stages.train import train_run

    model, metrics = train_run(ae_cfg, data_dir=data_dir, device=str(device), out=out / "autoencoder" if out else None,
                               amp=amp, show_progress=show_progress)
    return model, {"source": "trained", **{k: v for k, v in metrics.items() if k != "history"}}


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
    on_epoch: OnClassifierEpoch | None = None,
) -> dict[str, Any]:
    """Fine-tune a classifier on the autoencoder's encoder; evaluate on the test split once.

    `autoencoder` skips pretraining (a second study reuses one trained model); otherwise it is
    loaded from `checkpoint` or trained from `cfg`. Returns the metrics; writes metrics.json,
    confusion_matrix.json / .png and classifier.pt to `out` when given."""
    t_start = time.perf_counter()
    dev = resolve_device(device)
    out = Path(out) if out is not None else None
    ft = cfg.finetune
    if autoencoder is not None and ft.init == "pretrained":
        ae, ae_info = autoencoder.to(dev), {"source": "given"}
    else:
        ae, ae_info = pretrained_autoencoder(cfg, checkpoint=checkpoint, data_dir=data_dir, device=dev, out=out, amp=amp,
                                             show_progress=show_progress)
    pretrain_seconds = time.perf_counter() - t_start
    train, val, test, classes, source = labelled_split(cfg, data_dir)
    aug = augmentation_for(ft.augment, cfg.data.dataset, len(train))
    ae_state = {k: v.detach().clone() for k, v in ae.state_dict().items()}
    semi = ft.recon_weight > 0 and ft.mode == "full"
    unlabelled = to_float(prepare(cfg.data, data_dir).train.x, dev) if semi else None

    def fresh_classifier() -> tuple[Classifier, Autoencoder]:
        # Every run (and every CV fold) starts from the same autoencoder weights.
        set_seed(cfg.seed)
        model = build_model(run_config(cfg)).to(dev)
        model.load_state_dict(ae_state)
        return build_classifier(model, ft, len(classes)).to(dev), model

    def recon_term(model: Autoencoder):
        from aeopt.training.data import add_noise
        from aeopt.training.engine import noise_std
        from aeopt.training.losses import reconstruction_loss

        std = noise_std(run_config(cfg))

        def aux(gen: torch.Generator) -> torch.Tensor:
            # A random batch of unlabelled images through the same encoder and the decoder.
            idx = torch.randint(0, unlabelled.shape[0], (ft.batch_size,), device=dev, generator=gen)
            target = unlabelled[idx]
            return ft.recon_weight * reconstruction_loss(model, add_noise(target, std, gen), target)

        return aux

    def train_one(train_xy, val_xy, seed: int, desc: str) -> tuple[Classifier, ClassifierFit]:
        model, ae_model = fresh_classifier()
        probe = None
        with progress(ft.probe_epochs + ft.max_epochs, desc, enabled=show_progress) as bar:
            def show(e, row):
                bar.update({"val_acc": row["val_acc"], "loss": row["train_loss"]})

            if ft.probe_epochs and ft.mode == "full":
                # Linear probe, then fine-tune (Kumar et al., "Fine-Tuning can Distort Pretrained
                # Features and Underperform Out-of-Distribution", ICLR 2022): a trained head first,
                # so the random head's early gradients do not scramble the pretrained encoder.
                model.freeze_encoder()
                probe_cfg = ft.model_copy(update={"max_epochs": ft.probe_epochs, "patience": 0})
                model, probe = fit_classifier(model, train_xy, val_xy, probe_cfg, dev, seed=seed, augmentation=aug, amp=amp,
                                              progress=show)
                model.unfreeze_encoder()
            aux = {}
            if semi:
                ae_model.train()
                aux = {"aux_loss": recon_term(ae_model), "aux_params": [
                    p for n, p in ae_model.named_parameters() if not n.startswith("encoder.")]}
            model, fit = fit_classifier(model, train_xy, val_xy, ft, dev, seed=seed, augmentation=aug,
                                        encoder_lr_scale=ft.encoder_lr_scale, amp=amp, on_epoch=on_epoch, progress=show,
                                        **aux)
        if probe is not None:
            fit.history = probe.history + [{**row, "epoch": row["epoch"] + probe.epochs} for row in fit.history]
            fit.epochs += probe.epochs
            fit.best_epoch += probe.epochs
            fit.seconds += probe.seconds
        return model, fit

    t_ft = time.perf_counter()
    cv_info: dict[str, Any] | None = None
    label = f"finetune {cfg.model.kind} ({ft.mode}, {ft.init})"
    if ft.cv:
        models, fold_accs, fold_epochs = [], [], []
        pool = Split(torch.cat([train.x, val.x]), torch.cat([train.y, val.y]))
        for k, (tr_idx, va_idx) in enumerate(stratified_folds(pool.y, ft.cv, cfg.data.split_seed)):
            model, fit = train_one(_xy(pool.take(tr_idx), dev), _xy(pool.take(va_idx), dev), cfg.seed + k,
                                   f"{label} fold {k + 1}/{ft.cv}")
            models.append(model)
            fold_accs.append(fit.best_val_acc)
            fold_epochs.append(fit.epochs)
        cv_info = {"folds": ft.cv, "val_acc_mean": statistics.fmean(fold_accs),
                   "val_acc_std": statistics.pstdev(fold_accs) if len(fold_accs) > 1 else 0.0,
                   "fold_val_acc": fold_accs, "fold_epochs": fold_epochs,
                   "test_protocol": "mean of the fold models' softmax outputs, evaluated once"}
        fit = ClassifierFit(epochs=sum(fold_epochs), best_val_acc=cv_info["val_acc_mean"])
    else:
        train_xy = _xy(train, dev)
        classifier, fit = train_one(train_xy, _xy(val, dev), cfg.seed, label)
        models = [classifier]
    finetune_seconds = time.perf_counter() - t_ft

    # The test split is touched here, once, after every choice has been made on validation data.
    test_x, test_y = _xy(test, dev)
    if len(models) == 1:
        test_eval = evaluate(models[0], test_x, test_y, amp=amp)
        test_pred, test_acc, test_loss = test_eval.predictions, test_eval.accuracy, test_eval.loss
    else:
        probs = sum(evaluate(m, test_x, test_y, probabilities=True, amp=amp).probabilities for m in models) / len(models)
        test_pred = probs.argmax(1)
        test_acc = float((test_pred == test.y.cpu()).float().mean())
        test_loss = float(torch.nn.functional.nll_loss(probs.clamp_min(1e-12).log(), test.y.cpu()))
    matrix = confusion_matrix(test.y, test_pred, len(classes))

    metrics: dict[str, Any] = {
        "task": "finetune",
        "model": cfg.model.kind,
        "mode": ft.mode,
        "init": ft.init,
        "dataset": cfg.data.dataset,
        "labels": ft.labels if ft.labels is not None else len(train) + len(val),
        # Accuracy on the fine-tune training images (no augmentation); with --cv the folds'
        # training sets differ, so there is no single figure.
        "train_acc": evaluate(models[0], *train_xy, amp=amp).accuracy if cv_info is None else None,
        "val_acc": fit.best_val_acc,
        "test_acc": test_acc,
        "test_loss": test_loss,
        "per_class_acc": per_class_accuracy(matrix, classes),
        "epochs": fit.epochs,
        "best_epoch": fit.best_epoch,
        "seconds": round(finetune_seconds, 3),
        "pretrain_seconds": round(pretrain_seconds, 3) if ae_info["source"] == "trained" else 0.0,
        "total_seconds": round(time.perf_counter() - t_start, 3),
        "n_train": len(train),
        "n_val": len(val),
        "n_test": len(test),
        "parameters": count_parameters(models[0]),
        "trainable_parameters": sum(p.numel() for p in models[0].parameters() if p.requires_grad),
        "device": str(dev),
        "host": socket.gethostname(),
        "autoencoder": ae_info,
        "finetune": ft.model_dump(mode="json"),
        "history": fit.history,
    }
    if cv_info is not None:
        metrics["cv"] = cv_info
        metrics.pop("train_acc")
    if out is not None:
        write_classifier_outputs(out, metrics, matrix, classes, models[0] if len(models) == 1 else None,
                                 cfg.model_dump(mode="json"), source)
    return metrics


def write_classifier_outputs(out: Path, metrics: dict[str, Any], matrix: list[list[int]], classes: list[str],
                             model: torch.nn.Module | None, config: dict[str, Any], source: str) -> None:
    """metrics.json, confusion_matrix.json / .png and (single runs) classifier.pt in `out`."""
    from aeopt.figures import save_figure

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    atomic_write_text(out / "confusion_matrix.json",
                      json.dumps({"classes": classes, "rows": "true class", "columns": "predicted class",
                                  "matrix": matrix}, indent=2) + "\n")
    what = metrics.get("task", "classifier")
    title = f"{what} {metrics.get('model', '')}: test accuracy {metrics['test_acc']:.4f}"
    save_figure(confusion_figure(matrix, classes, title), out / "confusion_matrix.png")
    if model is not None:
        payload = {"format": "aeopt.classifier/1", "config": config, "data_source": source,
                   "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                   "metrics": {k: v for k, v in metrics.items() if k != "history"}, "versions": versions()}
        atomic_write_bytes(out / "classifier.pt", lambda tmp: torch.save(payload, tmp))
