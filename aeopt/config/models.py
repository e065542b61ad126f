"""Model schemas: one config class per model kind (the `model:` section of a run config).

A schema here is one third of a kind; its model, loss and training step live in
`aeopt.training.kinds` (see there for what adding a kind touches). `ModelConfig` is the union
the `model:` section is validated against: a new schema class joins it.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field, model_validator

from aeopt.config.base import Strict

Activation = Literal["relu", "leaky_relu", "elu", "gelu", "silu"]


class ConvAEConfig(Strict):
    """The report's convolutional autoencoder; `denoising_ae` trains it on noisy inputs."""

    kind: Literal["conv_ae", "denoising_ae"] = "conv_ae"
    c1: int = Field(16, ge=1, le=512)
    c2: int = Field(32, ge=1, le=512)
    c3: int = Field(32, ge=1, le=512)
    fc: int = Field(32, ge=1, le=4096)
    latent_dim: int = Field(10, ge=1, le=1024)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    activation: Activation = "relu"
    batch_norm: bool = False
    # Std of the Gaussian noise added to training inputs (denoising_ae only; 0 for conv_ae).
    noise_std: float = Field(0.0, ge=0.0, le=2.0)

    @model_validator(mode="after")
    def _noise_matches_kind(self) -> ConvAEConfig:
        if self.kind == "denoising_ae" and self.noise_std <= 0:
            raise ValueError("noise_std must be > 0 for a denoising_ae (try 0.3)")
        if self.kind == "conv_ae" and self.noise_std != 0:
            raise ValueError("noise_std is only for kind: denoising_ae; set it to 0 or change kind")
        return self


class VAEConfig(Strict):
    """The report's fully connected VAE: 784 -> hidden1 -> hidden2 -> (mu, logvar)."""

    kind: Literal["vae"] = "vae"
    hidden1: int = Field(512, ge=1, le=8192)
    hidden2: int = Field(256, ge=1, le=8192)
    latent_dim: int = Field(2, ge=1, le=1024)
    activation: Activation = "relu"
    # Weight of the KL term (beta-VAE, Higgins et al. 2017); 1.0 is the plain ELBO.
    beta: float = Field(1.0, ge=0.0, le=100.0)


class AAEConfig(Strict):
    """An adversarial autoencoder (Makhzani et al., "Adversarial Autoencoders", ICLR 2016): the conv
    AE's encoder and decoder, and a discriminator that pushes the codes towards a prior."""

    kind: Literal["aae"] = "aae"
    c1: int = Field(16, ge=1, le=512)
    c2: int = Field(32, ge=1, le=512)
    c3: int = Field(32, ge=1, le=512)
    fc: int = Field(64, ge=1, le=4096)
    latent_dim: int = Field(10, ge=2, le=1024)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    activation: Activation = "relu"
    batch_norm: bool = False
    # The distribution the codes are pushed towards: N(0, I), or a mixture of 10 Gaussians whose
    # means sit on a circle in the first two code dimensions (Makhzani et al.'s 2-D mixture).
    prior: Literal["gaussian", "mixture10"] = "gaussian"
    # With the Gaussian prior, the encoder's last layer is a batch norm without scale and shift, so
    # the codes have the prior's mean and variance from the first step and the discriminator shapes
    # the rest; without it, 3 epochs left the codes far from N(0, I) (MMD 1.8) or collapsed them.
    code_norm: bool = True
    disc_hidden: int = Field(256, ge=4, le=8192)  # two hidden layers of this width
    disc_lr: float = Field(2e-4, gt=0.0, le=1.0)  # the discriminator's and the encoder's adversarial steps
    # The generator step's learning rate is adv_weight * disc_lr (a weight on its loss would be divided
    # out by Adam); 0 switches the adversarial term off.
    adv_weight: float = Field(1.0, ge=0.0, le=100.0)
    # An image critic beside the code discriminator (alpha-GAN, Rosca et al. 2017;
    # aeopt/training/kinds/aae_critic.py): its width (0: none), its Adam learning rate, and the
    # weight of the decoder's adversarial loss on decoded prior samples beside the pixel MSE.
    image_critic: int = Field(0, ge=0, le=1024)
    critic_lr: float = Field(2e-4, gt=0.0, le=1.0)
    image_adv_weight: float = Field(0.01, ge=0.0, le=100.0)
    # A search must not win by switching the adversarial term off: a study adds
    # mmd_weight * max(0, MMD(validation codes, prior) - mmd_tolerance) to the trial's value.
    mmd_tolerance: float = Field(0.05, ge=0.0)
    mmd_weight: float = Field(1.0, ge=0.0)
    # The semi-supervised AAE (Makhzani et al., sec. 5): > 0 gives the encoder a second head, a
    # softmax over this many categories (y), beside the style code (latent_dim); the decoder takes
    # both, and the prior is one-hot categorical times the code prior. With labels, `aeopt baseline
    # few-labels` trains y as the classifier (aeopt/training/kinds/aae_ssl.py). 0: the plain AAE.
    categories: int = Field(0, ge=0, le=1000)
    # With categories and labels: training steps of that semi-supervised phase, from the trained
    # model, per label draw (one unlabelled and one labelled batch each; validation labels pick the step).
    ssl_steps: int = Field(600, ge=1, le=1_000_000)


# A new kind's schema joins this union; the `kind` field picks the schema.
ModelConfig = Annotated[ConvAEConfig | VAEConfig | AAEConfig, Field(discriminator="kind")]
MODEL_SCHEMAS: tuple[type[Strict], ...] = get_args(get_args(ModelConfig)[0])
# Every `model.kind` value a config may name, in schema order.
MODEL_KINDS: tuple[str, ...] = tuple(
    kind for schema in MODEL_SCHEMAS for kind in get_args(schema.model_fields["kind"].annotation)
)
