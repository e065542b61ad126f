"""The variational autoencoder kind `vae` (Kingma & Welling, 2014): a fully connected encoder to
(mu, log-variance), the reparameterization trick, and the negative ELBO as its loss."""

from __future__ import annotations

import torch
from torch import nn

from aeopt.config import VAEConfig
from aeopt.training.kinds.base import Autoencoder, Kind, activation, normal_like
from aeopt.training.kinds.bce import bce_with_logits_sum


class VAEEncoder(nn.Module):
    """784 -> hidden1 -> hidden2 -> (mu, log-variance). `forward` gives mu, the code to reuse."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(28 * 28, cfg.hidden1),
            activation(cfg.activation),
            nn.Linear(cfg.hidden1, cfg.hidden2),
            activation(cfg.activation),
        )
        self.mu = nn.Linear(cfg.hidden2, cfg.latent_dim)
        self.logvar = nn.Linear(cfg.hidden2, cfg.latent_dim)

    def stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.mu(h), self.logvar(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mu(self.body(x))


class VAE(Autoencoder):
    """Fully connected VAE with the reparameterization trick (Kingma & Welling, 2014)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = VAEEncoder(cfg)
        self.decoder_logits = nn.Sequential(
            nn.Linear(cfg.latent_dim, cfg.hidden2),
            activation(cfg.activation),
            nn.Linear(cfg.hidden2, cfg.hidden1),
            activation(cfg.activation),
            nn.Linear(cfg.hidden1, 28 * 28),
            nn.Unflatten(1, (1, 28, 28)),
        )

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        # z = mu + sigma * eps keeps the sample differentiable in mu and sigma.
        if not self.training:
            return mu
        return mu + torch.exp(0.5 * logvar) * normal_like(mu)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder_logits(z))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns decoder logits (BCE-with-logits is stable under mixed precision), mu, logvar."""
        mu, logvar = self.encoder.stats(x)
        return self.decoder_logits(self.reparameterize(mu, logvar)), mu, logvar


def vae_loss(logits: torch.Tensor, target: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
             beta: float) -> torch.Tensor:
    """Negative ELBO per image: BCE summed over pixels + beta * KL(q(z|x) || N(0, I)).

    The KL term has the closed form -1/2 * sum(1 + log sigma^2 - mu^2 - sigma^2)
    (Kingma & Welling, "Auto-Encoding Variational Bayes", 2014, Appendix B); beta weights it
    as in Higgins et al., "beta-VAE", 2017 (beta = 1 is the plain ELBO).
    """
    bce = bce_with_logits_sum(logits.float(), target.float())
    kl = -0.5 * torch.sum(1 + logvar.float() - mu.float().pow(2) - logvar.float().exp())
    return (bce + beta * kl) / target.shape[0]


def negative_elbo(model: nn.Module, x_in: torch.Tensor, target: torch.Tensor, *,
                  beta: float | None = None) -> torch.Tensor:
    """`vae_loss` of the model's forward pass; `beta` None is the model's training beta."""
    logits, mu, logvar = model(x_in)
    return vae_loss(logits, target, mu, logvar, model.cfg.beta if beta is None else beta)


KINDS = (Kind("vae", VAEConfig, build=VAE, loss=negative_elbo),)
