"""What `aeopt report -o` leaves in its output folder: the figures this report drew (and says it drew),
not an earlier report's, nor one study's checkpoint under another's name. Real tiny checkpoints
(untrained models on synthetic data) and the real command or `build_report`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from aeopt.config import RunConfig
from aeopt.training.checkpoint import save_checkpoint
from aeopt.training.models import build_model
from tests.conftest import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ENV = {"OMP_NUM_THREADS": "1"}
DATA = {"dataset": "synthetic", "train_subset": 200, "test_subset": 60}
CONV = {"kind": "conv_ae", "c1": 4, "c2": 4, "c3": 4, "fc": 8, "latent_dim": 3, "dropout": 0.0}
VAE = {"kind": "vae", "hidden1": 16, "hidden2": 8, "latent_dim": 2}


def checkpoint(path: Path, model: dict, data: dict | None = None) -> Path:
    """An untrained model of this configuration saved as a real checkpoint."""
    cfg = RunConfig.model_validate({"model": model, "data": data or DATA,
                                    "budget": {"max_epochs": 1, "batch_size": 64, "patience": 0}})
    torch.manual_seed(0)
    save_checkpoint(path, build_model(cfg), cfg, {})
    return path


def _report(ckpt: Path, out: Path, *extra: str):
    r = run_cli("report", "--checkpoint", str(ckpt), "--device", "cpu", "--max-points", "40", "-o", str(out),
                *extra, cwd=out.parent, env=ENV)
    assert r.returncode == 0, r.stderr
    return r


def test_a_report_over_an_earlier_one_keeps_only_its_own_figures(tmp_path):
    vae, conv = checkpoint(tmp_path / "vae.pt", VAE), checkpoint(tmp_path / "conv.pt", CONV)
    out = tmp_path / "rep"
    _report(vae, out)
    assert (out / "latent_manifold.png").is_file() and (out / "prior_samples.png").is_file()
    # A picture of the user's own in the folder is not the report's to remove.
    (out / "mine.png").write_bytes((out / "prior_samples.png").read_bytes())
    r = _report(conv, out)
    numbers = json.loads((out / "report.json").read_text())
    pngs = sorted(p.name for p in out.glob("*.png"))
    # report.json lists what this report drew: the VAE's manifold and prior samples are gone.
    assert numbers["figures"] == ["gaussian_samples.png", "interpolations.png", "latent_pca.png",
                                  "latent_tsne.png", "reconstructions.png"], numbers["figures"]
    assert pngs == sorted([*numbers["figures"], "mine.png"]), pngs
    # The log names the page where it is, not the staging folder it was built in (deleted since).
    assert f"wrote {out / 'report.html'} and 5 PNG figures" in r.stderr, r.stderr
    assert ".partial-" not in r.stderr


def test_a_report_json_listing_every_png_does_not_remove_the_users(tmp_path):
    """report.json written before its list was exact named every PNG in the folder, the user's too:
    only those the page also links count as the report's."""
    vae, conv = checkpoint(tmp_path / "vae.pt", VAE), checkpoint(tmp_path / "conv.pt", CONV)
    out = tmp_path / "rep"
    _report(vae, out)
    (out / "mine.png").write_bytes((out / "prior_samples.png").read_bytes())
    numbers = json.loads((out / "report.json").read_text())
    numbers["figures"] = sorted(p.name for p in out.glob("*.png"))  # as the older aeopt wrote it
    (out / "report.json").write_text(json.dumps(numbers))
    _report(conv, out)
    assert (out / "mine.png").is_file() and not (out / "latent_manifold.png").exists()


def test_the_main_and_the_denoising_studys_best_checkpoints_are_both_kept(tmp_path, monkeypatch):
    """Both studies' best trial is #0: each checkpoint_trial0.pt goes to its study's folder (the
    denoising study's download replaced the main one's)."""
    from aeopt.config import StudySpec
    from aeopt.search.storage import open_storage
    from aeopt.search.studies import create_study
    from aeopt.search.worker import run_worker
    from tests.conftest import tiny_spec

    monkeypatch.delenv("AEOPT_ARTIFACTS", raising=False)
    torch.set_num_threads(1)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    storage = open_storage(url)
    for name, model in (("plain", {}), ("noisy", {"kind": "denoising_ae", "noise_std": 0.3})):
        create_study(storage, StudySpec.model_validate(tiny_spec(name=name, model=model)),
                     artifacts=str(tmp_path / "artifacts"))
        run_worker(storage, name, n_trials=1, device="cpu", show_progress=False)
    out = tmp_path / "rep"
    r = run_cli("report", "--study", "plain", "--storage", url, "--denoising", "study:noisy",
                "--device", "cpu", "--max-points", "40", "-o", str(out), env=ENV)
    assert r.returncode == 0, r.stderr
    for name, kind in (("plain", "conv_ae"), ("noisy", "denoising_ae")):
        payload = torch.load(out / "checkpoints" / name / "checkpoint_trial0.pt", weights_only=True)
        assert payload["study"] == name and payload["config"]["model"]["kind"] == kind
    assert not (out / "checkpoints" / "checkpoint_trial0.pt").exists()
    numbers = json.loads((out / "report.json").read_text())
    assert numbers["model"] == "conv_ae" and numbers["trial"] == 0
    # A report of another model into the same folder: the studies' checkpoints go with their figures;
    # a checkpoint of the user's in the folder stays.
    (out / "checkpoints" / "mine.pt").write_bytes(b"the user's")
    _report(checkpoint(tmp_path / "conv.pt", CONV), out)
    assert sorted(p.relative_to(out).as_posix() for p in (out / "checkpoints").rglob("*")) == [
        "checkpoints/mine.pt"]
    assert json.loads((out / "report.json").read_text())["checkpoints"] == []
