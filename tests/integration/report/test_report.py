"""`aeopt report` on real tiny studies (synthetic data, 2 epochs) of all three model kinds: every
figure is written and is a real picture, the numbers are consistent, and the HTML page renders in
headless Chromium with no JavaScript errors."""

from __future__ import annotations

import json
import math
import re
import shutil
from html import escape
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aeopt.config import StudySpec
from aeopt.report import build_report
from aeopt.search.records import TrialRecord
from aeopt.search.storage import open_storage
from aeopt.search.studies import create_study, load_study
from aeopt.search.worker import run_worker
from aeopt.stages.metrics import read_classifier_run
from tests.conftest import REPO, _missing, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# No importances: 3 complete trials are far below what PED-ANOVA needs (the page says so).
STUDY_PLOTS = ["study_optimization_history", "study_intermediate_values", "study_parallel_coordinate"]
COMMON = STUDY_PLOTS + ["reconstructions", "latent_pca", "latent_tsne", "interpolations"]
EXPECTED = {
    "conv_ae": COMMON + ["gaussian_samples", "denoising_examples", "denoising_mse"],
    "denoising_ae": COMMON + ["gaussian_samples", "denoising_examples", "denoising_mse"],
    "vae": COMMON + ["prior_samples", "latent_manifold"],
}


def _spec(kind: str) -> StudySpec:
    if kind == "vae":
        model = {"kind": "vae", "hidden1": 64, "hidden2": 32, "latent_dim": 2}
    else:
        model = {"kind": kind, "c1": 8, "c2": 8, "c3": 8, "fc": 16, "latent_dim": 4, "dropout": 0.0,
                 "noise_std": 0.4 if kind == "denoising_ae" else 0.0}
    return StudySpec.model_validate({
        "name": kind,
        "model": model,
        "data": {"dataset": "synthetic", "train_subset": 300, "test_subset": 120},
        "budget": {"max_epochs": 2, "batch_size": 64, "patience": 0},
        "optim": {"lr": 3e-3},
        "cv": {"folds": 2},
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "space": {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
                  "optim.weight_decay": {"type": "float", "low": 1e-6, "high": 1e-3, "log": True}},
    })


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """One SQLite storage with a 3-trial study of each kind, run by the real worker. The conv and
    denoising studies keep artifacts (the report reuses the best checkpoint); the VAE study has
    no artifact folder, so the report trains its best configuration on the spot."""
    root = tmp_path_factory.mktemp("report_studies")
    url = f"sqlite:///{root / 'studies.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AEOPT_OFFLINE", "1")
        mp.delenv("AEOPT_ARTIFACTS", raising=False)
        torch.set_num_threads(1)
        storage = open_storage(url)
        for kind in ("conv_ae", "denoising_ae", "vae"):
            artifacts = str(root / "artifacts") if kind != "vae" else None
            create_study(storage, _spec(kind), artifacts=artifacts)
            run_worker(storage, kind, n_trials=3, device="cpu", show_progress=False)
    return url, root


def _is_picture(path: Path) -> bool:
    """A readable PNG with real content: not one flat colour."""
    with Image.open(path) as im:
        a = np.asarray(im.convert("L"), dtype=np.float32)
    return a.shape[0] > 100 and a.shape[1] > 100 and float(a.std()) > 5.0


@pytest.fixture(scope="module")
def finetune_dir(studies, tmp_path_factory):
    """A real `aeopt finetune` output folder (1 epoch on the conv study's best checkpoint)."""
    from aeopt.config import load_finetune_config
    from aeopt.search.artifacts import find_best_checkpoint
    from aeopt.stages.finetune import finetune
    from aeopt.training.checkpoint import load_checkpoint

    url, _ = studies
    storage = open_storage(url)
    study, _ = load_study(storage, "conv_ae")
    ckpt = find_best_checkpoint(study, tmp_path_factory.mktemp("ckpt"), storage)
    assert ckpt is not None
    out = tmp_path_factory.mktemp("finetune")
    model, cfg, _ = load_checkpoint(ckpt)
    ft = load_finetune_config(None, ["finetune.max_epochs=1", "finetune.min_steps_per_epoch=2"], base=cfg)
    finetune(ft, autoencoder=model, out=out, device="cpu", show_progress=False)
    assert (out / "metrics.json").is_file()
    return out


def _best_epoch(url: str, study_name: str, trial: int) -> int | None:
    study, _ = load_study(open_storage(url), study_name)
    return TrialRecord.of(study.trials[trial]).best_epoch


@pytest.mark.parametrize("kind", ["conv_ae", "denoising_ae", "vae"])
def test_report_figures_for_each_model_kind(studies, kind, tmp_path):
    url, _ = studies
    storage = open_storage(url)
    # --denoising train: the comparison is skipped by default on a CPU; here it is asked for (a VAE has
    # no conv encoder and decoder to train it with; asked for, that is an error: test_denoising_kinds.py).
    html = build_report(kind, tmp_path / "out", storage=storage, device="cpu", max_points=120,
                        show_progress=False, denoising="skip" if kind == "vae" else "train")
    out = html.parent
    pngs = sorted(p.stem for p in out.glob("*.png"))
    assert pngs == sorted(EXPECTED[kind]), pngs
    for name in pngs:
        assert _is_picture(out / f"{name}.png"), name

    numbers = json.loads((out / "report.json").read_text())
    assert numbers["model"] == kind and numbers["n_points"] == 120 and numbers["study"] == kind
    assert numbers["storage"] == storage.display and numbers["checkpoint"] is None
    assert 0 < numbers["test_mse"] < 0.5
    page = html.read_text()
    # The page states exactly which model it shows, in the model's own section.
    model_part = page.split('<section id="model">', 1)[1].split("</section>", 1)[0]
    assert escape(numbers["source"]) in model_part
    if kind == "vae":
        # No artifact folder: the train stage trained the best configuration, and the page says so.
        n = numbers["trial"]
        assert numbers["source"] == f"trial #{n}'s configuration retrained here on the 80/20 split"
        trained = numbers["trained_here"]
        assert "no checkpoint artifact" in trained["why"] and trained["config"].startswith("vae(")
        assert 1 <= trained["epochs"] <= 2 and trained["seconds"] > 0
        assert trained["saved_as"] == "checkpoints/vae_best.pt" and (out / trained["saved_as"]).is_file()
        assert "trained for this report because" in model_part and escape(trained["config"]) in model_part
        assert "denoising" not in numbers
    else:
        # The trial's checkpoint artifact: fold 0's model at the epoch of the trial's best mean CV loss.
        assert numbers["trained_here"] is None
        ckpt = next((out / "checkpoints" / kind).glob("checkpoint_trial*.pt"))  # the study's own folder
        payload = torch.load(ckpt, weights_only=True)
        n = numbers["trial"]
        best_epoch = _best_epoch(url, kind, n)
        assert payload["fold"] == 0 and payload["epoch"] == best_epoch
        assert numbers["fold"] == 0 and numbers["epoch"] == best_epoch
        assert numbers["source"] == (f"checkpoint of trial #{n}: fold 0's model at epoch {best_epoch}, "
                                     "the epoch of the trial's best mean CV loss")
        den = numbers["denoising"]
        assert den["noise_std"] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
        for curve in (den["mse_plain"], den["mse_denoising"]):
            assert len(curve) == 6 and all(math.isfinite(v) and v > 0 for v in curve)
        # One study: the report's experiment is repeated, both sides trained here the same way, and
        # the denoising section says what it trained and why.
        assert "without noise, trained here" in den["plain_source"], den
        noise = "0.3" if kind == "conv_ae" else "0.4"  # the default, or the study's own noise
        assert f"with noise std {noise}, trained here" in den["denoising_source"], den
        section = page.split('<section id="denoising">', 1)[1].split("</section>", 1)[0]
        assert den["choice"] == "--denoising train" and den["by_default"] is False
        assert "Chosen by --denoising train." in section and "--denoising skip leaves" in section
        # The numbers as a table: a header, then one row per noise std with both models' MSE.
        grid = section.split('<table class="grid">', 1)[1].split("</table>", 1)[0]
        assert "<th>noise std</th><th>conv AE MSE</th><th>denoising AE MSE</th>" in grid
        assert f'<td class="num">0.5</td><td class="num">{den["mse_plain"][5]:.4f}</td>' in grid
        for side in ("conv AE", "denoising AE"):
            trained = den[f"{'plain' if side == 'conv AE' else 'denoising'}_trained_here"]
            assert f"{side}: trained for this report because" in section and trained["epochs"] >= 1
            assert escape(trained["config"]) in section and f"{trained['seconds']:.1f} s" in section

    # The search section is there, with the masked storage URL and nothing else of it.
    assert '<section id="search">' in page and escape(storage.display) in page
    # Importances are left out with the reason, and the charts name the study's metric.
    search = page.split('<section id="search">', 1)[1].split("</section>", 1)[0]
    assert "importances need at least 50 complete trials" in search and "this study has 3" in search
    metric = "CV loss (neg. ELBO / image)" if kind == "vae" else "CV loss (MSE)"
    # (plotly's JSON writes "/" as "\u002f", so that no string in it can close the <script>)
    assert f"{metric} per epoch".replace("/", "\\u002f") in search and '"showlegend":true' in search
    # Self-contained: plotly.js inline, images as data URIs, nothing fetched from anywhere.
    assert not re.search(r"<script[^>]+src=", page) and 'src="http' not in page
    assert page.count('class="plotly-graph-div"') >= 5
    assert "data:image/png;base64," in page


def test_report_cli_with_finetune_and_denoising_study(studies, finetune_dir, tmp_path):
    url, _ = studies
    out = tmp_path / "cli"
    r = run_cli("report", "--study", "conv_ae", "--storage", url, "--denoising", "study:denoising_ae",
                "--finetune", str(finetune_dir), "--device", "cpu", "--max-points", "100", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("report.html")
    # Not a terminal: progress is plain log lines, one per step.
    assert "report 8/8" in r.stderr
    assert (out / "confusion_matrix.png").is_file() and (out / "per_class_accuracy.png").is_file()
    assert _is_picture(out / "confusion_matrix.png")
    numbers = json.loads((out / "report.json").read_text())
    run = read_classifier_run(finetune_dir)
    assert numbers["finetune"]["test_acc"] == pytest.approx(run.metrics.test_acc)
    assert numbers["finetune"]["per_class_acc"] == pytest.approx(run.metrics.per_class_acc)
    # Both sides of the denoising comparison come from the two studies' checkpoints: nothing trained.
    den = numbers["denoising"]
    assert den["plain_source"].startswith("checkpoint of trial #")
    assert den["denoising_source"].startswith("checkpoint of trial #")
    assert den["plain_trained_here"] is None and den["denoising_trained_here"] is None
    assert den["choice"] == "--denoising study:denoising_ae" and den["by_default"] is False
    assert "trained for this report" not in r.stderr and "training" not in r.stderr
    # The plain side is the study's own best model: its clean MSE is the report's test MSE.
    assert den["mse_plain"][0] == pytest.approx(numbers["test_mse"], rel=1e-4)
    page = (out / "report.html").read_text()
    assert 'id="plot-confusion_matrix"' in page and 'id="plot-per_class_accuracy"' in page


def test_report_errors_are_one_line(studies, tmp_path):
    url, _ = studies
    r = run_cli("report", "--study", "nope", "--storage", url, "-o", str(tmp_path / "x"))
    assert r.returncode == 2 and r.stderr.startswith("error: no study named 'nope'")
    assert "Traceback" not in r.stderr
    r = run_cli("report", "--study", "conv_ae", "--storage", url, "--finetune", str(tmp_path / "missing"),
                "-o", str(tmp_path / "x"))
    assert r.returncode == 2 and "--finetune" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("report", "-o", str(tmp_path / "x"))
    assert r.returncode == 2 and "--checkpoint FILE" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ----- aeopt report --checkpoint -----------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """A model trained by `aeopt train` on the bundled digits: its run folder holds checkpoint.pt."""
    root = tmp_path_factory.mktemp("digits_run")
    r = run_cli("train", str(REPO / "configs" / "conv_ae.yaml"), "--set", "data.dataset=digits",
                "--set", "budget.max_epochs=2", "--set", "model.latent_dim=4", "--device", "cpu",
                "-o", str(root / "run"), cwd=root, env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    return root / "run" / "checkpoint.pt"


def test_report_of_a_checkpoint_without_a_study(digits_run, tmp_path):
    out = tmp_path / "rep"
    # No --storage, no study: nothing may be created in the working directory.
    r = run_cli("report", "--checkpoint", str(digits_run), "--device", "cpu", "--max-points", "100",
                "-o", str(out), cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out / "report.html") and "report 6/6" in r.stderr
    assert not (tmp_path / "studies").exists()
    numbers = json.loads((out / "report.json").read_text())
    assert numbers["study"] is None and numbers["storage"] is None
    assert numbers["checkpoint"] == str(digits_run) and numbers["trained_here"] is None
    assert numbers["model"] == "conv_ae" and numbers["dataset"] == "digits"
    assert numbers["source"] == f"the checkpoint {digits_run} you gave"
    metrics = json.loads((digits_run.parent / "metrics.json").read_text())
    # The report's test MSE is the given model's (on a 100-image stratified subset of the same test split).
    assert numbers["test_mse"] == pytest.approx(metrics["test_mse"], rel=0.2)
    pngs = sorted(p.stem for p in out.glob("*.png"))
    assert not any(p.startswith("study_") for p in pngs)
    assert "reconstructions" in pngs and "latent_tsne" in pngs
    page = (out / "report.html").read_text()
    assert '<section id="search">' not in page and "The search" not in page
    model_part = page.split('<section id="model">', 1)[1].split("</section>", 1)[0]
    assert escape(f"the checkpoint {digits_run} you gave") in model_part
    assert "trained for this report" not in model_part
    # On a CPU the denoising comparison is skipped by default (it would train two models), and the
    # section says so and how to get it.
    section = page.split('<section id="denoising">', 1)[1].split("</section>", 1)[0]
    assert "Skipped (the default on a CPU" in section and "--denoising train" in section
    assert "denoising" not in numbers


def test_report_of_a_checkpoint_beside_a_study(studies, digits_run, tmp_path):
    url, _ = studies
    out = tmp_path / "both"
    r = run_cli("report", "--study", "vae", "--storage", url, "--checkpoint", str(digits_run.parent),
                "--device", "cpu", "--max-points", "100", "-o", str(out), env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    numbers = json.loads((out / "report.json").read_text())
    # The study's section, the given model: the study's best configuration is not trained.
    assert numbers["study"] == "vae" and numbers["model"] == "conv_ae"
    assert numbers["source"] == f"the checkpoint {digits_run} you gave"
    assert not (out / "checkpoints").exists()
    page = (out / "report.html").read_text()
    assert '<section id="search">' in page and (out / "study_optimization_history.png").is_file()


@pytest.mark.parametrize("content", [None, "not a checkpoint"])
def test_report_of_a_bad_checkpoint_is_one_line(tmp_path, content):
    path = tmp_path / "model.pt"
    if content is not None:
        path.write_text(content)
    r = run_cli("report", "--checkpoint", str(path), "-o", str(tmp_path / "x"), cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --checkpoint {path}: "), r.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.browser
def test_report_renders_in_headless_chromium(studies, finetune_dir, tmp_path):
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        _missing("headless Chromium not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    url, _ = studies
    html = build_report("vae", tmp_path / "out", storage=open_storage(url), finetune=finetune_dir,
                        device="cpu", max_points=100, show_progress=False)
    n_plotly = html.read_text().count('class="plotly-graph-div"')

    opts = Options()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1400"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        driver.set_page_load_timeout(60)
        driver.get(html.as_uri())
        state = driver.execute_script(
            "return {plotly: typeof window.Plotly, divs: document.querySelectorAll('.js-plotly-plot').length,"
            " svgs: document.querySelectorAll('.js-plotly-plot .main-svg').length,"
            " images: Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length}")
        errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        shot = tmp_path / "screenshot.png"
        driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    assert errors == [], errors
    assert state["plotly"] == "object"
    # Every plotly figure was drawn by plotly.js (a div becomes .js-plotly-plot with SVG layers).
    assert state["divs"] == n_plotly and state["svgs"] >= n_plotly
    assert state["images"] >= 4  # reconstructions, prior samples, manifold, interpolations
    with Image.open(shot) as im:
        a = np.asarray(im.convert("RGB"), dtype=np.int16)
    # Not blank: a white page has one colour; the first screen holds a table and a plot.
    assert a.std() > 20 and len(np.unique(a.reshape(-1, 3), axis=0)) > 50
