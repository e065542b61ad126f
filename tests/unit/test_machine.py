"""aeopt.machine names the CPU from /proc/cpuinfo's text."""

from __future__ import annotations

from aeopt.machine import cpu_name, describe_cpu

INTEL = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
"""
EPYC = "processor : 0\nmodel name : AMD EPYC\nflags : fpu sse2 fma avx2\n"


def test_the_model_and_its_widest_units_are_named():
    assert describe_cpu(INTEL) == "Intel(R) Xeon(R) Platinum 8480+ (AMX, AVX-512, AVX2)"
    assert describe_cpu(EPYC) == "AMD EPYC (AVX2)"


def test_a_cpu_without_avx2_says_so_and_no_model_gives_nothing():
    assert describe_cpu("model name : Old CPU\nflags : fpu sse2\n") == "Old CPU (no AVX2)"
    assert describe_cpu("processor : 0\n") == ""


def test_this_machine_gets_a_name():
    assert cpu_name().strip()
