"""The base of every schema: unknown keys are errors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    # Unknown keys are errors: a typo in a YAML file or a --set must not be silently ignored.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
