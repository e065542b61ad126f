"""The CPU engine's process, kernel and layer settings, one at a time: glibc's malloc against aeopt's
(aeopt/allocator.py), torch's contiguous layout against channels-last convolutions, the unfused
Adam kernel against the fused one (aeopt/training/layout.py), and torch's `nn.ConvTranspose2d`
against aeopt's transposed convolutions in the decoder (`Stride2Transposed`,
aeopt/training/kinds/transposed.py).

Each setting trains the report's conv AE (configs/conv_ae.yaml, batch 256) with the engine
(`Trainer.train_epoch`) on the same 48,000 Fashion-MNIST training images, in a fresh process
(malloc settings are per process), and the settings take turns round after round so that other
load slows them alike. Reported: the median seconds per epoch of each, and its speed against
torch's defaults.

    python benchmarks/cpu_layout.py --data-dir ../shared/data --rounds 3 --json out.json
    python benchmarks/cpu_layout.py --classifiers --rounds 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from aeopt.machine import cpu_name

REPO = Path(__file__).resolve().parents[1]

# name -> (aeopt's malloc, channels-last, fused Adam, aeopt's transposed convolutions)
SETTINGS = {
    "torch defaults (glibc malloc, contiguous, unfused Adam, torch's transposed convolutions)":
        (False, False, False, False),
    "+ aeopt's malloc": (True, False, False, False),
    "+ channels-last": (True, True, False, False),
    "+ fused Adam": (True, True, True, False),
    "aeopt (+ its transposed convolutions)": (True, True, True, True),
    # The layout's gain depends on the allocator: with glibc's defaults it measured none (throughput.py).
    "aeopt without its malloc": (False, True, True, True),
}


def child(args: argparse.Namespace) -> None:
    malloc, channels_last, fused, matmul_transposed = SETTINGS[args.child]
    os.environ["AEOPT_CHANNELS_LAST"] = "1" if channels_last else "0"
    from aeopt import allocator

    if malloc:
        allocator.tune()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from aeopt.config import load_run_config
    from aeopt.training import engine
    from aeopt.training.data import load_dataset, stratified_subset, to_float
    from aeopt.training.kinds.transposed import with_torch_layers
    from aeopt.training.models import build_model

    if not fused:
        engine.fused_optimizer_ok = lambda params: False  # the Trainer's make_optimizer reads it
    cfg = load_run_config(args.config)
    ds = load_dataset("fashion_mnist", args.data_dir)
    x = to_float(ds.train.x[stratified_subset(ds.train.y, args.train_size, seed=0)], torch.device("cpu"))
    engine.set_seed(0)
    model = build_model(cfg)
    if not matmul_transposed:  # torch's own layers, with the same weights
        with_torch_layers(model)
    trainer = engine.Trainer(model, cfg, torch.device("cpu"), seed=0)
    trainer.train_epoch(x[: 4 * cfg.budget.batch_size])  # warm-up: kernels, allocator
    seconds, losses = [], []
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        losses.append(trainer.train_epoch(x))
        seconds.append(time.perf_counter() - t0)
    conv = next(m.weight for m in trainer.model.modules()
                if isinstance(m, torch.nn.Conv2d) and m.weight.shape[1] > 1)
    print(json.dumps({"seconds": seconds, "losses": losses, "threads": torch.get_num_threads(),
                      "malloc": allocator.applied(), "fused": bool(trainer.optimizer.defaults.get("fused")),
                      "channels_last": not conv.is_contiguous(),
                      "last_layer": type(trainer.model.decoder[-2]).__name__}))


def classifiers(args: argparse.Namespace) -> dict:
    """Training steps of the two classifiers (the baseline CNN; a head on the report's encoder, as
    the fine-tune trains it) on random batches of 256, in this process under aeopt's malloc: torch's
    layout and unfused AdamW against channels-last and the fused kernel, in turns; median ms/step."""
    from aeopt import allocator

    allocator.tune()
    import torch
    import torch.nn.functional as F

    if args.threads:
        torch.set_num_threads(args.threads)
    from aeopt.config import CNNConfig, load_run_config
    from aeopt.training.models import build_model
    from aeopt.training.supervised import BaselineCNN, Classifier

    encoder_cfg = load_run_config(args.config)

    def stepper(name: str, channels_last: bool, fused: bool):
        torch.manual_seed(0)
        model = (BaselineCNN(CNNConfig()) if name == "cnn"
                 else Classifier(build_model(encoder_cfg).encoder, 10))
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fused or None)
        x, y = torch.rand(4096, 1, 28, 28), torch.randint(0, 10, (4096,))
        at = [0]

        def step() -> None:
            s = at[0] % 4096
            at[0] += 256
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[s:s + 256]), y[s:s + 256]).backward()
            opt.step()
        return step

    rows = []
    for name in ("cnn", "classifier"):
        arms = {(cl, fu): stepper(name, cl, fu) for cl in (False, True) for fu in (False, True)}
        times: dict[tuple[bool, bool], list[float]] = {k: [] for k in arms}
        for step in arms.values():
            for _ in range(5):
                step()
        for _ in range(args.rounds):
            for key, step in arms.items():
                t0 = time.perf_counter()
                for _ in range(20):
                    step()
                times[key].append((time.perf_counter() - t0) / 20 * 1000)
        base = statistics.median(times[(False, False)])
        for (cl, fu), ts in times.items():
            med = statistics.median(ts)
            rows.append({"model": name, "channels_last": cl, "fused": fu, "ms_per_step": med,
                         "speed": base / med})
    _print_steps(rows, args.rounds, torch.get_num_threads())
    return {"benchmark": "cpu_layout_classifiers", "rounds": args.rounds, "rows": rows}


def _print_steps(rows: list[dict], rounds: int, threads: int) -> None:
    print(f"\nclassifier steps, batch 256, median of {rounds} x 20 steps, {threads} CPU threads")
    print("| model | layout | AdamW | ms / step | speed |\n|---|---|---|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {'channels-last' if r['channels_last'] else 'contiguous'} | "
              f"{'fused' if r['fused'] else 'unfused'} | {r['ms_per_step']:.1f} | {r['speed']:.2f}x |")


def parent(args: argparse.Namespace) -> dict:
    runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    clean = {k: v for k, v in os.environ.items()
             if k not in ("AEOPT_MALLOC", "AEOPT_CHANNELS_LAST") and not k.startswith("MALLOC_")}
    for r in range(1, args.rounds + 1):
        for name in SETTINGS:
            cmd = [sys.executable, __file__, "--child", name, "--epochs", str(args.epochs),
                   "--train-size", str(args.train_size), "--config", args.config]
            cmd += ["--data-dir", args.data_dir] if args.data_dir else []
            cmd += ["--threads", str(args.threads)] if args.threads else []
            out = subprocess.run(cmd, env=clean, capture_output=True, text=True, check=True)
            run = json.loads(out.stdout.strip().splitlines()[-1])
            runs[name].append(run)
            print(f"round {r} {name:<76} " + " ".join(f"{s:6.2f} s" for s in run["seconds"])
                  + f"  loss {run['losses'][-1]:.4f}", file=sys.stderr, flush=True)
    base = statistics.median(s for run in runs[next(iter(SETTINGS))] for s in run["seconds"])
    rows = []
    for name, rs in runs.items():
        med = statistics.median(s for run in rs for s in run["seconds"])
        rows.append({"setting": name, "seconds_per_epoch": med, "speed": base / med,
                     "all_seconds": [s for run in rs for s in run["seconds"]], "threads": rs[0]["threads"],
                     "malloc_tuned": rs[0]["malloc"], "fused": rs[0]["fused"],
                     "channels_last": rs[0]["channels_last"], "last_layer": rs[0]["last_layer"]})
    print(f"\n{args.train_size} images per epoch, batch 256, {args.rounds} rounds x {args.epochs} epochs, "
          f"{rows[0]['threads']} CPU threads")
    print("| setting | s / epoch (median) | speed |\n|---|---:|---:|")
    for row in rows:
        print(f"| {row['setting']} | {row['seconds_per_epoch']:.2f} | {row['speed']:.2f}x |")
    result = {"benchmark": "cpu_layout", "cpu": cpu_name(), "train_size": args.train_size,
              "rounds": args.rounds, "epochs": args.epochs, "config": args.config, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None, help="folder with FashionMNIST/raw (default: AEOPT_DATA_DIR)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every setting, in turn (default 3)")
    ap.add_argument("--epochs", type=int, default=1, help="timed epochs per setting per round (default 1)")
    ap.add_argument("--train-size", type=int, default=48_000)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--config", default=str(REPO / "configs" / "conv_ae.yaml"))
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--classifiers", action="store_true",
                    help="time the baseline CNN's and the fine-tune classifier's steps instead")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
    elif args.classifiers:
        result = classifiers(args)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    else:
        parent(args)


if __name__ == "__main__":
    main()
