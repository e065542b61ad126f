"""Time to quality: test MSE of each search's best configuration at equal wall-clock search budgets.

Three arms search the same training subset for the same number of seconds (issue 13 item 6):

- aeopt: the default study, studies/conv_ae.yaml as shipped (TPE + Hyperband, k-fold CV), run by
  `aeopt worker --timeout` semantics (run_worker with a deadline: the running trial stops there);
- grid: the report's search, studies/seed_grid.yaml (its grid of 8 conv widths, early stopping
  with patience 8 in place of pruning), under the same deadline;
- optuna: a plain Optuna script in the style of Optuna's PyTorch example: a torch DataLoader over
  one stratified 80/20 holdout, TPE + MedianPruner, the report's channel choices (c1 in {8, 16},
  c2 and c3 in {16, 32}) with the example's optimizer and log-uniform learning rate; a trial still
  running at the deadline is pruned there, so the budget holds for it as for the others.

Each arm's best configuration (its best complete trial; the trial with the best reported value
when none completed) is then refit the way `aeopt refit --set data.train_subset=N` does it (the
train stage: early stopping on a stratified holdout of the same subset, at most --refit-epochs) and
scored once on the full test split. The table gives test MSE against budget; `--png` draws it.

    python benchmarks/time_to_quality.py --data-dir ../shared/data --device cpu --json ttq.json --png ttq.png
    python benchmarks/time_to_quality.py --smoke        # 3 x 20 s of search on the digits: a check
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from aeopt.config import ConvAEConfig, DataConfig, RunConfig, load_study_spec
from aeopt.errors import StudyError
from aeopt.files import atomic_write_text, versions
from aeopt.search.export import export_best
from aeopt.search.launch import launch
from aeopt.search.refit import refit_config
from aeopt.search.storage import open_storage
from aeopt.search.studies import create_study, load_study
from aeopt.search.worker import run_worker
from aeopt.stages.train import train_run
from aeopt.training.data import load_dataset, stratified_split, training_pool
from aeopt.training.engine import resolve_device
from aeopt.training.models import build_model

REPO = Path(__file__).resolve().parents[1]
ARMS = ("aeopt", "grid", "optuna")
SPECS = {"aeopt": "conv_ae.yaml", "grid": "seed_grid.yaml"}
# The plain script's training, which its refit repeats: batches of 128, SGD without momentum.
PLAIN_BATCH = 128
# The report's grid of conv widths; the plain script searches them as the report did.
REPORT_CHANNELS = {"c1": [8, 16], "c2": [16, 32], "c3": [16, 32]}


# ----- the aeopt arms: a study run to a deadline ---------------------------------------------------


def spec_path(arm: str) -> Path:
    """An arm's study spec: "aeopt" and "grid" are the shipped ones; "aeopt:PATH" is aeopt's default
    study with another spec (e.g. the previous default, to check that a new one does better)."""
    return Path(arm.split(":", 1)[1]) if ":" in arm else REPO / "studies" / SPECS[arm]


def study_arm(arm: str, url: str, budget: float, common: list[str], args: argparse.Namespace) -> dict:
    storage = open_storage(url)
    spec = load_study_spec(spec_path(arm), common + list(args.study_set or []))
    name = f"{arm.replace(':', '_').replace('/', '_')}_{int(budget)}"
    create_study(storage, spec, name)
    start = time.monotonic()
    if args.workers > 1:  # as `aeopt launch --workers N --timeout`: one deadline for all of them
        launch(storage, name, args.workers, devices=args.device, timeout=budget, data_dir=args.data_dir,
               log_dir=Path(url.removeprefix("sqlite:///")).parent / f"{name}-logs")
    else:
        run_worker(storage, name, timeout=budget, device=args.device, data_dir=args.data_dir,
                   show_progress=False)
    searched = time.monotonic() - start
    study, spec = load_study(storage, name)
    try:
        best, source = export_best(study, spec), "best complete trial"
    except StudyError:  # nothing completed in the budget: the best configuration it has seen
        trial = best_reported(study.trials)
        if trial is None:
            return {"searched_seconds": searched, **counts(study.trials), "best": None}
        best = spec.run_config(trial.params).model_dump(mode="json")
        best["provenance"] = {"trial": trial.number}
        source = "best reported value (no complete trial)"
    return {"searched_seconds": searched, **counts(study.trials), "best": best, "source": source,
            "trial": best["provenance"]["trial"]}


def counts(trials: list[FrozenTrial]) -> dict[str, int]:
    return {"trials": len(trials), "complete": sum(t.state == TrialState.COMPLETE for t in trials),
            "pruned": sum(t.state == TrialState.PRUNED for t in trials)}


def best_reported(trials: list[FrozenTrial]) -> FrozenTrial | None:
    """The trial whose lowest reported (intermediate) value is lowest; None when none reported."""
    reported = [t for t in trials if t.intermediate_values]
    return min(reported, key=lambda t: min(t.intermediate_values.values()), default=None)


# ----- the plain Optuna arm ------------------------------------------------------------------------


class PlainScript:
    """The objective a plain Optuna script would write: DataLoaders, one holdout, a fixed epoch count."""

    def __init__(self, pool_x: torch.Tensor, pool_y: torch.Tensor, args: argparse.Namespace, deadline: float):
        train_idx, val_idx = stratified_split(pool_y, 0.2, seed=0)
        self.device = resolve_device(args.device)
        self.epochs, self.deadline, self.seed = args.plain_epochs, deadline, args.seed
        images = pool_x.float().div(255)
        self.train = DataLoader(TensorDataset(images[train_idx]), batch_size=PLAIN_BATCH, shuffle=True)
        self.valid = DataLoader(TensorDataset(images[val_idx]), batch_size=256)

    def config(self, trial: optuna.Trial) -> RunConfig:
        channels = {k: trial.suggest_categorical(k, v) for k, v in REPORT_CHANNELS.items()}
        optim = {"name": trial.suggest_categorical("optimizer", ["adam", "sgd"]),
                 "lr": trial.suggest_float("lr", 1e-5, 1e-1, log=True), "weight_decay": 0.0}
        return RunConfig(model=ConvAEConfig(**channels), optim=optim, seed=self.seed)

    def __call__(self, trial: optuna.Trial) -> float:
        cfg = self.config(trial)
        torch.manual_seed(self.seed + trial.number)
        model = build_model(cfg).to(self.device)
        optim_cls = torch.optim.Adam if cfg.optim.name == "adam" else torch.optim.SGD
        optimizer = optim_cls(model.parameters(), lr=cfg.optim.lr)
        loss = math.inf
        for epoch in range(self.epochs):
            self.train_epoch(model, optimizer)
            loss = self.validate(model)
            trial.report(loss, epoch)
            if trial.should_prune() or time.monotonic() > self.deadline or not math.isfinite(loss):
                raise optuna.TrialPruned()
        return loss

    def train_epoch(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        model.train()
        for (x,) in self.train:
            x = x.to(self.device)
            optimizer.zero_grad()
            F.mse_loss(model(x), x).backward()
            optimizer.step()

    @torch.no_grad()
    def validate(self, model: torch.nn.Module) -> float:
        model.eval()
        total = sum(float(F.mse_loss(model(x.to(self.device)), x.to(self.device), reduction="sum"))
                    for (x,) in self.valid)
        return total / (len(self.valid.dataset) * 28 * 28)


def plain_optuna_arm(budget: float, args: argparse.Namespace) -> dict:
    start = time.monotonic()
    ds = load_dataset(args.dataset, args.data_dir)
    pool = training_pool(DataConfig(dataset=args.dataset, train_subset=args.train_subset or None), ds)
    objective = PlainScript(pool.x, pool.y, args, deadline=start + budget)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=args.seed),
                                pruner=optuna.pruners.MedianPruner())
    study.optimize(objective, timeout=max(0.0, budget - (time.monotonic() - start)))
    searched = time.monotonic() - start
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    trial = min(complete, key=lambda t: t.value) if complete else best_reported(study.trials)
    if trial is None:
        return {"searched_seconds": searched, **counts(study.trials), "best": None}
    best = optuna_config(trial, args).model_dump(mode="json")
    source = "best complete trial" if complete else "best reported value (no complete trial)"
    return {"searched_seconds": searched, **counts(study.trials), "best": best, "source": source,
            "trial": trial.number}


def optuna_config(trial: FrozenTrial, args: argparse.Namespace) -> RunConfig:
    p = trial.params
    # As the script trained it (torch's SGD has no momentum unless given one), so that the refit
    # repeats the searched configuration rather than aeopt's defaults.
    return RunConfig(model=ConvAEConfig(c1=p["c1"], c2=p["c2"], c3=p["c3"]),
                     optim={"name": p["optimizer"], "lr": p["lr"], "weight_decay": 0.0, "momentum": 0.0},
                     budget={"batch_size": PLAIN_BATCH}, data=DataConfig(dataset=args.dataset),
                     seed=args.seed)


# ----- refit and score once --------------------------------------------------------------------------


def refit(best: dict[str, Any], args: argparse.Namespace, name: str) -> dict:
    """The configuration trained as `aeopt refit --set data.train_subset=N` trains it, tested once;
    with --refit-out its checkpoint and metrics go to REFIT_OUT/name (for `aeopt finetune`)."""
    overrides = [f"data.dataset={args.dataset}", f"data.train_subset={subset(args)}",
                 "data.test_subset=null", f"budget.max_epochs={args.refit_epochs}",
                 f"budget.patience={args.refit_patience}"]
    cfg, _ = refit_config(best, overrides)
    out = args.refit_out / name if args.refit_out else None
    _, metrics = train_run(cfg, data_dir=args.data_dir, device=args.device, out=out, show_progress=False)
    return {"test_mse": metrics["test_mse"], "epochs": metrics["epochs"], "seconds": metrics["seconds"],
            "model": cfg.model.model_dump(mode="json"), "optim": cfg.optim.model_dump(mode="json")}


def subset(args: argparse.Namespace) -> str:
    """The --set value of data.train_subset: 0 is the whole training split."""
    return str(args.train_subset) if args.train_subset else "null"


def run_arm(arm: str, budget: float, url: str, args: argparse.Namespace) -> dict:
    common = [f"data.dataset={args.dataset}", f"data.train_subset={subset(args)}"]
    result = plain_optuna_arm(budget, args) if arm == "optuna" else study_arm(arm, url, budget, common, args)
    # The best configuration stays in the row: the record of what each search chose (and what
    # --merge refits when the search ran with --no-refit).
    label = f"aeopt[{Path(arm.split(':', 1)[1]).stem}]" if ":" in arm else arm
    fit = result["best"] is not None and not args.no_refit
    result["refit"] = refit(result["best"], args, f"{label}_{budget:.0f}") if fit else None
    return {"arm": label, "budget": budget, **result}


# ----- output ------------------------------------------------------------------------------------------


def table(rows: list[dict]) -> str:
    head = f"{'arm':<9} {'budget s':>8} {'searched s':>10} {'trials':>6} {'complete':>8} " \
           f"{'test MSE':>9} {'refit epochs':>12} {'refit s':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        fit = r["refit"] or {}
        mse = f"{fit['test_mse']:.5f}" if fit else "none"
        lines.append(f"{r['arm']:<9} {r['budget']:>8.0f} {r['searched_seconds']:>10.1f} {r['trials']:>6} "
                     f"{r['complete']:>8} {mse:>9} {fit.get('epochs', '-'):>12} "
                     f"{fit.get('seconds', float('nan')):>8.1f}")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 (only with --png)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm in dict.fromkeys(r["arm"] for r in rows):
        points = [(r["budget"], r["refit"]["test_mse"]) for r in rows if r["arm"] == arm and r["refit"]]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=arm)
    ax.set(xlabel="search budget (s, wall clock)", ylabel="test MSE of the refit best", xscale="log",
           title="Time to quality (lower is better)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None, help="folder with FashionMNIST/raw (default: AEOPT_DATA_DIR)")
    ap.add_argument("--dataset", default=None, help="fashion_mnist (default) or digits (--smoke's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--budgets", default="300,600,1200", help="search seconds per arm, comma-separated")
    ap.add_argument("--arms", default=",".join(ARMS),
                    help="comma-separated; aeopt:PATH is aeopt's arm with the study spec at PATH")
    ap.add_argument("--train-subset", type=int, default=12000, help="0: the whole training split")
    ap.add_argument("--workers", type=int, default=1,
                    help="worker processes of the aeopt arms (as `aeopt launch --workers N`)")
    ap.add_argument("--refit-epochs", type=int, default=50)
    ap.add_argument("--refit-patience", type=int, default=8)
    ap.add_argument("--plain-epochs", type=int, default=10, help="epochs per trial of the plain script")
    ap.add_argument("--study-set", action="append", help="--set for both aeopt studies (repeatable)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true",
                    help="digits, 20 s budgets, 2 epochs: a minute of search, a check")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--png", type=Path, default=None)
    ap.add_argument("--no-refit", action="store_true", help="search only; --merge refits later")
    ap.add_argument("--refit-out", type=Path, default=None,
                    help="keep each refit's checkpoint and metrics in REFIT_OUT/<arm>_<budget>")
    ap.add_argument("--merge", type=Path, nargs="+", default=None,
                    help="no search: the rows of these earlier --json files (refit where they were not)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.dataset = args.dataset or "digits"
        args.budgets, args.train_subset, args.refit_epochs, args.plain_epochs = "20", 600, 2, 2
        args.study_set = [*(args.study_set or []), "cv.folds=2", "budget.max_epochs=2"]
    args.dataset = args.dataset or "fashion_mnist"
    return args


def merge(args: argparse.Namespace) -> None:
    """Several runs (one arm or budget each, as a GPU session with a per-command limit runs them) as one."""
    runs = [json.loads(path.read_text()) for path in args.merge]
    rows = sorted((r for run in runs for r in run["rows"]), key=lambda r: (r["budget"], r["arm"]))
    if any(row["refit"] is None and row.get("best") is not None for row in rows):
        load_dataset(args.dataset, args.data_dir)  # before the refits' clocks, as in a search run
    for row in rows:  # searched with --no-refit (a GPU session's per-command limit): refit here
        if row["refit"] is None and row.get("best") is not None:
            print(f"{row['arm']} at {row['budget']:.0f} s: refit of its best ...", flush=True)
            row["refit"] = refit(row["best"], args, f"{row['arm']}_{row['budget']:.0f}")
    print(table(rows))
    if args.json:
        out = {"merged": [str(p) for p in args.merge], "settings": [run["settings"] for run in runs],
               "rows": rows}
        atomic_write_text(args.json, json.dumps(out, indent=2) + "\n")
    if args.png:
        plot(rows, args.png)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:  # before --merge too: its refits train with the same threads as a run's
        torch.set_num_threads(args.threads)
    if args.merge:
        merge(args)
        return
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # Loaded once (it is cached per process) before any clock starts: every arm's budget is search.
    load_dataset(args.dataset, args.data_dir)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/ttq.db"
        for budget in [float(b) for b in args.budgets.split(",") if b]:
            for arm in [a for a in args.arms.split(",") if a]:
                print(f"{arm}: {budget:.0f} s of search, then its best refit ...", flush=True)
                rows.append(run_arm(arm, budget, url, args))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    if args.json:
        out = {"settings": settings, "torch_threads": torch.get_num_threads(), "versions": versions(),
               "rows": rows}
        atomic_write_text(args.json, json.dumps(out, indent=2) + "\n")
    if args.png:
        plot(rows, args.png)


if __name__ == "__main__":
    main()
