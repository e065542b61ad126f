"""Label spreading on codes: nearest neighbours in chunks, the spread itself, the vote outside the
graph, and on real digits a spread from few labels that beats a classifier of those labels alone."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from torch import nn

from aeopt.training.data import load_dataset, stratified_subset, to_float
from aeopt.training.label_spreading import CodeSpace, SpreadSettings, encode, nearest, spread, vote


def test_nearest_in_chunks_matches_the_whole_matrix_and_can_skip_self():
    gen = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(50, 8, generator=gen), dim=1)
    sims, idx = nearest(z, z, 5, chunk=7)
    full = (z @ z.T).topk(5, dim=1)
    assert torch.equal(idx, full.indices) and torch.allclose(sims, full.values)
    assert torch.equal(idx[:, 0], torch.arange(50))  # each row is its own nearest...
    _, idx = nearest(z, z, 5, skip_self=True, chunk=7)
    assert not (idx == torch.arange(50).unsqueeze(1)).any()  # ...unless told to skip it
    assert torch.equal(idx, (z @ z.T).fill_diagonal_(-2.0).topk(5, dim=1).indices)


def two_clusters(n: int = 40) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    a = torch.tensor([1.0, 0.0, 0.0]) + 0.05 * torch.randn(n, 3, generator=gen)
    b = torch.tensor([0.0, 1.0, 0.0]) + 0.05 * torch.randn(n, 3, generator=gen)
    return F.normalize(torch.cat([a, b]), dim=1)


def test_one_seed_per_cluster_labels_its_whole_cluster():
    z = two_clusters()
    scores = spread(z, torch.tensor([0, 40]), torch.tensor([1, 0]), 2, SpreadSettings(neighbours=5))
    assert torch.allclose(scores.sum(1), torch.ones(80))
    assert (scores[:40].argmax(1) == 1).all() and (scores[40:].argmax(1) == 0).all()
    # Images outside the graph take their neighbours' labels.
    outside = F.normalize(torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.9, 0.05]]), dim=1)
    assert vote(outside, z, scores, SpreadSettings(neighbours=5)).argmax(1).tolist() == [1, 0]


def test_alpha_zero_keeps_the_seeds_and_leaves_the_rest_uniform():
    z = two_clusters(10)
    scores = spread(z, torch.tensor([3]), torch.tensor([2]), 3, SpreadSettings(neighbours=3, alpha=0.0))
    assert scores[3].tolist() == [0.0, 0.0, 1.0]
    rest = torch.cat([scores[:3], scores[4:]])
    assert torch.allclose(rest, torch.full_like(rest, 1 / 3))


def test_a_class_with_more_seeds_does_not_flood_the_graph():
    # Cluster a has 10 seeds of class 0, cluster b one seed of class 1: b must still be class 1.
    z = two_clusters()
    seeds = torch.cat([torch.arange(10), torch.tensor([40])])
    labels = torch.cat([torch.zeros(10, dtype=torch.long), torch.tensor([1])])
    scores = spread(z, seeds, labels, 2, SpreadSettings(neighbours=10))
    assert (scores[41:].argmax(1) == 1).all()


def test_code_space_standardises_by_the_graph_and_keeps_a_dead_unit_finite():
    z = torch.randn(100, 4) * torch.tensor([1.0, 10.0, 0.1, 0.0]) + 5
    out = CodeSpace(z)(z)
    assert torch.isfinite(out).all() and torch.allclose(out.norm(dim=1), torch.ones(100))


def test_encode_uses_eval_mode_and_restores_training():
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.9), nn.Linear(4, 2))
    model.encode = model.forward
    model.train()
    x = torch.ones(3, 1, 2, 2)
    assert torch.equal(encode(model, x, batch=2), encode(model, x))  # no dropout: deterministic
    assert model.training


def test_spread_from_few_digit_labels_beats_a_classifier_of_those_labels_alone():
    # Real data (scikit-learn's digits), pixels as codes: 20 labels, scored on the digits test split.
    ds = load_dataset("digits")
    seeds = stratified_subset(ds.train.y, 20, 0)
    x = to_float(ds.train.x, "cpu").flatten(1)
    x_test = to_float(ds.test.x, "cpu").flatten(1)
    space = CodeSpace(x)
    settings = SpreadSettings(neighbours=10)
    scores = spread(space(x), seeds, ds.train.y[seeds], 10, settings)
    voted = vote(space(x_test), space(x), scores, settings)
    spread_acc = float((voted.argmax(1) == ds.test.y).float().mean())
    probe = LogisticRegression(max_iter=2000).fit(x[seeds].numpy(), ds.train.y[seeds].numpy())
    probe_acc = probe.score(x_test.numpy(), ds.test.y.numpy())
    assert spread_acc > probe_acc + 0.05 and spread_acc > 0.8, (spread_acc, probe_acc)
