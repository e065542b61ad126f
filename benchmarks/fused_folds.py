"""Fold training one after another against all folds fused in one vmapped step, side by side.

Both paths train the same k models (same initial weights, same batches) on real Fashion-MNIST
folds; each repeat runs one epoch of each path, alternating, so both see the same machine load.
Prints seconds per k-fold epoch and training images per second for each, and their ratio. On CUDA a
third path, fused + CUDA graphs (aeopt.training.fused.use_graphs), with its one-time capture cost.
On the CPU a third path instead, lanes: the sequential path's Trainers stepped side by side, one fold
per lane (aeopt.training.lanes, the CPU default of `cross_validate`), as many lanes as this process's
cores (`--lanes` to choose), one torch thread each.
Each row also gives the seconds of a whole k-fold x `--trial-epochs` trial, estimated as that many
epochs of training plus one validation pass over every fold per epoch (+ the capture, once).

    python benchmarks/fused_folds.py --data-dir ../shared/data --device cpu --threads 1 --subset 12000
    python benchmarks/fused_folds.py --data-dir ../shared/data --device cuda --json fused_cuda.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch

from aeopt import threads
from aeopt.config import RunConfig
from aeopt.machine import cpu_name
from aeopt.training.data import prepare, stratified_folds, to_float
from aeopt.training.engine import Trainer, resolve_device
from aeopt.training.fused import FusedFolds
from aeopt.training.lanes import Lanes, lane_count
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
    trainers = _twins(models, cfg, device)
    paths = {"fused": FusedFolds([copy.deepcopy(m) for m in models], cfg, device,
                                 seeds=list(range(args.folds)), graphs=False)}
    if device.type == "cuda":
        paths["fused+graphs"] = FusedFolds([copy.deepcopy(m) for m in models], cfg, device,
                                           seeds=list(range(args.folds)), graphs=True)
    fold_x = [x[f.to(device)] for f in folds]
    val_x = [x[va.to(device)] for _, va in stratified_folds(pool_y, args.folds, 0)]

    def sequential() -> None:
        for t, fx in zip(trainers, fold_x, strict=True):
            t.train_epoch(fx)

    def sequential_eval() -> None:
        for t, vx in zip(trainers, val_x, strict=True):
            t.evaluate(vx)

    runs = {"sequential": (sequential, sequential_eval)}
    lanes = None
    if device.type == "cpu":
        lanes, runs[f"lanes x{args.lanes or lane_count(args.folds, threads.thread_cap())}"] = _lane_runs(
            _twins(models, cfg, device), fold_x, val_x, args)
    for name, fused in paths.items():
        runs[name] = (lambda f=fused: f.train_epoch(x, folds),
                      lambda f=fused: [f.evaluate(i, vx) for i, vx in enumerate(val_x)])
    times: dict[str, list[float]] = {name: [] for name in runs}
    evals: dict[str, list[float]] = {name: [] for name in runs}
    first: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, (train, evaluate) in runs.items():
            t0 = time.perf_counter()
            train()
            _sync(device)
            t1 = time.perf_counter()
            evaluate()
            _sync(device)
            times[name].append(t1 - t0)
            evals[name].append(time.perf_counter() - t1)
            first.setdefault(name, t1 - t0)
    if lanes is not None:
        lanes.close()
    return _row(model, args, folds, times, evals, first, [name for name in runs if name != "sequential"])


def _twins(models: list[torch.nn.Module], cfg: RunConfig, device: torch.device) -> list[Trainer]:
    """A Trainer per fold over a copy of that fold's initial model."""
    trainers = []
    for k, m in enumerate(models):
        twin = build_model(cfg)
        twin.load_state_dict(m.state_dict())
        trainers.append(Trainer(twin, cfg, device, seed=k))
    return trainers


def _lane_runs(trainers: list[Trainer], fold_x: list[torch.Tensor], val_x: list[torch.Tensor],
               args: argparse.Namespace) -> tuple[Lanes, tuple]:
    """The lanes path: (its lanes, (train one epoch, validate)), as cross_validate's CPU default."""
    n = args.lanes or lane_count(args.folds, threads.thread_cap())
    lanes = Lanes(n, threads_each=max(1, threads.thread_cap() // n))
    return lanes, (lambda: lanes.map(lambda j: j[0].train_epoch(j[1]), zip(trainers, fold_x, strict=True)),
                   lambda: lanes.map(lambda j: j[0].evaluate(j[1]), zip(trainers, val_x, strict=True)))


def _row(model: dict, args: argparse.Namespace, folds: list, times: dict[str, list[float]],
         evals: dict[str, list[float]], first: dict[str, float], fused_paths: list[str]) -> dict:
    images = sum(len(f) for f in folds)
    row = {"model": model or "report", "folds": args.folds, "images_per_epoch": images,
           "trial_epochs": args.trial_epochs}
    for path, ts in times.items():
        # The first repeat pays one-time costs (allocator warm-up, kernel selection, graph capture).
        med = statistics.median(ts[1:] if len(ts) > 2 else ts)
        ev = statistics.median(evals[path][1:] if len(ts) > 2 else evals[path])
        once = max(0.0, first[path] - med)
        row[f"{path}_s_per_epoch"] = round(med, 3)
        row[f"{path}_images_per_s"] = round(images / med)
        row[f"{path}_eval_s_per_epoch"] = round(ev, 3)
        row[f"{path}_first_epoch_extra_s"] = round(once, 3)
        row[f"{path}_s_per_trial"] = round(args.trial_epochs * (med + ev) + once, 1)
    for path in fused_paths:
        row[f"{path}_speedup"] = round(row["sequential_s_per_epoch"] / row[f"{path}_s_per_epoch"], 2)
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
    p.add_argument("--trial-epochs", type=int, default=50, help="epochs of the estimated whole trial")
    p.add_argument("--lanes", type=int, default=None, help="CPU lanes (default: this process's cores)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rows = [measure({}, args, device)] + ([measure(WIDE, args, device)] if args.wide else [])
    print(f"({device}, {torch.get_num_threads()} threads; trial = {args.folds} folds x {args.trial_epochs} "
          "epochs, estimated from the epochs measured)")
    print("| network | path | s / k-fold epoch | images / s | eval s / epoch | one-time s | s / trial | "
          "speedup |\n|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        name = "report" if r["model"] == "report" else "wide"
        for path in [k[:-len("_s_per_epoch")] for k in r if k.endswith("_s_per_epoch") and "eval" not in k]:
            print(f"| {name} | {path} | {r[f'{path}_s_per_epoch']} | {r[f'{path}_images_per_s']:,} | "
                  f"{r[f'{path}_eval_s_per_epoch']} | {r[f'{path}_first_epoch_extra_s']} | "
                  f"{r[f'{path}_s_per_trial']} | {r.get(f'{path}_speedup', 1.0)} |")
    if args.json:
        meta = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
                "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                "cpu": cpu_name()}
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
