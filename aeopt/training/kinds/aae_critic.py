"""The AAE's optional image critic (`model.image_critic` > 0), after Rosca et al., "Variational
Approaches for Auto-Encoding Generative Adversarial Networks" (alpha-GAN, 2017): beside the code
discriminator, a second discriminator tells training images from decoded prior samples, and the
decoder learns to make its samples pass.

Why: the code discriminator makes the aggregate of the codes look like the prior, batch by batch,
but says nothing of what the decoder makes of a prior sample that falls between training codes;
decoded, such samples are blurred blends, and that is what a Frechet distance of new images
measures. The critic scores the decoded samples themselves.

The decoder's part joins the reconstruction step as `image_adv_weight` times the non-saturating GAN
loss (a sum of two losses, so the weight sets their balance); the critic has its own Adam.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def image_critic(width: int) -> nn.Module:
    """28 x 28 images -> one logit: two stride-2 convolutions (28 -> 14 -> 7) and a linear layer,
    spectrally normalized (Miyato et al. 2018) so the critic stays smooth and the decoder's
    gradients stay useful while the critic wins."""
    return nn.Sequential(
        spectral_norm(nn.Conv2d(1, width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
        spectral_norm(nn.Conv2d(width, 2 * width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
        nn.Flatten(), spectral_norm(nn.Linear(2 * width * 7 * 7, 1)),
    )


def decoder_adversarial_loss(critic: nn.Module, samples: torch.Tensor) -> torch.Tensor:
    """The decoder's non-saturating loss, -log D(samples); the critic's weights get no gradient."""
    critic.requires_grad_(False)
    try:
        logits = critic(samples).float().squeeze(1)
    finally:
        critic.requires_grad_(True)
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


def critic_step(critic: nn.Module, optimizer: torch.optim.Optimizer, real: torch.Tensor,
                samples: torch.Tensor) -> torch.Tensor:
    """One step of the critic: training images (label 1) against decoded samples (label 0); returns
    its loss as a tensor (a float would wait for the GPU every step)."""
    logits = critic(torch.cat([real, samples.detach()])).float().squeeze(1)
    labels = torch.cat([torch.ones(real.shape[0], device=logits.device),
                        torch.zeros(samples.shape[0], device=logits.device)])
    loss = F.binary_cross_entropy_with_logits(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()
