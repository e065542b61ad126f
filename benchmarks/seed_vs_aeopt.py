"""The report's search procedure against an aeopt study, on the same data and the same folds.

- report: studies/seed_grid.yaml, its grid of 8 (conv widths), at most 50 epochs, early stopping
  with patience 8 (pruner none), every configuration trained;
- aeopt: TPE + Hyperband (pruning in place of early stopping) on the same space (--space grid),
  or on studies/conv_ae.yaml's wider space (--space wide).

Both arms score trials by the same k-fold cross-validation of the same training subset. The
figure of merit is the number of training epochs (each epoch trains every fold) and the wall time
until an arm first reaches the grid's best mean validation loss: the grid counts epochs up to the
end of its best trial; aeopt counts epochs until any trial's reported mean validation loss is at
or below that value (the reaching trial's time is pro-rated by epoch).

    python benchmarks/seed_vs_aeopt.py --data-dir ../shared/data --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from aeopt.config import load_study_spec
from aeopt.search.storage import open_storage
from aeopt.search.studies import create_study, load_study
from aeopt.search.worker import run_worker

REPO = Path(__file__).resolve().parents[1]  # for studies/*.yaml


def _duration(t: optuna.trial.FrozenTrial) -> float:
    return (t.datetime_complete - t.datetime_start).total_seconds()


def run_grid(url: str, common: list[str], data_dir: str | None, device: str | None) -> dict:
    spec = load_study_spec(REPO / "studies" / "seed_grid.yaml", common)
    storage = open_storage(url)
    create_study(storage, spec, "grid")
    t0 = time.perf_counter()
    run_worker(storage, "grid", device=device, data_dir=data_dir, show_progress=False)
    wall = time.perf_counter() - t0
    study, _ = load_study(storage, "grid")
    trials = [t for t in study.trials if t.state == TrialState.COMPLETE]
    best = min(trials, key=lambda t: t.value)
    upto = [t for t in trials if t.number <= best.number]
    return {
        "best_value": best.value,
        "best_params": best.params,
        "trials": len(trials),
        "epochs_total": sum(len(t.intermediate_values) for t in trials),
        "epochs_to_best": sum(len(t.intermediate_values) for t in upto),
        "seconds_total": wall,
        "seconds_to_best": sum(_duration(t) for t in upto),
    }


def run_aeopt(url: str, space: str, common: list[str], target: float, max_trials: int,
              data_dir: str | None, device: str | None, max_seconds: float) -> dict:
    if space == "grid":
        tpe_hyperband = ["sampler.name=tpe", "sampler.n_startup_trials=3", "pruner.name=hyperband",
                         "pruner.min_resource=2"]
        spec = load_study_spec(REPO / "studies" / "seed_grid.yaml", common + tpe_hyperband)
    else:
        spec = load_study_spec(REPO / "studies" / "conv_ae.yaml", common + ["sampler.n_startup_trials=5"])
    name = f"aeopt_{space}"
    storage = open_storage(url)
    create_study(storage, spec, name)
    epochs = 0
    seconds = 0.0
    reached = None
    start = time.perf_counter()
    for n in range(1, max_trials + 1):
        run_worker(storage, name, n_trials=n, device=device, data_dir=data_dir, show_progress=False)
        study, _ = load_study(storage, name)
        t = study.trials[-1]
        steps = sorted(t.intermediate_values)
        hit = next((s for s in steps if t.intermediate_values[s] <= target), None)
        if hit is not None:
            epochs += hit
            seconds += _duration(t) * hit / max(1, len(steps))
            reached = {"trial": t.number, "epoch": hit, "params": t.params}
            break
        epochs += len(steps)
        seconds += _duration(t)
        if time.perf_counter() - start > max_seconds:
            break
    study, _ = load_study(storage, name)
    done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    return {
        "space": space,
        "reached": reached,
        "epochs_to_target": epochs if reached else None,
        "seconds_to_target": seconds if reached else None,
        "epochs_spent": epochs,
        "trials": len(done),
        "pruned": sum(t.state == TrialState.PRUNED for t in done),
        "best_value": min((t.value for t in done if t.state == TrialState.COMPLETE), default=None),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--train-subset", type=int, default=12000)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--max-epochs", type=int, default=50)
    ap.add_argument("--space", default="grid,wide",
                    help="aeopt arms: grid (same space), wide (conv_ae.yaml's)")
    ap.add_argument("--max-trials", type=int, default=30)
    ap.add_argument("--max-seconds", type=float, default=600, help="per aeopt arm")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # The heartbeat options are marked experimental; `aeopt` itself silences this at its entry point.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    common = [f"data.train_subset={args.train_subset}", f"cv.folds={args.folds}",
              f"budget.max_epochs={args.max_epochs}"]
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        grid = run_grid(url, common, args.data_dir, args.device)
        print(f"grid: best {grid['best_value']:.5f} {grid['best_params']}, {grid['epochs_to_best']} epochs / "
              f"{grid['seconds_to_best']:.1f} s to reach it ({grid['epochs_total']} epochs, "
              f"{grid['seconds_total']:.1f} s in all)")
        arms = []
        for space in [s for s in args.space.split(",") if s]:
            arm = run_aeopt(url, space, common, grid["best_value"], args.max_trials, args.data_dir,
                            args.device, args.max_seconds)
            arms.append(arm)
            if arm["reached"]:
                print(f"aeopt ({space} space): reached {grid['best_value']:.5f} after "
                      f"{arm['epochs_to_target']} epochs / {arm['seconds_to_target']:.1f} s "
                      f"({arm['trials']} trials, {arm['pruned']} pruned) -> "
                      f"{grid['epochs_to_best'] / arm['epochs_to_target']:.1f}x fewer epochs, "
                      f"{grid['seconds_to_best'] / arm['seconds_to_target']:.1f}x less time")
            else:
                print(f"aeopt ({space} space): did not reach {grid['best_value']:.5f} in {arm['trials']} "
                      f"trials / {arm['epochs_spent']} epochs (best {arm['best_value']})")
    result = {"args": vars(args), "grid": grid, "aeopt": arms}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
