"""`--denoising train` for each model kind: an AAE's encoder and decoder are trained as a plain and a
denoising conv AE (it was skipped, and the page called the AAE a VAE); a VAE has no conv architecture,
so asking for `train` by name is one line before any work, and the default's skip names the kind.
Real tiny checkpoints (untrained models on synthetic data), real report builds."""

from __future__ import annotations

import json

import pytest
import torch

from aeopt.report import build_report
from aeopt.report.denoising import DenoisingChoice, skipped_section
from tests.conftest import run_cli
from tests.integration.report.test_report_folder import ENV, VAE, checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

AAE = {"kind": "aae", "c1": 4, "c2": 4, "c3": 4, "fc": 8, "latent_dim": 2, "categories": 3, "disc_hidden": 8}


def test_denoising_train_on_an_aae_trains_its_encoder_and_decoder_both_ways(tmp_path):
    ckpt = checkpoint(tmp_path / "aae.pt", AAE)
    torch.set_num_threads(1)
    page = build_report(None, tmp_path / "rep", checkpoint=ckpt, device="cpu", max_points=40,
                        show_progress=False, denoising="train").read_text()
    den = json.loads((tmp_path / "rep" / "report.json").read_text())["denoising"]
    assert den["choice"] == "--denoising train" and len(den["mse_plain"]) == 6
    arch = "the given model's encoder and decoder as a conv AE (no discriminator, no prior)"
    assert den["plain_source"] == f"{arch} without noise, trained here", den
    assert den["denoising_source"] == f"{arch} with noise std 0.3, trained here", den
    # The pair is the AAE's encoder and decoder: a code of its full width (2 style + 3 categories).
    for side in ("plain", "denoising"):
        assert "latent_dim=5" in den[f"{side}_trained_here"]["config"], den
    section = page.split('<section id="denoising">', 1)[1].split("</section>", 1)[0]
    assert "Skipped" not in section and "VAE" not in section


def test_denoising_train_asked_for_on_a_vae_is_one_line_before_any_work(tmp_path):
    ckpt = checkpoint(tmp_path / "vae.pt", VAE)
    out = tmp_path / "rep"
    r = run_cli("report", "--checkpoint", str(ckpt), "--denoising", "train", "--device", "cpu",
                "-o", str(out), cwd=tmp_path, env=ENV)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "error: --denoising train: a vae has no convolutional encoder and decoder to train without and with "
        "input noise; pass --denoising study:NAME (a denoising_ae study) or --denoising skip"], r.stderr
    assert not out.exists()


def test_the_default_skip_names_the_model_kind():
    # On CUDA the default is train; for a VAE nothing can be trained, so the section says why.
    section = skipped_section(DenoisingChoice("train", default=True), "cuda", "vae")
    assert section.intro.startswith("Skipped: a vae has no convolutional encoder and decoder")
