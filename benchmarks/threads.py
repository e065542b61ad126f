"""CPU thread settings against busy neighbours: the same small trial (2-fold cross-validation of the
report's conv AE, as a worker runs it) alone, beside 1 or 2 CPU-bound processes, and with 2 busy
processes that arrive after the trial started ("late 2"), under fixed thread settings and under
aeopt's default (aeopt/threads.py: one thread per idle core at start, then following the free cores
while it trains). The goal: aeopt's default within 10 % of the best fixed setting under each load.

Each run is a fresh process (OpenMP reads its settings once, at load); every setting runs under each
load, interleaved, so all see the same machine. Times cover the trial only (not imports).

    python benchmarks/threads.py --data-dir ../shared/data --repeats 2 --json threads.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from aeopt.machine import cpu_name

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
# torch's default thread count, folds one after another (aeopt before fold lanes); the same with
# the folds side by side in lanes (aeopt.training.lanes: one thread per lane); one thread, one fold
# at a time.
FIXED = {
    f"torch default ({CORES} threads)": {"AEOPT_CONCURRENT_FOLDS": "0"},
    f"{CORES} threads as fold lanes": {},
    "1 thread": {"OMP_NUM_THREADS": "1"},
}
PASSIVE = {f"{CORES} threads, OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"}}
AEOPT = "aeopt default"

# One child: a 2-fold cross-validation trial; prints "go" when its training starts, then the seconds.
CHILD = r"""
import os, sys, time
from aeopt import allocator
allocator.tune()  # every aeopt command's malloc settings, whatever the thread setting
if os.environ.get("AEOPT_BENCH_DEFAULTS"):
    from aeopt.threads import apply_process_defaults
    apply_process_defaults()  # as every aeopt command does, before torch loads
import torch
from aeopt.config import RunConfig
from aeopt.training.cv import cross_validate
from aeopt.training.data import prepare
cfg = RunConfig.model_validate({"data": {"train_subset": int(sys.argv[2])},
                                "budget": {"batch_size": 256, "max_epochs": int(sys.argv[3]), "patience": 0}})
data = prepare(cfg.data, sys.argv[1] or None)
print("go", flush=True)
t0 = time.perf_counter()
cross_validate(cfg, data.train, 2, 0, torch.device("cpu"))
print(time.perf_counter() - t0, torch.get_num_threads(), flush=True)
"""


def busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()


def run_child(env_extra: dict[str, str], args: argparse.Namespace, late: int) -> tuple[float, int]:
    """(seconds of the trial, torch threads at its end); `late` busy processes start with its training."""
    drop = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "AEOPT_AUTO_THREADS", "AEOPT_MAX_THREADS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_extra)
    child = subprocess.Popen([sys.executable, "-c", CHILD, args.data_dir or "", str(args.subset),
                              str(args.epochs)], env=env, stdout=subprocess.PIPE, text=True)
    neighbours: list[subprocess.Popen] = []
    try:
        assert child.stdout.readline().strip() == "go"
        neighbours = busy(late)
        seconds, threads = child.stdout.readline().split()
        child.wait()
    finally:
        stop(neighbours)
    return float(seconds), int(threads)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("AEOPT_DATA_DIR"))
    p.add_argument("--subset", type=int, default=6000, help="training images (2 folds of it train)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--loads", default="0,1,2,late2", help="busy neighbours: N from the start, lateN after")
    p.add_argument("--passive", action="store_true", help="also OMP_WAIT_POLICY=PASSIVE (a fixed setting)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    fixed = {**FIXED, **(PASSIVE if args.passive else {})}
    settings = {**fixed, AEOPT: {"AEOPT_BENCH_DEFAULTS": "1"}}
    rows = []
    for load in args.loads.split(","):
        late = int(load[4:]) if load.startswith("late") else 0
        neighbours = busy(0 if late else int(load))
        try:
            time.sleep(0.5)
            times: dict[str, list[float]] = {name: [] for name in settings}
            ends: dict[str, list[int]] = {name: [] for name in settings}
            for _ in range(args.repeats):
                for name, env in settings.items():
                    seconds, threads = run_child(env, args, late)
                    times[name].append(seconds)
                    ends[name].append(threads)
        finally:
            stop(neighbours)
        row: dict = {"busy_neighbours": load}
        row.update({name: round(statistics.median(ts), 2) for name, ts in times.items()})
        best = min(row[name] for name in fixed)
        row["best fixed"] = min(fixed, key=lambda name: row[name])
        row["aeopt / best fixed"] = round(row[AEOPT] / best, 3)
        row["aeopt threads at the end"] = ends[AEOPT]
        row["seconds per run"] = {name: [round(t, 2) for t in ts] for name, ts in times.items()}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"cpu": cpu_name(), "cores": CORES, "subset": args.subset, "epochs": args.epochs,
                       "repeats": args.repeats, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
