"""Host memory that training steps reuse instead of asking the kernel for again: aeopt's glibc
malloc settings.

On the CPU torch allocates every activation and gradient with the C library's malloc. A batch of
256 of the report's network makes tensors of 0.2-3.2 MB each, step after step. glibc serves
blocks above its mmap threshold (128 KB at start, raised as large blocks are freed) from fresh
`mmap` calls and gives freed memory at the top of the heap back to the kernel once more than the
trim threshold (twice the mmap threshold) is free there. Either way the next step touches new
pages: a page fault per 4 KB, each page zeroed by the kernel, several thousand faults per
step. Measured on the 2-core development VM (BENCHMARKS.md, "Host memory, layout and the optimizer
kernel"): in a fresh process the report's conv AE trained at 26-29 ms a step with glibc's defaults
and 19 ms with the settings below (21 ms under jemalloc). Where the process first loads a dataset,
glibc's own threshold has already risen and the gain is smaller (1.04x an epoch), but the
channels-last layout (aeopt.training.layout) was faster only with these settings.

So the CLI sets, before any command allocates: blocks up to 32 MB (the most glibc allows) from the
heap, and freed memory kept until 2 GB of it is free at the top. A process's resident memory
stays at its high-water mark instead of shrinking between steps; for a training process that is
the point. Larger blocks (a whole dataset on the device) are still mapped and unmapped whole.

Whatever the user chose wins: glibc's own MALLOC_* variables or GLIBC_TUNABLES, another allocator
in LD_PRELOAD (jemalloc, tcmalloc), or AEOPT_MALLOC=0 (glibc's defaults). Elsewhere than glibc
(macOS, musl) nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

from aeopt.switches import turned_off

log = logging.getLogger(__name__)

ENV = "AEOPT_MALLOC"  # "0": leave the C library's allocator as it is

# mallopt(3) parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2 * 1024**3 - 1  # mallopt takes an int

_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")


def why_not(env: dict[str, str] | None = None) -> str | None:
    """Why aeopt leaves malloc alone in this process, or None when it tunes it."""
    env = os.environ if env is None else env
    if turned_off(ENV, env):
        return f"{ENV}={env[ENV]}"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "not glibc"
    chosen = [name for name in _USER_SETTINGS if env.get(name)]
    if chosen:
        return f"{chosen[0]} is set"
    if any(name in env.get("LD_PRELOAD", "") for name in ("jemalloc", "tcmalloc", "mimalloc")):
        return "another allocator is preloaded"
    return None


_applied = False


def tune(env: dict[str, str] | None = None) -> bool:
    """Apply aeopt's malloc settings to this process (once); True if they are in force."""
    global _applied
    if _applied:
        return True
    reason = why_not(env)
    if reason is not None:
        log.debug("malloc left as it is: %s", reason)
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        ok = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    except (OSError, AttributeError) as exc:
        log.debug("malloc left as it is: %s", exc)
        return False
    _applied = ok
    return ok


def applied() -> bool:
    """Whether `tune` changed this process's malloc settings."""
    return _applied
