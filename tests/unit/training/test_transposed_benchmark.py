"""benchmarks/transposed_layers.py runs and compares the same layers (a small batch, one round)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[3]


def _load():
    path = REPO / "benchmarks" / "transposed_layers.py"
    spec = importlib.util.spec_from_file_location("transposed_layers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_decoder_layer_is_timed_every_way_and_checked_equal(tmp_path):
    bench = _load()
    out = tmp_path / "layers.json"
    before = torch.get_num_threads()
    result = bench.main(["--batch", "4", "--threads", "1", "--rounds", "1", "--steps", "1",
                         "--json", str(out)])
    assert torch.get_num_threads() == before
    assert result["cpu"].strip()  # the CPU kind the figures belong to
    assert json.loads(out.read_text()) == result
    assert [r["layer"] for r in result["layers"]] == [layer[0] for layer in bench.LAYERS]
    for row in result["layers"]:
        timing = row["1t"]
        assert timing["torch_ms"] > 0 and timing["matmul_ms"] > 0 and timing["kernel_ms"] > 0
        assert timing["faster"] == ("matmul" if timing["matmul_ms"] < timing["kernel_ms"] else "kernel")
        pick = row["rule_picks"]
        assert pick == ("matmul" if row["out"] == 1 or row["size"] == 3 else "kernel")
        assert timing["aeopt_speedup"] == timing["torch_ms"] / timing[f"{pick}_ms"]
