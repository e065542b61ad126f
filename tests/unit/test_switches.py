"""Every on/off switch reads the same words: `AEOPT_FUSED=false` means what `AEOPT_MALLOC=false` means."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aeopt import allocator
from aeopt.config import load_run_config
from aeopt.switches import turned_off, word
from aeopt.training import cv, fused, lanes, layout

WORDS = [("1", True), ("TRUE", True), (" yes ", True), ("on", True), ("0", False), ("False", False),
         ("no", False), ("OFF ", False), ("", None), ("2", None), ("maybe", None)]


@pytest.mark.parametrize(("value", "meaning"), WORDS)
def test_word(value, meaning):
    assert word(value) is meaning


def test_only_an_off_word_turns_a_switch_off():
    assert turned_off("X", {"X": "off"}) and turned_off("X", {"X": "0"})
    assert not turned_off("X", {}) and not turned_off("X", {"X": ""}) and not turned_off("X", {"X": "1"})
    assert not turned_off("X", {"X": "nonsense"})  # switches only turn defaults off


@pytest.mark.parametrize("off", ["0", "false", "no", "off"])
def test_every_aeopt_switch_reads_the_off_words(monkeypatch, off):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setenv("AEOPT_MALLOC", off)
    assert allocator.why_not() == f"AEOPT_MALLOC={off}"
    monkeypatch.setenv("AEOPT_CHANNELS_LAST", off)
    assert not layout.channels_last_here(cpu)
    monkeypatch.setenv("AEOPT_CUDA_GRAPHS", off)
    assert not fused.use_graphs(cuda)
    monkeypatch.setenv("AEOPT_CONCURRENT_FOLDS", off)
    assert lanes.fold_lanes(2, cpu) is None
    cfg = load_run_config(Path(__file__).resolve().parents[2] / "configs" / "conv_ae.yaml")
    monkeypatch.setenv("AEOPT_FUSED", off)
    assert not cv.use_fused(cfg, cuda)
    for name in ("AEOPT_CHANNELS_LAST", "AEOPT_CUDA_GRAPHS", "AEOPT_FUSED"):
        monkeypatch.delenv(name)
    assert layout.channels_last_here(cpu) and fused.use_graphs(cuda) and cv.use_fused(cfg, cuda)


def test_an_off_by_default_switch_is_on_for_anything_but_nothing_or_an_off_word():
    from aeopt.switches import turned_on

    assert turned_on("X", {"X": "1"}) and turned_on("X", {"X": "yes"}) and turned_on("X", {"X": "verbose"})
    for value in ("0", "false", "No", " off ", "", "  "):
        assert not turned_on("X", {"X": value}), value
    assert not turned_on("X", {})


@pytest.mark.parametrize("off", ["0", "false", "no", "off"])
def test_aeopt_debug_off_word_keeps_errors_to_one_line(monkeypatch, tmp_path, capfd, off):
    from aeopt.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AEOPT_DEBUG", off)
    assert main(["train", "nosuch"]) == 2  # with debugging on, main() re-raises the error
    err = capfd.readouterr().err
    assert err.startswith("error: nosuch: no such file") and len(err.splitlines()) == 1, err


@pytest.mark.parametrize(("value", "downloads"), [("0", True), ("off", True), ("1", False), ("yes", False)])
def test_aeopt_offline_reads_the_words(monkeypatch, tmp_path, value, downloads):
    from aeopt.training import data

    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", tmp_path / "no-debian-copy")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("AEOPT_DATA_DIR", raising=False)
    monkeypatch.setenv("AEOPT_OFFLINE", value)
    tried = []
    monkeypatch.setattr(data, "_download", lambda name, looked: tried.append(name) or "downloaded")
    data.load_dataset.cache_clear()
    try:
        if downloads:
            assert data.load_dataset("fashion_mnist") == "downloaded" and tried == ["fashion_mnist"]
        else:
            with pytest.raises(data.DataNotFoundError, match="fashion_mnist not found"):
                data.load_dataset("fashion_mnist")
            assert tried == []
    finally:
        data.load_dataset.cache_clear()
