"""Development check for label spreading on an encoder's codes (aeopt/training/label_spreading.py,
issue 12's few-label goals): one label draw, scored on 5,000 held-out *training* images outside the
draw (never the test split), which are kept out of the graph as the test split will be.

    python benchmarks/spread_dev.py CHECKPOINT|random:CHECKPOINT LABELS [draw=0] [grid=1]

Prints, per setting, the dev accuracy of: the spread labels voted onto the dev images, and a
logistic probe of the codes trained on the drawn labels alone (the baseline the spreading must beat).
"""

import itertools
import sys
import time

import torch
from sklearn.linear_model import LogisticRegression

from aeopt.training.checkpoint import load_checkpoint
from aeopt.training.data import load_dataset, stratified_subset, to_float
from aeopt.training.label_spreading import CodeSpace, SpreadSettings, encode, spread, vote
from aeopt.training.models import build_model

torch.set_num_threads(1)
path, labels = sys.argv[1], int(sys.argv[2])
opts = dict(a.split("=", 1) for a in sys.argv[3:])
draw, grid = int(opts.get("draw", 0)), int(opts.get("grid", 0))
t0 = time.time()
ds = load_dataset("fashion_mnist")
seeds_all = stratified_subset(ds.train.y, labels, draw)
rest = torch.ones(len(ds.train), dtype=torch.bool)
rest[seeds_all] = False
ridx = torch.nonzero(rest).flatten()
perm = torch.randperm(len(ridx), generator=torch.Generator().manual_seed(99))
dev = ridx[perm[:5000]]
graph_idx = torch.cat([seeds_all, ridx[perm[5000:]]])  # seeds first: positions 0 .. labels-1
model, cfg, _ = load_checkpoint(path.removeprefix("random:"))
if path.startswith("random:"):
    torch.manual_seed(0)
    model = build_model(cfg)
z_graph = encode(model, to_float(ds.train.x[graph_idx], "cpu"))
z_dev = encode(model, to_float(ds.train.x[dev], "cpu"))
space = CodeSpace(z_graph)
g, d = space(z_graph), space(z_dev)
y_seed, y_dev = ds.train.y[seeds_all], ds.train.y[dev]
print(path, labels, "draw", draw, "encoded", round(time.time() - t0, 1), "s", flush=True)

m, s = z_graph[:labels].mean(0), z_graph[:labels].std(0) + 1e-6
for c in (0.1, 1.0):
    clf = LogisticRegression(max_iter=3000, C=c).fit(((z_graph[:labels] - m) / s).numpy(), y_seed.numpy())
    print("RESULT probe C", c, round(clf.score(((z_dev - m) / s).numpy(), y_dev.numpy()), 4), flush=True)

settings = [SpreadSettings()]
if grid:
    settings = [SpreadSettings(neighbours=k, alpha=a, power=p)
                for k, a, p in itertools.product((10, 20, 50), (0.9, 0.99), (1.0, 3.0))]
seeds = torch.arange(labels)
for st in settings:
    t1 = time.time()
    f = spread(g, seeds, y_seed, 10, st)
    graph_acc = float((f[labels:].argmax(1) == ds.train.y[graph_idx[labels:]]).float().mean())
    acc = float((vote(d, g, f, st).argmax(1) == y_dev).float().mean())
    print("RESULT spread", st, "dev", round(acc, 4), "graph", round(graph_acc, 4),
          round(time.time() - t1, 1), "s", flush=True)

# pseudo=PER_CLASS: the stage's first pseudo-label round from the spread (seeds: the draw's 80 %),
# a fine-tune of the encoder on them beside the 80 %, early-stopped on the 20 %, scored on dev.
if "pseudo" in opts:
    from aeopt.config import load_finetune_config
    from aeopt.stages.few_labels import RECIPE, most_confident, spread_teacher
    from aeopt.stages.finetune_fit import FinetuneSetup, finetune_once
    from aeopt.stages.pretrain import autoencoder_state
    from aeopt.training.data import stratified_split
    from aeopt.training.supervised import evaluate

    extra = [f"{k}={v}" for k, v in opts.items() if k.startswith("finetune.")]
    fcfg = load_finetune_config(None, [*RECIPE, *extra], base=cfg)
    fcfg = fcfg.model_copy(update={"data": fcfg.data.model_copy(update={"split_seed": draw}), "seed": draw})
    state = None if path.startswith("random:") else autoencoder_state(load_checkpoint(path)[0])
    pool = ds.train.take(graph_idx)
    drawn = torch.arange(labels)
    rest_pos = torch.arange(labels, len(graph_idx))
    teacher = spread_teacher(fcfg, state, pool, ds.train.take(dev), drawn, rest_pos, draw=draw,
                             n_classes=10, settings=SpreadSettings(), device=torch.device("cpu"))
    print("RESULT teacher dev", round(teacher.test_acc, 4), "val", round(teacher.val_acc, 3),
          "agreement", round(teacher.agreement, 4), flush=True)
    tr, va = stratified_split(pool.y[drawn], fcfg.data.val_fraction, draw)
    train = (to_float(pool.x[tr], "cpu"), pool.y[tr])
    val = (to_float(pool.x[va], "cpu"), pool.y[va])
    idx, guessed = most_confident(teacher.scores, int(opts["pseudo"]), 10)
    print("pseudo agreement", round(float((guessed == pool.y[rest_pos][idx]).float().mean()), 4), flush=True)
    grown = (torch.cat([train[0], to_float(pool.x[rest_pos][idx], "cpu")]), torch.cat([train[1], guessed]))
    setup = FinetuneSetup(fcfg, state, 10, torch.device("cpu"))
    model_ft, fit_ = finetune_once(setup, grown, val, seed=draw)
    print("RESULT spread + pseudo", opts["pseudo"], extra, "dev",
          round(evaluate(model_ft, to_float(ds.train.x[dev], "cpu"), y_dev).accuracy, 4),
          "val", round(fit_.best_val_acc, 3), round(time.time() - t0), "s", flush=True)
