"""The report's section for an adversarial autoencoder (`model.kind: aae`): images decoded from its
prior, its codes against the prior's density, interpolations between test images in code space,
the latent manifold, and how far the codes are from the prior (the MMD a study penalises)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from matplotlib.figure import Figure
from sklearn.decomposition import PCA

from aeopt.figures import image_rows
from aeopt.report import analysis
from aeopt.report.drawing import figure_item, mosaic, scatter
from aeopt.report.model import GRID_N, Sample
from aeopt.report.page import Item, Section
from aeopt.report.source import ShownModel
from aeopt.search.records import TrialRecord
from aeopt.training.kinds.aae import MIXTURE_RADIUS, MIXTURE_STD, MMD_SAMPLE, prior_mmd, sample_prior

N_PRIOR_SHOWN = 30  # decoded prior samples, 3 rows of 10
N_PRIOR_DENSITY = 5000  # prior samples drawn to show its density


def _prior_name(cfg: Any) -> str:
    categories = f"one-hot uniform over {cfg.categories} categories, then " if cfg.categories else ""
    return categories + ("N(0, I)" if cfg.prior == "gaussian" else
            f"a mixture of 10 Gaussians (means on a circle of radius {MIXTURE_RADIUS:g} in z1, z2; std "
            f"{MIXTURE_STD:g} there, N(0, 1) in the other dimensions)")


def _prior(shown: ShownModel, n: int, seed: int = 0) -> torch.Tensor:
    return sample_prior(shown.model.cfg, n, generator=torch.Generator().manual_seed(seed))


def trial_record(study: Any, shown: ShownModel) -> TrialRecord | None:
    """The recorded attributes of the study trial the shown model comes from (None for a given file)."""
    if study is None or shown.trial is None or shown.owner != study.study_name:
        return None
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == shown.trial), None)
    return TrialRecord.of(trial) if trial is not None else None


def _mmd_numbers(shown: ShownModel, codes: np.ndarray, record: TrialRecord | None) -> dict[str, Any]:
    cfg = shown.model.cfg
    z = torch.as_tensor(codes[:MMD_SAMPLE], dtype=torch.float32)
    mmd = prior_mmd(z, _prior(shown, z.shape[0], seed=1))
    test = {"prior_mmd": mmd, "penalty": cfg.mmd_weight * max(0.0, mmd - cfg.mmd_tolerance),
            "n_codes": int(z.shape[0])}
    trial = {"prior_mmd": record.prior_mmd, "penalty": record.penalty} if record is not None else None
    return {"prior": cfg.prior, "adv_weight": cfg.adv_weight, "mmd_tolerance": cfg.mmd_tolerance,
            "mmd_weight": cfg.mmd_weight, "image_critic": cfg.image_critic,
            "image_adv_weight": cfg.image_adv_weight if cfg.image_critic else None,
            "test": test, "trial": trial}


def _table(shown: ShownModel, found: dict[str, Any]) -> list[tuple[str, str]]:
    t = found["test"]
    cfg = shown.model.cfg
    rows = [("prior", _prior_name(cfg)),
            ("adversarial weight", f"{found['adv_weight']:g} (learning rates: the encoder's adversarial "
                                   f"step {found['adv_weight'] * cfg.disc_lr:g}, the discriminator's "
                                   f"{cfg.disc_lr:g})"),
            ("codes standardized (batch norm)", "yes" if cfg.code_norm and cfg.prior == "gaussian" else "no"),
            ("image critic (decoded prior samples against training images)",
             f"width {found['image_critic']}, learning rate {cfg.critic_lr:g}, the decoder's weight "
             f"{found['image_adv_weight']:g}" if found["image_critic"] else "none"),
            ("MMD of test codes to the prior (computed here)",
             f"{t['prior_mmd']:.4f} over {t['n_codes']} codes; penalty {t['penalty']:.5f} "
             f"(= {found['mmd_weight']:g} x max(0, MMD - {found['mmd_tolerance']:g}))")]
    if found["trial"] is not None and found["trial"]["prior_mmd"] is not None:
        rows.append(("the trial's recorded MMD (fold 0's validation codes)",
                     f"{found['trial']['prior_mmd']:.4f}; penalty added to its value "
                     f"{found['trial']['penalty'] or 0.0:.5f}"))
    return rows


def _prior_samples(shown: ShownModel, out: Path) -> Item:
    images = analysis.decode(shown.model, _prior(shown, N_PRIOR_SHOWN))
    rows = [images[i * 10 : (i + 1) * 10] for i in range(N_PRIOR_SHOWN // 10)]
    fig = image_rows(rows, [""] * len(rows), "Images decoded from codes sampled from the prior")
    return figure_item(out, "aae_prior_samples", "Samples from the prior", fig,
                       caption="The adversarial training makes the prior a distribution to sample from, as a "
                               "VAE's: these codes never came from an image.")


def _codes_figures(emb: np.ndarray, prior: np.ndarray, labels: np.ndarray, classes: list[str],
                   axis: tuple[str, str]) -> tuple[Figure, go.Figure]:
    def density(ax: Any, pfig: go.Figure) -> None:  # the prior's, under the codes
        ax.hexbin(prior[:, 0], prior[:, 1], gridsize=40, cmap="Greys", mincnt=1, linewidths=0)
        pfig.add_trace(go.Histogram2dContour(x=prior[:, 0], y=prior[:, 1], colorscale="Greys",
                                             showscale=False, name="prior density", ncontours=12))

    title = "Test codes over the prior's density (PCA fitted on the codes)"
    return scatter(emb, labels, classes, title, axis, under=density)


def _codes_vs_prior(shown: ShownModel, codes: np.ndarray, sample: Sample, out: Path) -> Item:
    k = min(2, codes.shape[1])
    pca = PCA(n_components=k, random_state=0).fit(codes)
    prior = pca.transform(_prior(shown, N_PRIOR_DENSITY).numpy())
    emb = pca.transform(codes)
    if k < 2:  # a 1-D latent: a zero second coordinate, as the latent section does
        emb, prior = (np.hstack([a, np.zeros((a.shape[0], 1))]) for a in (emb, prior))
    ratios = list(pca.explained_variance_ratio_) + [0.0] * (2 - k)
    axis = (f"PC1 ({ratios[0]:.0%} of the codes' variance)", f"PC2 ({ratios[1]:.0%})")
    fig, pfig = _codes_figures(emb, prior, sample.labels, sample.data.classes, axis)
    return figure_item(out, "aae_codes_vs_prior", "Codes against the prior", fig, pfig,
                       caption=f"Grey: the density of {N_PRIOR_DENSITY} prior samples; dots: codes of test "
                               "images; both projected on the codes' two principal directions. Codes that "
                               "match the prior fill its grey area and leave no holes in it.")


def _interpolations(shown: ShownModel, sample: Sample, out: Path) -> Item:
    x, labels, classes = sample.x, sample.labels, sample.data.classes
    pairs = analysis.pick_pairs(labels, 4, seed=1)
    rows = [torch.cat([x[a : a + 1].cpu(), analysis.interpolate(shown.model, x[a : a + 1], x[b : b + 1], 10),
                       x[b : b + 1].cpu()]) for a, b in pairs]
    names = [f"{classes[labels[a]]} → {classes[labels[b]]}" for a, b in pairs]
    fig = image_rows(rows, names, "Interpolation between the codes of two test images")
    return figure_item(out, "aae_interpolations", "Interpolations in code space", fig,
                       caption="First and last column: two test images; between them, decoded evenly spaced "
                               "points on the line between their codes. With codes that fill the prior, the "
                               "path stays where the decoder was trained.")


def manifold_grid(shown: ShownModel, n: int = GRID_N) -> tuple[torch.Tensor, np.ndarray, str]:
    """Decoded codes on a grid of n columns, its column coordinates and what they span: the N(0, 1)
    quantiles for a Gaussian prior (as the VAE's), the mixture's whole range for a mixture. Without
    categories the grid is n x n over z1, z2 (the rest 0); with categories (the semi-supervised AAE)
    row r is category r, one-hot, for the first min(n, categories) categories, z1 varies along the
    row and the rest of the style code is 0."""
    cfg = shown.model.cfg
    reach = MIXTURE_RADIUS + 2 * MIXTURE_STD
    if cfg.prior == "gaussian":
        quantiles = torch.linspace(0.05, 0.95, n, dtype=torch.float64)
        coords = torch.distributions.Normal(0.0, 1.0).icdf(quantiles).numpy()
        span = "the 5%..95% quantiles of N(0, 1)"
    else:
        coords = np.linspace(-reach, reach, n)
        span = f"[-{reach:g}, {reach:g}], the mixture's range"
    if cfg.categories:
        rows = min(n, cfg.categories)
        z = np.zeros((rows * n, cfg.categories + cfg.latent_dim), dtype=np.float32)
        for r in range(rows):
            z[r * n : (r + 1) * n, r] = 1.0
            z[r * n : (r + 1) * n, cfg.categories] = coords
        return analysis.decode(shown.model, z), coords, span
    if cfg.prior == "gaussian":
        images, coords = analysis.latent_grid(shown.model, n)
        return images, coords, span
    z = np.zeros((n * n, cfg.latent_dim), dtype=np.float32)
    for r in range(n):
        z[r * n : (r + 1) * n, 0] = coords
        z[r * n : (r + 1) * n, 1] = coords[n - 1 - r]  # top row is the highest z2, as on a plot
    return analysis.decode(shown.model, z), coords, span


def manifold_figure(shown: ShownModel) -> tuple[Figure, str]:
    """The latent manifold's figure and its caption."""
    images, coords, span = manifold_grid(shown)
    cfg = shown.model.cfg
    if cfg.categories:  # rows are categories (one-hot), not values of z2
        rows = images.shape[0] // GRID_N
        title = f"Latent manifold: one row per category, z1 over {GRID_N} values"
        fig = mosaic(images, GRID_N, coords, title,
                     ("z1 (other style dimensions 0)" if cfg.latent_dim > 1 else "z1", "category"),
                     row_ticks=[str(c) for c in range(rows)])
        which = (f"each of the {cfg.categories} categories" if rows == cfg.categories else
                 f"the first {rows} of the {cfg.categories} categories")
        others = cfg.latent_dim - 1
        rest = {0: "", 1: "; the other style dimension is 0"}.get(others, f"; the other {others} style "
                                                                           "dimensions are 0")
        return fig, (f"One row per category: {which}, as a one-hot code; along each row the style code's z1 "
                     f"over {span}{rest}.")
    two = cfg.latent_dim == 2
    dims = ("z1", "z2") if two else ("z1 (others 0)", "z2 (others 0)")
    fig = mosaic(images, GRID_N, coords, f"Latent manifold: decoded codes on a {GRID_N}x{GRID_N} grid", dims)
    rest = "." if two else f"; the other {cfg.latent_dim - 2} dimensions are 0."
    return fig, f"z1 and z2 over {span}{rest}"


def _manifold(shown: ShownModel, out: Path) -> Item:
    fig, caption = manifold_figure(shown)
    return figure_item(out, "aae_manifold", "The latent manifold", fig, caption=caption)


def aae_section(shown: ShownModel, sample: Sample, out: Path,
                study: Any = None) -> tuple[Section, dict[str, Any]]:
    """The adversarial AE's section and its numbers (`report.json["aae"]`)."""
    codes = analysis.latent_codes(shown.model, sample.x)
    found = _mmd_numbers(shown, codes, trial_record(study, shown))
    section = Section("Adversarial autoencoder: codes and prior", key="aae", intro=(
        "An adversarial autoencoder's discriminator pushes the codes of training images towards a chosen "
        "prior, so that decoded prior samples look like images. How far the codes are from the prior is "
        "measured by a maximum mean discrepancy (MMD, 0 when they match); a study adds a penalty above a "
        "tolerance to each trial's value, so that it cannot win by switching the adversarial term off."))
    section.table = _table(shown, found)
    section.items = [_prior_samples(shown, out), _codes_vs_prior(shown, codes, sample, out),
                     _interpolations(shown, sample, out), _manifold(shown, out)]
    return section, found
