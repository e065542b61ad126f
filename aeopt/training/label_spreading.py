"""Label spreading on an encoder's codes: few labels, many unlabelled images, no gradient steps.

Zhou et al., "Learning with local and global consistency" (NIPS 2003), on a k-nearest-neighbour
graph of the codes as in Iscen et al., "Label propagation for deep semi-supervised learning" (CVPR
2019): cosine similarities of standardised codes raised to `power`, the graph made symmetric and
normalised (S = D^-1/2 W D^-1/2), and F <- alpha S F + Y iterated from the seeds' one-hot rows Y
(each class's seeds weighted 1 / its count, so a class with more seeds does not flood the graph).

Images outside the graph (the test split) are labelled by their `neighbours` nearest graph nodes'
spread scores, weighted the same way: the graph is built once from training images only.

Pure torch on whatever device the codes are on; knows nothing of labels' meaning or of Optuna.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class SpreadSettings:
    neighbours: int = 20  # edges per node of the graph, and votes per image outside it
    alpha: float = 0.99  # how far labels travel: 0 keeps the seeds only, near 1 follows the graph
    power: float = 3.0  # similarities ** power: near neighbours count far more than far ones
    iterations: int = 100


@torch.no_grad()
def encode(model: nn.Module, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    """The codes of images x (float, [0, 1]) under `model.encode`, in eval mode, batch by batch."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model.encode(x[i:i + batch]).float() for i in range(0, len(x), batch)])
    finally:
        model.train(was_training)


class CodeSpace:
    """Codes standardised by the graph's own statistics, then unit length (cosine similarity)."""

    def __init__(self, graph_codes: torch.Tensor) -> None:
        self.mean = graph_codes.mean(0)
        self.std = graph_codes.std(0).clamp_min(1e-6)  # a dead unit must not divide by zero

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize((z - self.mean) / self.std, dim=1)


def nearest(query: torch.Tensor, keys: torch.Tensor, k: int, *, skip_self: bool = False,
            chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """(similarities, indices) of each query row's k most similar key rows (unit vectors), in
    chunks so that a 60,000 x 60,000 similarity matrix never exists whole. `skip_self`: query is
    keys, and a row is not its own neighbour."""
    sims, idx = [], []
    extra = int(skip_self)
    for i in range(0, len(query), chunk):
        s = query[i:i + chunk] @ keys.T
        if skip_self:
            rows = torch.arange(s.shape[0], device=s.device)
            s[rows, rows + i] = -2.0  # below any cosine similarity
        top = s.topk(k + extra, dim=1)
        sims.append(top.values[:, :k])
        idx.append(top.indices[:, :k])
    return torch.cat(sims), torch.cat(idx)


def _weights(sims: torch.Tensor, power: float) -> torch.Tensor:
    return sims.clamp_min(0.0) ** power


def graph(codes: torch.Tensor, settings: SpreadSettings = SpreadSettings()) -> torch.Tensor:
    """The normalized affinity D^-1/2 W D^-1/2 (sparse, N x N) of `codes` (N, d), already in the code
    space: W links each node to its `neighbours` nearest (similarity ** power), made symmetric.
    Built once per set of codes; `propagate` spreads any seeds over it."""
    n = codes.shape[0]
    sims, idx = nearest(codes, codes, settings.neighbours, skip_self=True)
    rows = torch.arange(n, device=codes.device).repeat_interleave(settings.neighbours)
    w = torch.sparse_coo_tensor(torch.stack([rows, idx.flatten()]), _weights(sims, settings.power).flatten(),
                                (n, n), check_invariants=False)  # built from valid indices
    w = (w + w.t()).coalesce()  # symmetric: i near j or j near i
    d = torch.sparse.sum(w, 1).to_dense().clamp_min(1e-12).rsqrt()
    i, j = w.indices()
    return torch.sparse_coo_tensor(w.indices(), d[i] * w.values() * d[j], (n, n), is_coalesced=True,
                                   check_invariants=False)


def propagate(s: torch.Tensor, seeds: torch.Tensor, seed_labels: torch.Tensor, n_classes: int,
              settings: SpreadSettings = SpreadSettings()) -> torch.Tensor:
    """Scores (N, n_classes), rows summing to 1, for every node of the graph `s` (from `graph`):
    `seeds` index its nodes, with their `seed_labels`."""
    n = s.shape[0]
    y = torch.zeros(n, n_classes, device=s.device)
    counts = torch.bincount(seed_labels, minlength=n_classes).clamp_min(1).float()
    y[seeds, seed_labels] = 1.0 / counts[seed_labels]
    f = y.clone()
    for _ in range(settings.iterations):
        f = settings.alpha * torch.sparse.mm(s, f) + y
    f = f.clamp_min(0.0)
    # A node no seed reaches keeps zeros: it gets the uniform row, not a division by zero.
    total = f.sum(1, keepdim=True)
    return torch.where(total > 0, f / total.clamp_min(1e-30), torch.full_like(f, 1.0 / n_classes))


def spread(codes: torch.Tensor, seeds: torch.Tensor, seed_labels: torch.Tensor, n_classes: int,
           settings: SpreadSettings = SpreadSettings()) -> torch.Tensor:
    """`propagate` over `graph(codes)`: scores (N, n_classes) for every one of `codes` (N, d)."""
    return propagate(graph(codes, settings), seeds, seed_labels, n_classes, settings)


def vote(query: torch.Tensor, codes: torch.Tensor, scores: torch.Tensor,
         settings: SpreadSettings = SpreadSettings()) -> torch.Tensor:
    """Scores (M, n_classes) of images outside the graph (`query`, in the code space): their
    nearest graph nodes' spread scores, weighted by similarity ** power."""
    sims, idx = nearest(query, codes, settings.neighbours)
    w = _weights(sims, settings.power)
    out = (w.unsqueeze(2) * scores[idx]).sum(1)
    return out / out.sum(1, keepdim=True).clamp_min(1e-30)
