"""A k-fold fine-tune on the CPU, folds one after another against folds side by side in lanes.

The same `finetune_folds` call both ways (`concurrent=False` / `True`, aeopt.training.lanes) on a
stratified subset of the real Fashion-MNIST training split, the report's conv AE encoder with the
default head (random init: the speed does not depend on the weights), repeats alternating so both
paths see the same machine load. Prints seconds per k-fold fine-tune (median of the repeats) and
their ratio.

    python benchmarks/finetune_folds.py --data-dir ../shared/data --labels 6000 --folds 5 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import yaml

from aeopt.config import FinetuneRun
from aeopt.stages.finetune_fit import FinetuneSetup, finetune_folds
from aeopt.training.data import stratified_subset, training_pool
from aeopt.training.lanes import fold_lanes

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--labels", type=int, default=6000, help="labelled training images the folds split")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    run = yaml.safe_load((ROOT / "configs" / "conv_ae.yaml").read_text())
    run["finetune"] = {"init": "random", "max_epochs": args.epochs, "patience": 0}
    cfg = FinetuneRun.model_validate(run)
    pool = training_pool(cfg.data, data_dir=args.data_dir)
    pool = pool.take(stratified_subset(pool.y, args.labels, 0))
    setup = FinetuneSetup(cfg, None, 10, torch.device("cpu"))
    lanes = fold_lanes(args.folds, torch.device("cpu"))
    n_lanes = lanes.n if lanes is not None else 1
    if lanes is not None:
        lanes.close()
    times: dict[str, list[float]] = {"one after another": [], f"side by side ({n_lanes} lanes)": []}
    accs: dict[str, list[float]] = {name: [] for name in times}
    for _ in range(args.repeats):
        for name, concurrent in zip(times, (False, None), strict=True):
            t0 = time.perf_counter()
            result = finetune_folds(setup, pool, args.folds, 0, concurrent=concurrent, keep_models=False)
            times[name].append(time.perf_counter() - t0)
            accs[name].append(result.val_acc_mean)
    rows = {name: {"s_per_finetune": round(statistics.median(ts), 2), "runs_s": [round(t, 2) for t in ts],
                   "val_acc_mean": accs[name][-1]} for name, ts in times.items()}
    base = rows["one after another"]["s_per_finetune"]
    print(f"{args.folds}-fold fine-tune of {args.labels} labelled images, {args.epochs} epochs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| folds | s per k-fold fine-tune | speed |\n|---|---:|---:|")
    for name, row in rows.items():
        row["speed"] = round(base / row["s_per_finetune"], 2)
        print(f"| {name} | {row['s_per_finetune']} | {row['speed']}x |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
