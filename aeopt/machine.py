"""What CPU this is, in a few words: its model name and the vector and matrix units its kernels use.

Benchmark figures depend on the CPU kind far more than on anything else: the same engine ran 1.80x a
DataLoader loop on an Intel VM with AMX and 2.17x on an AMD EPYC with AVX2 only (BENCHMARKS.md). So
every benchmark's JSON names it, and figures from two kinds are not compared as if from one.
"""

from __future__ import annotations

import platform
from pathlib import Path

# The instruction sets oneDNN's and BLAS's CPU kernels pick between, widest first.
UNITS = (("amx_tile", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))


def describe_cpu(cpuinfo: str) -> str:
    """'<model name> (<units>)' from the text of /proc/cpuinfo; '' when it names no model."""
    model, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = " ".join(value.split())
        elif key == "flags" and not flags:
            flags = set(value.split())
    if not model:
        return ""
    units = [name for flag, name in UNITS if flag in flags]
    return f"{model} ({', '.join(units) or 'no AVX2'})"


def cpu_name() -> str:
    """This machine's CPU for a benchmark record: /proc/cpuinfo where it exists (Linux), else what
    Python's platform module knows."""
    try:
        described = describe_cpu(Path("/proc/cpuinfo").read_text())
    except OSError:
        described = ""
    return described or platform.processor() or platform.machine()
