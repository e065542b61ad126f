"""The report, reproduced and beaten: its conv AE, its fine-tuned classifier and its CNN, on full
Fashion-MNIST.

Row by row against the homework report's figures:

1. the report's conv AE (configs/conv_ae.yaml), trained as `aeopt train` does: train / val / test loss;
2. a classifier fine-tuned on that AE's encoder (`aeopt finetune`): train / val / test accuracy, time;
   with --best EXPORT.yaml (an `aeopt export` of a study) also the study's best encoder;
3. the plain CNN from scratch (`aeopt baseline cnn`): accuracy, time;
4. beyond the report, a label budget (100, 1,000, all labels): the AE-initialised classifier against
   the same network from random initialisation (finetune.init=random), over several label draws.

All classifiers use the same stratified 80/20 split (of the N labelled images), early stopping on
validation accuracy, and one evaluation on the 10,000 test images.

    python benchmarks/report_vs_aeopt.py --data-dir ../shared/data --device cuda --json report.json \\
        --markdown report.md
    python benchmarks/report_vs_aeopt.py --data-dir ../shared/data --device cpu --train-subset 3000 \\
        --ae-epochs 2 --ft-epochs 2 --budgets 100,all --seeds 1                     # a quick check on a CPU
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
REPORT = {
    "ae_train_loss": 0.024, "ae_val_loss": 0.021, "ae_test_loss": 0.021,
    "ft_train_acc": 0.805, "ft_val_acc": 0.827, "ft_test_acc": 0.816, "ft_minutes": 10,
    "cnn_test_acc": 0.898, "cnn_minutes": 13,
}
log = logging.getLogger("report_vs_aeopt")


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    keep = ("train_acc", "val_acc", "test_acc", "epochs", "best_epoch", "seconds", "pretrain_seconds",
            "total_seconds", "n_train", "n_val", "n_test", "labels", "parameters", "trainable_parameters",
            "per_class_acc", "mode", "init")
    return {k: m[k] for k in keep if k in m}


def _job(spec: dict[str, Any]) -> dict[str, Any]:
    """One independent run, in this process or a worker process: train an AE (its checkpoint goes
    to spec["out"]) or fine-tune a classifier (from spec["checkpoint"] when pretrained)."""
    torch.set_num_threads(spec.get("threads", 1))  # a GPU run needs one CPU thread to launch kernels
    logging.getLogger("aeopt").setLevel(logging.WARNING)
    from aeopt.config import load_finetune_config, run_config
    from aeopt.stages.finetune import finetune
    from aeopt.stages.train import train_run
    from aeopt.training.checkpoint import load_checkpoint

    base = load_checkpoint(spec["base"])[1] if spec.get("base") else None
    cfg = load_finetune_config(spec.get("config"), spec["overrides"], base=base)
    if spec["kind"] == "train_ae":
        _, m = train_run(run_config(cfg), data_dir=spec["data_dir"], device=spec["device"], out=spec["out"],
                         amp=spec["amp"], show_progress=False)
        return {k: v for k, v in m.items() if k != "history"}
    m = finetune(cfg, checkpoint=spec.get("checkpoint") if cfg.finetune.init == "pretrained" else None,
                 data_dir=spec["data_dir"], device=spec["device"], out=spec.get("out"), amp=spec["amp"],
                 show_progress=False)
    return _summary(m.model_dump(mode="json", exclude_none=True))


class Runner:
    """Runs job specs in `jobs` worker processes (spawned: CUDA cannot be forked), or in this
    process when jobs is 1. Small models leave a GPU mostly idle between kernel launches, so
    independent runs side by side finish several times sooner than one after another."""

    def __init__(self, jobs: int):
        self.pool = None
        if jobs > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))

    def map(self, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.pool is None:
            return [_job({**s, "threads": torch.get_num_threads()}) for s in specs]
        return list(self.pool.map(_job, specs))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


@dataclass
class _Bench:
    """What every step of one benchmark run shares."""

    args: argparse.Namespace
    common: list[str]  # overrides for every AE and fine-tune run
    shared: dict[str, Any]  # data_dir, device, amp: keyword arguments of every run
    out: Path
    result: dict[str, Any]
    runner: Runner


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when available)")
    ap.add_argument("--config", default=str(REPO / "configs" / "conv_ae.yaml"), help="the report's AE config")
    ap.add_argument("--best", default=None,
                    help="an `aeopt export` YAML: also fine-tune the study's best encoder")
    ap.add_argument("--train-subset", type=int, default=None,
                    help="stratified subset of the training split (quick checks)")
    ap.add_argument("--ae-epochs", type=int, default=None,
                    help="autoencoder max epochs (default: the config's, 50)")
    ap.add_argument("--ft-epochs", type=int, default=None,
                    help="classifier max epochs (default: finetune.max_epochs)")
    ap.add_argument("--budgets", default="100,1000,all", help="label budgets, comma separated")
    ap.add_argument("--seeds", type=int, default=3, help="label draws per small budget (mean +- std)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="extra overrides for every fine-tune run, e.g. --set finetune.lr=2e-3 (repeatable)")
    ap.add_argument("--cnn-set", dest="cnn_overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="overrides for the CNN baseline, e.g. --cnn-set train.max_epochs=30")
    ap.add_argument("--budget-only", action="store_true",
                    help="only the label budget, on the AE of --checkpoint")
    ap.add_argument("--checkpoint", default=None, help="an autoencoder checkpoint for --budget-only")
    ap.add_argument("--jobs", type=int, default=None,
                    help="worker processes for the --best and label-budget runs "
                    "(default: 8 on CUDA, 1 on CPU)")
    ap.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA")
    ap.add_argument("--out", default=None, help="folder for every run's outputs (metrics, checkpoints, PNGs)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--markdown", default=None, help="write the BENCHMARKS.md tables here")
    return ap


def _common_overrides(args: argparse.Namespace) -> list[str]:
    common = list(args.overrides)
    if args.train_subset:
        common.append(f"data.train_subset={args.train_subset}")
    if args.ae_epochs:
        common.append(f"budget.max_epochs={args.ae_epochs}")
    if args.ft_epochs:
        common.append(f"finetune.max_epochs={args.ft_epochs}")
    return common


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = _parser()
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("aeopt").setLevel(logging.WARNING)
    if args.budget_only and not args.checkpoint:
        ap.error("--budget-only needs --checkpoint DIR/checkpoint.pt (from `aeopt train --out DIR`)")

    from aeopt.training.engine import resolve_device

    dev = resolve_device(args.device)
    jobs = args.jobs or (8 if dev.type == "cuda" else 1)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="report_vs_aeopt."))
    shared = {"data_dir": args.data_dir, "device": str(dev), "amp": args.amp}
    t_all = time.perf_counter()
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu"
    result: dict[str, Any] = {"benchmark": "report_vs_aeopt", "device": str(dev), "jobs": jobs, "gpu": gpu,
                              "torch": torch.__version__, "args": vars(args), "report": REPORT}
    bench = _Bench(args, _common_overrides(args), shared, out, result, Runner(jobs))
    try:
        ft = {} if args.budget_only else _report_runs(bench)
        _label_budget(bench, ft)
    finally:
        bench.runner.close()
    result["total_seconds"] = round(time.perf_counter() - t_all, 1)
    log.info("total %.1f s", result["total_seconds"])
    _write(args, result)
    return result


def _report_runs(b: _Bench) -> dict[str, Any]:
    """Steps 1-3, one after another in this process, alone on the device: their times are the
    report's rows. Returns the all-label fine-tune's metrics."""
    from aeopt.config import load_finetune_config, run_config
    from aeopt.stages.finetune import finetune
    from aeopt.stages.train import train_run

    args, out, result = b.args, b.out, b.result
    # 1. The report's conv AE, as `aeopt train configs/conv_ae.yaml` runs it.
    cfg = load_finetune_config(args.config, b.common)
    log.info("1/4 conv AE (report config) on %s training images", args.train_subset or "all")
    ae, ae_m = train_run(run_config(cfg), out=out / "ae_report", show_progress=False, **b.shared)
    keep = ("train_loss", "val_loss", "test_loss", "test_mse", "epochs", "best_epoch", "seconds",
            "n_train", "n_val", "n_test")
    result["ae_report"] = {k: ae_m[k] for k in keep}
    log.info("   test MSE %.5f in %.1f s (%d epochs)", ae_m["test_mse"], ae_m["seconds"], ae_m["epochs"])

    # 2. Fine-tuned classifier on that encoder (all labels). Its time includes the AE's training.
    log.info("2/4 fine-tune the report AE's encoder")
    ft = finetune(cfg, autoencoder=ae, out=out / "finetune_report", show_progress=False,
                  **b.shared).model_dump(mode="json", exclude_none=True)
    ft["total_seconds"] = round(ft["seconds"] + ae_m["seconds"], 3)
    result["finetune_report"] = _summary(ft)
    result["finetune_settings"] = ft["finetune"]
    log.info("   test acc %.4f (fine-tune %.1f s + AE %.1f s)", ft["test_acc"], ft["seconds"],
             ae_m["seconds"])

    _cnn_run(b)
    return ft


def _cnn_run(b: _Bench) -> None:
    """3. The plain CNN from scratch, same split and budget."""
    from aeopt.config import load_baseline_config
    from aeopt.stages.baseline import train_baseline

    args = b.args
    log.info("3/4 CNN baseline from scratch")
    cnn_overrides = list(args.cnn_overrides)
    if args.train_subset:
        cnn_overrides.append(f"data.train_subset={args.train_subset}")
    if args.ft_epochs:
        cnn_overrides.append(f"train.max_epochs={args.ft_epochs}")
    cnn = train_baseline(load_baseline_config(None, cnn_overrides), out=b.out / "baseline_cnn",
                         show_progress=False, **b.shared).model_dump(mode="json", exclude_none=True)
    b.result["baseline_cnn"] = _summary(cnn)
    log.info("   test acc %.4f in %.1f s", cnn["test_acc"], cnn["seconds"])


def _encoder(b: _Bench) -> tuple[str, dict[str, Any], str]:
    """The label budget's encoder: --checkpoint, --best or the report's; its config source and checkpoint."""
    args, out = b.args, b.out
    if args.budget_only:
        b.result["checkpoint_label"] = str(args.checkpoint)
        return "checkpoint", {"base": args.checkpoint}, args.checkpoint
    if args.best:
        prov = (yaml.safe_load(Path(args.best).read_text()) or {}).get("provenance") or {}
        label = f"study '{prov['study']}' trial {prov['trial']}" if "study" in prov else Path(args.best).name
        b.result["best_label"] = label
        return "best", {"config": args.best}, str(out / "ae_best" / "checkpoint.pt")
    return "report", {"config": args.config}, str(out / "ae_report" / "checkpoint.pt")


def _draws(budget: str, seeds: int) -> int:
    return 1 if budget == "all" else seeds


def _budget_specs(b: _Bench, budgets: list[str], source: dict[str, Any],
                  encoder_ckpt: str) -> dict[tuple[str, str, int], dict[str, Any]]:
    runs: dict[tuple[str, str, int], dict[str, Any]] = {}
    for budget in budgets:
        for init in ("pretrained", "random"):
            for s in range(_draws(budget, b.args.seeds)):
                extra = [f"finetune.init={init}", f"seed={s}"]
                if budget != "all":
                    # Each draw picks other labelled images (data.split_seed) and another head init.
                    extra += [f"finetune.labels={budget}", f"data.split_seed={s}"]
                runs[(budget, init, s)] = {"kind": "finetune", **source, "overrides": b.common + extra,
                                           "checkpoint": encoder_ckpt, **b.shared}
    return runs


def _label_budget(b: _Bench, ft: dict[str, Any]) -> None:
    """4. Label budget: AE-initialised vs the same network from random init, several label draws,
    the runs side by side in worker processes."""
    args = b.args
    which, source, encoder_ckpt = _encoder(b)
    budgets = [x.strip() for x in args.budgets.split(",") if x.strip()]
    runs = _budget_specs(b, budgets, source, encoder_ckpt)
    if which != "checkpoint":
        runs.pop(("all", "pretrained", 0), None)  # the all-label fine-tune of step 2 (or 2b)
    # Jobs that need no new encoder run first, beside the training of the --best AE.
    first = {k: v for k, v in runs.items() if which != "best" or k[1] == "random"}
    later = {k: v for k, v in runs.items() if k not in first}
    log.info("4/4 label budget (%s encoder): %s labels x %d draws, %d runs in %d processes%s", which,
             args.budgets, args.seeds, len(runs), b.result["jobs"],
             "; with the --best AE and its fine-tune" if which == "best" else "")
    t_budget = time.perf_counter()
    specs = list(first.values())
    if which == "best":
        specs.append({"kind": "train_ae", "config": args.best, "overrides": b.common,
                      "out": str(b.out / "ae_best"), **b.shared})
    outs = b.runner.map(specs)
    done = dict(zip(first, outs, strict=False))
    bft: dict[str, Any] = {}
    if which == "best":
        bft = _best_finetune(b, outs[-1], encoder_ckpt, later, done)
    if which != "checkpoint":
        done[("all", "pretrained", 0)] = ft if which == "report" else bft
    rows = _budget_rows(budgets, done, args.seeds)
    b.result["label_budget"] = {"encoder": which, "rows": rows,
                                "seconds": round(time.perf_counter() - t_budget, 1)}


def _best_finetune(b: _Bench, best_m: dict[str, Any], encoder_ckpt: str,
                   later: dict[tuple[str, str, int], dict[str, Any]],
                   done: dict[tuple[str, str, int], dict[str, Any]]) -> dict[str, Any]:
    """2b. The --best AE's fine-tune, beside the label-budget runs that need its encoder; their
    results go into `done`. Returns the fine-tune's metrics."""
    result = b.result
    keep = ("train_loss", "val_loss", "test_loss", "test_mse", "epochs", "seconds")
    result["ae_best"] = {k: best_m[k] for k in keep}
    bft_spec = {"kind": "finetune", "config": b.args.best, "overrides": b.common, "checkpoint": encoder_ckpt,
                "out": str(b.out / "finetune_best"), **b.shared}
    later_outs = b.runner.map([bft_spec, *later.values()])
    bft = later_outs[0]
    bft["total_seconds"] = round(bft["seconds"] + best_m["seconds"], 3)
    result["finetune_best"] = bft
    result["best_concurrent"] = True
    done.update(zip(later, later_outs[1:], strict=True))
    log.info("   %s: test MSE %.5f, fine-tuned test acc %.4f", result["best_label"], best_m["test_mse"],
             bft["test_acc"])
    return bft


def _budget_rows(budgets: list[str], done: dict[tuple[str, str, int], dict[str, Any]],
                 seeds: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for budget in budgets:
        row: dict[str, Any] = {"labels": budget}
        for init in ("pretrained", "random"):
            ms = [done[(budget, init, s)] for s in range(_draws(budget, seeds))]
            accs = [m["test_acc"] for m in ms]
            row[init] = {"test_acc": accs, "mean": statistics.fmean(accs),
                         "std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
                         "seconds": statistics.fmean(m["seconds"] for m in ms)}
        row["gain"] = row["pretrained"]["mean"] - row["random"]["mean"]
        rows.append(row)
        log.info("   %s labels: AE-init %.4f vs random %.4f", budget, row["pretrained"]["mean"],
                 row["random"]["mean"])
    return rows


def _write(args: argparse.Namespace, result: dict[str, Any]) -> None:
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    if args.markdown:
        Path(args.markdown).write_text(md)
    print(md)


def _t(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def markdown(r: dict[str, Any]) -> str:
    """The BENCHMARKS.md tables, from one run's results."""
    encoder = {"best": r.get("best_label", "best"), "report": "report config",
               "checkpoint": r.get("checkpoint_label", "checkpoint")}[r["label_budget"]["encoder"]]
    lines = [f"Device: {r['gpu']} ({r['device']}), torch {r['torch']}; "
             f"whole run {_t(r['total_seconds'])}.", ""]
    if "ae_report" in r:
        lines += report_rows(r)
    lines += [
        f"Label budget (test accuracy; encoder: {encoder}; mean +- std over label draws):",
        "",
        "| labels | AE-initialised | random init | gain |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for row in r["label_budget"]["rows"]:
        p, q = row["pretrained"], row["random"]
        n = len(p["test_acc"])

        def cell(d: dict[str, Any], n: int = n) -> str:
            return f"{d['mean']:.4f}" + (f" +- {d['std']:.4f}" if n > 1 else "")

        lines.append(f"| {row['labels']} | {cell(p)} | {cell(q)} | {row['gain']:+.4f} |")
    return "\n".join(lines) + "\n"


def report_rows(r: dict[str, Any]) -> list[str]:
    ae, ft, cnn = r["ae_report"], r["finetune_report"], r["baseline_cnn"]
    rep = r["report"]
    lines = [
        "| | report | aeopt |",
        "| --- | ---: | ---: |",
        "| conv AE (report config) train / val / test loss (MSE) | "
        f"{rep['ae_train_loss']} / {rep['ae_val_loss']} / "
        f"{rep['ae_test_loss']} | {ae['train_loss']:.4f} / {ae['val_loss']:.4f} / {ae['test_loss']:.4f} |",
        f"| conv AE training time | - | {_t(ae['seconds'])} ({ae['epochs']} epochs) |",
        "| fine-tuned classifier train / val / test accuracy | "
        f"{rep['ft_train_acc']} / {rep['ft_val_acc']} / "
        f"{rep['ft_test_acc']} | {ft['train_acc']:.4f} / {ft['val_acc']:.4f} / {ft['test_acc']:.4f} |",
        f"| fine-tuned classifier time (AE + fine-tune) | {rep['ft_minutes']} min | "
        f"{_t(ft['total_seconds'])} "
        f"({_t(ft['seconds'])} fine-tune, {ft['epochs']} epochs) |",
    ]
    if "finetune_best" in r:
        b, bae = r["finetune_best"], r["ae_best"]
        label = r.get("best_label", "best")
        lines += [
            f"| conv AE of {label}: test MSE | - | {bae['test_mse']:.4f} |",
            f"| classifier fine-tuned on {label}: train / val / test accuracy | - | "
            f"{b['train_acc']:.4f} / {b['val_acc']:.4f} / {b['test_acc']:.4f} |",
            f"| classifier fine-tuned on {label}: time (AE + fine-tune; beside the label-budget runs) | - | "
            f"{_t(b['total_seconds'])} |",
        ]
    lines += [
        f"| CNN from scratch: test accuracy | {rep['cnn_test_acc']} | {cnn['test_acc']:.4f} |",
        f"| CNN from scratch: time | {rep['cnn_minutes']} min | {_t(cnn['seconds'])} "
        f"({cnn['epochs']} epochs) |",
        "",
    ]
    return lines


if __name__ == "__main__":
    main()
