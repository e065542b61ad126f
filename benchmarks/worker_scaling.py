"""Worker scaling on a shared storage: trials per hour with 1 and 2 worker processes, and the
share of a trial's time spent in storage calls.

Each arm gets a fresh study with the same spec and the same study-wide trial target, run by
`aeopt launch` (real worker processes). The storage share comes from one in-process worker whose
storage object has every public method timed.

    python benchmarks/worker_scaling.py --storage postgresql://postgres@127.0.0.1:5432/test \\
        --data-dir ../shared/data --trials 8 --json out.json
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import time
import uuid
from pathlib import Path

from aeopt.config import StudySpec
from aeopt.search.launch import launch
from aeopt.search.records import StudyCounts
from aeopt.search.storage import Storage, open_storage
from aeopt.search.studies import create_study, load_study


def spec(train_subset: int, epochs: int) -> StudySpec:
    return StudySpec.model_validate({
        "model": {"kind": "conv_ae", "c1": 8, "c2": 16, "c3": 16, "fc": 32, "latent_dim": 10, "dropout": 0.2},
        "data": {"dataset": "fashion_mnist", "train_subset": train_subset},
        "budget": {"max_epochs": epochs, "batch_size": 128},
        "cv": {"folds": 2, "seed": 0},
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "space": {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
    })


class TimedStorage:
    """Wraps a storage and adds up the seconds spent in its methods."""

    def __init__(self, inner):
        self._inner = inner
        self.seconds = 0.0
        self.calls = 0

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if name.startswith("_") or not callable(attr):
            return attr

        @functools.wraps(attr)
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1

        return timed


def storage_share(opened: Storage, s: StudySpec, trials: int, data_dir: str | None) -> dict:
    import optuna

    from aeopt.search.objective import AutoencoderObjective
    from aeopt.search.samplers import build_pruner, build_sampler

    name = f"share_{uuid.uuid4().hex[:6]}"
    create_study(opened, s, name)
    storage = TimedStorage(opened.optuna)
    study = optuna.load_study(study_name=name, storage=storage, sampler=build_sampler(s),
                              pruner=build_pruner(s))
    objective = AutoencoderObjective(s, data_dir=data_dir, device="cpu", upload_artifacts=False)
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    total = time.perf_counter() - t0
    return {"trials": trials, "seconds": total, "storage_seconds": storage.seconds,
            "storage_calls": storage.calls, "storage_share": storage.seconds / total,
            "storage_ms_per_trial": 1000 * storage.seconds / trials}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--storage", required=True)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--train-subset", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    s = spec(args.train_subset, args.epochs)
    storage = open_storage(args.storage)
    rows = []
    for workers in (1, 2):
        name = f"scale{workers}_{uuid.uuid4().hex[:6]}"
        create_study(storage, s, name)
        t0 = time.perf_counter()
        code = launch(storage, name, workers, devices="cpu", n_trials=args.trials, data_dir=args.data_dir,
                      log_dir=Path("logs") / "worker_scaling" / name, poll_seconds=0.5)
        wall = time.perf_counter() - t0
        study, _ = load_study(storage, name)
        done = StudyCounts.of(study).finished
        rows.append({"workers": workers, "exit": code, "finished": done, "seconds": wall,
                     "trials_per_hour": 3600 * done / wall})
        print(f"{workers} worker(s): {done} trials in {wall:.1f} s = {3600 * done / wall:.0f} trials/hour")
    share = storage_share(storage, s, max(3, args.trials // 2), args.data_dir)
    print(f"storage: {share['storage_ms_per_trial']:.0f} ms per trial in {share['storage_calls']} calls, "
          f"{100 * share['storage_share']:.2f}% of trial time")
    result = {"storage": storage.display, "cpus": os.cpu_count(), "arms": rows, "storage_share": share,
              "speedup": rows[1]["trials_per_hour"] / rows[0]["trials_per_hour"]}
    print(f"2 workers / 1 worker: {result['speedup']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
