"""On/off switches from the environment (AEOPT_MALLOC, AEOPT_CHANNELS_LAST, AEOPT_FUSED,
AEOPT_CONCURRENT_FOLDS, AEOPT_CUDA_GRAPHS, which are on by default; AEOPT_DEBUG, AEOPT_OFFLINE, which are
off) and on/off words in options: one reading of the words for all of them, so `AEOPT_FUSED=false`
means what `AEOPT_MALLOC=false` means, and `AEOPT_DEBUG=0` is not debugging."""

from __future__ import annotations

import os
from collections.abc import Mapping

ON = ("1", "true", "yes", "on")
OFF = ("0", "false", "no", "off")


def word(value: str) -> bool | None:
    """True for an on-word, False for an off-word (any case, spaces ignored), None for anything else."""
    value = value.strip().lower()
    return True if value in ON else False if value in OFF else None


def turned_off(name: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether the switch `name` is set to an off-word. Unset, empty or anything else leaves it on:
    these switches only turn defaults off."""
    return word((os.environ if env is None else env).get(name, "")) is False


def turned_on(name: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether the switch `name`, off by default, is set: to anything but nothing or an off-word (so
    `AEOPT_DEBUG=0` is off, and any other value that once turned it on still does)."""
    value = (os.environ if env is None else env).get(name, "")
    return bool(value.strip()) and word(value) is not False
