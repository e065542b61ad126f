"""The report's analyses as numbers: latent codes and their 2-D maps, new samples, denoising errors.

No plotting here (the report's section modules draw), so every function is usable and testable on its own.
All image tensors are float [n, 1, 28, 28] in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from aeopt.training.data import add_noise
from aeopt.training.engine import EVAL_BATCH, mse
from aeopt.training.models import VAE, Autoencoder, reconstruct


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def latent_codes(model: Autoencoder, x: torch.Tensor) -> np.ndarray:
    """Codes of images `x` as [n, latent_dim] (the VAE's mean code mu)."""
    model.eval()
    dev = _device(model)
    out = [model.encode(x[i : i + EVAL_BATCH].to(dev)).float().cpu()
           for i in range(0, x.shape[0], EVAL_BATCH)]
    return torch.cat(out).numpy()


@torch.no_grad()
def decode(model: Autoencoder, z: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Images decoded from codes z [n, latent_dim]."""
    model.eval()
    z = torch.as_tensor(np.asarray(z, dtype=np.float32)).to(_device(model))
    return model.decode(z).float().clamp(0, 1).cpu()


# ----- 2-D maps of the latent space ----------------------------------------------------------------


def pca_2d(codes: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """The codes projected on their first two principal components, and the variance each explains.

    A 1-D latent space gets a zero second coordinate, so every map is 2-D.
    """
    k = min(2, codes.shape[1], codes.shape[0])
    pca = PCA(n_components=k, random_state=0)
    emb = pca.fit_transform(codes)
    ratios = [float(r) for r in pca.explained_variance_ratio_]
    if k < 2:
        emb = np.hstack([emb, np.zeros((emb.shape[0], 2 - k))])
        ratios += [0.0] * (2 - k)
    return emb, ratios


def tsne_2d(codes: np.ndarray, seed: int = 0) -> np.ndarray:
    """A t-SNE map of the codes (van der Maaten & Hinton, 2008), seeded so reports repeat."""
    n = codes.shape[0]
    # Perplexity must stay below the number of points; 30 is the usual value for thousands.
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    # The PCA start needs two features to give two coordinates: a 1-D latent space starts at random.
    init = "pca" if codes.shape[1] >= 2 else "random"
    tsne = TSNE(n_components=2, perplexity=perplexity, init=init, random_state=seed, max_iter=750)
    return tsne.fit_transform(codes.astype(np.float32))


# ----- new samples -------------------------------------------------------------------------------


@dataclass
class Gaussian:
    """A full-covariance Gaussian over latent codes."""

    mean: np.ndarray
    cov: np.ndarray

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return rng.multivariate_normal(self.mean, self.cov, size=n, method="cholesky")


def fit_gaussian(codes: np.ndarray) -> Gaussian:
    """A Gaussian fitted to training codes: a plain autoencoder has no prior to sample from, so
    new codes are drawn from where the training codes lie."""
    mean = codes.mean(axis=0)
    cov = np.atleast_2d(np.cov(codes, rowvar=False))
    # A small ridge keeps the Cholesky factor defined when a latent dimension is (nearly) unused.
    cov = cov + 1e-6 * max(float(np.trace(cov)) / cov.shape[0], 1e-6) * np.eye(cov.shape[0])
    return Gaussian(mean, cov)


def gaussian_samples(model: Autoencoder, train_codes: np.ndarray, n: int, seed: int = 0) -> torch.Tensor:
    return decode(model, fit_gaussian(train_codes).sample(n, seed))


@torch.no_grad()
def interpolate(model: Autoencoder, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """Images decoded along the straight line between the codes of two images [1, 1, 28, 28]."""
    za, zb = latent_codes(model, x_a)[0], latent_codes(model, x_b)[0]
    t = np.linspace(0.0, 1.0, steps)[:, None]
    return decode(model, (1 - t) * za + t * zb)


def prior_samples(model: VAE, n: int, seed: int = 0) -> torch.Tensor:
    """Images decoded from codes drawn from the VAE's prior N(0, I)."""
    g = torch.Generator().manual_seed(seed)
    return decode(model, torch.randn(n, model.latent_dim, generator=g))


def latent_grid(model: VAE, n: int = 15) -> tuple[torch.Tensor, np.ndarray]:
    """The 2-D latent manifold: an n x n grid of codes at evenly spaced quantiles of N(0, 1)
    (Kingma & Welling, 2014, fig. 4), decoded row by row. Returns images [n*n, 1, 28, 28] and the
    grid's coordinates. For latent_dim > 2 the first two dimensions vary and the rest stay 0
    (the prior's mean); a 1-D latent space is one row of n codes (n rows would all be the same)."""
    q = torch.linspace(0.05, 0.95, n, dtype=torch.float64)
    coords = torch.distributions.Normal(0.0, 1.0).icdf(q).numpy()
    rows = n if model.latent_dim > 1 else 1
    z = np.zeros((rows * n, model.latent_dim), dtype=np.float32)
    for r in range(rows):
        for c in range(n):
            # Rows go top to bottom from high to low, like the y axis of a plot.
            z[r * n + c, 0] = coords[c]
            if model.latent_dim > 1:
                z[r * n + c, 1] = coords[n - 1 - r]
    return decode(model, z), coords


def pick_pairs(labels: np.ndarray, n_pairs: int, seed: int = 0) -> list[tuple[int, int]]:
    """Index pairs of images from different classes (the same pairs for the same labels)."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    pairs = []
    for _ in range(n_pairs):
        if len(classes) > 1:
            a, b = rng.choice(classes, size=2, replace=False)
        else:
            a = b = classes[0]
        ia = int(rng.choice(np.flatnonzero(labels == a)))
        ib = int(rng.choice(np.flatnonzero(labels == b)))
        pairs.append((ia, ib))
    return pairs


# ----- denoising ---------------------------------------------------------------------------------


def noise_levels(n: int = 6) -> list[float]:
    """Noise stds 0.1 * i for i = 0 .. n-1, as the report's gaussian_noise(img, 0.1 * i)."""
    return [round(0.1 * i, 10) for i in range(n)]


def noisy_inputs(x: torch.Tensor, stds: list[float], seed: int = 0) -> list[torch.Tensor]:
    """`x` with Gaussian noise of each std, clamped to [0, 1]; the same seed per level so the
    two models see identical noisy images."""
    out = []
    for std in stds:
        g = torch.Generator(device=x.device).manual_seed(seed)
        out.append(add_noise(x.clone(), std, g))
    return out


@torch.no_grad()
def outputs(model: Autoencoder, x: torch.Tensor) -> torch.Tensor:
    """The model's reconstructions of `x`, on the CPU, clamped to [0, 1]."""
    model.eval()
    return reconstruct(model, x.to(_device(model))).float().clamp(0, 1).cpu()


def denoising_mse(models: dict[str, Autoencoder], x: torch.Tensor, stds: list[float],
                  seed: int = 0) -> dict[str, list[float]]:
    """MSE between clean images and each model's output from noisy inputs, per noise std.

    aeopt.training.engine.mse draws the noise from `seed`, so every model is scored on the same noisy images.
    """
    result = {}
    for name, model in models.items():
        xd = x.to(_device(model))
        result[name] = [mse(model, xd, noise=std, seed=seed) for std in stds]
    return result
