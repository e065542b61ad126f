"""The conv decoders' transposed convolutions, one layer at a time, forward + backward: torch's layer
(oneDNN on the CPU) against aeopt's (`aeopt.training.kinds.transposed`) with each of its two forward
passes, the matmul + scatter and torch's kernel (its backward is ordinary convolutions either way).

What `_matmul_wins` rests on: which forward is faster for which layer shape. CPUs differ (AVX2 against
AVX-512 / AMX matmul kernels), so rerun this on a new kind of machine before trusting the rule there.
The paths alternate within each round, and the figure is the median over rounds.

    python benchmarks/transposed_layers.py --threads 2,1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from aeopt import allocator
from aeopt.machine import cpu_name
from aeopt.training.kinds.transposed import (
    Stride2Transposed,
    _matmul_wins,
    _Stride2Transposed,
    with_torch_layers,
)

# (name, in channels, out channels, input size, padding, output padding): the decoders' layers.
LAYERS = (
    ("3x3 -> 7x7, 16 -> 16", 16, 16, 3, 0, 0),
    ("3x3 -> 7x7, 32 -> 32 (report's first)", 32, 32, 3, 0, 0),
    ("3x3 -> 7x7, 64 -> 32", 64, 32, 3, 0, 0),
    ("3x3 -> 7x7, 128 -> 64", 128, 64, 3, 0, 0),
    ("7x7 -> 14x14, 32 -> 16 (report's second)", 32, 16, 7, 1, 1),
    ("7x7 -> 14x14, 64 -> 32", 64, 32, 7, 1, 1),
    ("14x14 -> 28x28, 16 -> 1 (report's last)", 16, 1, 14, 1, 1),
    ("14x14 -> 28x28, 32 -> 1", 32, 1, 14, 1, 1),
)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=256, help="batch size (default 256, the report's)")
    ap.add_argument("--threads", default="2,1", help="torch thread counts to measure (default 2,1)")
    ap.add_argument("--rounds", type=int, default=7, 
                    help="alternating rounds; the median is kept (default 7)")
    ap.add_argument("--steps", type=int, default=20, help="forward + backward passes per round (default 20)")
    ap.add_argument("--json", default=None, help="write the results here")
    return ap.parse_args(argv)


def _pass_seconds(layer: nn.Module, x: torch.Tensor, steps: int) -> float:
    """Seconds per forward + backward pass (input and weight gradients, as in training)."""
    t0 = time.perf_counter()
    for _ in range(steps):
        y = layer(x)
        y.backward(upstream(y))
    return (time.perf_counter() - t0) / steps


def upstream(y: torch.Tensor) -> torch.Tensor:
    """The output's gradient in the layout the network hands it back: a one-channel image's from the
    loss with NCHW strides (its target's), a feature map's from the next convolution channels-last."""
    return torch.ones(y.shape) if y.shape[1] == 1 else torch.ones_like(y)


def measure(c_in: int, c_out: int, size: int, padding: int, output_padding: int, *, batch: int,
            rounds: int, steps: int) -> dict[str, float]:
    """Median seconds per forward + backward of each path (PATHS)."""
    torch.manual_seed(0)
    ours = Stride2Transposed(c_in, c_out, padding=padding, output_padding=output_padding)
    theirs = with_torch_layers(nn.Sequential(Stride2Transposed(c_in, c_out, padding=padding,
                                                               output_padding=output_padding)))
    theirs.load_state_dict({"0." + k: v for k, v in ours.state_dict().items()})
    # Channels-last, as the engine trains on the CPU (aeopt.training.layout).
    for layer in (ours, theirs):
        layer.to(memory_format=torch.channels_last)
    x = torch.randn(batch, c_in, size, size).contiguous(memory_format=torch.channels_last).requires_grad_()
    # Each of aeopt's forward passes by force here, whatever `_matmul_wins` says, to compare them everywhere.
    layers = {"torch": theirs, "matmul": _Forced(ours, matmul=True), "kernel": _Forced(ours, matmul=False)}
    for name in ("matmul", "kernel"):
        _check_same(name, layers[name], theirs, x)
    for layer in layers.values():
        _pass_seconds(layer, x, 3)  # warm-up: allocator, oneDNN primitive cache
    times: dict[str, list[float]] = {name: [] for name in layers}
    for _ in range(rounds):
        for name, layer in layers.items():
            times[name].append(_pass_seconds(layer, x, steps))
    return {k: statistics.median(v) for k, v in times.items()}


def _check_same(name: str, ours: nn.Module, theirs: nn.Module, x: torch.Tensor) -> None:
    """Both layers compute the same outputs and gradients (to float rounding), or the timings compare
    nothing."""
    got = []
    for layer in (ours, theirs):
        x.grad = None
        layer.zero_grad()
        y = layer(x)
        y.backward(upstream(y))
        weight = next(p for p in layer.parameters() if p.dim() == 4)
        got.append((y.detach(), x.grad.clone(), weight.grad.clone()))
    for a, b in zip(*got, strict=True):
        if not torch.allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, float(b.abs().max()))):
            raise SystemExit(f"aeopt's layer ({name} forward) differs from torch's by "
                             f"{(a - b).abs().max():.3g}")
    x.grad = None


class _Forced(nn.Module):
    """A `Stride2Transposed` with the forward pass given (`matmul` or torch's kernel), whatever its rule
    picks."""

    def __init__(self, layer: Stride2Transposed, *, matmul: bool):
        super().__init__()
        self.layer, self.matmul = layer, matmul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.layer
        return _Stride2Transposed.apply(x, m.weight, m.bias, m.padding[0], m.output_padding[0], self.matmul)


def _layer_row(layer: tuple, counts: list[int], args: argparse.Namespace) -> dict:
    name, c_in, c_out, size, pad, out_pad = layer
    pick = "matmul" if _matmul_wins(torch.empty(1, c_in, size, size), c_out) else "kernel"
    row = {"layer": name, "in": c_in, "out": c_out, "size": size, "rule_picks": pick}
    for n in counts:
        torch.set_num_threads(n)
        t = measure(c_in, c_out, size, pad, out_pad, batch=args.batch, rounds=args.rounds, steps=args.steps)
        row[f"{n}t"] = {"torch_ms": 1e3 * t["torch"], "matmul_ms": 1e3 * t["matmul"],
                        "kernel_ms": 1e3 * t["kernel"],
                        "faster": "matmul" if t["matmul"] < t["kernel"] else "kernel",
                        "aeopt_speedup": t["torch"] / t[pick]}
    cells = " | ".join(f"{r['torch_ms']:.2f} / {r['matmul_ms']:.2f} / {r['kernel_ms']:.2f} | "
                       f"{r['aeopt_speedup']:.2f}x" for r in (row[f"{n}t"] for n in counts))
    print(f"| {name} | {cells} | {pick} |", flush=True)
    return row


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    allocator.tune()
    counts = [int(t) for t in args.threads.split(",")]
    before = torch.get_num_threads()
    print(f"{cpu_name()}, batch {args.batch}; ms per forward + backward")
    print("| layer | " + " | ".join(f"{n} thread(s): torch / matmul / kernel | aeopt speed" for n in counts)
          + " | rule |\n|---|" + "---:|---:|" * len(counts) + "---|")
    try:
        rows = [_layer_row(layer, counts, args) for layer in LAYERS]
    finally:
        torch.set_num_threads(before)  # a caller's (a test's) thread count as it was
    result = {"benchmark": "transposed_layers", "cpu": cpu_name(),
              "torch": torch.__version__, "batch": args.batch, "rounds": args.rounds, "steps": args.steps,
              "threads": counts, "layers": rows}
    wrong = [f"{r['layer']} ({n} threads)" for r in rows for n in counts
             if r[f"{n}t"]["faster"] != r["rule_picks"]]
    print(f"ms per forward + backward at {', '.join(map(str, counts))} threads: torch's layer / aeopt's with "
          f"the matmul forward / aeopt's with torch's forward kernel, then aeopt's (the rule's pick) speed "
          f"over torch's layer; the rule's pick last. Rows where the rule picks the slower forward: "
          f"{wrong or 'none'}")
    if args.json:
        with open(args.json, "w") as f:
            f.write(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
