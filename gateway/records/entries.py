"""Nap-check records (午睡チェック表, docs/records.md), pure: the entry model, the scheduler that writes
one record per child per interval during a nap session, and the SHA-256 hash chain.

No I/O and no clock: every timestamp comes from the caller (message time of readings, the injected
Clock's ticks), so a two-hour nap replays in milliseconds. ``records_store`` is the SQLite shell.

Decisions (docs/records.md has the long form):

* **Intervals are aligned to the session start**: a child checked every 5 min in a session that
  starts at 13:02:30 gets records at 13:07:30, 13:12:30, … A record covers the half-open interval
  ``[end − interval, end)`` and its time is ``end``. Aligning to the start (not the wall clock)
  gives every child a full first interval and exactly ``duration / interval`` records.
* A record is written at the first tick at or after ``end + grace`` (grace: readings still in
  flight), also — with every field null and ``data_missing: true`` — for a child whose sensors said
  nothing: silence must be visible on the sheet, never a skipped row. Readings for an interval
  already written are counted as ``late`` and cannot change it (append-only).
* When a session stops between two boundaries, a last ``partial`` record covers the remainder.
* One chain per site (one gateway and one SQLite file per site): entry ``n`` carries the hash of
  entry ``n − 1``; the hash is SHA-256 over the canonical JSON of the entry including ``seq`` and
  ``prev_hash`` but without its own hash. A confirmation or correction is a new entry referring to
  the record by its ``seq``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from gateway.config import APNEA, BREATHING_HIGH, BREATHING_LOW, RulesConfig
from nurserywatch.contract import IDENT_RE, Alert, AlertState, Position, Severity, Stream
from nurserywatch.kit import AgeBand, DeviceKind, Kit
from nurserywatch.yaml_files import load_yaml_model

Ident = Annotated[str, Field(pattern=IDENT_RE.pattern)]
UnixMs = Annotated[int, Field(ge=0)]
Seq = Annotated[int, Field(ge=1)]
StaffName = Annotated[str, Field(min_length=1, max_length=128)]

#: ``by`` of the entries the gateway writes by itself.
AUTO = "auto"
#: The ``prev_hash`` of entry 1.
GENESIS_HASH = "0" * 64

#: Alerts of these rules in an interval make ``breathing_ok`` false whatever the rate said.
BREATHING_RULES = frozenset({APNEA, BREATHING_LOW, BREATHING_HIGH})

#: (room, age band) → the lowest and highest breathing rate (per min) that count as OK.
RateLimits = Callable[[str, AgeBand], tuple[float, float]]


def rules_rate_limits(rules: RulesConfig) -> RateLimits:
    """ "Breathing OK" uses the rules' own thresholds (configs/rules.yaml, per room and age band):
    OK from ``breathing_rate_low.below_bpm`` up to ``breathing_rate_high.above_bpm``, so a record
    and an alert never disagree about the same rate."""

    def limits(room: str, band: AgeBand) -> tuple[float, float]:
        rs = rules.resolve(room, band)
        return rs.breathing_rate_low.below_bpm, rs.breathing_rate_high.above_bpm

    return limits


#: What each kind of child-bound device reports for the sheet (a thermometer is a spot check, so
#: its silence is not "missing data").
_EXPECTED_STREAM = {DeviceKind.NAP_MAT: Stream.BREATHING, DeviceKind.POSTURE_CLIP: Stream.POSTURE}


# ---------------------------------------------------------------- config (configs/records.yaml)


class RecordsError(Exception):
    """A records file that cannot be used. ``str()`` is the one message shown to the operator."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True)


Minutes = Annotated[float, Field(ge=1, le=60)]


class _ByBand(_Strict):
    @model_validator(mode="before")
    @classmethod
    def _keys_as_text(cls, data: Any) -> Any:
        # YAML reads `0: 5` with an int key; the age band is "0".
        return {str(k): v for k, v in data.items()} if isinstance(data, dict) else data


class BandIntervals(_ByBand):
    """Minutes between two records, per age band (docs/records.md: 5 / 10 / 15)."""

    infant: Minutes = Field(default=5, alias="0")
    toddler: Minutes = Field(default=10, alias="1-2")
    preschool: Minutes = Field(default=15, alias="3+")


class BandIntervalOverrides(_ByBand):
    infant: Minutes | None = Field(default=None, alias="0")
    toddler: Minutes | None = Field(default=None, alias="1-2")
    preschool: Minutes | None = Field(default=None, alias="3+")


class RoomRecordsConfig(_Strict):
    interval_min: BandIntervalOverrides = Field(default_factory=BandIntervalOverrides)


class RecordsConfig(_Strict):
    interval_min: BandIntervals = Field(default_factory=BandIntervals)
    #: Per-room overrides of the intervals, e.g. a room that checks its 1–2-year-olds every 5 min.
    rooms: dict[Ident, RoomRecordsConfig] = Field(default_factory=dict)
    #: Seconds after an interval's end before its record is written (readings still in flight).
    grace_s: Annotated[float, Field(ge=0, le=60)] = 2.0
    #: A body temperature older than this (minutes) is not shown on a record.
    body_temp_max_age_min: Annotated[float, Field(ge=0, le=24 * 60)] = 30.0

    def interval_ms(self, room: str, band: AgeBand) -> int:
        attr = _BAND_ATTR[band]
        override = self.rooms.get(room)
        minutes: float | None = getattr(override.interval_min, attr) if override else None
        return round((minutes if minutes is not None else getattr(self.interval_min, attr)) * 60_000)

    def check_kit(self, kit: Kit, source: str = "configs/records.yaml") -> None:
        """Room overrides must name rooms of the kit (a misspelt room would silently use defaults)."""
        known = {r.id for r in kit.rooms}
        for room in self.rooms:
            if room not in known:
                raise RecordsError(f"{source}: rooms.{room}: not a room of the kit (rooms: {', '.join(sorted(known))})")


_BAND_ATTR = {AgeBand.INFANT: "infant", AgeBand.TODDLER: "toddler", AgeBand.PRESCHOOL: "preschool"}


def load_records_config(path: str | Path) -> RecordsConfig:
    """Read and validate a records file (empty = defaults). Raises RecordsError with one message."""
    return load_yaml_model(path, RecordsConfig, RecordsError, example="configs/records.yaml", empty_means_defaults=True)


# ---------------------------------------------------------------- entries


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class AlertRef(_Entry):
    id: str
    rule: str
    severity: Severity


class ChildPlan(_Entry):
    child: Ident
    age_band: AgeBand
    interval_s: Annotated[int, Field(ge=1)]


class SessionStarted(_Entry):
    kind: Literal["session_started"] = "session_started"
    session: str
    room: Ident
    ts: UnixMs
    by: str
    #: Who is checked and how often, fixed for the whole session (a later kit change does not
    #: alter a running sheet, and the sheet can be checked for completeness against it).
    children: tuple[ChildPlan, ...]


class SessionStopped(_Entry):
    kind: Literal["session_stopped"] = "session_stopped"
    session: str
    room: Ident
    ts: UnixMs
    by: str


class CheckRecord(_Entry):
    """One row of the 午睡チェック表: one child, one interval, written automatically."""

    kind: Literal["record"] = "record"
    session: str
    room: Ident
    child: Ident
    age_band: AgeBand
    interval_s: int
    interval_start_ts: UnixMs
    #: The interval's end (the check time on the sheet), or the session stop for a partial record.
    ts: UnixMs
    partial: bool = False
    by: str = AUTO
    #: Latest position in the interval; ``prone_seen``: any prone sample in it.
    posture: Position | None = None
    prone_seen: bool | None = None
    #: Latest "present" of the mat (child on the mat).
    on_mat: bool | None = None
    breathing_rate_bpm: float | None = None
    breathing_rate_mean_bpm: float | None = None
    #: Rate known and within limits, and no breathing alert in the interval. Null when unknown:
    #: a record never claims OK without data.
    breathing_ok: bool | None = None
    body_temp_c: float | None = None
    body_temp_ts: UnixMs | None = None
    alerts: tuple[AlertRef, ...] = ()
    #: The child's sensors (or a part of them) said nothing in the interval; ``missing`` names the streams.
    data_missing: bool = False
    missing: tuple[Stream, ...] = ()


class Confirmation(_Entry):
    """A staff member's one-tap confirmation of a record (or of a correction)."""

    kind: Literal["confirmation"] = "confirmation"
    refers: Seq
    session: str
    room: Ident
    child: Ident
    ts: UnixMs
    by: StaffName


class CorrectionChanges(_Strict):
    """The fields staff may correct, with the same limits as the readings."""

    posture: Position | None = None
    prone_seen: bool | None = None
    on_mat: bool | None = None
    breathing_rate_bpm: Annotated[float, Field(ge=0, le=200)] | None = None
    breathing_ok: bool | None = None
    body_temp_c: Annotated[float, Field(ge=20, le=45)] | None = None
    note: Annotated[str, Field(max_length=500)] | None = None


CORRECTABLE = tuple(CorrectionChanges.model_fields)


class Correction(_Entry):
    """A correction of a record: only the changed fields (``null`` clears one), by whom and why."""

    kind: Literal["correction"] = "correction"
    corrects: Seq
    session: str
    room: Ident
    child: Ident
    ts: UnixMs
    by: StaffName
    changes: dict[str, Any]
    reason: Annotated[str, Field(max_length=500)] | None = None

    @field_validator("changes")
    @classmethod
    def _known_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError("a correction must change at least one field")
        try:
            checked = CorrectionChanges.model_validate(value)
        except ValidationError as exc:
            raise ValueError(_first_error(exc)) from None
        return checked.model_dump(mode="json", include=set(value))


class RedactedRef(_Entry):
    """One entry an erasure removed the content of: where it was in the chain, pinned by hashes."""

    seq: Seq
    kind: str
    prev_hash: str
    hash: str


class Erasure(_Entry):
    """A child's data was erased (``nurserywatch data erase``): the entries listed lost their content
    in the same transaction. Names no child — only which entries, so ``verify`` can tell a lawful
    redaction from content removed by hand, and still check every link around them."""

    kind: Literal["erasure"] = "erasure"
    ts: UnixMs
    by: StaffName
    #: The data request (``data_requests`` row) that asked for it.
    request: Annotated[str, Field(min_length=1, max_length=64)]
    redacted: tuple[RedactedRef, ...]


class RecordsPruned(_Entry):
    """Entries 1..``upto_seq`` were deleted under the kit's ``retention.records_days``
    (gateway/records_retention.py). Chained like any entry, it is the anchor ``verify`` starts from:
    the first entry kept must link to ``upto_hash``."""

    kind: Literal["pruned"] = "pruned"
    ts: UnixMs
    by: str = AUTO
    upto_seq: Seq
    upto_hash: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    #: Every pruned entry (other than earlier anchors) had a time before this local midnight.
    before_ts: UnixMs
    #: How many entries this pruning deleted.
    entries: Annotated[int, Field(ge=1)]


Entry = Annotated[
    SessionStarted | SessionStopped | CheckRecord | Confirmation | Correction | Erasure | RecordsPruned,
    Field(discriminator="kind"),
]
_ENTRY: TypeAdapter[Entry] = TypeAdapter(Entry)


def parse_entry(data: Mapping[str, Any]) -> Entry:
    """An entry from its JSON object (without ``seq``/``prev_hash``); raises pydantic's ValidationError."""
    return _ENTRY.validate_python(dict(data))


# ---------------------------------------------------------------- hash chain


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 as is, no NaN: the same object always gives the same text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainHead:
    seq: int
    hash: str


GENESIS = ChainHead(0, GENESIS_HASH)


@dataclass(frozen=True, slots=True)
class ChainedEntry:
    """An entry in the chain. ``body`` is the canonical JSON that was hashed (it holds ``seq`` and
    ``prev_hash`` too); ``hash`` = SHA-256 of ``body``."""

    seq: int
    prev_hash: str
    hash: str
    body: str
    entry: Entry

    @property
    def head(self) -> ChainHead:
        return ChainHead(self.seq, self.hash)


def chain(head: ChainHead, entries: Iterable[Entry]) -> list[ChainedEntry]:
    """Number and link ``entries`` after ``head``."""
    out: list[ChainedEntry] = []
    for entry in entries:
        seq, prev = head.seq + 1, head.hash
        body = canonical_json({**entry.model_dump(mode="json"), "seq": seq, "prev_hash": prev})
        chained = ChainedEntry(seq, prev, sha256_hex(body), body, entry)
        out.append(chained)
        head = chained.head
    return out


def index_columns(entry: Entry) -> dict[str, str | int | None]:
    """The columns the store keeps next to the body for lookups; verify checks they match it."""
    if isinstance(entry, Erasure | RecordsPruned):
        return {"kind": entry.kind, "ts": entry.ts, "room": "", "child": None, "session": "", "refers": None}
    refers = None
    if isinstance(entry, Confirmation):
        refers = entry.refers
    elif isinstance(entry, Correction):
        refers = entry.corrects
    child = None if isinstance(entry, SessionStarted | SessionStopped) else entry.child
    return {"kind": entry.kind, "ts": entry.ts, "room": entry.room, "child": child, "session": entry.session,
            "refers": refers}  # fmt: skip


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """A row as the store holds it, before anyone trusts it."""

    seq: int
    prev_hash: str
    hash: str
    body: str
    columns: Mapping[str, str | int | None]


@dataclass(frozen=True, slots=True)
class VerifyResult:
    entries: int
    head: ChainHead
    #: The first bad entry's seq (or the first missing one), None when the chain is intact.
    bad_seq: int | None = None
    problem: str | None = None
    #: Entries among ``entries`` whose content an erasure removed (their place and links still checked).
    redacted: int = 0

    @property
    def ok(self) -> bool:
        return self.problem is None


def decode_stored(row: StoredEntry) -> ChainedEntry:
    """Parse a row; raises ValueError naming what is wrong (not JSON, not an entry)."""
    try:
        data = json.loads(row.body)
    except json.JSONDecodeError as exc:
        raise ValueError(f"its content is not JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ValueError("its content is not a JSON object")
    fields = {k: v for k, v in data.items() if k not in ("seq", "prev_hash")}
    try:
        entry = parse_entry(fields)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"its content is not a valid entry ({where}: {err['msg']})") from None
    return ChainedEntry(row.seq, row.prev_hash, row.hash, row.body, entry)


def verify_chain(rows: Iterable[StoredEntry], start: ChainHead | None = None) -> VerifyResult:
    """Walk the chain in seq order and name the FIRST bad entry: edited (content ≠ hash), deleted
    (a gap in the numbers or a link to a hash that is not in the file), inserted (a later entry
    links past it) or renumbered. Stops at the first problem: what follows a break is not trusted.

    A redacted entry (content removed by ``data erase``, see ``redaction_marker``) cannot be
    re-hashed; it is trusted only when a later erasure entry — itself hashed and chained — lists its
    seq, kind, link and hash, and the entries around it link to exactly those."""
    head = start or GENESIS  # after pruning: the anchor (RecordsPruned) of the last entry deleted
    seen: dict[str, int] = {GENESIS_HASH: 0, head.hash: head.seq}  # hash -> seq, to recognise a skipping link
    count = 0
    #: redacted seq -> (its row, the erasure seq its marker names), until that erasure entry vouches for it
    unvouched: dict[int, tuple[StoredEntry, int]] = {}
    redacted = 0

    def bad(seq: int, problem: str) -> VerifyResult:
        return VerifyResult(count, head, seq, problem, redacted)

    for row in rows:
        label = f"entry {row.seq}"
        try:
            data = json.loads(row.body)
            if not isinstance(data, dict):
                raise ValueError
            recomputed = sha256_hex(canonical_json(data))
        except (ValueError, TypeError):
            return bad(row.seq, f"{label}: edited — its content is not a valid entry")
        erasure_seq = _redacted_by(data)
        if erasure_seq is None and recomputed != row.hash:
            return bad(row.seq, f"{label}{_describe(data)}: edited or forged — its content does not match its hash")
        body_seq, body_prev = data.get("seq"), data.get("prev_hash")
        if body_prev != row.prev_hash:
            return bad(row.seq, f"{label}: edited — its stored link differs from the hashed one")
        if body_prev != head.hash:
            skipped_to = seen.get(str(body_prev))
            if skipped_to is not None and skipped_to < head.seq:
                first = skipped_to + 1
                which = f"entry {first} was" if first == head.seq else f"entries {first}–{head.seq} were"
                return bad(
                    first,
                    f"entry {first}: inserted — the entry stored as {row.seq} links to entry {skipped_to}, "
                    f"so {which} added in between",
                )
            if isinstance(body_seq, int) and body_seq > head.seq + 1:
                first = head.seq + 1
                moved = "" if body_seq == row.seq else f" — stored as {row.seq}: the rest was renumbered or moved"
                return bad(first, _missing(first, body_seq, head.seq) + moved)
            if head.seq == 0:
                return bad(row.seq, f"{label}: the chain does not start at entry 1 (missing or replaced)")
            return bad(
                head.seq,
                f"entry {head.seq}: replaced — entry {row.seq} links to a different entry {head.seq} "
                f"(entry {head.seq} was edited and re-hashed, or entry {row.seq} was forged)",
            )
        if body_seq != row.seq:
            return bad(row.seq, f"{label}: renumbered — its hashed content says entry {body_seq}")
        if row.seq != head.seq + 1:  # a consistent link with a gap cannot happen without a forged hash
            return bad(head.seq + 1, _missing(head.seq + 1, row.seq, head.seq))
        if erasure_seq is not None:
            if erasure_seq <= row.seq:
                return bad(row.seq, f"{label}: edited — its content was removed, naming erasure entry {erasure_seq}")
            expected: Mapping[str, str | int | None] = REDACTED_COLUMNS
            unvouched[row.seq] = (row, erasure_seq)
            redacted += 1
        else:
            try:
                entry = decode_stored(row).entry
            except ValueError as exc:
                return bad(row.seq, f"{label}: {exc}")
            expected = index_columns(entry)
            if isinstance(entry, Erasure):
                problem = _vouch(entry, row.seq, unvouched)
                if problem is not None:
                    return bad(*problem)
        for name, value in expected.items():
            stored = row.columns.get(name)
            if stored != value:
                return bad(
                    row.seq, f"{label}: edited — column {name} is {stored!r} but its hashed content says {value!r}"
                )
        count += 1
        head = ChainHead(row.seq, row.hash)
        seen[row.hash] = row.seq
    if unvouched:
        first = min(unvouched)
        return bad(first, f"entry {first}: its content was removed, but no erasure entry lists it (removed by hand?)")
    return VerifyResult(count, head, redacted=redacted)


def _vouch(erasure: Erasure, seq: int, unvouched: dict[int, tuple[StoredEntry, int]]) -> tuple[int, str] | None:
    """Match an erasure entry's list against the redacted rows before it; the problem, if any."""
    for ref in erasure.redacted:
        found = unvouched.pop(ref.seq, None)
        if found is None:
            continue  # listed but not redacted: the content is still there and verified as usual
        row, named = found
        if named != seq:
            return ref.seq, f"entry {ref.seq}: edited — its content was removed naming erasure entry {named}, not {seq}"
        if (row.prev_hash, row.hash) != (ref.prev_hash, ref.hash):
            return ref.seq, (
                f"entry {ref.seq}: replaced — its links differ from those erasure entry {seq} recorded "
                "(an entry next to it was edited and re-hashed)"
            )
    return None


#: The lookup columns of a redacted row: nothing about whom or where it was.
REDACTED_COLUMNS: Mapping[str, str | int | None] = {
    "kind": "redacted", "ts": 0, "room": "", "child": None, "session": "", "refers": None,
}  # fmt: skip


def redaction_marker(seq: int, prev_hash: str, erasure_seq: int) -> str:
    """What replaces an erased entry's body: its place in the chain and the erasure entry that
    removed it (which lists its hash). The hash column stays as it was, so the next entry's link,
    and the erasure entry's list, still pin it."""
    return canonical_json({"prev_hash": prev_hash, "redacted_by": erasure_seq, "seq": seq})


def _redacted_by(data: Mapping[str, Any]) -> int | None:
    """The erasure seq of a redaction marker; None for an ordinary entry. A marker has exactly the
    three keys (an ordinary entry never has ``redacted_by``: entries forbid unknown fields)."""
    if "redacted_by" not in data:
        return None
    value = data["redacted_by"]
    if set(data) != {"prev_hash", "redacted_by", "seq"} or not isinstance(value, int) or isinstance(value, bool):
        return 0  # a malformed marker: reported as naming no valid erasure entry
    return value


def is_redacted(body: str) -> bool:
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return False
    return isinstance(data, dict) and _redacted_by(data) is not None


def _missing(first: int, found: int, after: int) -> str:
    what = f"entry {first} is" if found - first == 1 else f"entries {first}–{found - 1} are"
    where = f"entry {found} follows entry {after}" if after else f"the chain starts at entry {found}"
    return f"entry {first}: deleted — {what} missing ({where})"


def _describe(data: Mapping[str, Any]) -> str:
    parts = [str(data[k]) for k in ("kind", "room", "child") if isinstance(data.get(k), str)]
    return f" ({', '.join(parts)})" if parts else ""


# ---------------------------------------------------------------- commands on records (pure checks)


class RecordCommandError(ValueError):
    """A confirmation or correction that cannot be applied. ``reason`` is a counter key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def confirmation_for(
    target: ChainedEntry | None, seq: int, by: str, ts: int, confirmed_by: Iterable[str] = ()
) -> Confirmation:
    """The entry that confirms record (or correction) ``seq``. ``confirmed_by``: who already confirmed it
    (a second tap by the same person is refused as ``already_confirmed``, not chained twice)."""
    rec = _checkable(target, seq)
    if by in set(confirmed_by):
        raise RecordCommandError("already_confirmed", f"entry {seq} is already confirmed by {by!r}")
    try:
        return Confirmation(refers=seq, session=rec.session, room=rec.room, child=rec.child, ts=ts, by=by)
    except ValidationError as exc:
        raise RecordCommandError("invalid_command", _first_error(exc)) from None


def correction_for(
    target: ChainedEntry | None, seq: int, by: str, ts: int, changes: Mapping[str, Any], reason: str | None
) -> Correction:
    """The entry that corrects record ``seq`` (corrections always refer to the record itself)."""
    rec = _checkable(target, seq)
    if not isinstance(rec, CheckRecord):
        raise RecordCommandError("not_a_record", f"entry {seq} is a correction; correct the record it corrects")
    try:
        return Correction(corrects=seq, session=rec.session, room=rec.room, child=rec.child, ts=ts, by=by,
                          changes=dict(changes), reason=reason)  # fmt: skip
    except ValidationError as exc:
        raise RecordCommandError("invalid_command", _first_error(exc)) from None


def _checkable(target: ChainedEntry | None, seq: int) -> CheckRecord | Correction:
    if target is None:
        raise RecordCommandError("unknown_record", f"no entry {seq}")
    if not isinstance(target.entry, CheckRecord | Correction):
        raise RecordCommandError("not_a_record", f"entry {seq} is a {target.entry.kind}, not a record")
    return target.entry


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"


# ---------------------------------------------------------------- the scheduler


@dataclass(slots=True)
class _Acc:
    """What one child's sensors said during one interval."""

    posture: Position | None = None
    posture_ts: int = -1
    prone_seen: bool = False
    posture_n: int = 0
    breathing_n: int = 0
    rate: float | None = None
    rate_ts: int = -1
    rate_sum: float = 0.0
    rate_n: int = 0
    present: bool | None = None
    present_ts: int = -1


@dataclass(slots=True)
class _AlertSpan:
    id: str
    rule: str
    severity: Severity
    raised_ts: int
    resolved_ts: int | None = None


@dataclass(slots=True)
class _Track:
    """One child in one session."""

    plan: ChildPlan
    interval_ms: int
    expected: frozenset[Stream]
    #: Index of the next interval to write (interval k covers [start + k·I, start + (k+1)·I)).
    next_k: int = 0
    accs: dict[int, _Acc] = field(default_factory=dict)


@dataclass(slots=True)
class _Session:
    id: str
    room: str
    start_ts: int
    tracks: dict[str, _Track]


#: Readings this many intervals ahead of the next record are not kept (a clock far off would
#: otherwise let one device fill memory).
_MAX_AHEAD = 2


class RecordScheduler:
    """Writes check records during nap sessions. Feed it session starts/stops, readings (message
    time), alert transitions, and clock ticks; ``tick``/``stop_session`` return the entries to chain."""

    def __init__(self, kit: Kit, config: RecordsConfig | None = None, rate_limits: RateLimits | None = None,
                 breathing_rules: frozenset[str] = BREATHING_RULES) -> None:  # fmt: skip
        self.kit = kit
        self.config = config or RecordsConfig()
        self.rate_limits = rate_limits or rules_rate_limits(RulesConfig())
        self.breathing_rules = breathing_rules
        self._grace_ms = round(self.config.grace_s * 1000)
        self._temp_max_age_ms = round(self.config.body_temp_max_age_min * 60_000)
        self._sessions: dict[str, _Session] = {}  # room -> open session
        self._alerts: dict[str, dict[str, _AlertSpan]] = {}  # child -> alert id -> span
        self._temps: dict[str, list[tuple[int, float]]] = {}  # child -> (ts, celsius)
        self._room_of = {c.id: c.room for c in kit.children}
        self._expected: dict[str, set[Stream]] = {}
        for d in kit.devices:
            stream = _EXPECTED_STREAM.get(d.kind)
            if d.child is not None and stream is not None:
                self._expected.setdefault(d.child, set()).add(stream)
        #: Readings not used, by reason: late (interval already written), ahead (too far in the future).
        self.ignored: Counter[str] = Counter()

    # -- sessions

    def session(self, room: str) -> str | None:
        s = self._sessions.get(room)
        return None if s is None else s.id

    def open_rooms(self) -> list[str]:
        return sorted(self._sessions)

    def start_session(self, room: str, ts: int, by: str = AUTO, session_id: str | None = None) -> list[Entry]:
        """Open a session for the room's children. A second start for a room with an open session
        changes nothing (the running sheet continues)."""
        if room in self._sessions:
            return []
        plans = tuple(
            ChildPlan(child=c.id, age_band=c.age_band, interval_s=self.config.interval_ms(room, c.age_band) // 1000)
            for c in self.kit.children
            if c.room == room
        )
        started = SessionStarted(session=session_id or f"{room}-{ts}", room=room, ts=ts, by=by, children=plans)
        self.resume(started)
        return [started]

    def resume(self, started: SessionStarted, written_until: Mapping[str, int] | None = None) -> None:
        """Take up a session from its start entry (after a restart). ``written_until``: per child, the
        end of the last record already written; the intervals after it are written on the next tick
        (with ``data_missing`` where nothing was heard — the gateway was down)."""
        tracks: dict[str, _Track] = {}
        for plan in started.children:
            interval_ms = plan.interval_s * 1000
            done = (written_until or {}).get(plan.child)
            next_k = 0 if done is None else max(0, math.ceil((done - started.ts) / interval_ms))
            expected = frozenset(self._expected.get(plan.child, {Stream.BREATHING, Stream.POSTURE}))
            tracks[plan.child] = _Track(plan, interval_ms, expected, next_k)
        self._sessions[started.room] = _Session(started.session, started.room, started.ts, tracks)

    def stop_session(self, room: str, ts: int, by: str = AUTO) -> list[Entry]:
        """Close the room's session: every interval ending by ``ts``, then a ``partial`` record for
        the rest, then the stop entry. Nothing when no session is open."""
        s = self._sessions.get(room)
        if s is None:
            return []
        out: list[Entry] = []
        for track in s.tracks.values():
            out += self._close_until(s, track, ts)
            end = s.start_ts + track.next_k * track.interval_ms
            if ts > end:
                out.append(self._record(s, track, track.next_k, end, ts, partial=True))
        del self._sessions[room]
        out.sort(key=_record_order)
        out.append(SessionStopped(session=s.id, room=room, ts=max(ts, s.start_ts), by=by))
        self._prune()
        return out

    def tick(self, now_ms: int) -> list[Entry]:
        """Write every record whose interval ended at least ``grace`` before ``now_ms``."""
        out: list[Entry] = []
        for s in self._sessions.values():
            for track in s.tracks.values():
                out += self._close_until(s, track, now_ms - self._grace_ms)
        if out:
            out.sort(key=_record_order)
            self._prune()
        return out

    # -- observations

    def observe_posture(self, child: str, position: Position, ts: int) -> None:
        acc = self._acc(child, ts)
        if acc is None:
            return
        acc.posture_n += 1
        acc.prone_seen |= position is Position.PRONE
        if ts >= acc.posture_ts:
            acc.posture, acc.posture_ts = position, ts

    def observe_breathing(self, child: str, rate_bpm: float | None, present: bool | None, ts: int) -> None:
        acc = self._acc(child, ts)
        if acc is None:
            return
        acc.breathing_n += 1
        if rate_bpm is not None:
            acc.rate_n += 1
            acc.rate_sum += rate_bpm
            if ts >= acc.rate_ts:
                acc.rate, acc.rate_ts = rate_bpm, ts
        if present is not None and ts >= acc.present_ts:
            acc.present, acc.present_ts = present, ts

    def observe_body_temp(self, child: str, celsius: float, ts: int) -> None:
        if self._track(child) is not None:
            self._temps.setdefault(child, []).append((ts, celsius))

    def observe_alert(self, alert: Alert, ts: int) -> None:
        """An alert transition (raised / updated / resolved / acknowledged) about a child, at ``ts``
        (the transition's time). An alert counts in every interval it was active in: raised before
        the interval's end and not resolved before its start. For alerts restored after a restart,
        pass ``alert.started_ts``."""
        if alert.child is None:
            return
        spans = self._alerts.setdefault(alert.child, {})
        span = spans.get(alert.id)
        if span is None:
            span = spans[alert.id] = _AlertSpan(alert.id, alert.rule, alert.severity, ts)
        span.severity = alert.severity
        if alert.state is AlertState.RESOLVED and span.resolved_ts is None:
            span.resolved_ts = alert.resolved_ts if alert.resolved_ts is not None else ts
            if self._track(alert.child) is None:  # no sheet open: nothing will ask for it
                del spans[alert.id]

    # -- internals

    def _track(self, child: str) -> tuple[_Session, _Track] | None:
        room = self._room_of.get(child)
        s = self._sessions.get(room) if room is not None else None
        t = s.tracks.get(child) if s is not None else None
        return None if s is None or t is None else (s, t)

    def _acc(self, child: str, ts: int) -> _Acc | None:
        found = self._track(child)
        if found is None or ts < found[0].start_ts:
            return None  # not napping, or before the session
        s, t = found
        k = (ts - s.start_ts) // t.interval_ms
        if k < t.next_k:
            self.ignored["late"] += 1
            return None
        if k > t.next_k + _MAX_AHEAD:
            self.ignored["ahead"] += 1
            return None
        return t.accs.setdefault(k, _Acc())

    def _close_until(self, s: _Session, track: _Track, until: int) -> list[Entry]:
        out: list[Entry] = []
        while s.start_ts + (track.next_k + 1) * track.interval_ms <= until:
            k = track.next_k
            start = s.start_ts + k * track.interval_ms
            out.append(self._record(s, track, k, start, start + track.interval_ms, partial=False))
        return out

    def _record(self, s: _Session, track: _Track, k: int, start: int, end: int, *, partial: bool) -> CheckRecord:
        acc = track.accs.pop(k, None) or _Acc()
        track.next_k = k + 1
        child = track.plan.child
        alerts = [
            a
            for a in self._alerts.get(child, {}).values()
            if a.raised_ts < end and (a.resolved_ts is None or a.resolved_ts >= start)
        ]
        alerts.sort(key=lambda a: (a.raised_ts, a.id))
        seen = {Stream.POSTURE: acc.posture_n > 0, Stream.BREATHING: acc.breathing_n > 0}
        missing = tuple(sorted(st for st in track.expected if not seen[st]))
        mean = round(acc.rate_sum / acc.rate_n, 1) if acc.rate_n else None
        temp = self._temp_at(child, end)
        return CheckRecord(
            session=s.id,
            room=s.room,
            child=child,
            age_band=track.plan.age_band,
            interval_s=track.plan.interval_s,
            interval_start_ts=start,
            ts=end,
            partial=partial,
            posture=acc.posture,
            prone_seen=acc.prone_seen if acc.posture_n else None,
            on_mat=acc.present,
            breathing_rate_bpm=acc.rate,
            breathing_rate_mean_bpm=mean,
            breathing_ok=self._breathing_ok(s.room, track.plan.age_band, acc.rate, mean, alerts),
            body_temp_c=None if temp is None else temp[1],
            body_temp_ts=None if temp is None else temp[0],
            alerts=tuple(AlertRef(id=a.id, rule=a.rule, severity=a.severity) for a in alerts),
            data_missing=bool(missing) or not any(seen.values()),
            missing=missing,
        )

    def _breathing_ok(
        self, room: str, band: AgeBand, latest: float | None, mean: float | None, alerts: Sequence[_AlertSpan]
    ) -> bool | None:
        if any(a.rule in self.breathing_rules for a in alerts):
            return False
        if latest is None or mean is None:
            return None
        low, high = self.rate_limits(room, band)
        return low <= latest <= high and low <= mean <= high

    def _temp_at(self, child: str, end: int) -> tuple[int, float] | None:
        usable = [t for t in self._temps.get(child, ()) if end - self._temp_max_age_ms <= t[0] < end]
        return max(usable, default=None)

    def _prune(self) -> None:
        """Forget alerts and temperatures no open interval can still need."""
        oldest: dict[str, int] = {}
        for s in self._sessions.values():
            for child, t in s.tracks.items():
                oldest[child] = s.start_ts + t.next_k * t.interval_ms
        for child, spans in list(self._alerts.items()):
            keep_after = oldest.get(child)
            for aid, span in list(spans.items()):
                if span.resolved_ts is not None and (keep_after is None or span.resolved_ts < keep_after):
                    del spans[aid]
            if not spans:
                del self._alerts[child]
        for child, temps in list(self._temps.items()):
            keep_after = oldest.get(child)
            if keep_after is None:
                del self._temps[child]
            else:
                temps[:] = [t for t in temps if t[0] >= keep_after - self._temp_max_age_ms]


def _record_order(entry: Entry) -> tuple[int, str, str]:
    return (entry.ts, getattr(entry, "room", ""), getattr(entry, "child", ""))
