"""aeopt's malloc settings (aeopt/allocator.py): when they apply, and that they change where glibc
puts a block. Each effect is checked in a fresh interpreter: the settings are per process."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from aeopt import allocator

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
needs_glibc = pytest.mark.skipif(not GLIBC, reason="aeopt tunes glibc's malloc only")

# A 16 MB block, freed: glibc's defaults map it with mmap (above the 128 KB start threshold); under
# aeopt's settings it comes from the heap. mallinfo2 (glibc >= 2.33) counts the mapped blocks.
PROBE = """
import ctypes, json, sys
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
tuned = False
if sys.argv[1] == "tune":
    from aeopt import allocator
    tuned = allocator.tune()
before = libc.mallinfo2().hblks
block = libc.malloc(16 * 1024 * 1024)
mapped = libc.mallinfo2().hblks - before
libc.free(block)
print(json.dumps({"tuned": tuned, "mapped": mapped}))
"""


def _probe(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("AEOPT_MALLOC", "LD_PRELOAD", "GLIBC_TUNABLES") and not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env={**clean, **env}, capture_output=True,
                         text=True, check=True, timeout=60)
    return json.loads(out.stdout)


@needs_glibc
def test_tuned_process_serves_a_16mb_block_from_the_heap_and_an_untuned_one_maps_it():
    assert _probe("plain") == {"tuned": False, "mapped": 1}
    assert _probe("tune") == {"tuned": True, "mapped": 0}


@needs_glibc
def test_the_users_choice_wins():
    assert _probe("tune", AEOPT_MALLOC="0") == {"tuned": False, "mapped": 1}
    # glibc's own setting: the user's threshold (1 MB) stays, so the block is still mapped.
    assert _probe("tune", MALLOC_MMAP_THRESHOLD_="1048576") == {"tuned": False, "mapped": 1}


def test_why_not_names_the_reason():
    base = {"PATH": "/usr/bin"}
    assert allocator.why_not({**base, "AEOPT_MALLOC": "0"}) == "AEOPT_MALLOC=0"
    if not GLIBC:
        assert allocator.why_not(base) == "not glibc"
        return
    assert allocator.why_not(base) is None
    assert allocator.why_not({**base, "AEOPT_MALLOC": "1"}) is None
    assert allocator.why_not({**base, "MALLOC_TRIM_THRESHOLD_": "0"}) == "MALLOC_TRIM_THRESHOLD_ is set"
    tunables = {**base, "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1"}
    assert allocator.why_not(tunables) == "GLIBC_TUNABLES is set"
    assert (allocator.why_not({**base, "LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"})
            == "another allocator is preloaded")


@needs_glibc
def test_the_cli_tunes_malloc_before_any_command_runs():
    code = ("from aeopt.cli import _process_setup; _process_setup(); "
            "from aeopt import allocator; print(allocator.applied())")
    clean = {k: v for k, v in os.environ.items() if k != "AEOPT_MALLOC" and not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True, check=True,
                         timeout=120)
    assert out.stdout.strip() == "True"
