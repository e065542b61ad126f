"""Reconstruction losses: MSE for the conv and denoising autoencoders, the negative ELBO for the VAE."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from aeopt.training.models import VAE, Autoencoder


def vae_loss(logits: torch.Tensor, target: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float) -> torch.Tensor:
    """Negative ELBO per image: BCE summed over pixels + beta * KL(q(z|x) || N(0, I)).

    The KL term has the closed form -1/2 * sum(1 + log sigma^2 - mu^2 - sigma^2)
    (Kingma & Welling, "Auto-Encoding Variational Bayes", 2014, Appendix B); beta weights it
    as in Higgins et al., "beta-VAE", 2017 (beta = 1 is the plain ELBO).
    """
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar.float() - mu.float().pow(2) - logvar.float().exp())
    return (bce + beta * kl) / target.shape[0]


def reconstruction_loss(model: Autoencoder, x_in: torch.Tensor, target: torch.Tensor, beta: float | None = None) -> torch.Tensor:
    """The loss of `model` on inputs `x_in` against clean `target` (a batch mean).

    For the VAE, `beta` defaults to the model's training beta; evaluation passes 1.0 so that
    validation losses are the plain negative ELBO and comparable across beta values.
    """
    if isinstance(model, VAE):
        logits, mu, logvar = model(x_in)
        return vae_loss(logits, target, mu, logvar, model.cfg.beta if beta is None else beta)
    return F.mse_loss(model(x_in).float(), target.float())
