"""Development check for the contrastive auxiliary term (issue 12 item 5, few labels): pretrain an
autoencoder with `contrastive.weight` > 0 (or not) on the run's 48,000 training images without
labels, then score the few-label recipe's fine-tune on ONE label draw against held-out *training*
images outside the draw (never the test split), beside random initialisation of the same network.

    python benchmarks/contrastive_dev.py OUT.pt LABELS [--set key=value ...] [random=1] [steps=N ...]

--set: run-config overrides on configs/conv_ae.yaml (model.fc=64, contrastive.weight=1,
budget.max_epochs=10 ...). OUT.pt is reused when it exists (no pretraining). random=1 also
fine-tunes the same network from random initialisation. steps=N > 0 adds N FixMatch steps after the
fine-tune (other key=value: ConsistencySettings fields; finetune.KEY=VALUE: the fine-tune's, after
the few-label recipe's). 'dev' is the accuracy on 5,000 training
images outside the drawn labels, kept out of the unlabelled images too.
"""

import sys
import time
from pathlib import Path

import torch
from dev_draw import CPU, held_out_draw

from aeopt.config import load_run_config
from aeopt.stages.few_labels import RECIPE
from aeopt.stages.finetune_fit import finetune_once
from aeopt.training.checkpoint import save_checkpoint
from aeopt.training.consistency import fit_consistency, settings_from
from aeopt.training.data import prepare, to_float
from aeopt.training.engine import fit, mse, set_seed
from aeopt.training.models import build_model
from aeopt.training.supervised import augmentation_for, evaluate

torch.set_num_threads(1)
out, labels = Path(sys.argv[1]), int(sys.argv[2])
rest_args = sys.argv[3:]
overrides = [rest_args[i + 1] for i, a in enumerate(rest_args) if a == "--set"]
opts = dict(a.split("=", 1) for i, a in enumerate(rest_args)
            if a != "--set" and (i == 0 or rest_args[i - 1] != "--set"))
draw, also_random = int(opts.pop("draw", 0)), int(opts.pop("random", 0))
steps = int(opts.pop("steps", 0))
recipe = [*RECIPE, *(f"{k}={opts.pop(k)}" for k in list(opts) if k.startswith("finetune."))]
t0 = time.time()

if not out.exists():
    cfg = load_run_config("configs/conv_ae.yaml", ["budget.patience=0", *overrides])
    data = prepare(cfg.data)
    train_x, val_x = to_float(data.train.x, CPU), to_float(data.val.x, CPU)
    set_seed(cfg.seed)
    model = build_model(cfg)

    def show(epoch, row):
        print({k: round(v, 5) for k, v in row.items()}, round(time.time() - t0), "s", flush=True)

    model, result = fit(cfg, train_x, val_x, CPU, model=model, progress=show)
    save_checkpoint(out, model, cfg, {"val_mse": mse(model, val_x), "epochs": result.epochs})
    print("pretrained", out, "val mse", round(mse(model, val_x), 5), round(result.seconds), "s", flush=True)


def dev_score(source: str) -> None:
    held = held_out_draw(None, str(out), labels, draw, recipe) if source == "random" else \
        held_out_draw(source, None, labels, draw, recipe)
    train, devxy = held.train, held.dev
    model, fit_ = finetune_once(held.setup, train, held.val, seed=draw)
    print("RESULT", source, labels, "draw", draw, recipe[len(RECIPE):], "fine-tune dev",
          round(evaluate(model, *devxy).accuracy, 4),
          "val", round(fit_.best_val_acc, 3), round(time.time() - t0), "s", flush=True)
    if steps > 0:
        settings = settings_from(steps, [f"{k}={v}" for k, v in opts.items()])
        cfg = held.setup.cfg
        weak = augmentation_for(cfg.finetune.augment, cfg.data.dataset, train[0].shape[0])
        model, _ = fit_consistency(
            model, train, devxy, held.unlabelled(), seed=draw, settings=settings, weak=weak,
            on_eval=lambda s, row: print(s, round(row["val_acc"], 4), flush=True))
        print("RESULT", source, labels, "draw", draw, f"+ FixMatch {steps} dev",
              round(evaluate(model, *devxy).accuracy, 4), round(time.time() - t0), "s", flush=True)


dev_score(str(out))
if also_random:
    dev_score("random")
