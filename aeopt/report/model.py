"""Figures of one autoencoder: reconstructions, the latent space by PCA and t-SNE, new samples and,
for a VAE, the latent manifold. Each function returns one page section (and its numbers)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from aeopt.figures import image_rows, reconstruction_figure
from aeopt.report import analysis
from aeopt.report.drawing import figure_item, mosaic, scatter
from aeopt.report.page import Item, Section
from aeopt.report.source import ShownModel
from aeopt.training.data import Prepared, Split, prepare, stratified_subset, to_float
from aeopt.training.engine import mse, noise_std
from aeopt.training.kinds.aae import AdversarialAutoencoder as AAE
from aeopt.training.models import VAE

MIN_TSNE_POINTS = 5
GRID_N = 15  # the VAE manifold's grid is GRID_N x GRID_N codes
N_SAMPLES = 30  # new samples, as 3 rows of 10


@dataclass
class Sample:
    """Test images the figures are drawn from: a stratified subset, on the model's device."""

    data: Prepared
    x: torch.Tensor  # float [n, 1, 28, 28] in [0, 1]
    labels: np.ndarray


def _stratified(split: Split, n: int, seed: int = 0) -> Split:
    return split.take(stratified_subset(split.y, n, seed)) if len(split) > n else split


def load_sample(shown: ShownModel, data_dir: str | None, device: torch.device, max_points: int) -> Sample:
    data = prepare(shown.cfg.data, data_dir)
    test = _stratified(data.test, max_points)
    return Sample(data, to_float(test.x, device), test.y.cpu().numpy())


def model_section(shown: ShownModel, sample: Sample, out: Path, title: str) -> tuple[Section, dict[str, Any]]:
    """Which model this is, its test MSE, and test images beside their reconstructions."""
    x, kind = sample.x, shown.cfg.model.kind
    numbers: dict[str, Any] = {"test_mse": mse(shown.model, x), "n_points": int(x.shape[0])}
    section = Section(title, f"A {kind}. Shown: {shown.source}.", key="model")
    section.table = [("shown model", shown.source),
                     ("test MSE (clean inputs)", f"{numbers['test_mse']:.5f}"),
                     ("test images analysed", str(numbers["n_points"])),
                     ("latent dimensions", str(shown.model.latent_dim))]
    if shown.trained is not None:
        section.table += shown.trained.rows()
    # Test images beside their reconstructions (from noisy inputs too, for a denoising AE).
    first = x[:10]
    std = noise_std(shown.cfg)
    noisy = analysis.noisy_inputs(first, [std])[0] if std > 0 else None
    recon = analysis.outputs(shown.model, noisy if noisy is not None else first)
    title = f"{kind}: test images and reconstructions (test MSE {numbers['test_mse']:.4f})"
    fig = reconstruction_figure(first.cpu(), recon, noisy.cpu() if noisy is not None else None, title)
    caption = ("Top: test images" + (f"; middle: with noise std {std}" if noisy is not None else "")
               + "; bottom: the model's reconstructions.")
    section.items.append(figure_item(out, "reconstructions", "Test images and their reconstructions", fig,
                                     caption=caption))
    return section, numbers


def latent_section(shown: ShownModel, sample: Sample, out: Path) -> tuple[Section, dict[str, Any]]:
    """The codes of test images in 2-D, by PCA and by t-SNE, coloured by class."""
    codes = analysis.latent_codes(shown.model, sample.x)
    classes = sample.data.classes
    section = Section("Latent space", "Codes of test images (the VAE's mean codes), mapped to 2-D and "
                                      "coloured by class.", key="latent")
    emb, ratios = analysis.pca_2d(codes)
    axis = (f"PC1 ({ratios[0]:.0%} of variance)", f"PC2 ({ratios[1]:.0%} of variance)")
    fig, pfig = scatter(emb, sample.labels, classes, f"PCA of the {codes.shape[1]}-D latent space", axis)
    section.items.append(figure_item(out, "latent_pca", "PCA of the latent space", fig, pfig,
                                     "The two directions of largest variance of the codes: a linear view."))
    if codes.shape[0] >= MIN_TSNE_POINTS:
        fig, pfig = scatter(analysis.tsne_2d(codes), sample.labels, classes, "t-SNE of the latent space",
                            ("t-SNE 1", "t-SNE 2"))
        caption = "t-SNE keeps neighbours together: separated clusters are classes the code tells apart."
        section.items.append(figure_item(out, "latent_tsne", "t-SNE of the latent space", fig, pfig, caption))
    else:
        section.items.append(Item("latent_tsne", "t-SNE of the latent space",
                                  missing=f"fewer than {MIN_TSNE_POINTS} test images"))
    return section, {"pca_explained_variance": ratios}


def _sample_rows(samples: torch.Tensor) -> list[torch.Tensor]:
    return [samples[i * 10 : (i + 1) * 10] for i in range(samples.shape[0] // 10)]


def _interpolations(shown: ShownModel, sample: Sample, out: Path) -> Item:
    x, labels, classes = sample.x, sample.labels, sample.data.classes
    pairs = analysis.pick_pairs(labels, 4, seed=0)
    # Each row starts and ends with the two real images, so the decoded path can be judged against them.
    rows = [torch.cat([x[a : a + 1].cpu(),
                       analysis.interpolate(shown.model, x[a : a + 1], x[b : b + 1], steps=10),
                       x[b : b + 1].cpu()]) for a, b in pairs]
    names = [f"{classes[labels[a]]} → {classes[labels[b]]}" for a, b in pairs]
    fig = image_rows(rows, names, "Interpolation between the codes of two test images")
    return figure_item(out, "interpolations", "Interpolations", fig,
                       caption="First and last column: two test images; between them, decoded evenly spaced "
                               "points on the line between their codes.")


def vae_manifold(model: VAE) -> tuple[Figure, str, str]:
    """The latent manifold's figure, its title on the page and its caption."""
    images, coords = analysis.latent_grid(model, GRID_N)
    if model.latent_dim == 1:  # one dimension: one row (a square of identical rows said nothing more)
        fig = mosaic(images, GRID_N, coords, f"Latent manifold: decoded codes at {GRID_N} N(0,1) quantiles",
                     ("z1", ""), row_ticks=[])
        return (fig, "The 1-D latent manifold",
                "Codes at the 5%..95% quantiles of N(0, 1) along the one latent dimension.")
    two = model.latent_dim == 2
    dims = ("z1", "z2") if two else ("z1 (others 0)", "z2 (others 0)")
    title = f"Latent manifold: decoded codes on a {GRID_N}x{GRID_N} grid of N(0,1) quantiles"
    fig = mosaic(images, GRID_N, coords, title, dims)
    caption = "Codes at the 5%..95% quantiles of N(0, 1)" + (
        "." if two else
        f" in the first two of {model.latent_dim} dimensions; the rest are 0 (the prior mean).")
    return fig, "The 2-D latent manifold", caption


def _vae_samples(model: VAE, out: Path) -> list[Item]:
    samples = analysis.prior_samples(model, N_SAMPLES, seed=0)
    fig = image_rows(_sample_rows(samples), [""] * 3,
                     "Images decoded from codes sampled from the prior N(0, I)")
    items = [figure_item(out, "prior_samples", "Samples from the prior", fig)]
    fig, title, caption = vae_manifold(model)
    items.append(figure_item(out, "latent_manifold", title, fig, caption=caption))
    return items


def samples_section(shown: ShownModel, sample: Sample, out: Path, max_points: int) -> Section:
    """New images: from the VAE's prior, or from a Gaussian fitted to the training codes of an autoencoder
    without a variational prior (a plain AE; an AAE, whose prior samples are in `aae_section`)."""
    section = Section("New samples from latent codes", key="samples")
    if isinstance(shown.model, VAE):
        section.intro = ("The VAE's prior N(0, I) is a distribution to sample from: decode its samples and a "
                         "grid of its quantiles.")
        section.items = _vae_samples(shown.model, out)
    else:
        own = ("The adversarial autoencoder's own prior is sampled in its section below; this fitted "
               "Gaussian is the plain autoencoder's recipe, shown for comparison.")
        why = own if isinstance(shown.model, AAE) else "A plain autoencoder has no prior to sample from."
        section.intro = ("Here new codes are drawn from a Gaussian fitted to the codes of training images, "
                         "then decoded. " + why)
        train_x = to_float(_stratified(sample.data.train, max(max_points, 1000)).x, sample.x.device)
        train_codes = analysis.latent_codes(shown.model, train_x)
        samples = analysis.gaussian_samples(shown.model, train_codes, N_SAMPLES)
        title = "Images decoded from codes drawn from a Gaussian fitted to training codes"
        fig = image_rows(_sample_rows(samples), [""] * 3, title)
        section.items = [figure_item(out, "gaussian_samples",
                                     "Samples from a Gaussian fitted to training codes", fig)]
    section.items.append(_interpolations(shown, sample, out))
    return section
