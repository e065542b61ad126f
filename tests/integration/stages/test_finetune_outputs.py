"""A fine-tune's run folder, reused: one run's outputs, complete, or the earlier run's untouched.
Tiny real runs on the synthetic dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aeopt.config import load_finetune_config
from aeopt.stages.finetune import finetune
from tests.conftest import run_cli
from tests.integration.stages.test_finetune import CPU, TINY_FT, _config, _ok

pytestmark = pytest.mark.slow

CLASSIFIER_OUTPUTS = {"metrics.json", "confusion_matrix.json", "confusion_matrix.png"}


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_kfold_run_into_a_reused_folder_leaves_no_earlier_classifier(tmp_path):
    cfg = _config(tmp_path, TINY_FT)
    out = tmp_path / "ft"
    # A single run that trains its autoencoder: classifier.pt and autoencoder/ beside the metrics.
    _ok(run_cli("finetune", str(cfg), *CPU, "--out", str(out), cwd=tmp_path))
    assert {p.name for p in out.iterdir()} == CLASSIFIER_OUTPUTS | {"classifier.pt", "autoencoder"}
    (out / "notes.txt").write_text("mine")  # not an output: left alone

    # k folds from that autoencoder, into the same folder: no classifier.pt (k models, none kept);
    # the autoencoder/ it loaded stays (metrics.json names it).
    ckpt = out / "autoencoder" / "checkpoint.pt"
    _ok(run_cli("finetune", str(cfg), *CPU, "--checkpoint", str(ckpt), "--cv", "2", "--out", str(out),
                cwd=tmp_path))
    assert {p.name for p in out.iterdir()} == CLASSIFIER_OUTPUTS | {"autoencoder", "notes.txt"}
    assert json.loads((out / "metrics.json").read_text())["autoencoder"]["checkpoint"] == str(ckpt)

    # From a checkpoint elsewhere: the earlier run's autoencoder/ is no output of this one.
    elsewhere = tmp_path / "ae.pt"
    elsewhere.write_bytes(ckpt.read_bytes())
    _ok(run_cli("finetune", str(cfg), *CPU, "--checkpoint", str(elsewhere), "--out", str(out), cwd=tmp_path))
    assert {p.name for p in out.iterdir()} == CLASSIFIER_OUTPUTS | {"classifier.pt", "notes.txt"}
    assert not list(tmp_path.glob(".ft.partial-*"))


class _Stop(Exception):
    pass


def test_a_run_stopped_part_way_leaves_the_earlier_run_as_it_was(tmp_path):
    cfg = load_finetune_config(_config(tmp_path, TINY_FT))
    out = tmp_path / "ft"
    finetune(cfg, device="cpu", out=out, show_progress=False)
    before = _files(out)
    assert "classifier.pt" in before and "autoencoder/checkpoint.pt" in before

    def stop(fold: int, epoch: int, acc: float, loss: float) -> None:
        if fold == 1:  # fold 0 has finished: a fine-tune half done
            raise _Stop

    k_fold = load_finetune_config(_config(tmp_path, {**TINY_FT, "cv": 2}))
    with pytest.raises(_Stop):
        finetune(k_fold, device="cpu", out=out, show_progress=False, on_epoch=stop)
    assert _files(out) == before
    assert not list(tmp_path.glob(".ft.partial-*"))
