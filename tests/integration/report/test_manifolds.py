"""The latent manifold says what its rows and columns are: a semi-supervised AAE's rows are its
categories (one-hot), not values of z2; a 1-D latent space is one row, not a square of identical rows.
Real tiny checkpoints (untrained models on synthetic data), real report builds."""

from __future__ import annotations

import html
from pathlib import Path

import pytest
import torch
from PIL import Image

from aeopt.report import build_report
from aeopt.report.aae import manifold_figure
from aeopt.report.model import GRID_N, vae_manifold
from aeopt.report.source import from_file
from tests.integration.report.test_report_folder import checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

AAE_CATEGORIES = {"kind": "aae", "c1": 4, "c2": 4, "c3": 4, "fc": 8, "latent_dim": 2, "categories": 10,
                  "disc_hidden": 8}
VAE_1D = {"kind": "vae", "hidden1": 16, "hidden2": 8, "latent_dim": 1}


def _report(ckpt: Path, out: Path) -> str:
    torch.set_num_threads(1)
    page = build_report(None, out, checkpoint=ckpt, device="cpu", max_points=40, show_progress=False)
    return page.read_text()


def _figure_part(page: str, key: str) -> str:
    """The figure's title and caption on the page (not its image data)."""
    part = page.split(f'<figure id="{key}">', 1)[1].split("</figure>", 1)[0]
    return html.unescape(part.split("<img", 1)[0] + part.split("<figcaption>", 1)[1])


def _rows_to_columns(png: Path) -> float:
    with Image.open(png) as im:
        return im.height / im.width


def test_a_categorical_aae_manifold_has_one_row_per_category(tmp_path):
    ckpt = checkpoint(tmp_path / "aae.pt", AAE_CATEGORIES)
    page = _report(ckpt, tmp_path / "rep")
    caption = _figure_part(page, "aae_manifold")
    assert ("One row per category: each of the 10 categories, as a one-hot code; along each row the style "
            "code's z1 over the 5%..95% quantiles of N(0, 1); the other style dimension is 0.") in caption
    assert "z2" not in caption and "the other 10 dimensions" not in caption
    fig, _ = manifold_figure(from_file(ckpt, torch.device("cpu")))
    ax = fig.axes[0]
    assert ax.get_ylabel() == "category" and ax.get_xlabel() == "z1 (other style dimensions 0)"
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(c) for c in range(10)]
    assert len(ax.get_xticklabels()) == GRID_N
    # 10 rows of 15 images: the picture is wider than tall (a 15 x 15 square before).
    assert _rows_to_columns(tmp_path / "rep" / "aae_manifold.png") < 0.85


def test_a_1d_vae_manifold_is_one_row(tmp_path):
    ckpt = checkpoint(tmp_path / "vae.pt", VAE_1D)
    page = _report(ckpt, tmp_path / "rep")
    part = _figure_part(page, "latent_manifold")
    assert "<h3>The 1-D latent manifold</h3>" in part
    assert "Codes at the 5%..95% quantiles of N(0, 1) along the one latent dimension." in part
    assert "first two of 1 dimensions" not in part
    fig, _, _ = vae_manifold(from_file(ckpt, torch.device("cpu")).model)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "z1" and ax.get_ylabel() == "" and len(ax.get_yticks()) == 0
    assert len(ax.get_images()[0].get_array()) == 28  # one row of 28-pixel images
    assert _rows_to_columns(tmp_path / "rep" / "latent_manifold.png") < 0.3
