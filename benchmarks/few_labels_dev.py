"""Development check for consistency regularisation at few labels (issue 12 item 5): ONE label
draw, scored on held-out *training* images outside the draw (never the test split), to choose the
consistency phase's settings before the 3-draw measurement.

    python benchmarks/few_labels_dev.py CHECKPOINT|random:CHECKPOINT LABELS [key=value ...]

key=value: any `ConsistencySettings` field (steps=600 threshold=0.95 lr=1e-3 ...), plus draw=0,
spread=1 (also label spreading on the encoder's codes, sklearn LabelSpreading with a kNN graph).
'dev' is the accuracy on 5,000 training images outside the drawn labels; they are kept out of the
unlabelled images too, as the test split is in `aeopt baseline few-labels`. The consistency phase
starts from the standard recipe's fine-tune (the first figure printed).
"""

import sys
import time

import torch

from aeopt.stages.classifier_run import labelled_split
from aeopt.stages.few_labels import RECIPE, load_encoders
from aeopt.stages.finetune_fit import FinetuneSetup, finetune_once, split_xy
from aeopt.training.consistency import fit_consistency, settings_from
from aeopt.training.data import stratified_subset, to_float, training_pool
from aeopt.training.supervised import augmentation_for, evaluate

torch.set_num_threads(1)
CPU = torch.device("cpu")
source, labels = sys.argv[1], int(sys.argv[2])
opts = dict(a.split("=", 1) for a in sys.argv[3:])
draw, spread = int(opts.pop("draw", 0)), int(opts.pop("spread", 0))
settings = settings_from(int(opts.pop("steps", 600)), [f"{k}={v}" for k, v in opts.items()])
t0 = time.time()
if source.startswith("random:"):
    encoders, _ = load_encoders({}, source[7:], RECIPE, CPU)
    cfg, state = encoders["random"]
else:
    encoders, _ = load_encoders({"ae": source}, None, RECIPE, CPU)
    cfg, state = encoders["ae"]
data_cfg = cfg.data.model_copy(update={"split_seed": draw})
cfg = cfg.model_copy(update={"data": data_cfg, "seed": draw})
data = labelled_split(data_cfg, labels)
pool = training_pool(data_cfg)
rest = torch.ones(len(pool), dtype=torch.bool)
rest[stratified_subset(pool.y, labels, draw)] = False
restidx = torch.nonzero(rest).flatten()
perm = torch.randperm(len(restidx), generator=torch.Generator().manual_seed(99))
dev_idx, unl_idx = restidx[perm[:5000]], restidx[perm[5000:]]
devxy = (to_float(pool.x[dev_idx], CPU), pool.y[dev_idx])
unlabelled = to_float(pool.x[unl_idx], CPU)
train, val = split_xy(data.train, CPU), split_xy(data.val, CPU)
setup = FinetuneSetup(cfg, state, len(data.classes), CPU)
model, fit = finetune_once(setup, train, val, seed=draw)
print(source, labels, "draw", draw, "fine-tune dev", round(evaluate(model, *devxy).accuracy, 4),
      "val", round(fit.best_val_acc, 3), round(time.time() - t0), "s", flush=True)

if spread and state is not None:
    from sklearn.semi_supervised import LabelSpreading

    model.eval()
    with torch.no_grad():
        enc = model.encoder
        codes = torch.cat([enc(x) for x in (train[0], val[0], unlabelled[:20000], devxy[0])]).numpy()
    y = -torch.ones(codes.shape[0], dtype=torch.long)
    y[: train[1].shape[0] + val[1].shape[0]] = torch.cat([train[1], val[1]])
    codes = (codes - codes.mean(0)) / (codes.std(0) + 1e-6)
    ls = LabelSpreading(kernel="knn", n_neighbors=10, alpha=0.2, max_iter=50).fit(codes, y.numpy())
    pred = torch.as_tensor(ls.transduction_[-5000:])
    print("label spreading (fine-tuned encoder's codes) dev", float((pred == devxy[1]).float().mean()),
          flush=True)

weak = augmentation_for(cfg.finetune.augment, cfg.data.dataset, train[0].shape[0])


def show(step, row):
    print({k: round(v, 4) for k, v in row.items()}, round(time.time() - t0), "s", flush=True)


model, cfit = fit_consistency(model, train, devxy, unlabelled, seed=draw, settings=settings, weak=weak,
                              on_eval=show)
print("RESULT", sys.argv[1:], "dev", round(evaluate(model, *devxy).accuracy, 4), round(time.time() - t0), "s",
      flush=True)
