"""Loading the YAML files people write by hand (kit, rules, records, scenarios, credentials): every
problem as one line — file, where (a device's id or the field path) and line, what was expected —
instead of a traceback or pydantic's error dump.

The files come from people and may come from an attacker, so the loader works in bounded time and
memory (README, "The command"): it reads at most ``MAX_FILE_BYTES``, builds the
values itself from the parser's events (libyaml's when present) and refuses what plain settings never
need — anchors and aliases (a "billion laughs" file expands 1.5 kB into gigabytes), merge keys, keys
that appear twice (YAML would silently keep the last), numbers longer than ``MAX_NUMBER_DIGITS``
(Python's own int parser gives up past 4,300 digits, with a traceback), integers beyond 64 bits,
nesting deeper than ``MAX_DEPTH``, tags other than the plain ones and more than one document."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml
from pydantic import BaseModel, ValidationError
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from nurserywatch.contract import IDENT_RE

M = TypeVar("M", bound=BaseModel)

#: A large site's kit is tens of kilobytes (300 devices: about 30 kB).
MAX_FILE_BYTES = 256 * 1024
#: Values (scalars, lists, mappings) per file: the bound on the time spent building them, about a
#: second on a Raspberry Pi 4; a 300-device kit has some 3,000.
MAX_NODES = 50_000
#: Settings nest a handful of levels (kit → devices → device → transport → field).
MAX_DEPTH = 32
#: Problems listed per file (a file of a thousand aliases needs no thousand lines to be refused).
MAX_PROBLEMS = 50
#: 2**64 has 20 digits; a longer number is a mistake or an attack, never a setting.
MAX_NUMBER_DIGITS = 20
_MAX_FLOAT_CHARS = 40
_INT_RANGE = (-(1 << 63), (1 << 64) - 1)

Loc = tuple[str | int, ...]

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {f"{_TAG}{t}" for t in ("null", "bool", "int", "float", "str", "timestamp")}
_LIBYAML: type[Any] | None = getattr(yaml, "CSafeLoader", None)


@dataclass(frozen=True)
class Problem:
    """One problem at ``loc`` (a path of keys and list indexes); ``also`` names a second place
    involved (the first of two duplicates), shown as its line."""

    loc: Loc
    message: str
    also: Loc | None = None
    #: The line when it is not the path's (the second of two equal keys).
    line: int | None = None


class Problems(ValueError):
    """Raised by a model validator that checks a whole document and finds several problems at once
    (loc relative to the model); the loader lists each on its own line."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(f"{_plain_loc(p.loc)}: {p.message}" for p in problems))
        self.problems = tuple(problems)


@dataclass
class Document:
    """A parsed file: its value and the line (1-based) each path starts on."""

    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)

    def line(self, loc: Loc) -> int | None:
        """The line of the deepest part of ``loc`` the file has (a missing key: its parent's)."""
        path: Loc = ()
        found = self.lines.get(path)
        for part in loc:
            # pydantic names a mapping's key 0 as "0" or 0; parts the file lacks (union tags, missing
            # keys) are skipped.
            if isinstance(part, int):
                candidates: Loc = (part, str(part))
            else:
                candidates = (part, int(part)) if part.isdigit() else (part,)
            for candidate in candidates:
                if (*path, candidate) in self.lines:
                    path = (*path, candidate)
                    found = self.lines[path]
                    break
        return found


class _Refused(Exception):
    """A file the loader stops reading at once (too deep, several documents)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


class _Builder:
    """Python values straight from the parser's events, with each path's line; never expands an
    alias and checks every scalar before converting it."""

    def __init__(self, events: Iterator[yaml.Event]) -> None:
        self.events = events
        self.lines: dict[Loc, int] = {}
        self.problems: list[Problem] = []
        self.nodes = 0
        self.constructor = SafeConstructor()
        # PyYAML's implicit typing (int, float, bool, null, timestamp …): untyped in its stubs.
        self.resolve = cast(Callable[[type[yaml.Node], str, tuple[bool, bool]], str], Resolver().resolve)

    def document(self) -> Any:
        value: Any = None
        documents = 0
        for event in self.events:
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise _Refused(_line(event), "a second document (---): a settings file holds one")
            elif isinstance(event, yaml.NodeEvent):
                value = self.node(event, (), 1)
        return value

    def node(self, event: yaml.Event, loc: Loc, depth: int) -> Any:
        line = _line(event)
        self.lines.setdefault(loc, line)
        self.nodes += 1
        if depth > MAX_DEPTH:
            raise _Refused(line, f"nested more than {MAX_DEPTH} levels deep")
        if self.nodes > MAX_NODES:
            raise _Refused(line, f"more than {MAX_NODES:,} values; a settings file has far fewer")
        if isinstance(event, yaml.AliasEvent):
            self.problems.append(Problem(loc, f"*{event.anchor}: aliases are not allowed; write the value out"))
            return None
        assert isinstance(event, yaml.NodeEvent)
        if event.anchor is not None:
            self.problems.append(Problem(loc, f"&{event.anchor}: anchors are not allowed; write the value out"))
        if isinstance(event, yaml.ScalarEvent):
            return self.scalar(event, loc)
        tag = getattr(event, "tag", None)
        if isinstance(event, yaml.SequenceStartEvent):
            self._collection_tag(tag, "seq", loc)
            items: list[Any] = []
            for child in self.events:
                if isinstance(child, yaml.SequenceEndEvent):
                    return items
                items.append(self.node(child, (*loc, len(items)), depth + 1))
        if isinstance(event, yaml.MappingStartEvent):
            self._collection_tag(tag, "map", loc)
            return self.mapping(loc, depth)
        raise _Refused(_line(event), f"unexpected {type(event).__name__}")  # the parser's grammar rules it out

    def mapping(self, loc: Loc, depth: int) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        first_line: dict[Any, int] = {}
        for key_event in self.events:
            if isinstance(key_event, yaml.MappingEndEvent):
                return out
            line = _line(key_event)
            key = self.node(key_event, loc, depth + 1)
            if not isinstance(key_event, yaml.ScalarEvent):  # `? [a, b]: …`: no setting is keyed by a list
                self.problems.append(Problem(loc, "a key must be a plain value, not a list or mapping", line=line))
            value_loc = (*loc, _key_part(key))
            self.lines.setdefault(value_loc, line)
            value = self.node(next(self.events), value_loc, depth + 1)
            if isinstance(key_event, yaml.ScalarEvent) and self._is_merge(key_event):
                self.problems.append(Problem(loc, "<<: merge keys are not allowed; write the keys out"))
                continue
            try:
                hash(key)
            except TypeError:
                continue  # reported above
            if key in first_line:
                self.problems.append(
                    Problem(value_loc, f"{_shown(key)} appears twice in the same mapping (first on line "
                            f"{first_line[key]}); YAML would silently keep only the last", line=line)
                )
                continue
            first_line[key] = line
            out[key] = value
        return out

    def scalar(self, event: yaml.ScalarEvent, loc: Loc) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.resolve(yaml.ScalarNode, event.value, event.implicit)
        if tag in (f"{_TAG}merge", f"{_TAG}value"):
            tag = f"{_TAG}str"  # `<<` and `=` as plain text; a merge key is refused by the mapping
        if tag not in _SCALAR_TAGS:
            self.problems.append(Problem(loc, f"{tag}: only plain values (text, numbers, true/false) are allowed"))
            return None
        text = event.value
        if tag == f"{_TAG}int" and len(re.sub(r"^[-+]?(0[xob])?", "", text.replace("_", ""))) > MAX_NUMBER_DIGITS:
            self.problems.append(Problem(loc, f"a {len(text)}-character number: too long (at most "
                                              f"{MAX_NUMBER_DIGITS} digits)"))
            return None
        if tag == f"{_TAG}float" and len(text) > _MAX_FLOAT_CHARS:
            self.problems.append(Problem(loc, f"a {len(text)}-character number: too long"))
            return None
        node = yaml.ScalarNode(tag, text, None, None, event.style)
        construct: Callable[[SafeConstructor, yaml.ScalarNode], Any] = SafeConstructor.yaml_constructors[tag]
        try:
            value = construct(self.constructor, node)
        except (ValueError, OverflowError, yaml.YAMLError):
            kind = "a date or time" if tag.endswith("timestamp") else "a number"
            self.problems.append(Problem(loc, f"{_shown(text)} reads as {kind} but is not a valid one "
                                              "(quote it to mean text)"))
            return None
        if isinstance(value, int) and not isinstance(value, bool) and not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
            self.problems.append(Problem(loc, f"{text}: too large (beyond 64 bits)"))
            return None
        return value

    def _is_merge(self, event: yaml.ScalarEvent) -> bool:
        tag = event.tag or self.resolve(yaml.ScalarNode, event.value, event.implicit)
        return tag == f"{_TAG}merge"

    def _collection_tag(self, tag: str | None, kind: str, loc: Loc) -> None:
        if tag not in (None, "!", f"{_TAG}{kind}"):
            self.problems.append(Problem(loc, f"{tag}: only plain lists and mappings are allowed"))


def _line(event: yaml.Event) -> int:
    mark = event.start_mark
    return int(mark.line) + 1 if mark is not None else 1


def _key_part(key: Any) -> str | int:
    return key if isinstance(key, str | int) and not isinstance(key, bool) else str(key)


def read_document(path: Path, error: type[Exception]) -> Document:
    """The parsed file with its lines; an unreadable, unparsable or refused file raises ``error``
    listing every problem found, one per line."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise error(f"{path}: larger than {MAX_FILE_BYTES // 1024} KiB; a settings file is far smaller")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: cannot read: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    builder = _Builder(yaml.parse(text, Loader=_LIBYAML or yaml.SafeLoader))
    try:
        data = builder.document()
    except _Refused as exc:
        raise error(f"{path} (line {exc.line}): {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(f"{path}{where}: not valid YAML: {problem}") from None
    doc = Document(data, builder.lines)
    if builder.problems:
        raise error(_listing(str(path), builder.problems, doc))
    return doc


def read_yaml(path: Path, error: type[Exception]) -> Any:
    """The parsed document (see read_document)."""
    return read_document(path, error).data


def validate_document(
    data: Any,
    model: type[M],
    error: type[Exception],
    *,
    source: str,
    example: str,
    doc: Document | None = None,
    labels: Mapping[str, str] | None = None,
    context: dict[str, Any] | None = None,
) -> M:
    """Validate a parsed document against ``model``; its problems raise ``error``, one per line.
    With ``doc`` each names its line; ``labels`` (list key → noun, e.g. devices → device) names an
    item by its id — ``device "mat-06" (line 42)`` — instead of its index."""
    if not isinstance(data, dict):
        keys = ", ".join(model.model_fields)
        raise error(f"{source}: expected a mapping with keys {keys}")
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        if doc is None:
            raise error(f"{source}: {describe_validation_error(exc, example)}") from None
        raise error(_listing(source, validation_problems(exc, example), doc, labels)) from None


def load_yaml_model(
    path: str | Path,
    model: type[M],
    error: type[Exception],
    *,
    example: str,
    empty_means_defaults: bool = False,
    labels: Mapping[str, str] | None = None,
    context: dict[str, Any] | None = None,
) -> M:
    path = Path(path)
    doc = read_document(path, error)
    data = {} if doc.data is None and empty_means_defaults else doc.data
    return validate_document(
        data, model, error, source=str(path), example=example, doc=doc, labels=labels, context=context
    )


def located(problem: Problem, doc: Document, labels: Mapping[str, str] | None = None) -> str:
    """``where (line N): what`` — where is an item's id when ``labels`` name its list, else the path."""
    loc, rest = problem.loc, ""
    if labels and len(loc) >= 2 and isinstance(loc[1], int) and str(loc[0]) in labels:
        item = _item(doc.data, loc[0], loc[1])
        ident = item.get("id") if isinstance(item, dict) else None
        if isinstance(ident, str):
            inner = _plain_loc(loc[2:], empty="")
            name = f'"{ident}"' if IDENT_RE.match(ident) else _shown(ident, 66)
            where = f"{labels[str(loc[0])]} {name}"
            rest = f"{inner}: " if inner else ""
        else:
            where = _plain_loc(loc)
    else:
        where = _plain_loc(loc)
    line = problem.line or doc.line(loc)
    at = f" (line {line})" if line is not None else ""
    also = doc.line(problem.also) if problem.also is not None else None
    see = f" (see line {also})" if also is not None else ""
    return f"{where}{at}: {rest}{problem.message}{see}"


def _listing(source: str, problems: Sequence[Problem], doc: Document, labels: Mapping[str, str] | None = None) -> str:
    """One line per problem, in file order, at most MAX_PROBLEMS of them."""
    ordered = sorted(problems, key=lambda p: p.line or doc.line(p.loc) or 0)
    shown = [f"{source}: {located(p, doc, labels)}" for p in ordered[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        shown.append(f"{source}: … and {len(problems) - MAX_PROBLEMS} more problems")
    return "\n".join(shown)


def _item(data: Any, key: str | int, index: int) -> Any:
    items = data.get(key) if isinstance(data, dict) else None
    return items[index] if isinstance(items, list) and 0 <= index < len(items) else None


_MESSAGE_PATH = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[\d+\])*): (.+)$", re.DOTALL)


def validation_problems(exc: ValidationError, example: str) -> list[Problem]:
    """Every error pydantic found, each as a Problem (validators' ``field: text`` messages are
    moved into the path, so the line is the field's)."""
    out: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc = _clean_loc(err["loc"])
        ctx = err.get("ctx", {})
        if err["type"] == "value_error" and isinstance(ctx.get("error"), Problems):
            out.extend(Problem((*loc, *p.loc), p.message, None if p.also is None else (*loc, *p.also))
                       for p in ctx["error"].problems)  # fmt: skip
            continue
        message = _describe(err, example)
        if err["type"] == "value_error" and (m := _MESSAGE_PATH.match(message)):
            loc, message = (*loc, *_parse_path(m.group(1))), m.group(2)
        out.append(Problem(loc, message))
    return out


def describe_validation_error(exc: ValidationError, example: str) -> str:
    """pydantic's first error as 'field.path: what was expected (got …)'."""
    first = validation_problems(exc, example)[0]
    return f"{_plain_loc(first.loc)}: {first.message}"


def _describe(err: Any, example: str) -> str:
    kind, got, ctx = err["type"], err.get("input"), err.get("ctx", {})
    if kind == "extra_forbidden":
        return f"unknown key (check the spelling; see {example})"
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":
        return str(ctx["error"]) if "error" in ctx else str(err["msg"])
    if kind == "string_pattern_mismatch":
        pattern = ctx.get("pattern", "")
        if pattern == IDENT_RE.pattern:
            expected = "an id of 1–64 characters from a-z 0-9 _ -"
        elif "[0-9A-Fa-f]{2}:" in pattern:
            expected = "a Bluetooth address like AA:BB:CC:DD:EE:FF"
        elif pattern.startswith("^([01][0-9]|2[0-3]):"):
            expected = "a time of day HH:MM (00:00–23:59)"
        else:
            expected = f"a string matching {pattern}"
        return f"expected {expected} (got {_shown(got)})"
    if kind in ("enum", "literal_error", "union_tag_invalid"):
        expected = ctx.get("expected") or ctx.get("expected_tags", "")
        return f"expected one of {expected} (got {_shown(got)})"
    if isinstance(got, float) and not math.isfinite(got) or kind == "finite_number":
        return f"must be a finite number (got {_shown(got)})"
    if kind in ("float_parsing", "float_type"):
        return f"expected a number (got {_shown(got)})"
    if kind in ("greater_than_equal", "less_than_equal") and not isinstance(got, str):
        sign = "≥" if kind == "greater_than_equal" else "≤"
        bound = ctx.get("ge", ctx.get("le"))
        shown = f"{bound:g}" if isinstance(bound, int | float) else bound
        return f"expected a number {sign} {shown} (got {_shown(got)})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping of settings (got {_shown(got)})"
    return f"{str(err['msg']).lower()} (got {_shown(got)})"


def _shown(value: Any, limit: int = 80) -> str:
    """``repr`` cut short: a wrong value can be as long as the file, its message must stay one line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _clean_loc(loc: tuple[int | str, ...]) -> Loc:
    # Union branch names and dict-key markers are pydantic's, not the file's.
    return tuple(p for p in loc if p not in ("serial", "ble", "[key]"))


def _parse_path(text: str) -> Loc:
    return tuple(int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", text))


def _plain_loc(loc: Loc, *, empty: str = "(top level)") -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or empty
