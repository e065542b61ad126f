"""Fold training one after another against all folds fused in one vmapped step, side by side.

Both paths train the same k models (same initial weights, same batches) on real Fashion-MNIST
folds; each repeat runs one epoch of each path, alternating, so both see the same machine load.
Prints seconds per k-fold epoch and training images per second for each, and their ratio.

    python benchmarks/fused_folds.py --data-dir ../shared/data --device cpu --threads 1 --subset 12000
    python benchmarks/fused_folds.py --data-dir ../shared/data --device cuda --json fused_cuda.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from aeopt.config import RunConfig
from aeopt.training.data import prepare, stratified_folds, to_float
from aeopt.training.engine import Trainer, resolve_device
from aeopt.training.fused import FusedFolds
from aeopt.training.models import build_model

WIDE = {"c1": 64, "c2": 128, "c3": 128, "fc": 256}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model: dict, args: argparse.Namespace, device: torch.device) -> dict:
    cfg = RunConfig.model_validate({"model": {"kind": "conv_ae", **model},
                                    "data": {"train_subset": args.subset},
                                    "budget": {"batch_size": args.batch_size}})
    data = prepare(cfg.data, args.data_dir)
    pool_x = torch.cat([data.train.x, data.val.x])
    pool_y = torch.cat([data.train.y, data.val.y])
    x = to_float(pool_x, device)
    folds = [tr for tr, _ in stratified_folds(pool_y, args.folds, 0)]
    models = []
    for k in range(args.folds):
        torch.manual_seed(k)
        models.append(build_model(cfg))
    trainers = []
    for k, m in enumerate(models):
        twin = build_model(cfg)
        twin.load_state_dict(m.state_dict())
        trainers.append(Trainer(twin, cfg, device, seed=k))
    fused = FusedFolds(models, cfg, device, seeds=list(range(args.folds)))
    fold_x = [x[f.to(device)] for f in folds]
    times: dict[str, list[float]] = {"sequential": [], "fused": []}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for t, fx in zip(trainers, fold_x, strict=True):
            t.train_epoch(fx)
        _sync(device)
        t1 = time.perf_counter()
        fused.train_epoch(x, folds)
        _sync(device)
        t2 = time.perf_counter()
        times["sequential"].append(t1 - t0)
        times["fused"].append(t2 - t1)
    images = sum(len(f) for f in folds)
    row = {"model": model or "report", "folds": args.folds, "images_per_epoch": images}
    for path, ts in times.items():
        # The first repeat pays one-time costs (allocator warm-up, kernel selection).
        med = statistics.median(ts[1:] if len(ts) > 2 else ts)
        row[f"{path}_s_per_epoch"] = round(med, 3)
        row[f"{path}_images_per_s"] = round(images / med)
    row["fused_speedup"] = round(row["sequential_s_per_epoch"] / row["fused_s_per_epoch"], 2)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--subset", type=int, default=None, help="training images (stratified); default all")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--wide", action="store_true", help="also the wide conv AE (64/128/128, fc 256)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rows = [measure({}, args, device)] + ([measure(WIDE, args, device)] if args.wide else [])
    print(f"{'model':>8} {'folds':>5} {'seq s/epoch':>12} {'fused s/epoch':>14} {'seq img/s':>10} "
          f"{'fused img/s':>12} {'speedup':>8}   ({device}, {torch.get_num_threads()} threads)")
    for r in rows:
        name = "report" if r["model"] == "report" else "wide"
        print(f"{name:>8} {r['folds']:>5} {r['sequential_s_per_epoch']:>12} {r['fused_s_per_epoch']:>14} "
              f"{r['sequential_images_per_s']:>10} {r['fused_images_per_s']:>12} {r['fused_speedup']:>8}")
    if args.json:
        meta = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
                "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
