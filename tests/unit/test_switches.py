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
