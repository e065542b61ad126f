"""A number for generation: the Frechet distance between real and generated images, measured on the
penultimate features of aeopt's own trained CNN (the `classifier.pt` that `aeopt baseline cnn` writes).

This is FID (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule...", NeurIPS 2017) with
the Inception network swapped for a CNN trained on the same dataset: each image set is summarised by
the mean and covariance of its features, and the distance between the two Gaussians is

    FD = ||mu1 - mu2||^2 + tr(C1) + tr(C2) - 2 tr((C1 C2)^(1/2))

(the 2-Wasserstein distance between the Gaussians; Dowson & Landau, 1982). Lower is better; 0 only
for identical statistics. Numbers are comparable only under the same CNN and the same number of
images (the estimate is biased upwards for small sets).

How each kind makes new images: the VAE samples its prior N(0, I), the adversarial AE its prior
(a Gaussian or a 10-Gaussian mixture), and an autoencoder without a prior (conv, denoising) a
Gaussian with full covariance fitted to the codes of its training images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aeopt.errors import AeoptError
from aeopt.training.checkpoint import load_classifier_checkpoint
from aeopt.training.kinds.aae import sample_prior
from aeopt.training.kinds.base import Autoencoder
from aeopt.training.supervised import BaselineCNN

N_IMAGES = 10_000  # test images, and as many generated ones
BATCH = 2000  # images per forward pass (features and decoding)


# ----- the distance --------------------------------------------------------------------------------


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [d] and covariance [d, d] (unbiased) of features [n, d], in float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need features [n >= 2, d], got shape {f.shape}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def _sqrt_psd(c: np.ndarray) -> np.ndarray:
    """The symmetric square root of a positive semi-definite matrix (tiny negative eigenvalues,
    round-off of a rank-deficient covariance, are cut to 0)."""
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """The Frechet distance between N(mu1, cov1) and N(mu2, cov2).

    tr((C1 C2)^(1/2)) is the sum of the square roots of the eigenvalues of C1 C2. That product is not
    symmetric, but it is similar to S C2 S with S = C1^(1/2), which is symmetric positive
    semi-definite: its eigenvalues come from `eigvalsh`, real and stable where a general
    `sqrtm` returns complex round-off for near-singular covariances.
    """
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    c1 = np.atleast_2d(np.asarray(cov1, dtype=np.float64))
    c2 = np.atleast_2d(np.asarray(cov2, dtype=np.float64))
    s1 = _sqrt_psd(c1)
    middle = s1 @ c2 @ s1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_sqrt = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu1 - mu2
    fd = float(diff @ diff) + float(np.trace(c1)) + float(np.trace(c2)) - 2.0 * tr_sqrt
    return max(fd, 0.0)  # round-off can leave -1e-12 for identical statistics


# ----- the feature network -------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureCNN:
    """The trained CNN whose penultimate layer (the input of its last linear layer) is the feature space."""

    model: BaselineCNN
    path: Path
    dataset: str
    test_acc: float | None

    @property
    def n_features(self) -> int:
        return int(self.model.classifier[-1].in_features)

    def describe(self) -> str:
        acc = f"test accuracy {self.test_acc:.4f}" if self.test_acc is not None else "test accuracy unknown"
        return f"{self.path} (aeopt baseline cnn on {self.dataset}, {acc}; {self.n_features} features)"


def load_feature_cnn(path: str | Path, device: torch.device | str,
                     option: str = "--fid-classifier") -> FeatureCNN:
    """The `classifier.pt` of `aeopt baseline cnn` (a file, or the `--out` folder holding it)."""
    p = Path(path)
    if p.is_dir():
        p = p / "classifier.pt"
    try:
        model, cfg, payload = load_classifier_checkpoint(p, device)
    except AeoptError as exc:
        raise AeoptError(f"{option} {exc}") from None
    if not isinstance(model, BaselineCNN):
        raise AeoptError(f"{option} {p} is a fine-tuned classifier; give the classifier.pt written by "
                         "`aeopt baseline cnn --out DIR`")
    acc = (payload.get("metrics") or {}).get("test_acc")
    return FeatureCNN(model.eval(), p, cfg.data.dataset, float(acc) if acc is not None else None)


def check_same_data(cnn: FeatureCNN, dataset: str, who: str, option: str = "--fid-classifier") -> None:
    """Refuse features from a CNN that never saw this kind of image: its distances would mean nothing."""
    if cnn.dataset != dataset:
        raise AeoptError(f"{option} {cnn.path} was trained on {cnn.dataset}, {who} on {dataset}; give a CNN "
                         f"trained on {dataset} (aeopt baseline cnn --set data.dataset={dataset} --out DIR)")


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def penultimate_features(cnn: BaselineCNN, x: torch.Tensor, batch: int = BATCH) -> np.ndarray:
    """Features [n, fc] of float images [n, 1, 28, 28] in [0, 1]: the CNN's last hidden layer (after its
    ReLU; dropout is off in eval mode), computed batch by batch on the CNN's device."""
    cnn.eval()
    dev = _device(cnn)
    hidden = cnn.classifier[:-1]
    out = [hidden(cnn.features(x[i : i + batch].to(dev).float())).double().cpu()
           for i in range(0, x.shape[0], batch)]
    return torch.cat(out).numpy()


class FrechetScorer:
    """The Frechet distance of image sets to one reference set (the test images), whose statistics
    are computed once."""

    def __init__(self, cnn: BaselineCNN, reference: torch.Tensor):
        self.cnn = cnn
        self.n_reference = int(reference.shape[0])
        self.reference = gaussian_stats(penultimate_features(cnn, reference))

    def __call__(self, images: torch.Tensor) -> float:
        return frechet_distance(*self.reference, *gaussian_stats(penultimate_features(self.cnn, images)))


# ----- new images from each kind -------------------------------------------------------------------


@torch.no_grad()
def encode_all(model: Autoencoder, x: torch.Tensor, batch: int = BATCH) -> torch.Tensor:
    """Codes [n, latent_dim] of images x (the VAE's mean code), batch by batch, in float32."""
    model.eval()
    dev = _device(model)
    return torch.cat([model.encode(x[i : i + batch].to(dev).float()).float()
                      for i in range(0, x.shape[0], batch)])


def fitted_gaussian_codes(codes: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n codes from a full-covariance Gaussian fitted to `codes` [m, d] (on the codes' device)."""
    c = codes.double()
    mean = c.mean(0)
    cov = torch.atleast_2d(torch.cov(c.T))
    # A small ridge keeps the Cholesky factor defined when a latent dimension is (nearly) unused.
    ridge = 1e-6 * max(float(torch.trace(cov)) / cov.shape[0], 1e-6)
    chol = torch.linalg.cholesky(cov + ridge * torch.eye(cov.shape[0], dtype=c.dtype, device=c.device))
    eps = torch.randn(n, c.shape[1], generator=generator, dtype=c.dtype).to(c.device)
    return (mean + eps @ chol.T).float()


def _standard_normal(model: Autoencoder, n: int, g: torch.Generator) -> torch.Tensor:
    return torch.randn(n, model.latent_dim, generator=g)


def _aae_prior(model: Autoencoder, n: int, g: torch.Generator) -> torch.Tensor:
    return sample_prior(model.cfg, n, generator=g)


# The kinds with a prior to sample, and what the page says about it; the others get a fitted Gaussian.
Sampler = Callable[[Autoencoder, int, torch.Generator], torch.Tensor]
PRIORS: dict[str, tuple[Sampler, Callable[[Any], str]]] = {
    "vae": (_standard_normal, lambda _cfg: "its prior N(0, I)"),
    "aae": (_aae_prior, lambda cfg: "its prior, " + _categories(cfg)
            + ("N(0, I)" if cfg.prior == "gaussian" else "a mixture of 10 Gaussians")),
}


def _categories(cfg: Any) -> str:
    n = getattr(cfg, "categories", 0)
    return f"one of {n} categories (one-hot, uniform) and " if n else ""
FITTED = "a full-covariance Gaussian fitted to the codes of its training images"


def how_sampled(model: Autoencoder) -> str:
    """Where a kind's new codes come from, in words."""
    prior = PRIORS.get(model.cfg.kind)
    return prior[1](model.cfg) if prior else FITTED


@torch.no_grad()
def decode_all(model: Autoencoder, z: torch.Tensor, batch: int = BATCH) -> torch.Tensor:
    """Images [n, 1, 28, 28] in [0, 1] decoded from codes z, batch by batch on the model's device."""
    model.eval()
    dev = _device(model)
    return torch.cat([model.decode(z[i : i + batch].to(dev)).float().clamp(0, 1)
                      for i in range(0, z.shape[0], batch)])


def generate(model: Autoencoder, n: int, *, train_x: torch.Tensor | None = None,
             seed: int = 0) -> torch.Tensor:
    """n new images from `model`: decoded prior samples, or (a kind without a prior) decoded samples
    of a Gaussian fitted to the codes of `train_x`."""
    g = torch.Generator().manual_seed(seed)
    prior = PRIORS.get(model.cfg.kind)
    if prior is not None:
        z = prior[0](model, n, g)
    else:
        if train_x is None:
            raise ValueError(f"a {model.cfg.kind} has no prior: pass train_x to fit a Gaussian to its codes")
        z = fitted_gaussian_codes(encode_all(model, train_x), n, g)
    return decode_all(model, z)
