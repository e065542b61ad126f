"""CPU thread settings against a busy neighbour: the same small training run alone and beside
1 or 2 CPU-bound processes, with torch's default threads (OpenMP threads spin while they wait),
with OMP_WAIT_POLICY=PASSIVE, with 1 thread, and with aeopt's default (aeopt/threads.py: one
thread per core idle at start).

Each run is a fresh process (OpenMP reads its settings once, at load), training the report's conv
AE for a fixed number of batches on real Fashion-MNIST images; every setting runs under each load,
interleaved, so all see the same machine.

    python benchmarks/threads.py --data-dir ../shared/data --batches 60 --repeats 3 --json threads.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SETTINGS = {
    "default": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "1 thread": {"OMP_NUM_THREADS": "1"},
    "aeopt": {"AEOPT_BENCH_DEFAULTS": "1"},  # aeopt.threads.apply_process_defaults(), as the CLI does
}

# One child: time `batches` training steps of the report's conv AE (batch 256).
CHILD = r"""
import os, sys, time
if os.environ.get("AEOPT_BENCH_DEFAULTS"):
    from aeopt.threads import apply_process_defaults
    apply_process_defaults()
import torch
from aeopt.config import RunConfig
from aeopt.training.data import prepare, to_float
from aeopt.training.engine import Trainer
from aeopt.training.models import build_model
cfg = RunConfig.model_validate({"data": {"train_subset": 6000}, "budget": {"batch_size": 256}})
x = to_float(prepare(cfg.data, sys.argv[1]).train.x, "cpu")
x = x.repeat(max(1, int(sys.argv[2]) * 256 // x.shape[0] + 1), 1, 1, 1)[: int(sys.argv[2]) * 256]
t = Trainer(build_model(cfg), cfg, torch.device("cpu"), seed=0)
t.train_epoch(x[:512])  # warm-up: allocator, kernel choice
t0 = time.perf_counter()
t.train_epoch(x)
print(time.perf_counter() - t0)
"""


def busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def run_child(env_extra: dict[str, str], args: argparse.Namespace) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", CHILD, args.data_dir or "", str(args.batches)], env=env,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("AEOPT_DATA_DIR"))
    p.add_argument("--batches", type=int, default=60)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--loads", default="0,1,2", help="numbers of busy neighbour processes")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    rows = []
    for load in [int(v) for v in args.loads.split(",")]:
        neighbours = busy(load)
        try:
            time.sleep(0.5)
            times: dict[str, list[float]] = {name: [] for name in SETTINGS}
            for _ in range(args.repeats):
                for name, env in SETTINGS.items():
                    times[name].append(run_child(env, args))
        finally:
            for proc in neighbours:
                proc.kill()
                proc.wait()
        row: dict = {"busy_neighbours": load}
        row.update({name: round(statistics.median(ts), 2) for name, ts in times.items()})
        best = min(row[name] for name in SETTINGS)
        for name in SETTINGS:
            row[f"{name} / best"] = round(row[name] / best, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"cpus": os.cpu_count(), "batches": args.batches, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
