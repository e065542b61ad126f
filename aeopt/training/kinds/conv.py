"""The convolutional autoencoder kinds: `conv_ae`, and `denoising_ae` (the same model trained on
noisy inputs against clean targets). Loss: mean squared error per pixel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aeopt.config import ConvAEConfig
from aeopt.training.kinds.base import Autoencoder, Dropout, Kind, activation
from aeopt.training.kinds.transposed import Stride2Transposed


def _conv_block(conv: nn.Module, channels: int, cfg: ConvAEConfig) -> list[nn.Module]:
    act = activation(cfg.activation)
    # In place: a convolution's and a batch norm's backward need their inputs, not their outputs, so
    # the map can be overwritten instead of allocated anew (1-2 % of a CPU step of the report's network).
    # Only where the gradient from the output is exact: (leaky) ReLU's sign; not ELU's out + alpha.
    if isinstance(act, (nn.ReLU, nn.LeakyReLU)):
        act.inplace = True
    return [conv] + ([nn.BatchNorm2d(channels)] if cfg.batch_norm else []) + [act]


class ConvAutoencoder(Autoencoder):
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
            activation(cfg.activation),
            Dropout(cfg.dropout),
            nn.Linear(cfg.fc, cfg.latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(cfg.latent_dim, cfg.fc),
            activation(cfg.activation),
            Dropout(cfg.dropout),
            nn.Linear(cfg.fc, 3 * 3 * c3),
            activation(cfg.activation),
            nn.Unflatten(1, (c3, 3, 3)),
            # nn.ConvTranspose2d(c, c', 3, stride=2, ...), faster on the CPU where it measures so
            *_conv_block(Stride2Transposed(c3, c2), c2, cfg),
            *_conv_block(Stride2Transposed(c2, c1, padding=1, output_padding=1), c1, cfg),
            Stride2Transposed(c1, 1, padding=1, output_padding=1),
            nn.Sigmoid(),
        )

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def pixel_mse(model: nn.Module, x_in: torch.Tensor, target: torch.Tensor, *,
              beta: float | None = None) -> torch.Tensor:  # noqa: ARG001 (the kinds' loss signature; no KL term)
    return F.mse_loss(model(x_in).float(), target.float())


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # model(x), not decode(encode(x)): the same numbers, and it also works for a stand-in module
    # that binds other weights to the architecture (the fused fold trainer's).
    return model(x)


def _input_noise(cfg: ConvAEConfig) -> float:
    return cfg.noise_std  # 0 for conv_ae, > 0 for denoising_ae (the schema checks both)


KINDS = tuple(
    Kind(name, ConvAEConfig, build=ConvAutoencoder, loss=pixel_mse, reconstruct=_forward,
         noise_std=_input_noise)
    for name in ("conv_ae", "denoising_ae")
)
