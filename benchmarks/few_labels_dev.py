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
from dev_draw import held_out_draw

from aeopt.stages.few_labels import RECIPE
from aeopt.stages.finetune_fit import finetune_once
from aeopt.training.consistency import fit_consistency, settings_from
from aeopt.training.supervised import augmentation_for, evaluate

torch.set_num_threads(1)
source, labels = sys.argv[1], int(sys.argv[2])
opts = dict(a.split("=", 1) for a in sys.argv[3:])
draw, spread = int(opts.pop("draw", 0)), int(opts.pop("spread", 0))
settings = settings_from(int(opts.pop("steps", 600)), [f"{k}={v}" for k, v in opts.items()])
t0 = time.time()
held = (held_out_draw(None, source[7:], labels, draw, RECIPE) if source.startswith("random:")
        else held_out_draw(source, None, labels, draw, RECIPE))
cfg, state = held.setup.cfg, held.setup.ae_state
train, devxy, unlabelled = held.train, held.dev, held.unlabelled()
model, fit = finetune_once(held.setup, train, held.val, seed=draw)
print(source, labels, "draw", draw, "fine-tune dev", round(evaluate(model, *devxy).accuracy, 4),
      "val", round(fit.best_val_acc, 3), round(time.time() - t0), "s", flush=True)

if spread and state is not None:
    from sklearn.semi_supervised import LabelSpreading

    model.eval()
    with torch.no_grad():
        enc = model.encoder
        codes = torch.cat([enc(x) for x in (train[0], held.val[0], unlabelled[:20000], devxy[0])]).numpy()
    y = -torch.ones(codes.shape[0], dtype=torch.long)
    y[: train[1].shape[0] + held.val[1].shape[0]] = torch.cat([train[1], held.val[1]])
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
