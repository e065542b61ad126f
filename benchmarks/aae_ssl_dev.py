"""Development check for the semi-supervised AAE (issue 12): one label draw, scored on held-out
*training* images, never the test split, to choose the labelled phase's learning rate and length.

    python benchmarks/aae_ssl_dev.py CHECKPOINT LR STEPS LABELLED_BATCH LABELS [devcurve]

CHECKPOINT: an AAE trained with model.categories > 0. 'dev' is the accuracy on 5,000 training
images outside the drawn labels; with `devcurve` the fit's history is that accuracy every 50 steps
(otherwise the draw's validation labels, as `aeopt baseline few-labels` uses them).
"""

import sys
import time

import torch

from aeopt.training.checkpoint import load_checkpoint
from aeopt.training.data import load_dataset, stratified_split, stratified_subset, to_float
from aeopt.training.kinds.aae_ssl import CategoryClassifier, SemiSupervisedSettings, fit_semi_supervised
from aeopt.training.supervised import evaluate

torch.set_num_threads(1)
CPU = torch.device("cpu")
ck, lr = sys.argv[1], float(sys.argv[2])
steps, lb, labels = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
t = time.time()
model, cfg, _ = load_checkpoint(ck, CPU)
pool = load_dataset("fashion_mnist", "/work/shared/data").train
idx = stratified_subset(pool.y, labels, 0)
rest = torch.ones(len(pool), dtype=torch.bool)
rest[idx] = False
restidx = torch.nonzero(rest).flatten()
dev = restidx[torch.randperm(len(restidx), generator=torch.Generator().manual_seed(99))[:5000]]
lab = pool.take(idx)
tr, va = stratified_split(lab.y, 0.2, 0)
X = to_float(pool.x[restidx], CPU)
train = (to_float(lab.x[tr], CPU), lab.y[tr])
val = (to_float(lab.x[va], CPU), lab.y[va])
devxy = (to_float(pool.x[dev], CPU), pool.y[dev])
print("dev before", evaluate(CategoryClassifier(model), *devxy).accuracy, flush=True)
clf, f = fit_semi_supervised(model, X, train, devxy if len(sys.argv) > 6 else val, lr=lr, seed=0,
                             settings=SemiSupervisedSettings(steps=steps, labelled_batch=lb, eval_every=50))
print(sys.argv[1:], "dev", evaluate(clf, *devxy).accuracy, "best step", f.best_step, f.history,
      round(time.time() - t), flush=True)
