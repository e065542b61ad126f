"""Reconstruction losses, looked up by model kind: MSE per pixel for the conv and denoising
autoencoders, the negative ELBO per image for the VAE (`aeopt.training.kinds` holds each)."""

from __future__ import annotations

import torch

from aeopt.training.kinds import Autoencoder, kind_of
from aeopt.training.kinds.vae import vae_loss


def reconstruction_loss(model: Autoencoder, x_in: torch.Tensor, target: torch.Tensor,
                        beta: float | None = None) -> torch.Tensor:
    """The loss of `model` on inputs `x_in` against clean `target` (a batch mean).

    For the VAE, `beta` defaults to the model's training beta; evaluation passes 1.0 so that
    validation losses are the plain negative ELBO and comparable across beta values.
    """
    return kind_of(model).loss(model, x_in, target, beta=beta)


__all__ = ["reconstruction_loss", "vae_loss"]
