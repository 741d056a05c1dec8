"""A child's data — what ``nurserywatch data export`` / ``data erase`` select, pure: which device
readings belonged to the child (from the history of device→child bindings), which nap-check entries
mention them, which buffered InfluxDB lines carry their tag, the InfluxQL that finds and drops their
series, and the rows and CSV of an export.

No I/O and no clock: the shells are gateway/child_data/store.py (SQLite: the gateway's database and
the InfluxDB disk buffer), gateway/records/store.py (``RecordStore.erase``: the chain's redaction) and
gateway/child_data/influx.py (HTTP); the CLI (``nurserywatch data``) ties them together.

Why a binding *history*: readings in SQLite carry a device, not a child. A mat moved from one child
to another must not hand the first child's nights to the second child's parents (export) nor lose
them from an erase. The gateway notes the kit's bindings in ``device_bindings`` each time it starts
(``since_ts``, gateway clock); a reading belongs to the binding in force at its message time.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.records.entries import CheckRecord, Confirmation, Correction, Entry, SessionStarted
from gateway.records.export import day_bounds
from gateway.trends.queries import _literal, quote_ident
from nurserywatch.contract import IDENT_RE
from nurserywatch.kit import Kit

#: InfluxDB export chunk: six hours of one measurement (≈ 21 600 points of a 1 Hz mat).
INFLUX_CHUNK_MS = 6 * 3600_000
#: Rows deleted per SQLite transaction, so the running gateway never waits long for the write lock.
ERASE_CHUNK_ROWS = 5000


class ChildDataError(Exception):
    """A request that cannot be carried out; ``str()`` is the one message for the operator."""


def check_child_id(text: str) -> str:
    if not IDENT_RE.match(text):
        raise ChildDataError(f"--child {text!r}: not a child id (the kit's pseudonymous ids: a-z, 0-9, _ and -)")
    return text


# ---------------------------------------------------------------- device → child over time


@dataclass(frozen=True, slots=True)
class Binding:
    """From ``since_ts`` on (until the device's next binding), ``device`` watched ``child``
    (None: nobody — a room device, or unbound)."""

    device: str
    child: str | None
    since_ts: int


@dataclass(frozen=True, slots=True)
class DeviceWindow:
    """The child's readings of ``device``: message times in [start_ts, end_ts) (end None: open)."""

    device: str
    start_ts: int
    end_ts: int | None

    def covers(self, ts: int) -> bool:
        return self.start_ts <= ts and (self.end_ts is None or ts < self.end_ts)


def kit_bindings(kit: Kit, since_ts: int = 0) -> list[Binding]:
    """The bindings a kit file states (what the gateway notes when it starts)."""
    return [Binding(d.id, d.child, since_ts) for d in kit.devices]


def changed_bindings(logged: Iterable[Binding], kit: Kit, now_ms: int) -> list[Binding]:
    """The kit's bindings that differ from the latest logged one of each device (to be appended)."""
    latest: dict[str, str | None] = {}
    for b in sorted(logged, key=lambda b: b.since_ts):
        latest[b.device] = b.child
    return [b for b in kit_bindings(kit, now_ms) if b.device not in latest or latest[b.device] != b.child]


@dataclass(frozen=True, slots=True)
class DayAssignment:
    """A staff assignment (``command/assign``, gateway/engine/assignments.py): from ``ts`` to the end of the
    local ``day`` it was made for, ``device`` watches ``child``; then the kit's binding returns."""

    device: str
    child: str | None
    day: str  # YYYY-MM-DD, the site's time zone
    ts: int


def child_windows(
    bindings: Iterable[Binding], child: str, assignments: Iterable[DayAssignment] = (), tz: ZoneInfo | None = None
) -> list[DeviceWindow]:
    """Where the child's readings are: the message-time windows in which each device watched them.

    The kit's binding in force (from the log; a device's first logged binding counts from the
    beginning — readings older than the log belong to it), overridden by a staff assignment of the
    same local day made earlier. ``tz`` (the site's) is needed with assignments."""
    kit_rows: dict[str, list[Binding]] = {}
    for b in bindings:
        kit_rows.setdefault(b.device, []).append(b)
    staff: dict[str, list[DayAssignment]] = {}
    for a in assignments:
        staff.setdefault(a.device, []).append(a)
    zone = tz or ZoneInfo("UTC")
    out: list[DeviceWindow] = []
    for device in sorted(set(kit_rows) | set(staff)):
        rows = sorted(kit_rows.get(device, []), key=lambda b: b.since_ts)
        days = sorted(staff.get(device, []), key=lambda a: a.ts)
        cuts = {0, *(b.since_ts for b in rows[1:]), *(a.ts for a in days)}
        cuts |= {day_bounds(date.fromisoformat(a.day), zone)[1] for a in days}
        edges = sorted(cuts)
        for i, start in enumerate(edges):
            end = edges[i + 1] if i + 1 < len(edges) else None
            if _bound_at(rows, days, start, zone) != child:
                continue
            if out and out[-1].device == device and out[-1].end_ts == start:
                out[-1] = DeviceWindow(device, out[-1].start_ts, end)
            else:
                out.append(DeviceWindow(device, start, end))
    return out


def _bound_at(rows: Sequence[Binding], days: Sequence[DayAssignment], ts: int, tz: ZoneInfo) -> str | None:
    today = datetime.fromtimestamp(ts / 1000, tz).date().isoformat()
    made = [a for a in days if a.day == today and a.ts <= ts]
    if made:
        return made[-1].child
    in_force = [b for b in rows if b.since_ts <= ts] or rows[:1]
    return in_force[-1].child if in_force else None


# ---------------------------------------------------------------- nap-check records


def mentions_child(entry: Entry, child: str) -> bool:
    """Entries holding something about the child: their records, the confirmations and corrections
    of those, and the session starts that list them among the children checked."""
    if isinstance(entry, CheckRecord | Confirmation | Correction):
        return entry.child == child
    if isinstance(entry, SessionStarted):
        return any(p.child == child for p in entry.children)
    return False


def session_plans(entries: Iterable[Entry], child: str) -> list[dict[str, Any]]:
    """For an export: the child's own line of each session start (the entry itself also names the
    other children of the room, so it is not handed out whole)."""
    out = []
    for e in entries:
        if isinstance(e, SessionStarted):
            for p in e.children:
                if p.child == child:
                    out.append({"session": e.session, "room": e.room, "started_ts": e.ts, "by": e.by,
                                "age_band": p.age_band.value, "interval_s": p.interval_s})  # fmt: skip
    return out


# ---------------------------------------------------------------- InfluxDB


def line_child(line: str) -> str | None:
    """The ``child`` tag of a line-protocol line (escapes per the spec), None without one."""
    i, n = 0, len(line)
    # measurement, then ",key=value" tags, up to the first unescaped space
    parts: list[str] = []
    cur: list[str] = []
    while i < n:
        ch = line[i]
        if ch == "\\" and i + 1 < n:
            cur.append(line[i + 1])
            i += 2
            continue
        if ch in ", ":
            parts.append("".join(cur))
            cur = []
            if ch == " ":
                break
        else:
            cur.append(ch)
        i += 1
    else:
        parts.append("".join(cur))
    for tag in parts[1:]:
        key, sep, value = tag.partition("=")
        if sep and key == "child":
            return value
    return None


def influx_child_filter(child: str) -> str:
    return f"{quote_ident('child')} = {_literal(child)}"


def influx_measurements_query(child: str) -> str:
    return f"SHOW MEASUREMENTS WHERE {influx_child_filter(child)}"


def influx_bounds_query(measurement: str, child: str, fn: str) -> str:
    """``first``/``last`` (the answer's time is that point's) or ``count`` of the child's points in
    one measurement, over ``seq``, a field of every point the gateway writes. One selector per
    statement: with two, InfluxQL answers with the time of the range start instead."""
    return f"SELECT {fn}({quote_ident('seq')}) FROM {quote_ident(measurement)} WHERE {influx_child_filter(child)}"


def influx_chunk_query(measurement: str, child: str, start_ms: int, end_ms: int) -> str:
    return (
        f"SELECT * FROM {quote_ident(measurement)} WHERE {influx_child_filter(child)}"
        f" AND time >= {start_ms}ms AND time < {end_ms}ms"
    )


def influx_drop_statement(child: str) -> str:
    """InfluxDB 1.x: every series tagged with the child, in every measurement, for all time."""
    return f"DROP SERIES WHERE {influx_child_filter(child)}"


def victoria_selector(child: str) -> str:
    """VictoriaMetrics: every series with the child label (``{child="…"}``)."""
    return '{child="' + child.replace("\\", "\\\\").replace('"', '\\"') + '"}'


def time_chunks(first_ms: int, last_ms: int, chunk_ms: int = INFLUX_CHUNK_MS) -> list[tuple[int, int]]:
    """Half-open windows covering [first, last], aligned to ``chunk_ms``."""
    start = first_ms // chunk_ms * chunk_ms
    return [(t, t + chunk_ms) for t in range(start, last_ms + 1, chunk_ms)]


def influx_series_rows(answer: Mapping[str, Any]) -> Iterator[tuple[str, list[str], list[list[Any]]]]:
    """(measurement, columns, rows) of every series of a /query answer (one statement)."""
    for result in answer.get("results", []):
        if "error" in result:
            raise ChildDataError(f"InfluxDB: {result['error']}")
        for s in result.get("series", []):
            yield str(s.get("name", "")), list(s.get("columns", [])), list(s.get("values", []))


# ---------------------------------------------------------------- export rows and files


def reading_row(device: str, stream: str, ts: int, seq: int, received_ts: int, payload: str) -> dict[str, Any]:
    """One stored reading as an export row: where and when, then the reading's own fields."""
    fields = json.loads(payload)
    return {"device": device, "stream": stream, "received_ts": received_ts, **fields, "ts": ts, "seq": seq}


def csv_text(rows: Sequence[Mapping[str, Any]], first: Sequence[str] = ()) -> str:
    """Rows with possibly different keys as one CSV (UTF-8 text; the shell adds the BOM): columns
    ``first`` then every other key in order of appearance; lists and objects as JSON."""
    columns = list(first)
    for row in rows:
        columns += [k for k in row if k not in columns]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([_cell(row.get(c)) for c in columns])
    return out.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


@dataclass(frozen=True, slots=True)
class Request:
    """One line of the append-only ``data_requests`` log."""

    ts: int
    action: str  # export | erase
    child: str
    by: str
    outcome: str  # done | incomplete | refused
    counts: Mapping[str, int]
    detail: str = ""

    def summary(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items()) or "nothing"
        extra = f" — {self.detail}" if self.detail else ""
        return f"data {self.action} of child {self.child} by {self.by}: {self.outcome}; {counts}{extra}"
