"""RunConfig: one fully resolved autoencoder training run (what `aeopt train` reads)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from aeopt.config.base import Seed, Strict
from aeopt.config.keys import unknown_key_message
from aeopt.config.loading import apply_overrides, read_yaml, validate
from aeopt.config.models import ConvAEConfig, ModelConfig
from aeopt.config.presets import RUN_CONFIG, refuse_study_spec, resolve
from aeopt.errors import ConfigError


class DataConfig(Strict):
    dataset: Literal["fashion_mnist", "mnist", "digits", "synthetic"] = "fashion_mnist"
    # Stratified subsets for quick runs; null means the whole split.
    train_subset: int | None = Field(None, ge=20)
    test_subset: int | None = Field(None, ge=10)
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    split_seed: Seed = 0


class BudgetConfig(Strict):
    max_epochs: int = Field(50, ge=1, le=10_000)
    batch_size: int = Field(256, ge=1, le=65_536)
    # Early stopping for plain runs (`aeopt train`); 0 turns it off. Studies prune instead.
    patience: int = Field(8, ge=0)


class OptimConfig(Strict):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(1e-5, ge=0.0, le=1.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    # The learning rate over the run (aeopt.training.schedules), planned over budget.max_epochs:
    # constant (the report's), cosine (after `warmup_epochs` of linear warm-up) or onecycle (up to
    # lr over the first `pct_start` of the run, then down by 2.5e5).
    schedule: Literal["constant", "cosine", "onecycle"] = "constant"
    warmup_epochs: float = Field(0.0, ge=0.0, le=1000.0)
    pct_start: float = Field(0.3, gt=0.0, lt=1.0)


class ContrastiveConfig(Strict):
    """A contrastive auxiliary term (aeopt.training.contrastive, SimCLR's NT-Xent between two strong
    views of each training image), its own step after the kind's each batch, at `weight` times
    optim.lr (its own optimizer: Adam's step does not see a loss's scale); weight 0: off."""

    weight: float = Field(0.0, ge=0.0, le=100.0)
    temperature: float = Field(0.5, gt=0.0, le=10.0)
    projection: int = Field(64, ge=2, le=4096)  # width of the projection head (dropped after training)
    # SimCLR's random resized crop in both views: the smallest crop area (0: off, the views' own
    # 0.9-1.1 scale only). Chen et al. found cropping the augmentation that matters most.
    crop: float = Field(0.0, ge=0.0, lt=1.0)


class RunConfig(Strict):
    """Everything needed to rebuild one training run exactly."""

    model: ModelConfig = Field(default_factory=ConvAEConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    contrastive: ContrastiveConfig = Field(default_factory=ContrastiveConfig)
    seed: Seed = 0


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """A run config from a YAML file, or the shipped run config of that bare name (`conv_ae`)."""
    raw = read_yaml(resolve(path, RUN_CONFIG))
    # An export carries metrics and provenance beside the run config; `train` reads only the run.
    run = {k: v for k, v in raw.items() if k in RunConfig.model_fields}
    # `finetune:` (aeopt finetune's section) is allowed too, so one file serves both commands.
    allowed = {*RunConfig.model_fields, "metrics", "provenance", "finetune"}
    unknown = [k for k in raw if k not in allowed]
    if unknown:
        refuse_study_spec(raw, path, RUN_CONFIG.command)
        message = unknown_key_message(unknown[0], list(RunConfig.model_fields))
        raise ConfigError(f"{path}: {unknown[0]}: {message}")
    run = apply_overrides(run, overrides or [], RunConfig)
    return validate(RunConfig, run, str(path))

