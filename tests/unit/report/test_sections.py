"""The report's parts without training: what the page says it shows, the given checkpoint, the
classifier section read through the shared schema, the denoising pairing, and the HTML page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from aeopt.config import RunConfig
from aeopt.errors import AeoptError
from aeopt.report.denoising import denoising_pair, partner_config
from aeopt.report.finetune import finetune_section, read_run
from aeopt.report.page import Item, Section, render_html
from aeopt.report.source import ShownModel, TrainedHere, Workbench, artifact_source, config_text, from_file
from aeopt.training.checkpoint import save_checkpoint
from aeopt.training.models import build_model

CONV = {"kind": "conv_ae", "c1": 4, "c2": 4, "c3": 4, "fc": 8, "latent_dim": 3, "dropout": 0.0}


def _cfg(**model) -> RunConfig:
    return RunConfig.model_validate({"model": {**CONV, **model}, "data": {"dataset": "digits"},
                                     "budget": {"max_epochs": 3, "batch_size": 32, "patience": 2}})


def _shown(cfg: RunConfig, owner: str = "s") -> ShownModel:
    return ShownModel(build_model(cfg).eval(), cfg, f"{owner}'s model", owner)


# ----- what the page says it shows ------------------------------------------------------------------


def test_a_trial_checkpoint_names_its_fold_and_best_epoch():
    text = artifact_source(7, {"fold": 0, "epoch": 12}, best_epoch=12)
    assert text == ("checkpoint of trial #7: fold 0's model at epoch 12, "
                    "the epoch of the trial's best mean CV loss")


def test_a_checkpoint_from_another_epoch_says_so():
    text = artifact_source(7, {"fold": 0, "epoch": 9}, best_epoch=12)
    assert "epoch 9" in text and "best mean CV loss was at epoch 12" in text
    assert "the epoch of the trial's best" not in text


def test_an_old_checkpoint_without_fold_and_epoch_is_not_called_the_best_epoch():
    text = artifact_source(3, {"study": "s", "trial": 3}, best_epoch=5)
    assert text.startswith("checkpoint of trial #3") and "last epoch" in text and "best mean" not in text


def test_a_given_checkpoint_is_named_as_given(tmp_path: Path):
    cfg = _cfg()
    path = tmp_path / "run" / "checkpoint.pt"
    save_checkpoint(path, build_model(cfg), cfg)
    shown = from_file(path, torch.device("cpu"))
    assert shown.source == f"the checkpoint {path} you gave" and shown.trial is None and shown.trained is None
    assert shown.cfg == cfg and not shown.model.training
    # The `aeopt train --out` folder works too: it holds checkpoint.pt.
    assert from_file(path.parent, torch.device("cpu")).source == f"the checkpoint {path} you gave"


@pytest.mark.parametrize("content", [None, b"not a checkpoint", b"\x80\x02K\x01."])
def test_a_bad_checkpoint_is_one_line_naming_the_option(tmp_path: Path, content):
    path = tmp_path / "x.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AeoptError) as err:
        from_file(path, torch.device("cpu"))
    assert str(err.value).startswith(f"--checkpoint {path}: ") and "\n" not in str(err.value)


def test_what_was_trained_here_is_stated_with_config_epochs_seconds_and_why():
    cfg = _cfg(latent_dim=5)
    line = config_text(cfg)
    assert line.startswith("conv_ae(c1=4, c2=4, c3=4, fc=8, latent_dim=5,")
    assert "adam lr=0.001" in line and "up to 3 epochs, patience 2" in line and "digits" in line
    trained = TrainedHere("no artifact", line, epochs=3, best_epoch=2, seconds=1.25,
                          saved_as="checkpoints/s.pt")
    rows = dict(trained.rows("conv AE"))
    assert rows["conv AE: trained for this report because"] == "no artifact"
    assert rows["conv AE: its configuration"] == line
    training = rows["conv AE: training"]
    assert training.startswith("3 epochs (weights of epoch 2") and "1.2 s" in training
    assert rows["conv AE: saved as"] == "checkpoints/s.pt"


# ----- denoising pairing ---------------------------------------------------------------------------


def test_partner_configs_differ_only_in_kind_and_noise():
    cfg = _cfg()
    den = partner_config(cfg, "denoising_ae", 0.4)
    assert den.model.kind == "denoising_ae" and den.model.noise_std == 0.4
    back = partner_config(den, "conv_ae")
    assert back.model_dump() == cfg.model_dump()


def test_two_studies_best_models_are_compared_as_they_are(tmp_path: Path):
    bench = Workbench(tmp_path, torch.device("cpu"))
    plain, den = _shown(_cfg(), "a"), _shown(_cfg(kind="denoising_ae", noise_std=0.3), "b")
    assert denoising_pair(plain, den, bench) == (plain, den)


def test_a_vae_without_a_denoising_study_has_no_comparison(tmp_path: Path):
    vae = RunConfig.model_validate({"model": {"kind": "vae", "hidden1": 8, "hidden2": 4, "latent_dim": 2}})
    assert denoising_pair(_shown(vae), None, Workbench(tmp_path, torch.device("cpu"))) is None


# ----- the classifier section ----------------------------------------------------------------------


def _classifier_run(folder: Path, **overrides) -> Path:
    metrics = {"task": "finetune", "model": "conv_ae", "mode": "full", "init": "pretrained",
               "dataset": "digits", "labels": 100, "val_acc": 0.8, "test_acc": 0.75, "test_loss": 0.6,
               "per_class_acc": {"cat": 1.0, "dog": 0.5}, "epochs": 3, "best_epoch": 2, "seconds": 1.0,
               "total_seconds": 2.0, "n_train": 80, "n_val": 20, "n_test": 4, "parameters": 10,
               "trainable_parameters": 10, "device": "cpu", **overrides}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    confusion = {"classes": ["cat", "dog"], "matrix": [[2, 0], [1, 1]]}
    (folder / "confusion_matrix.json").write_text(json.dumps(confusion))
    return folder


def test_the_classifier_section_draws_the_writers_matrix_and_accuracies(tmp_path: Path):
    run = read_run(_classifier_run(tmp_path / "ft"))
    out = tmp_path / "out"
    out.mkdir()
    section, numbers = finetune_section(run, out)
    assert [i.key for i in section.items] == ["confusion_matrix", "per_class_accuracy"]
    assert all(i.png is not None and i.png.stat().st_size > 1000 for i in section.items)
    assert numbers["test_acc"] == 0.75 and numbers["per_class_acc"] == {"cat": 1.0, "dog": 0.5}
    assert ("run", "finetune conv_ae (full)") in section.table
    assert ("test accuracy", "0.7500") in section.table


@pytest.mark.parametrize("metrics", [None, "not json", json.dumps({"accuracy": 0.9, "confusion": [[1]]})])
def test_a_folder_that_is_not_a_classifier_run_is_one_line(tmp_path: Path, metrics):
    folder = tmp_path / "ft"
    folder.mkdir()
    if metrics is not None:
        (folder / "metrics.json").write_text(metrics)
    with pytest.raises(AeoptError) as err:
        read_run(folder)
    assert str(err.value).startswith("--finetune ") and "\n" not in str(err.value)


# ----- the page ------------------------------------------------------------------------------------


def test_the_page_escapes_text_and_says_why_a_figure_is_missing(tmp_path: Path):
    png = tmp_path / "a.png"
    png.write_bytes(b"\x89PNG fake")
    sections = [Section("The <model>", "shown: a & b", [Item("a", "A", png, caption="cap"),
                                                       Item("b", "B", missing="too few trials")],
                        [("why", "<no artifact>")], key="model")]
    page = render_html("t", "sub", sections, tmp_path)
    assert '<section id="model"><h2>The &lt;model&gt;</h2>' in page and "shown: a &amp; b" in page
    assert "<td>&lt;no artifact&gt;</td>" in page and "Not available: too few trials" in page
    assert 'src="data:image/png;base64,' in page and '<a href="a.png">PNG</a>' in page
    assert 'href="#model"' in page and "<script" in page and 'src="http' not in page
