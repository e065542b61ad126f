"""`aeopt report --fid-classifier` (the Frechet distance of new images on aeopt's own CNN) and the
adversarial autoencoder's section, on real tiny runs: a CNN and autoencoders trained by the real
commands on sklearn's digits, and a tiny AAE study run by the real worker."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import pytest
import torch

from aeopt.config import StudySpec
from aeopt.report import build_report
from aeopt.search.records import TrialRecord
from aeopt.search.storage import open_storage
from aeopt.search.studies import create_study, load_study
from aeopt.search.worker import run_worker
from tests.conftest import REPO, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

ENV = {"OMP_NUM_THREADS": "1"}
AAE_FIGURES = ["aae_prior_samples", "aae_codes_vs_prior", "aae_interpolations", "aae_manifold"]


def _train(root: Path, config: str, name: str, *overrides: str) -> Path:
    sets = [a for o in ("data.dataset=digits", "budget.max_epochs=1", *overrides) for a in ("--set", o)]
    r = run_cli("train", str(REPO / "configs" / f"{config}.yaml"), *sets, "--device", "cpu",
                "-o", str(root / name), cwd=root, env=ENV)
    assert r.returncode == 0, r.stderr
    return root / name / "checkpoint.pt"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """`aeopt baseline cnn` and `aeopt train` (conv AE, AAE with a 2-D mixture prior, AAE with an
    image critic) on digits."""
    root = tmp_path_factory.mktemp("generation_runs")
    r = run_cli("baseline", "cnn", "--set", "data.dataset=digits", "--set", "train.max_epochs=1",
                "--device", "cpu", "-o", str(root / "cnn"), cwd=root, env=ENV)
    assert r.returncode == 0, r.stderr
    return {"cnn": root / "cnn",
            "conv_ae": _train(root, "conv_ae", "conv", "model.latent_dim=2"),
            "aae": _train(root, "aae", "aae", "model.latent_dim=2", "model.prior=mixture10"),
            "aae_critic": _train(root, "aae_critic", "aae_critic", "model.latent_dim=2"),
            "synthetic": _train(root, "conv_ae", "synthetic", "data.dataset=synthetic",
                                "data.train_subset=200", "budget.max_epochs=1")}


def test_report_scores_the_shown_aae_beside_another_generator(runs, tmp_path):
    out = tmp_path / "rep"
    r = run_cli("report", "--checkpoint", str(runs["aae"]), "--fid-classifier", str(runs["cnn"]),
                "--compare-generators", f"{runs['conv_ae']}", "--device", "cpu", "--max-points", "100",
                "-o", str(out), cwd=tmp_path, env=ENV)
    assert r.returncode == 0, r.stderr
    numbers = json.loads((out / "report.json").read_text())
    gen = numbers["generation"]
    cnn_metrics = json.loads((runs["cnn"] / "metrics.json").read_text())
    # The CNN is named, with its own test accuracy, and the whole digits test split is compared.
    assert gen["classifier"] == str(runs["cnn"] / "classifier.pt") and gen["classifier_dataset"] == "digits"
    assert gen["classifier_test_acc"] == pytest.approx(cnn_metrics["test_acc"])
    assert gen["features"] == 128 and gen["n_test"] == gen["n_generated"] > 300
    rows = gen["models"]
    assert [row["kind"] for row in rows] == ["aae", "conv_ae"]
    assert rows[0]["sampling"].startswith("its prior, a mixture") and "fitted" in rows[1]["sampling"]
    assert all(math.isfinite(row["fd"]) and row["fd"] > 0 for row in rows)
    # Real images against real images: well below what 2-epoch autoencoders generate.
    assert gen["fd_real_train_vs_test"] < min(row["fd"] for row in rows)
    # The AAE's section: its figures, and its codes measured against its prior.
    aae = numbers["aae"]
    assert aae["prior"] == "mixture10" and aae["trial"] is None and aae["image_critic"] == 0
    assert aae["test"]["prior_mmd"] >= 0 and aae["test"]["n_codes"] == 100
    pngs = {p.stem for p in out.glob("*.png")}
    assert set(AAE_FIGURES + ["generation_samples"]) <= pngs
    page = (out / "report.html").read_text()
    assert '<section id="generation">' in page and '<section id="aae">' in page
    assert 'id="plot-aae_codes_vs_prior"' in page
    # The fitted-Gaussian samples are labelled as a comparison, not as a model without a prior.
    assert "own prior is sampled in its section below" in page and "has no prior" not in page
    assert f"FD {rows[0]['fd']:.2f}" in page and f"test accuracy {cnn_metrics['test_acc']:.4f}" in page


def test_report_shows_the_image_critic_of_configs_aae_critic(runs, tmp_path):
    out = tmp_path / "rep"
    r = run_cli("report", "--checkpoint", str(runs["aae_critic"]), "--fid-classifier", str(runs["cnn"]),
                "--compare-generators", f"{runs['aae']}", "--device", "cpu", "--max-points", "60",
                "-o", str(out), cwd=tmp_path, env=ENV)
    assert r.returncode == 0, r.stderr
    numbers = json.loads((out / "report.json").read_text())
    aae = numbers["aae"]
    assert aae["image_critic"] == 16 and aae["image_adv_weight"] == 0.01 and aae["prior"] == "gaussian"
    rows = numbers["generation"]["models"]
    assert [row["kind"] for row in rows] == ["aae", "aae"]
    assert all(math.isfinite(row["fd"]) and row["fd"] > 0 for row in rows)
    page = html.unescape((out / "report.html").read_text())
    assert "image critic" in page and "width 16, learning rate 0.0002, the decoder's weight 0.01" in page


def test_a_plain_autoencoder_without_aae_section(runs, tmp_path):
    out = tmp_path / "rep"
    r = run_cli("report", "--checkpoint", str(runs["conv_ae"]), "--fid-classifier",
                str(runs["cnn"] / "classifier.pt"), "--device", "cpu", "--max-points", "60",
                "-o", str(out), cwd=tmp_path, env=ENV)
    assert r.returncode == 0, r.stderr
    numbers = json.loads((out / "report.json").read_text())
    assert "aae" not in numbers and [m["kind"] for m in numbers["generation"]["models"]] == ["conv_ae"]
    assert not any(p.stem.startswith("aae_") for p in out.glob("*.png"))


@pytest.mark.parametrize(("args", "says"), [
    (("--checkpoint", "synthetic", "--fid-classifier", "cnn"), "trained on digits, the shown model was "
                                                                 "trained on synthetic"),
    (("--checkpoint", "aae", "--fid-classifier", "cnn", "--compare-generators", "synthetic"),
     "was trained on synthetic"),
    (("--checkpoint", "aae", "--compare-generators", "conv_ae"),
     "--compare-generators needs --fid-classifier"),
    (("--checkpoint", "aae", "--fid-classifier", "conv_ae"), "--fid-classifier"),
])
def test_refusals_are_one_line_before_any_work(runs, tmp_path, args, says):
    argv = [str(runs[a]) if a in runs else a for a in args]
    r = run_cli("report", *argv, "--device", "cpu", "-o", str(tmp_path / "x"), cwd=tmp_path, env=ENV)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert says in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()


def test_a_study_shows_its_trials_recorded_mmd(tmp_path):
    spec = StudySpec.model_validate({
        "name": "aae",
        "model": {"kind": "aae", "c1": 8, "c2": 8, "c3": 8, "fc": 16, "latent_dim": 3, "disc_hidden": 16},
        "data": {"dataset": "synthetic", "train_subset": 300, "test_subset": 120},
        "budget": {"max_epochs": 2, "batch_size": 64, "patience": 0},
        "cv": {"folds": 2},
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "space": {"model.adv_weight": {"type": "float", "low": 0.01, "high": 1.0, "log": True}},
    })
    url = f"sqlite:///{tmp_path / 'aae.db'}"
    torch.set_num_threads(1)
    storage = open_storage(url)
    create_study(storage, spec, artifacts=str(tmp_path / "artifacts"))
    run_worker(storage, "aae", n_trials=2, device="cpu", show_progress=False)
    build_report("aae", tmp_path / "rep", storage=storage, device="cpu", max_points=60, show_progress=False)
    numbers = json.loads((tmp_path / "rep" / "report.json").read_text())
    study, _ = load_study(storage, "aae")
    record = TrialRecord.of(study.best_trial)
    assert record.prior_mmd is not None and numbers["trial"] == study.best_trial.number
    assert numbers["aae"]["trial"] == {"prior_mmd": record.prior_mmd, "penalty": record.penalty}
    assert numbers["aae"]["prior"] == "gaussian"
    assert set(AAE_FIGURES) <= {name.removesuffix(".png") for name in numbers["figures"]}
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "the trial&#x27;s recorded MMD" in page and f"{record.prior_mmd:.4f}" in page
