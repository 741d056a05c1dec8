"""The rules file (configs/rules.yaml): thresholds of every rule, validated on load.

Every problem becomes one RulesError naming the file, the field and what was expected, e.g.
``configs/rules.yaml: prone.min_duration_s: expected a number ≥ 0 (got -5)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


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
    """Read and validate a rules file. Raises RulesError with one readable message."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RulesError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"{path}: cannot read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RulesError(f"{path}{where}: not valid YAML: {problem}") from None
    if data is None:  # an empty file means "all defaults"
        data = {}
    if not isinstance(data, dict):
        raise RulesError(f"{path}: expected a mapping of rule names (e.g. prone:), got {type(data).__name__}")
    try:
        return RulesConfig.model_validate(data)
    except ValidationError as exc:
        raise RulesError(f"{path}: {_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    """pydantic's first error as 'field.path: expected … (got …)'."""
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    kind = err["type"]
    got = err.get("input")
    ctx = err.get("ctx", {})
    if kind == "extra_forbidden":
        return f"{loc}: unknown key (check the spelling; see configs/rules.yaml)"
    if kind == "missing":
        return f"{loc}: required key is missing"
    if kind in ("float_parsing", "float_type", "finite_number"):
        return f"{loc}: expected a number (got {got!r})"
    if kind in ("greater_than_equal", "less_than_equal"):
        lo = "≥" if kind == "greater_than_equal" else "≤"
        bound = ctx.get("ge", ctx.get("le"))
        shown = f"{bound:g}" if isinstance(bound, int | float) else bound
        return f"{loc}: expected a number {lo} {shown} (got {got!r})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{loc}: expected a mapping of settings (got {got!r})"
    return f"{loc}: expected {err['msg'].lower()} (got {got!r})"
