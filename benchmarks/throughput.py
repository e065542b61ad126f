"""Training throughput: aeopt's engine against a plain torchvision + DataLoader loop, side by side.

Both train the same model (the report's conv AE config), with the same optimizer and loss, on the
same images (a stratified subset of the Fashion-MNIST training split, 48,000 by default = the
report's 80 % training part). The epochs alternate (engine, loop, engine, loop, ...) so that a
machine shared with other work slows both alike.

- engine: `aeopt.training.engine.Trainer.train_epoch` on one whole float tensor already on the device;
  batches are index slices of a random permutation drawn on the device.
- DataLoader: `torchvision.datasets.FashionMNIST(root, transform=ToTensor())` (a PIL image and a
  ToTensor call per sample), `DataLoader(batch_size=256, shuffle=True)`, each batch moved to the
  device, `loss.item()` per step: the loop most tutorials write.

    python benchmarks/throughput.py --data-dir ../shared/data --device cpu --epochs 2
    python benchmarks/throughput.py --data-dir ../shared/data --device cuda --epochs 3 --json out.json
"""

from __future__ import annotations

import argparse
import atexit
import gzip
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from aeopt import allocator
from aeopt.config import RunConfig, load_run_config
from aeopt.machine import cpu_name
from aeopt.training.data import load_dataset, stratified_subset, to_float
from aeopt.training.engine import Trainer, resolve_device, set_seed
from aeopt.training.kinds.transposed import with_torch_layers
from aeopt.training.layout import channels_last_here
from aeopt.training.losses import reconstruction_loss
from aeopt.training.models import build_model

REPO = Path(__file__).resolve().parents[1]  # for configs/*.yaml
TV_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _torchvision_root(folder: Path) -> Path:
    """A root that torchvision's FashionMNIST reads with download=False: <root>/FashionMNIST/raw
    holding the uncompressed training files. aeopt also reads .gz files and flat folders
    (Debian's), so anything else is unpacked once into a temporary folder."""
    in_place = folder.name == "raw" and folder.parent.name == "FashionMNIST"
    if in_place and all((folder / n).is_file() for n in TV_FILES):
        return folder.parent.parent
    root = Path(tempfile.mkdtemp(prefix="aeopt-tv-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for n in TV_FILES:
        if (folder / n).is_file():
            shutil.copyfile(folder / n, raw / n)
        else:
            (raw / n).write_bytes(gzip.decompress((folder / (n + ".gz")).read_bytes()))
    print(f"unpacked {folder} into {raw} for torchvision (not timed)", file=sys.stderr)
    return root


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None,
                    help="folder with FashionMNIST/raw (default: AEOPT_DATA_DIR, cache, Debian)")
    ap.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when available)")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs of each, alternating (default 2)")
    ap.add_argument("--train-size", type=int, default=48_000,
                    help="training images per epoch (default 48000)")
    ap.add_argument("--config", default=str(REPO / "configs" / "conv_ae.yaml"))
    ap.add_argument("--workers", type=int, default=0, help="DataLoader num_workers (default 0)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--flops", action="store_true",
                    help="also measure the training step's FLOPs and this device's matmul peak, and print "
                         "the engine's FLOP/s against it (what 2x over the DataLoader loop would need)")
    ap.add_argument("--malloc", choices=("aeopt", "glibc"), default="aeopt",
                    help="the process's malloc settings, for both loops: aeopt's (what the CLI sets, "
                         "aeopt/allocator.py) or glibc's defaults (default aeopt)")
    ap.add_argument("--json", default=None, help="write the results here")
    return ap.parse_args(argv)


def step_flops_per_image(cfg: RunConfig, device: torch.device, bs: int) -> float:
    """Floating-point operations of one training step (forward + backward), per image, as torch's
    FlopCounterMode counts them (convolutions and matrix multiplies; elementwise ops and Adam not)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(cfg).to(device).train()
    x = torch.rand(bs, 1, 28, 28, device=device)
    with FlopCounterMode(display=False) as counter:
        reconstruction_loss(model, x, x).backward()
    return counter.get_total_flops() / bs


def matmul_peak(device: torch.device, n: int = 2048, reps: int = 8, tries: int = 3) -> float:
    """FLOP/s of a large float32 matrix multiply on `device` (the best of `tries`): the most this
    device's BLAS gets out of its cores, the ceiling for any training step here."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    best = 0.0
    for _ in range(tries):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync(device)
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t0))
    return best


def _flops_report(result: dict, flops: float, peak: float) -> dict:
    """The engine's FLOP/s against the matmul peak, and what a 2x speedup would need."""
    n = result["train_size"]
    engine_s = result["engine"]["seconds_per_epoch"]
    loader_s = result["dataloader"]["seconds_per_epoch"]
    out = {
        "step_gflop_per_image": flops / 1e9,
        "epoch_gflop": flops * n / 1e9,
        "matmul_peak_gflops": peak / 1e9,
        "engine_gflops": flops * n / engine_s / 1e9,
        "dataloader_gflops": flops * n / loader_s / 1e9,
        # The epoch's arithmetic alone, were every FLOP done at the matmul peak.
        "epoch_seconds_at_peak": flops * n / peak,
        # 2x over the DataLoader loop means the whole engine epoch within half the loop's time.
        "gflops_needed_for_2x": flops * n / (loader_s / 2) / 1e9,
    }
    out["engine_share_of_peak"] = out["engine_gflops"] / out["matmul_peak_gflops"]
    out["share_of_peak_needed_for_2x"] = out["gflops_needed_for_2x"] / out["matmul_peak_gflops"]
    print(f"training step: {out['step_gflop_per_image'] * 1e3:.2f} MFLOP per image, "
          f"{out['epoch_gflop']:.0f} GFLOP per {n}-image epoch")
    print("| | GFLOP/s | share of matmul peak |\n|---|---:|---:|")
    print(f"| matrix multiply peak (2048 x 2048, float32) | {out['matmul_peak_gflops']:.1f} | 100 % |")
    print(f"| aeopt engine, training step | {out['engine_gflops']:.1f} | "
          f"{100 * out['engine_share_of_peak']:.0f} % |")
    print(f"| DataLoader loop, training step | {out['dataloader_gflops']:.1f} | "
          f"{100 * out['dataloader_gflops'] / out['matmul_peak_gflops']:.0f} % |")
    print(f"| needed for 2x over the DataLoader loop | {out['gflops_needed_for_2x']:.1f} | "
          f"{100 * out['share_of_peak_needed_for_2x']:.0f} % |")
    return out


def tutorial_optimizer(params, cfg: RunConfig) -> torch.optim.Optimizer:
    """The config's optimizer as a tutorial builds it: torch.optim with its default kernel (the
    engine's `make_optimizer` picks the fused one where it exists: aeopt.training.layout)."""
    o = cfg.optim
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, weight_decay=o.weight_decay, momentum=o.momentum,
                               nesterov=o.momentum > 0)
    optimizer = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[o.name]
    return optimizer(params, lr=o.lr, weight_decay=o.weight_decay)


class NaiveLoop:
    """The loop most tutorials write: a DataLoader over PIL images, `loss.item()` per step."""

    def __init__(self, cfg: RunConfig, loader: DataLoader, n: int, device: torch.device):
        set_seed(0)
        # torch's default layout and torch's own layers (aeopt's Stride2Transposed is the engine's)
        self.model = with_torch_layers(build_model(cfg)).to(device)
        self.optimizer = tutorial_optimizer(self.model.parameters(), cfg)
        self.loader, self.n, self.device = loader, n, device

    def epoch(self) -> float:
        self.model.train()
        total = 0.0
        for xb, _ in self.loader:
            xb = xb.to(self.device, non_blocking=True)
            loss = reconstruction_loss(self.model, xb, xb)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.item() * xb.shape[0]
        return total / self.n

    def warm_up(self, batches: int = 4) -> None:
        for i, (xb, _) in enumerate(self.loader):
            reconstruction_loss(self.model, xb.to(self.device), xb.to(self.device)).backward()
            if i == batches - 1:
                break
        self.optimizer.zero_grad(set_to_none=True)


def _timed(fn: Callable[[], float], device: torch.device) -> tuple[float, float, float]:
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    loss = fn()
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0, loss


def _pipelines_alone(loader: DataLoader, x: torch.Tensor, bs: int, device: torch.device) -> dict[str, float]:
    """Seconds per epoch of each input pipeline without a model: what a loop pays before any compute."""
    def loader_only() -> float:
        for xb, _ in loader:
            xb.to(device, non_blocking=True)
        return float("nan")

    def slices_only() -> float:
        perm = torch.randperm(x.shape[0], device=device)
        for start in range(0, x.shape[0], bs):
            x[perm[start : start + bs]]
        return float("nan")

    return {"dataloader": _timed(loader_only, device)[0], "engine": _timed(slices_only, device)[0]}


def _summary(rows: list[dict], n: int) -> dict:
    mean = statistics.fmean(r["seconds"] for r in rows)
    cpu = statistics.fmean(r["cpu_seconds"] for r in rows)
    return {"seconds_per_epoch": mean, "images_per_second": n / mean, "cpu_seconds_per_epoch": cpu,
            "epochs": rows}


def _print_table(result: dict, epochs: int) -> None:
    e, d, data_only = result["engine"], result["dataloader"], result["input_pipeline_seconds_per_epoch"]
    print(f"\n{result['train_size']} images per epoch, batch {result['batch_size']}, {epochs} epochs each, "
          f"device {result['device']} ({result['device_name']}), {result['cpu_threads']} CPU threads")
    print("| loop | s / epoch | images / s | CPU s / epoch |\n|---|---:|---:|---:|")
    print(f"| aeopt engine (whole on-device tensors) | {e['seconds_per_epoch']:.2f} | "
          f"{e['images_per_second']:,.0f} | {e['cpu_seconds_per_epoch']:.2f} |")
    print(f"| torchvision + ToTensor + DataLoader (workers {result['dataloader_workers']}) | "
          f"{d['seconds_per_epoch']:.2f} | {d['images_per_second']:,.0f} | "
          f"{d['cpu_seconds_per_epoch']:.2f} |")
    print(f"input pipeline alone, s / epoch: DataLoader {data_only['dataloader']:.2f}, "
          f"engine slices {data_only['engine']:.3f}")
    print(f"speedup: {result['speedup']:.2f}x (by CPU time {result['speedup_cpu_time']:.2f}x); "
          f"engine seconds per epoch over 48,000 images: {result['engine_seconds_per_48000']:.2f} s")


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    if args.malloc == "aeopt":
        allocator.tune()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cfg = load_run_config(args.config)
    bs = cfg.budget.batch_size

    ds = load_dataset("fashion_mnist", args.data_dir)
    idx = stratified_subset(ds.train.y, args.train_size, seed=0)
    n = len(idx)
    tv_train = datasets.FashionMNIST(str(_torchvision_root(Path(ds.source))), train=True, download=False,
                                     transform=transforms.ToTensor())
    loader = DataLoader(Subset(tv_train, idx.tolist()), batch_size=bs, shuffle=True, num_workers=args.workers,
                        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0,
                        generator=torch.Generator().manual_seed(0))

    # Engine: the whole subset on the device once (not timed, like the dataset construction).
    x = to_float(ds.train.x[idx], device)
    set_seed(0)
    engine = Trainer(build_model(cfg), cfg, device, seed=0)
    naive = NaiveLoop(cfg, loader, n, device)

    # Warm-up (allocator, kernels, lazy imports): a few batches of each, not timed.
    engine.train_epoch(x[: 4 * bs])
    naive.warm_up()

    rows: dict[str, list[dict]] = {"engine": [], "dataloader": []}
    for epoch in range(1, args.epochs + 1):
        for name, fn in (("engine", lambda: engine.train_epoch(x)), ("dataloader", naive.epoch)):
            seconds, cpu, loss = _timed(fn, device)
            rows[name].append({"epoch": epoch, "seconds": seconds, "cpu_seconds": cpu, "loss": loss})
            print(f"epoch {epoch} {name:<10} {seconds:7.2f} s  {n / seconds:9.0f} img/s  "
                  f"(CPU time {cpu:6.2f} s)  loss {loss:.4f}", file=sys.stderr)

    result = {
        "benchmark": "throughput",
        "device": str(device),
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else cpu_name()),
        "cpu": cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "malloc": "aeopt" if allocator.applied() else "glibc",
        "engine_layout": "channels_last" if channels_last_here(device) else "contiguous",
        "torch": torch.__version__,
        "config": args.config,
        "batch_size": bs,
        "train_size": n,
        "dataloader_workers": args.workers,
        "engine": _summary(rows["engine"], n),
        "dataloader": _summary(rows["dataloader"], n),
        "input_pipeline_seconds_per_epoch": _pipelines_alone(loader, x, bs, device),
    }
    result["speedup"] = result["engine"]["images_per_second"] / result["dataloader"]["images_per_second"]
    # CPU time of this process: on a machine shared with other jobs, the fairer single-thread figure.
    result["speedup_cpu_time"] = (result["dataloader"]["cpu_seconds_per_epoch"]
                                  / result["engine"]["cpu_seconds_per_epoch"])
    result["engine_seconds_per_48000"] = 48_000 / result["engine"]["images_per_second"]
    _print_table(result, args.epochs)
    if args.flops:
        result["flops"] = _flops_report(result, step_flops_per_image(cfg, device, bs), matmul_peak(device))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
