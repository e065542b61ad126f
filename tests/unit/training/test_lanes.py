"""Lanes: folds trained side by side give the sequential path's numbers, and the pool keeps order,
errors and thread counts as documented."""

from __future__ import annotations

import threading

import pytest
import torch

from aeopt import threads
from aeopt.config import RunConfig
from aeopt.training.cv import cross_validate
from aeopt.training.data import Split
from aeopt.training.kinds.base import Dropout, normal_like, random_stream
from aeopt.training.lanes import LaneCancelled, Lanes, lane_count, open_lanes

CPU = torch.device("cpu")


def _pool(n: int = 300) -> Split:
    g = torch.Generator().manual_seed(1)
    return Split((torch.rand(n, 1, 28, 28, generator=g) * 255).to(torch.uint8), torch.arange(n) % 10)


# Every source of randomness a fold's epoch has: dropout masks, denoising noise, a VAE's samples,
# an adversarial AE's prior samples and second optimizer.
@pytest.mark.parametrize("model", [
    {"kind": "conv_ae", "dropout": 0.3, "c1": 4, "c2": 8, "c3": 8, "fc": 16},
    {"kind": "denoising_ae", "dropout": 0.2, "noise_std": 0.3, "c1": 4, "c2": 8, "c3": 8, "fc": 16},
    {"kind": "vae", "hidden1": 32, "hidden2": 16},
    {"kind": "aae", "c1": 4, "c2": 4, "c3": 4, "fc": 8, "latent_dim": 3, "disc_hidden": 8},
])
def test_folds_in_lanes_give_the_sequential_numbers(model):
    cfg = RunConfig.model_validate({"model": model, "budget": {"batch_size": 64, "max_epochs": 2}})
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the lanes' own count, so the kernels sum in the same order
    try:
        seq = cross_validate(cfg, _pool(), 3, 0, CPU, fused=False, concurrent=False)
    finally:
        torch.set_num_threads(before)
    side = cross_validate(cfg, _pool(), 3, 0, CPU, fused=False, concurrent=True)
    again = cross_validate(cfg, _pool(), 3, 0, CPU, fused=False, concurrent=True)
    assert (seq.lanes, side.lanes) == (1, 2)
    # Bit for bit: each fold draws from its own generator whichever lane runs it, so neither the
    # lanes nor their timing change a seeded run.
    assert side.history == seq.history and again.history == seq.history
    assert side.fold_losses == seq.fold_losses
    assert side.best_epoch == seq.best_epoch
    for a, b in zip(seq.model.state_dict().values(), side.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_the_random_stream_drives_dropout_and_samples_and_only_in_its_block():
    drop = Dropout(0.5).train()
    x = torch.ones(4000)
    with random_stream(torch.Generator().manual_seed(3)):
        a, na = drop(x), normal_like(x)
    with random_stream(torch.Generator().manual_seed(3)):
        b, nb = drop(x), normal_like(x)
    assert torch.equal(a, b) and torch.equal(na, nb)
    assert set(a.unique().tolist()) == {0.0, 2.0}  # inverted dropout: kept units scaled by 1 / (1 - p)
    assert 0.45 < (a == 0).float().mean() < 0.55
    torch.manual_seed(3)
    outside = drop(x)  # no stream: torch's global generator, as nn.Dropout
    torch.manual_seed(3)
    assert torch.equal(outside, torch.nn.Dropout(0.5).train()(x))
    assert torch.equal(drop.eval()(x), x)


def test_lanes_keep_order_and_a_failure_stops_the_rest_then_surfaces():
    finished, checked = [], []

    with Lanes(2) as lanes:
        assert lanes.map(lambda i: i * i, range(5)) == [0, 1, 4, 9, 16]

        def work(i: int) -> int:
            if i == 1:
                raise ValueError("item 1 failed")
            threading.Event().wait(0.2)  # item 0 is still running when item 1 fails
            try:
                lanes.check()  # long work looks between its steps
            except LaneCancelled:
                checked.append(i)
                raise
            finished.append(i)
            return i

        with pytest.raises(ValueError, match="item 1 failed"):  # not item 0's LaneCancelled
            lanes.map(work, range(4))
        # Item 0 stopped at its check; items 2 and 3 never started.
        assert checked == [0] and finished == []
        assert lanes.map(lambda i: i + 1, range(3)) == [1, 2, 3]  # the next map starts clean


def test_a_lane_holds_its_own_thread_count_and_leaves_the_callers_alone():
    before = torch.get_num_threads()
    with Lanes(2, threads_each=1) as lanes:
        seen = lanes.map(lambda _: (torch.get_num_threads(), threading.current_thread().name), range(4))
    assert {n for n, _ in seen} == {1}
    assert all(name.startswith("aeopt-lane") for _, name in seen)
    assert torch.get_num_threads() == before


def test_lane_counts_follow_the_budget_and_the_work():
    assert lane_count(5, budget=2) == 2
    assert lane_count(1, budget=8) == 1
    assert lane_count(3, budget=16) == 3
    assert open_lanes(5, budget=1) is None  # one core: folds run one after another
    lanes = open_lanes(5, budget=16)
    try:
        assert (lanes.n, lanes.threads_each) == (5, 3)
    finally:
        lanes.close()


def test_only_the_main_thread_governs(monkeypatch):
    calls = []
    monkeypatch.setattr(threads.GOVERNOR, "tick", lambda: calls.append(threading.current_thread().name))
    worker = threading.Thread(target=threads.tick, name="not-main")
    worker.start()
    worker.join()
    threads.tick()
    assert calls == [threading.main_thread().name]
