"""Loading the YAML files people write by hand (kit, rules, scenarios): one readable message per
problem — file, field path, what was expected — instead of a traceback or pydantic's error dump."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from nurserywatch.contract import IDENT_RE

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: Path, error: type[Exception]) -> Any:
    """The parsed document; unreadable or unparsable files raise ``error`` naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(f"{path}{where}: not valid YAML: {problem}") from None


def validate_document(data: Any, model: type[M], error: type[Exception], *, source: str, example: str) -> M:
    """Validate a parsed document against ``model``; the first problem raises ``error``."""
    if not isinstance(data, dict):
        keys = ", ".join(model.model_fields)
        raise error(f"{source}: expected a mapping with keys {keys}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"{source}: {describe_validation_error(exc, example)}") from None


def load_yaml_model(
    path: str | Path, model: type[M], error: type[Exception], *, example: str, empty_means_defaults: bool = False
) -> M:
    path = Path(path)
    data = read_yaml(path, error)
    if data is None and empty_means_defaults:
        data = {}
    return validate_document(data, model, error, source=str(path), example=example)


def describe_validation_error(exc: ValidationError, example: str) -> str:
    """pydantic's first error as 'field.path: what was expected (got …)'."""
    err = exc.errors(include_url=False)[0]
    loc = _format_loc(err["loc"])
    kind, got, ctx = err["type"], err.get("input"), err.get("ctx", {})
    if kind == "extra_forbidden":
        return f"{loc}: unknown key (check the spelling; see {example})"
    if kind == "missing":
        return f"{loc}: required key is missing"
    if kind == "value_error":
        message = str(ctx["error"]) if "ctx" in err else err["msg"]
        # Model validators report paths relative to the model they check.
        return message if loc == "(top level)" else f"{loc}.{message}"
    if kind == "string_pattern_mismatch":
        pattern = ctx.get("pattern", "")
        if pattern == IDENT_RE.pattern:
            expected = "an id of 1–64 characters from a-z 0-9 _ -"
        elif ":" in pattern:
            expected = "a Bluetooth address like AA:BB:CC:DD:EE:FF"
        else:
            expected = f"a string matching {pattern}"
        return f"{loc}: expected {expected} (got {got!r})"
    if kind in ("enum", "literal_error", "union_tag_invalid"):
        expected = ctx.get("expected") or ctx.get("expected_tags", "")
        return f"{loc}: expected one of {expected} (got {got!r})"
    if isinstance(got, float) and not math.isfinite(got) or kind == "finite_number":
        return f"{loc}: must be a finite number (got {got!r})"
    if kind in ("float_parsing", "float_type"):
        return f"{loc}: expected a number (got {got!r})"
    if kind in ("greater_than_equal", "less_than_equal") and not isinstance(got, str):
        sign = "≥" if kind == "greater_than_equal" else "≤"
        bound = ctx.get("ge", ctx.get("le"))
        shown = f"{bound:g}" if isinstance(bound, int | float) else bound
        return f"{loc}: expected a number {sign} {shown} (got {got!r})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{loc}: expected a mapping of settings (got {got!r})"
    return f"{loc}: {err['msg'].lower()} (got {got!r})"


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("serial", "ble", "[key]"):  # union branch names and dict-key markers are noise
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"
