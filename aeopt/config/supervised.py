"""Schemas of the supervised stages: how a classifier trains, the fine-tune stage, the CNN baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from aeopt.config.base import Seed, Strict
from aeopt.config.keys import unknown_key_message
from aeopt.config.loading import apply_overrides, read_yaml, validate
from aeopt.config.presets import RUN_CONFIG, refuse_study_spec, resolve
from aeopt.config.run import DataConfig, RunConfig
from aeopt.errors import ConfigError

# Top-level keys of an export that are not part of the run (written by `aeopt export`).
EXPORT_EXTRAS = ("metrics", "provenance")


class SupervisedConfig(Strict):
    """How a classifier is trained: optimizer, schedule, budget, augmentation, label budget."""

    # 3e-3 beat 1e-3 on validation accuracy for the report's network (benchmarks/finetune_recipes.py).
    lr: float = Field(3e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0)
    max_epochs: int = Field(40, ge=1, le=10_000)
    # Early stopping on validation accuracy; 0 turns it off.
    patience: int = Field(10, ge=0)
    batch_size: int = Field(256, ge=1, le=65_536)
    # An epoch is at least this many batches, so a 100-label run gets as many optimizer steps per
    # epoch as a small dataset needs (one pass over 80 images would be one step).
    min_steps_per_epoch: int = Field(50, ge=1)
    # The learning rate over max_epochs (aeopt.training.schedules): cosine decay (Loshchilov &
    # Hutter, SGDR, 2017), constant, or onecycle; `warmup_epochs` of linear warm-up first
    # (cosine, constant); `pct_start`: onecycle's rising part.
    schedule: Literal["cosine", "constant", "onecycle"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0.0, le=1000.0)
    pct_start: float = Field(0.3, gt=0.0, lt=1.0)
    # auto: horizontal flips for Fashion-MNIST (clothes are mirror symmetric), nothing for digits
    # (a flipped digit is another digit); with fewer than 5,000 labelled training images, random
    # shifts (+-2 px) too. Shifts slow a small network down when labels are plenty.
    augment: Literal["auto", "none", "flip", "shift", "shift_flip"] = "auto"
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    # Use only this many labelled training images (a stratified subset); null = all.
    labels: int | None = Field(None, ge=10)


class FinetuneConfig(SupervisedConfig):
    """The fine-tune stage's own settings: `finetune:` in a YAML file, `--set finetune.lr=...`.

    Typed like the run config so a second study can search over them (finetune.lr, ...)."""

    mode: Literal["full", "frozen"] = "full"
    # pretrained: the autoencoder's trained encoder; random: the same network from scratch
    # (the control of the label-budget comparison).
    init: Literal["pretrained", "random"] = "pretrained"
    head_hidden: int = Field(64, ge=1, le=8192)
    head_dropout: float = Field(0.2, ge=0.0, lt=1.0)
    # Batch-normalize the code before the head's hidden layer.
    head_norm: bool = True
    # Dropout inside the encoder while fine-tuning (the head has its own); null keeps the
    # autoencoder's model.dropout. 0 beat 0.2 on validation accuracy (benchmarks/finetune_recipes.py).
    encoder_dropout: float | None = Field(0.0, ge=0.0, lt=1.0)
    # The encoder's learning rate relative to the head's (full mode only).
    encoder_lr_scale: float = Field(1.0, ge=0.0, le=100.0)
    # Semi-supervised fine-tuning: keep the autoencoder's own loss on unlabelled training images
    # (all of the autoencoder's training split, labels unused) as a regularizer with this weight,
    # so the encoder keeps what it learned while the classifier trains (full mode). The loss is
    # the model's: MSE per pixel (conv, denoising AE) or the negative ELBO per image (VAE).
    recon_weight: float = Field(0.0, ge=0.0, le=1e6)
    # Epochs of training the head alone before the whole network (full mode); 0 = off.
    probe_epochs: int = Field(0, ge=0, le=1000)
    # Repeat the fine-tune over this many stratified folds of the labelled training images.
    cv: int | None = Field(None, ge=2, le=20)


class FinetuneRun(RunConfig):
    """A run config (the autoencoder) plus the fine-tune stage."""

    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)


def load_finetune_config(path: str | Path | None, overrides: list[str] | None = None,
                         base: RunConfig | None = None) -> FinetuneRun:
    """A fine-tune config from a run config / export YAML (`finetune:` optional), or from `base`
    (a checkpoint's config) when no file is given; `--set` overrides apply to both."""
    if path is not None:
        raw = read_yaml(resolve(path, RUN_CONFIG))
        unknown = [k for k in raw if k not in FinetuneRun.model_fields and k not in EXPORT_EXTRAS]
        if unknown:
            refuse_study_spec(raw, path, "aeopt finetune")
            why = unknown_key_message(unknown[0], list(FinetuneRun.model_fields))
            raise ConfigError(f"{path}: {unknown[0]}: {why}")
        raw = {k: v for k, v in raw.items() if k in FinetuneRun.model_fields}
        source = str(path)
    elif base is not None:
        raw, source = base.model_dump(mode="json"), "checkpoint config"
    else:
        raise ConfigError("give a config file (for example best.yaml from `aeopt export`) "
                          "or --checkpoint PATH")
    raw = apply_overrides(raw, overrides or [], FinetuneRun)
    return validate(FinetuneRun, raw, source)


def run_config(cfg: FinetuneRun) -> RunConfig:
    """The autoencoder's own run config (what `aeopt train` would run)."""
    return RunConfig.model_validate(cfg.model_dump(mode="json", exclude={"finetune"}))


class CNNConfig(Strict):
    kind: Literal["cnn"] = "cnn"
    c1: int = Field(32, ge=1, le=1024)
    c2: int = Field(64, ge=1, le=1024)
    fc: int = Field(128, ge=1, le=8192)
    dropout: float = Field(0.3, ge=0.0, lt=1.0)


class BaselineRun(Strict):
    """`aeopt baseline cnn`'s config: the network, the data (same split as the autoencoder's) and
    the supervised training budget (the same defaults as the fine-tune stage's)."""

    model: CNNConfig = Field(default_factory=CNNConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: SupervisedConfig = Field(default_factory=SupervisedConfig)
    seed: Seed = 0


def load_baseline_config(path: str | Path | None = None, overrides: list[str] | None = None) -> BaselineRun:
    raw = read_yaml(path) if path is not None else {}
    if path is not None:
        refuse_study_spec(raw, path, "aeopt baseline cnn --config",
                          "a baseline config (model, data, train, seed)")
    raw = apply_overrides(raw, overrides or [], BaselineRun)
    return validate(BaselineRun, raw, str(path) if path else "baseline config")
