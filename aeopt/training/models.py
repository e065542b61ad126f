"""The report's three autoencoders, each with an `encoder` the fine-tune stage reuses."""

from __future__ import annotations

import torch
from torch import nn

from aeopt.config import ConvAEConfig, RunConfig, VAEConfig

_ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU}


def _act(name: str) -> nn.Module:
    return _ACTIVATIONS[name]()


def _conv_block(conv: nn.Module, channels: int, cfg: ConvAEConfig) -> list[nn.Module]:
    return [conv] + ([nn.BatchNorm2d(channels)] if cfg.batch_norm else []) + [_act(cfg.activation)]


class ConvAutoencoder(nn.Module):
    """Encoder: 3 convolutions (28 -> 14 -> 7 -> 3) and 2 linear layers; decoder mirrored.

    The layout is the course lab's: stride-2 3x3 convolutions, the last one unpadded, so the
    flattened feature map is 3 x 3 x c3.
    """

    def __init__(self, cfg: ConvAEConfig):
        super().__init__()
        self.cfg = cfg
        c1, c2, c3 = cfg.c1, cfg.c2, cfg.c3
        self.encoder = nn.Sequential(
            *_conv_block(nn.Conv2d(1, c1, 3, stride=2, padding=1), c1, cfg),
            *_conv_block(nn.Conv2d(c1, c2, 3, stride=2, padding=1), c2, cfg),
            *_conv_block(nn.Conv2d(c2, c3, 3, stride=2, padding=0), c3, cfg),
            nn.Flatten(),
            nn.Linear(3 * 3 * c3, cfg.fc),
            _act(cfg.activation),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.fc, cfg.latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(cfg.latent_dim, cfg.fc),
            _act(cfg.activation),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.fc, 3 * 3 * c3),
            _act(cfg.activation),
            nn.Unflatten(1, (c3, 3, 3)),
            *_conv_block(nn.ConvTranspose2d(c3, c2, 3, stride=2, output_padding=0), c2, cfg),
            *_conv_block(nn.ConvTranspose2d(c2, c1, 3, stride=2, padding=1, output_padding=1), c1, cfg),
            nn.ConvTranspose2d(c1, 1, 3, stride=2, padding=1, output_padding=1),
            nn.Sigmoid(),
        )

    @property
    def latent_dim(self) -> int:
        return self.cfg.latent_dim

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class VAEEncoder(nn.Module):
    """784 -> hidden1 -> hidden2 -> (mu, log-variance). `forward` gives mu, the code to reuse."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(28 * 28, cfg.hidden1),
            _act(cfg.activation),
            nn.Linear(cfg.hidden1, cfg.hidden2),
            _act(cfg.activation),
        )
        self.mu = nn.Linear(cfg.hidden2, cfg.latent_dim)
        self.logvar = nn.Linear(cfg.hidden2, cfg.latent_dim)

    def stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.mu(h), self.logvar(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mu(self.body(x))


class VAE(nn.Module):
    """Fully connected VAE with the reparameterization trick (Kingma & Welling, 2014)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = VAEEncoder(cfg)
        self.decoder_logits = nn.Sequential(
            nn.Linear(cfg.latent_dim, cfg.hidden2),
            _act(cfg.activation),
            nn.Linear(cfg.hidden2, cfg.hidden1),
            _act(cfg.activation),
            nn.Linear(cfg.hidden1, 28 * 28),
            nn.Unflatten(1, (1, 28, 28)),
        )

    @property
    def latent_dim(self) -> int:
        return self.cfg.latent_dim

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        # z = mu + sigma * eps keeps the sample differentiable in mu and sigma.
        if not self.training:
            return mu
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder_logits(z))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns decoder logits (BCE-with-logits is stable under mixed precision), mu, logvar."""
        mu, logvar = self.encoder.stats(x)
        return self.decoder_logits(self.reparameterize(mu, logvar)), mu, logvar


Autoencoder = ConvAutoencoder | VAE


def build_model(cfg: RunConfig | ConvAEConfig | VAEConfig) -> Autoencoder:
    mcfg = cfg.model if isinstance(cfg, RunConfig) else cfg
    if isinstance(mcfg, VAEConfig):
        return VAE(mcfg)
    return ConvAutoencoder(mcfg)


def reconstruct(model: Autoencoder, x: torch.Tensor) -> torch.Tensor:
    """Reconstructions in [0, 1] (the VAE decodes its mean code)."""
    if isinstance(model, VAE):
        return model.decode(model.encode(x))
    return model(x)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
