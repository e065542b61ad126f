"""The base of every schema: unknown keys are errors."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# A seed: what torch, numpy and Optuna's samplers all take (numpy's RandomState stops at 2**32 - 1).
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]


class Strict(BaseModel):
    # Unknown keys are errors: a typo in a YAML file or a --set must not be silently ignored.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
