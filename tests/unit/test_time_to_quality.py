"""benchmarks/time_to_quality.py: what each arm refits is what it searched, specs by arm, merged runs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ttq():
    path = REPO / "benchmarks" / "time_to_quality.py"
    spec = importlib.util.spec_from_file_location("time_to_quality", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["time_to_quality"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("time_to_quality", None)


def test_the_plain_scripts_refit_trains_as_the_script_did(ttq):
    # torch's SGD without momentum and batches of 128: aeopt's defaults (momentum 0.9, 256) would
    # refit another configuration than the one the plain arm searched.
    args = ttq.parse_args([])
    trial = type("T", (), {"params": {"c1": 8, "c2": 32, "c3": 16, "optimizer": "sgd", "lr": 0.02}})()
    cfg = ttq.optuna_config(trial, args)
    assert (cfg.model.c1, cfg.model.c2, cfg.model.c3) == (8, 32, 16)
    o = cfg.optim
    assert (o.name, o.lr, o.momentum, o.weight_decay) == ("sgd", 0.02, 0.0, 0.0)
    assert cfg.budget.batch_size == ttq.PLAIN_BATCH == 128


def test_arms_and_their_specs(ttq, tmp_path):
    assert ttq.spec_path("aeopt") == REPO / "studies" / "conv_ae.yaml"
    assert ttq.spec_path("grid") == REPO / "studies" / "seed_grid.yaml"
    assert ttq.spec_path(f"aeopt:{tmp_path}/old.yaml") == tmp_path / "old.yaml"
    assert ttq.subset(ttq.parse_args(["--train-subset", "0"])) == "null"
    assert ttq.subset(ttq.parse_args([])) == "12000"
    smoke = ttq.parse_args(["--smoke"])
    assert (smoke.dataset, smoke.budgets, smoke.train_subset) == ("digits", "20", 600)


def _row(arm: str, budget: float, mse: float | None) -> dict:
    refit = {"test_mse": mse, "epochs": 3, "seconds": 1.0} if mse is not None else None
    return {"arm": arm, "budget": budget, "searched_seconds": budget + 1, "trials": 4, "complete": 2,
            "pruned": 2, "best": None, "refit": refit}


def test_merge_orders_rows_and_draws_each_arm(ttq, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"settings": {}, "rows": [_row("optuna", 600, 0.015),
                                                      _row("aeopt", 300, 0.013)]}))
    b.write_text(json.dumps({"settings": {}, "rows": [_row("aeopt", 600, 0.012), _row("grid", 600, None)]}))
    args = ttq.parse_args(["--merge", str(a), str(b), "--json", str(tmp_path / "m.json"),
                           "--png", str(tmp_path / "m.png")])
    ttq.merge(args)
    merged = json.loads((tmp_path / "m.json").read_text())
    order = [(r["arm"], r["budget"]) for r in merged["rows"]]
    assert order == [("aeopt", 300), ("aeopt", 600), ("grid", 600), ("optuna", 600)]
    assert (tmp_path / "m.png").stat().st_size > 1000
    lines = capsys.readouterr().out.splitlines()
    assert "0.01200" in lines[3] and "none" in lines[4]  # a row without a refit says so
