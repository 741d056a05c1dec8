"""The rules file (configs/rules.yaml): thresholds of every rule, validated on load.

Every problem becomes one RulesError naming the file, the field and what was expected, e.g.
``configs/rules.yaml: prone.min_duration_s: expected a number ≥ 0 (got -5)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from nurserywatch.yaml_files import load_yaml_model


class RulesError(Exception):
    """A rules file that cannot be used. ``str()`` is the one message shown to the operator."""


class _Strict(BaseModel):
    # extra=forbid: a misspelt key must fail loudly, not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ProneConfig(_Strict):
    #: Seconds of continuous prone position (message time) before the alert; 0 = at once.
    min_duration_s: Annotated[float, Field(ge=0, le=3600)] = 30.0


class RulesConfig(_Strict):
    prone: ProneConfig = Field(default_factory=ProneConfig)


def load_rules(path: str | Path) -> RulesConfig:
    """Read and validate a rules file (empty = all defaults). Raises RulesError with one readable message."""
    return load_yaml_model(path, RulesConfig, RulesError, example="configs/rules.yaml", empty_means_defaults=True)
