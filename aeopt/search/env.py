"""Whole-number settings from the environment, checked once, with one line that names the variable."""

from __future__ import annotations

import os

from aeopt.errors import ConfigError


def env_int(name: str) -> int | None:
    """The variable as a whole number >= 1, None when unset or empty; a bad value is a ConfigError."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number; set it to 1 or more") from None
    if value < 1:
        raise ConfigError(f"{name}={raw!r} must be 1 or more")
    return value
