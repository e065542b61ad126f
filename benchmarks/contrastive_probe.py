"""Linear probe of an encoder at 100 labels (draw 0): logistic regression on its standardised codes,
scored on the same 5,000 held-out *training* images as benchmarks/contrastive_dev.py (never test).

    python benchmarks/contrastive_probe.py CHECKPOINT|random:CHECKPOINT ...
"""

import sys

import torch
from sklearn.linear_model import LogisticRegression

from aeopt.training.checkpoint import load_checkpoint
from aeopt.training.data import load_dataset, stratified_subset, to_float
from aeopt.training.models import build_model

torch.set_num_threads(1)
ds = load_dataset("fashion_mnist")
idx = stratified_subset(ds.train.y, 100, 0)
rest = torch.ones(len(ds.train), dtype=torch.bool)
rest[idx] = False
ridx = torch.nonzero(rest).flatten()
dev = ridx[torch.randperm(len(ridx), generator=torch.Generator().manual_seed(99))[:5000]]
for path in sys.argv[1:]:
    model, cfg, _ = load_checkpoint(path.removeprefix("random:"))
    if path.startswith("random:"):
        torch.manual_seed(0)
        model = build_model(cfg)
    model.eval()
    with torch.no_grad():
        tr = model.encoder(to_float(ds.train.x[idx], "cpu")).numpy()
        te = model.encoder(to_float(ds.train.x[dev], "cpu")).numpy()
    m, s = tr.mean(0), tr.std(0) + 1e-6
    for c in (0.1, 1.0):
        clf = LogisticRegression(max_iter=3000, C=c).fit((tr - m) / s, ds.train.y[idx].numpy())
        acc = clf.score((te - m) / s, ds.train.y[dev].numpy())
        print(path, "C", c, "linear probe dev", round(acc, 4), flush=True)
