"""The adversarial autoencoder kind, `aae` (Makhzani et al., "Adversarial Autoencoders", ICLR 2016).

The conv AE's encoder and decoder, plus a discriminator on the code. Each batch takes three steps,
each with its own optimizer:
1. reconstruction: encoder and decoder minimize the pixel MSE (the trainer's optimizer, with the
   run's `optim` settings);
2. discriminator: tell prior samples (label 1) from codes of the batch (label 0);
3. generator: the encoder makes its codes pass as prior samples.
With `image_critic` > 0 (`aae_critic.py`), the reconstruction step also asks the decoder to make
decoded prior samples pass an image critic, which then takes its own step against training images.
The adversarial optimizers are Adam with beta1 = 0.5 (the usual GAN setting): the
discriminator's at `disc_lr`, the generator's at `adv_weight * disc_lr`. `adv_weight` scales that
learning rate, not the loss: Adam divides a loss's scale out of its steps, so a weight on the
generator's loss changed nothing between 0.005 and 1 (only 0, no gradient, switched it off).

The validation loss, which studies minimize, is the reconstruction MSE alone; `prior_mmd` says how
far the codes are from the prior, so that a search cannot win by turning the adversarial term off.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from aeopt.config import AAEConfig, ConvAEConfig
from aeopt.training.kinds.aae_critic import critic_step, decoder_adversarial_loss, image_critic
from aeopt.training.kinds.base import Autoencoder, Kind, StepContext
from aeopt.training.kinds.conv import ConvAutoencoder, pixel_mse
from aeopt.training.layout import adam

MIXTURE_COMPONENTS = 10
MIXTURE_RADIUS = 4.0  # distance of the mixture's means from the origin
MIXTURE_STD = 0.5  # the components' std in the two dimensions the means spread over


class CategoricalEncoder(nn.Module):
    """The semi-supervised AAE's encoder: a shared trunk, then a softmax over `categories` (y) and a
    style code (z); calling it gives [softmax(y), z], the code the decoder and the discriminator see."""

    def __init__(self, trunk: nn.Module, style: nn.Module, logits: nn.Module):
        super().__init__()
        self.trunk, self.style, self.logits_head = trunk, style, logits

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_head(self.trunk(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x)
        return torch.cat([self.logits_head(h).softmax(1), self.style(h)], 1)


class AdversarialAutoencoder(Autoencoder):
    def __init__(self, cfg: AAEConfig):
        super().__init__()
        self.cfg = cfg
        conv_fields = {k: v for k, v in cfg.model_dump().items() if k in ConvAEConfig.model_fields}
        code = code_dim(cfg)
        conv = ConvAutoencoder(ConvAEConfig.model_validate({**conv_fields, "kind": "conv_ae",
                                                            "latent_dim": code}))
        self.encoder, self.decoder = conv.encoder, conv.decoder
        standardize = cfg.code_norm and cfg.prior == "gaussian"
        norm = [nn.BatchNorm1d(cfg.latent_dim, affine=False)] if standardize else []
        # Standardized codes (zero mean, unit variance per dimension over the batch; running
        # statistics at evaluation): the adversarial steps no longer have to move the codes' scale
        # and offset against the reconstruction's pull, and cannot collapse them to a point.
        if cfg.categories:
            trunk = conv.encoder[:-1]  # up to the fc layer's activation and dropout
            self.encoder = CategoricalEncoder(trunk, nn.Sequential(nn.Linear(cfg.fc, cfg.latent_dim), *norm),
                                              nn.Linear(cfg.fc, cfg.categories))
        else:
            self.encoder.extend(norm)
        h = cfg.disc_hidden
        self.discriminator = nn.Sequential(nn.Linear(code, h), nn.LeakyReLU(0.2),
                                           nn.Linear(h, h), nn.LeakyReLU(0.2), nn.Linear(h, 1))
        self.image_critic = image_critic(cfg.image_critic) if cfg.image_critic else None

    @property
    def latent_dim(self) -> int:
        return code_dim(self.cfg)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def code_dim(cfg: AAEConfig) -> int:
    """The width of the code the decoder takes: the style code, plus the categories' softmax."""
    return cfg.latent_dim + cfg.categories


def sample_prior(cfg: AAEConfig, n: int, *, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """n codes from the model's prior, [n, code_dim(cfg)]: with categories, [one-hot y, style z]."""
    z = torch.randn(n, cfg.latent_dim, device=device, generator=generator)
    if cfg.categories:  # one-hot categories, uniform, beside the style code's prior
        y = torch.randint(0, cfg.categories, (n,), device=device, generator=generator)
        one_hot = F.one_hot(y, cfg.categories).to(z.dtype)
        return torch.cat([one_hot, _style_prior(cfg, z, device, generator)], 1)
    return _style_prior(cfg, z, device, generator)


def _style_prior(cfg: AAEConfig, z: torch.Tensor, device: torch.device | str,
                 generator: torch.Generator | None) -> torch.Tensor:
    if cfg.prior == "gaussian":
        return z
    n = z.shape[0]
    component = torch.randint(0, MIXTURE_COMPONENTS, (n,), device=device, generator=generator)
    angle = component.float() * (2 * math.pi / MIXTURE_COMPONENTS)
    z[:, 0] = MIXTURE_RADIUS * torch.cos(angle) + MIXTURE_STD * z[:, 0]
    z[:, 1] = MIXTURE_RADIUS * torch.sin(angle) + MIXTURE_STD * z[:, 1]
    return z


def prior_mmd(codes: torch.Tensor, prior: torch.Tensor) -> float:
    """Squared maximum mean discrepancy between codes and prior samples (Gretton et al., JMLR 2012),
    with a sum of Gaussian kernels over several bandwidths (robust to the codes' scale); 0 when the
    two samples come from one distribution, larger the further apart they are."""
    x, y = codes.float(), prior.float().to(codes.device)
    scale = torch.cat([x, y]).var(0).sum().clamp_min(1e-6)
    total = torch.zeros((), device=x.device)
    for bandwidth in (0.2, 0.5, 1.0, 2.0, 5.0):
        gamma = 1.0 / (2 * bandwidth * scale)
        kxx = torch.exp(-gamma * torch.cdist(x, x).pow(2)).mean()
        kyy = torch.exp(-gamma * torch.cdist(y, y).pow(2)).mean()
        kxy = torch.exp(-gamma * torch.cdist(x, y).pow(2)).mean()
        total = total + kxx + kyy - 2 * kxy
    return float(total)


def _adversarial_optimizers(model: AdversarialAutoencoder) -> tuple[torch.optim.Optimizer, ...]:
    cfg = model.cfg
    critic = model.image_critic
    return (adam(model.discriminator.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.999)),
            adam(model.encoder.parameters(), lr=cfg.adv_weight * cfg.disc_lr, betas=(0.5, 0.999)),
            adam(critic.parameters(), lr=cfg.critic_lr, betas=(0.5, 0.999)) if critic else None)


def adversarial_step(kind: Kind, ctx: StepContext, x_in: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Reconstruction, discriminator and generator steps on one batch; returns the reconstruction loss."""
    model: AdversarialAutoencoder = ctx.model
    if "aae_optimizers" not in ctx.kind_state:
        ctx.kind_state["aae_optimizers"] = _adversarial_optimizers(model)
    disc_opt, gen_opt, critic_opt = ctx.kind_state["aae_optimizers"]
    real = sample_prior(model.cfg, x_in.shape[0], device=x_in.device, generator=ctx.generator)
    with ctx.autocast():
        recon = kind.loss(model, x_in, target)
        loss = recon
        if critic_opt is not None:  # the decoder also makes its prior samples pass the image critic
            samples = model.decoder(real)
            loss = recon + model.cfg.image_adv_weight * decoder_adversarial_loss(model.image_critic, samples)
    ctx.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    ctx.optimizer.step()
    if critic_opt is not None:
        with ctx.autocast():
            critic_step(model.image_critic, critic_opt, target, samples)

    with ctx.autocast():
        fake = model.encoder(x_in).detach()
        logits = model.discriminator(torch.cat([real, fake])).float().squeeze(1)
    # Made on the device: built on the host, they were a blocking copy every step on a GPU.
    labels = torch.cat([torch.ones(real.shape[0], device=x_in.device),
                        torch.zeros(fake.shape[0], device=x_in.device)])
    disc_opt.zero_grad(set_to_none=True)
    F.binary_cross_entropy_with_logits(logits, labels).backward()
    disc_opt.step()

    if model.cfg.adv_weight == 0:  # the adversarial term off: a plain AE with a discriminator watching
        return recon.detach()
    with ctx.autocast():
        fooled = model.discriminator(model.encoder(x_in)).float().squeeze(1)
    gen_loss = F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
    gen_opt.zero_grad(set_to_none=True)
    model.discriminator.requires_grad_(False)  # the generator step moves the encoder only
    gen_loss.backward()
    model.discriminator.requires_grad_(True)
    gen_opt.step()
    return recon.detach()


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


MMD_SAMPLE = 2000  # codes compared with as many prior samples (the kernel matrices grow with its square)


@torch.no_grad()
def prior_penalty(model: AdversarialAutoencoder, x_val: torch.Tensor) -> tuple[float, dict[str, float]]:
    """(penalty, {"prior_mmd": MMD}) of the model's validation codes against its prior; the penalty
    is mmd_weight * max(0, MMD - mmd_tolerance), in the units of the validation loss.

    Why a penalty on the value rather than an Optuna constraint: the value is what every part of a
    study ranks by (pruning aside: Hyperband sees the reconstruction loss per epoch), and Optuna's
    `best_trial`, the export and the dashboard ignore constraints."""
    was_training = model.training
    model.eval()
    g = torch.Generator(device="cpu").manual_seed(0)
    idx = torch.randperm(x_val.shape[0], generator=g)[:MMD_SAMPLE].to(x_val.device)
    codes = model.encode(x_val[idx]).float()
    prior = sample_prior(model.cfg, codes.shape[0], generator=g).to(codes.device)
    model.train(was_training)
    mmd = prior_mmd(codes, prior)
    cfg = model.cfg
    return cfg.mmd_weight * max(0.0, mmd - cfg.mmd_tolerance), {"prior_mmd": mmd}


KINDS = (Kind("aae", AAEConfig, build=AdversarialAutoencoder, loss=pixel_mse, reconstruct=_forward,
              train_step=adversarial_step, score=prior_penalty),)
