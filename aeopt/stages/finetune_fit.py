"""How a fine-tune trains, once or over k folds: shared by `aeopt finetune` and the classifier study.

Every run (and every fold) starts from the same autoencoder weights: a fresh copy of the network,
the stored state loaded, a head put on its encoder. Then, in full mode, an optional linear probe
(the head alone), then the whole network, optionally with the autoencoder's own loss on unlabelled
images as a regularizer. Knows nothing about Optuna: a study prunes through `on_epoch`.
"""

from __future__ import annotations

import functools
import statistics
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from aeopt.config import FinetuneConfig, FinetuneRun, run_config
from aeopt.progress import Progress, progress
from aeopt.training.data import Split, add_noise, stratified_folds, to_float
from aeopt.training.engine import noise_std, set_seed
from aeopt.training.fused_supervised import fit_classifier_folds
from aeopt.training.lanes import Lanes, fold_lanes
from aeopt.training.losses import reconstruction_loss
from aeopt.training.models import Autoencoder, build_model
from aeopt.training.supervised import (
    Classifier,
    ClassifierFit,
    OnClassifierEpoch,
    augmentation_for,
    build_classifier,
    fit_classifier,
)

# on_epoch(fold, epoch, validation accuracy, validation loss); fold is 0 for a single run. May raise
# to stop the run (a study raises optuna.TrialPruned there).
OnFoldEpoch = Callable[[int, int, float, float], None]
XY = tuple[torch.Tensor, torch.Tensor]


# The settings that act on the encoder (its learning rate and dropout, the reconstruction term through
# it, the head-alone phase before it trains): frozen mode trains the head alone and uses none of them.
FULL_MODE_ONLY = ("probe_epochs", "recon_weight", "encoder_lr_scale", "encoder_dropout")


def ignored_settings(ft: FinetuneConfig) -> list[str]:
    """The settings of `ft` set away from their defaults that its mode does not use (frozen mode:
    `FULL_MODE_ONLY`). Not a config error: a study may search finetune.mode together with them."""
    if ft.mode != "frozen":
        return []
    fields = type(ft).model_fields
    return [name for name in FULL_MODE_ONLY if getattr(ft, name) != fields[name].default]


def split_xy(split: Split, device: torch.device) -> XY:
    """(float images in [0, 1], labels) on the device."""
    return to_float(split.x, device), split.y.to(device)


def show_on(bar: Progress) -> Callable[[int, dict[str, float]], None]:
    """A `progress` callback for `fit_classifier` that shows validation accuracy and loss on `bar`."""
    return lambda _epoch, row: bar.update({"val_acc": row["val_acc"], "loss": row["train_loss"]})


class ReconstructionTerm:
    """The autoencoder's own loss on a random batch of unlabelled images, weighted: added to every
    classifier step (semi-supervised fine-tuning), through the same encoder and the decoder."""

    def __init__(self, model: Autoencoder, images: torch.Tensor, weight: float, batch_size: int,
                 noise: float):
        self.model, self.images, self.weight = model, images, weight
        self.batch_size, self.noise = batch_size, noise

    def __call__(self, gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, self.images.shape[0], (self.batch_size,), device=self.images.device,
                            generator=gen)
        target = self.images[idx]
        return self.weight * reconstruction_loss(self.model, add_noise(target, self.noise, gen), target)


@dataclass(frozen=True)
class FinetuneSetup:
    """What every fine-tune run of one stage call (or one trial) shares."""

    cfg: FinetuneRun
    ae_state: dict[str, torch.Tensor] | None  # None: the network from random init (finetune.init = random)
    n_classes: int
    device: torch.device
    amp: bool = False
    # Float images for the reconstruction term; needed when it is on (recon_weight > 0, full mode).
    unlabelled: torch.Tensor | None = None
    show_progress: bool = False

    @property
    def semi_supervised(self) -> bool:
        return self.cfg.finetune.recon_weight > 0 and self.cfg.finetune.mode == "full"

    def fresh(self) -> tuple[Classifier, Autoencoder]:
        """A new classifier on a new copy of the autoencoder (returned too: its decoder may train)."""
        set_seed(self.cfg.seed)
        ae = build_model(run_config(self.cfg)).to(self.device)
        if self.ae_state is not None:
            ae.load_state_dict(self.ae_state)
        return build_classifier(ae, self.cfg.finetune, self.n_classes).to(self.device), ae

    def aux(self, ae: Autoencoder) -> dict[str, object]:
        """`fit_classifier`'s aux_loss / aux_params for the reconstruction term, or nothing."""
        if not self.semi_supervised:
            return {}
        if self.unlabelled is None:
            raise ValueError("finetune.recon_weight > 0 needs FinetuneSetup.unlabelled images")
        ae.train()
        ft = self.cfg.finetune
        term = ReconstructionTerm(ae, self.unlabelled, ft.recon_weight, ft.batch_size,
                                  noise_std(run_config(self.cfg)))
        # The decoder trains too (at the encoder's rate); the encoder is the classifier's own.
        decoder = [p for n, p in ae.named_parameters() if not n.startswith("encoder.")]
        return {"aux_loss": term, "aux_params": decoder}


def _after_probe(fit: ClassifierFit, probe: ClassifierFit | None) -> ClassifierFit:
    """One record of both phases: the probe's epochs first, then the whole network's."""
    if probe is None:
        return fit
    fit.history = probe.history + [{**row, "epoch": row["epoch"] + probe.epochs} for row in fit.history]
    fit.epochs += probe.epochs
    fit.best_epoch += probe.epochs
    fit.seconds += probe.seconds
    return fit


def finetune_once(setup: FinetuneSetup, train: XY, val: XY, *, seed: int, desc: str = "finetune",
                  on_epoch: OnClassifierEpoch | None = None,
                  built: tuple[Classifier, Autoencoder] | None = None,
                  show: Callable[[int, dict[str, float]], None] | None = None,
                  ) -> tuple[Classifier, ClassifierFit]:
    """Fine-tune one classifier from the setup's autoencoder with early stopping on `val`.
    `built`: the network from `setup.fresh()`, made by the caller (default: made here); `show`: a
    progress callback shared with other runs (default: a bar of this run's own)."""
    ft = setup.cfg.finetune
    model, ae = built if built is not None else setup.fresh()
    aug = augmentation_for(ft.augment, setup.cfg.data.dataset, train[0].shape[0])
    kw = {"seed": seed, "augmentation": aug, "amp": setup.amp}
    probe = None
    probing = bool(ft.probe_epochs and ft.mode == "full")
    epochs = ft.max_epochs + (ft.probe_epochs if probing else 0)
    with progress(epochs, desc, enabled=setup.show_progress and show is None) as bar:
        show = show if show is not None else show_on(bar)
        if probing:
            # Linear probe, then fine-tune (Kumar et al., "Fine-Tuning can Distort Pretrained
            # Features and Underperform Out-of-Distribution", ICLR 2022): a trained head first,
            # so the random head's early gradients do not scramble the pretrained encoder.
            model.freeze_encoder()
            probe_cfg = ft.model_copy(update={"max_epochs": ft.probe_epochs, "patience": 0})
            model, probe = fit_classifier(model, train, val, probe_cfg, setup.device, progress=show, **kw)
            model.unfreeze_encoder()
        model, fit = fit_classifier(model, train, val, ft, setup.device, encoder_lr_scale=ft.encoder_lr_scale,
                                    on_epoch=on_epoch, progress=show, **kw, **setup.aux(ae))
    return model, _after_probe(fit, probe)


@dataclass
class FoldsResult:
    """The fine-tune over k stratified folds: each fold's fit (and model, when kept)."""

    fits: list[ClassifierFit] = field(default_factory=list)
    models: list[Classifier] = field(default_factory=list)

    @property
    def fold_val_acc(self) -> list[float]:
        return [f.best_val_acc for f in self.fits]

    @property
    def fold_epochs(self) -> list[int]:
        return [f.epochs for f in self.fits]

    @property
    def val_acc_mean(self) -> float:
        return statistics.fmean(self.fold_val_acc)

    @property
    def val_acc_std(self) -> float:
        return statistics.pstdev(self.fold_val_acc) if len(self.fits) > 1 else 0.0


def use_fused_folds(setup: FinetuneSetup, fused: bool | None = None) -> bool:
    """Whether the k fold classifiers train fused (aeopt.training.fused_supervised): as asked, else on
    CUDA only (on the CPU the fused step's grouped convolutions measured slower, BENCHMARKS.md "Fused
    folds"). Semi-supervised runs (the reconstruction term trains the decoder too) never fuse."""
    if setup.semi_supervised:
        return False
    return setup.device.type == "cuda" if fused is None else fused


def _finetune_fused(setup: FinetuneSetup, pool: Split, folds: int, fold_seed: int, *,
                    on_epoch: OnFoldEpoch | None, keep_models: bool, desc: str) -> FoldsResult:
    """`finetune_folds` with every fold in one vmapped step per batch (probe phase included)."""
    ft = setup.cfg.finetune
    trains, vals, models = [], [], []
    for tr, va in stratified_folds(pool.y, folds, fold_seed):
        trains.append(split_xy(pool.take(tr), setup.device))
        vals.append(split_xy(pool.take(va), setup.device))
        models.append(setup.fresh()[0])
    aug = augmentation_for(ft.augment, setup.cfg.data.dataset, trains[0][0].shape[0])
    kw = {"seeds": [setup.cfg.seed + k for k in range(folds)], "augmentation": aug, "amp": setup.amp}
    device = setup.device
    probes: list[ClassifierFit | None] = [None] * folds
    probing = bool(ft.probe_epochs and ft.mode == "full")
    with progress(ft.max_epochs + (ft.probe_epochs if probing else 0), f"{desc} ({folds} folds fused)",
                  enabled=setup.show_progress) as bar:
        if probing:  # as finetune_once: a trained head first
            for m in models:
                m.freeze_encoder()
            probe_cfg = ft.model_copy(update={"max_epochs": ft.probe_epochs, "patience": 0})
            probes = fit_classifier_folds(models, trains, vals, probe_cfg, device, progress=show_on(bar),
                                          **kw)
            for m in models:
                m.unfreeze_encoder()
        fits = fit_classifier_folds(models, trains, vals, ft, device, encoder_lr_scale=ft.encoder_lr_scale,
                                    on_epoch=on_epoch, progress=show_on(bar), **kw)
    return FoldsResult([_after_probe(f, p) for f, p in zip(fits, probes, strict=True)],
                       models if keep_models else [])


def _finetune_lanes(setup: FinetuneSetup, pool: Split, folds: int, fold_seed: int, lanes: Lanes, *,
                    on_epoch: OnFoldEpoch | None, keep_models: bool, desc: str) -> FoldsResult:
    """`finetune_folds` with the folds side by side on the CPU, one fold per lane (aeopt.training.lanes):
    the same fine-tunes, each from its own seed, so the same numbers as one fold after another on one
    thread. A fold that fails (or is pruned) stops the others at their next epoch."""
    ft = setup.cfg.finetune
    data = [(split_xy(pool.take(tr), setup.device), split_xy(pool.take(va), setup.device))
            for tr, va in stratified_folds(pool.y, folds, fold_seed)]
    # Built here, in fold order: a network's initial weights come from torch's global generator,
    # which lanes would draw from in whatever order their threads ran.
    built = [setup.fresh() for _ in data]
    lock = threading.Lock()  # one fold at a time reports (a study's trial) and draws the bar
    epochs = ft.max_epochs + (ft.probe_epochs if ft.probe_epochs and ft.mode == "full" else 0)
    with progress(folds * epochs, f"{desc} ({folds} folds, {lanes.n} side by side)",
                  enabled=setup.show_progress) as bar:
        shown = show_on(bar)

        def show(epoch: int, row: dict[str, float]) -> None:
            with lock:
                shown(epoch, row)

        def run(k: int) -> tuple[Classifier, ClassifierFit]:
            def hook(epoch: int, acc: float, loss: float) -> None:
                lanes.check()  # another fold failed or was pruned: stop this one here
                if on_epoch is not None:
                    with lock:
                        on_epoch(k, epoch, acc, loss)

            train, val = data[k]
            return finetune_once(setup, train, val, seed=setup.cfg.seed + k, on_epoch=hook, built=built[k],
                                 show=show)

        runs = lanes.map(run, range(folds))
    # Each fit seeds torch's global generator; leave it as the sequential loop does (the last fold's).
    set_seed(setup.cfg.seed + folds - 1)
    return FoldsResult([fit for _, fit in runs], [model for model, _ in runs] if keep_models else [])


def finetune_folds(setup: FinetuneSetup, pool: Split, folds: int, fold_seed: int, *,
                   on_epoch: OnFoldEpoch | None = None, keep_models: bool = True,
                   desc: str = "finetune", fused: bool | None = None,
                   concurrent: bool | None = None) -> FoldsResult:
    """Fine-tune on each of `folds` stratified folds of the labelled `pool` (fold assignment fixed
    by `fold_seed`; fold k trains with seed `cfg.seed + k`): one fold after another, all folds in
    one fused step per batch (`fused`; None: `use_fused_folds` decides), or, on the CPU, side by
    side in lanes (`concurrent`; None: where the process may use two cores or more, see
    `aeopt.training.lanes.fold_lanes`)."""
    if use_fused_folds(setup, fused):
        return _finetune_fused(setup, pool, folds, fold_seed, on_epoch=on_epoch, keep_models=keep_models,
                               desc=desc)
    lanes = fold_lanes(folds, setup.device, concurrent)
    if lanes is not None:
        with lanes:
            return _finetune_lanes(setup, pool, folds, fold_seed, lanes, on_epoch=on_epoch,
                                   keep_models=keep_models, desc=desc)
    result = FoldsResult()
    for k, (tr, va) in enumerate(stratified_folds(pool.y, folds, fold_seed)):
        hook = functools.partial(on_epoch, k) if on_epoch is not None else None
        train, val = split_xy(pool.take(tr), setup.device), split_xy(pool.take(va), setup.device)
        model, fit = finetune_once(setup, train, val, seed=setup.cfg.seed + k,
                                   desc=f"{desc} fold {k + 1}/{folds}", on_epoch=hook)
        result.fits.append(fit)
        if keep_models:
            result.models.append(model)
    return result
