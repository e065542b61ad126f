"""The autoencoders, one per model kind, and the lookups every caller uses.

The models themselves live with their kinds (`aeopt.training.kinds`: `conv.py`, `vae.py`); this
module keeps the names callers import, and `build_model` / `reconstruct` look the kind up.
"""

from __future__ import annotations

import torch
from torch import nn

from aeopt.config import ModelConfig, RunConfig
from aeopt.training.kinds import Autoencoder, kind_of
from aeopt.training.kinds.conv import ConvAutoencoder
from aeopt.training.kinds.vae import VAE, VAEEncoder


def build_model(cfg: RunConfig | ModelConfig) -> Autoencoder:
    """A fresh model for a run config or its `model:` section."""
    mcfg = cfg.model if isinstance(cfg, RunConfig) else cfg
    return kind_of(mcfg).build(mcfg)


def reconstruct(model: Autoencoder, x: torch.Tensor) -> torch.Tensor:
    """Reconstructions in [0, 1] (the VAE decodes its mean code)."""
    return kind_of(model).reconstruct(model, x)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "VAE", "Autoencoder", "ConvAutoencoder", "VAEEncoder", "build_model", "count_parameters", "reconstruct",
]
