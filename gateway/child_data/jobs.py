"""``nurserywatch data export`` and ``data erase`` — the work behind the two commands, across every
store: the gateway's SQLite (readings, alerts and their transitions, nap-check records, binding and
assignment history), the InfluxDB disk buffer and InfluxDB itself. The CLI asks, confirms and
prints; this module does. Docs: docs/storage.md, "A child's data".
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from gateway.child_data.influx import ChildInflux
from gateway.child_data.selection import (
    ChildDataError,
    DeviceWindow,
    Request,
    child_windows,
    csv_text,
    kit_bindings,
    reading_row,
    session_plans,
)
from gateway.child_data.store import ChildDataStore, ChildDataStoreError, erase_buffered_lines
from gateway.records.entries import CheckRecord, Confirmation, Correction
from gateway.records.export import build_sheet, to_csv
from gateway.records.reader import RecordReader, RecordStoreError
from gateway.records.store import RecordStore
from nurserywatch.kit import Kit

Progress = Callable[[str, int, int], None]
Format = Literal["json", "csv", "both"]

#: The error types a job raises; the CLI turns each into one line.
JobError = (ChildDataError, ChildDataStoreError, RecordStoreError)


@dataclass(frozen=True, slots=True)
class Plan:
    child: str
    kit: Kit
    db: Path
    windows: list[DeviceWindow]
    #: How the readings were attributed: the binding log, or the kit alone (a database without one).
    coverage: str
    in_kit: bool
    held: bool


def plan(kit: Kit, db: Path, child: str) -> Plan:
    """Where the child's data is. Raises ChildDataError for a child neither the kit nor the database knows."""
    if not db.is_file():
        raise ChildDataError(f"{db}: file not found (the gateway's database, --db)")
    with ChildDataStore(db) as store:
        logged = store.bindings()
        assignments = store.assignments()
        held = child in store.children_with_data()
        earlier = [r for r in store.requests(child) if r.action == "erase"]
    bindings = logged or kit_bindings(kit)
    coverage = (
        "device→child binding log of the gateway (each kit change from the gateway's start on) and staff assignments"
        if logged
        else "the kit's current bindings for all time (this database has no binding log yet)"
    )
    windows = child_windows(bindings, child, assignments, ZoneInfo(kit.timezone))
    in_kit = kit.child(child) is not None
    if not in_kit and not held and not windows:
        known = ", ".join(c.id for c in kit.children) or "none"
        gone = f"; erased on request by {earlier[-1].by} ({earlier[-1].outcome})" if earlier else ""
        raise ChildDataError(
            f"child {child!r} is not in the kit and the database holds nothing about them{gone} (kit children: {known})"
        )
    return Plan(child, kit, db, windows, coverage, in_kit, held)


def _influx(kit: Kit) -> ChildInflux | None:
    cfg = kit.storage
    if cfg.readings != "influxdb" or cfg.url is None:
        return None
    return ChildInflux(cfg.url, cfg.database, os.environ.get(cfg.token_env) or None)


# ---------------------------------------------------------------- export


@dataclass
class ExportResult:
    counts: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def export(p: Plan, out: Path, fmt: Format, now_ms: int, by: str, progress: Progress | None = None) -> ExportResult:
    """Write everything held about the child into ``out`` (created): readings, alerts with their
    transitions, nap-check records (JSON and/or CSV), InfluxDB points, and manifest.json."""
    out.mkdir(parents=True, exist_ok=True)
    res = ExportResult()
    want_json, want_csv = fmt in ("json", "both"), fmt in ("csv", "both")
    tz = ZoneInfo(p.kit.timezone)

    with ChildDataStore(p.db) as store:
        total = store.count_readings(p.windows)
        rows = _with_progress((reading_row(*r) for r in store.readings(p.windows)), "readings", total, progress)
        res.counts["readings"] = _write_rows(out, "readings", rows, want_json, want_csv, res.files,
                                             by_key="stream", first=("device", "stream", "ts", "seq"))  # fmt: skip
        rollups = store.rollups(p.windows)
        alerts = store.alerts(p.child)
    if rollups:  # retention keeps 15-min aggregates after the raw readings are gone
        first = ("device", "stream", "field", "bucket")
        n = _write_rows(out, "rollups", iter(rollups), want_json, want_csv, res.files, by_key="stream", first=first)
        res.counts["reading_rollups"] = n
    res.counts["alerts"] = len(alerts)
    res.counts["alert_transitions"] = sum(len(t) for _a, t in alerts)
    if want_json:
        doc = [{"alert": a.model_dump(mode="json"),
                "transitions": [{"seq": s, "change": c, "ts": ts, "alert": b.model_dump(mode="json")}
                                for s, c, ts, b in t]} for a, t in alerts]  # fmt: skip
        res.files.append(_write(out / "alerts.json", json.dumps(doc, ensure_ascii=False, indent=1)))
    if want_csv:
        res.files.append(_write_csv(out / "alerts.csv", [a.model_dump(mode="json") for a, _t in alerts], ("id",)))
        trans = [{"alert_id": a.id, "seq": s, "change": c, "ts": ts, **b.model_dump(mode="json")}
                 for a, t in alerts for s, c, ts, b in t]  # fmt: skip
        res.files.append(_write_csv(out / "alert_transitions.csv", trans, ("alert_id", "seq", "change", "ts")))

    chain_state: dict[str, Any] = {}
    if _has_records(p.db):
        reader = RecordReader(p.db)
        chain = reader.verify()
        chain_state = {"ok": chain.ok, "entries": chain.entries, "redacted": chain.redacted,
                       "head": f"{chain.head.seq}:{chain.head.hash}", "problem": chain.problem}  # fmt: skip
        with RecordStore(p.db) as rs:
            entries = rs.mentioning(p.child)
        own = [e for e in entries if isinstance(e.entry, CheckRecord | Confirmation | Correction)]
        records = [e for e in own if isinstance(e.entry, CheckRecord)]
        followups = [e for e in own if not isinstance(e.entry, CheckRecord)]
        names = {c.id: c.nickname for c in p.kit.children if c.id == p.child and c.nickname}
        sheet = build_sheet(records, followups, tz, names)
        res.counts["records"] = len(records)
        res.counts["record_followups"] = len(followups)
        if want_json:
            doc2 = {"chain": chain_state, "sessions": session_plans((e.entry for e in entries), p.child),
                    "entries": [{"seq": e.seq, "prev_hash": e.prev_hash, "hash": e.hash, "body": json.loads(e.body)}
                                for e in own]}  # fmt: skip
            res.files.append(_write(out / "records.json", json.dumps(doc2, ensure_ascii=False, indent=1)))
        if want_csv:
            path = out / "records.csv"
            path.write_bytes(to_csv(sheet, "ja", tz))
            res.files.append(path)

    influx = _influx(p.kit)
    if influx is not None:
        with influx:
            points = (dict(zip(["measurement", *c.columns], [c.measurement, *row], strict=True))
                      for c in influx.export(p.child, progress) for row in c.rows)  # fmt: skip
            res.counts["influx_points"] = _write_rows(out, "influx", points, want_json, want_csv, res.files,
                                                      by_key="measurement", first=("measurement", "time"))  # fmt: skip

    manifest = {
        "child": p.child,
        "site": p.kit.site,
        "generated_ts": now_ms,
        "by": by,
        "database": str(p.db),
        "readings_attributed_by": p.coverage,
        "device_windows": [{"device": w.device, "from_ts": w.start_ts, "until_ts": w.end_ts} for w in p.windows],
        "influxdb": None if influx is None else p.kit.storage.url,
        "records_chain": chain_state,
        "counts": res.counts,
        "files": [f.name for f in res.files],
        "not_included": "the edge agents' spools (readings not yet delivered); the MQTT broker's retained messages",
    }
    res.files.append(_write(out / "manifest.json", json.dumps(manifest, ensure_ascii=False, indent=1)))
    with ChildDataStore(p.db) as store:
        store.log_request(Request(now_ms, "export", p.child, by, "done", res.counts, f"to {out}"))
    return res


def _has_records(db: Path) -> bool:
    try:
        RecordReader(db).rooms()
    except RecordStoreError:
        return False
    return True


def _with_progress(
    rows: Iterator[dict[str, Any]], what: str, total: int, progress: Progress | None
) -> Iterator[dict[str, Any]]:
    n = 0
    for row in rows:
        yield row
        n += 1
        if progress is not None and n % 5000 == 0:
            progress(what, n, total)
    if progress is not None:
        progress(what, n, max(total, n))


def _write(path: Path, text: str) -> Path:
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _write_csv(path: Path, rows: list[dict[str, Any]], first: tuple[str, ...]) -> Path:
    path.write_bytes(csv_text(rows, first).encode("utf-8-sig"))  # with BOM: Excel in Japan opens it right
    return path


def _write_rows(
    out: Path,
    stem: str,
    rows: Iterator[dict[str, Any]],
    want_json: bool,
    want_csv: bool,
    files: list[Path],
    *,
    by_key: str,
    first: tuple[str, ...],
) -> int:
    """Stream rows into ``stem.json`` (one array, written as it goes) and, for CSV, one file per
    ``by_key`` value (streams / measurements have different columns)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    n = 0
    path = out / f"{stem}.json"
    with path.open("w", encoding="utf-8") if want_json else _NullFile() as f:
        f.write("[")
        for row in rows:
            f.write(("\n " if n == 0 else ",\n ") + json.dumps(row, ensure_ascii=False, separators=(",", ":")))
            n += 1
            if want_csv:
                groups.setdefault(str(row.get(by_key)), []).append(row)
        f.write("\n]\n")
    if want_json:
        files.append(path)
    for key, group in sorted(groups.items()):
        files.append(_write_csv(out / f"{stem}_{key}.csv", group, first))
    return n


class _NullFile:
    def write(self, _text: str) -> int:
        return 0

    def __enter__(self) -> _NullFile:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


# ---------------------------------------------------------------- erase


def erase_preview(p: Plan) -> dict[str, int | str]:
    """What an erase would remove (for the confirmation question)."""
    with ChildDataStore(p.db) as store:
        counts: dict[str, int | str] = {
            "readings": store.count_readings(p.windows),
            "alerts": len(store.alerts(p.child)),
        }
    if _has_records(p.db):
        with RecordStore(p.db) as rs:
            counts["record entries"] = len(rs.mentioning(p.child))
    influx = _influx(p.kit)
    if influx is not None:
        with influx:
            try:
                counts["InfluxDB points"] = influx.count(p.child)
            except ChildDataError as exc:
                counts["InfluxDB points"] = f"unknown ({exc})"
    return counts


def refusals(p: Plan) -> list[str]:
    """Why an erase must not run now (each a sentence for the operator)."""
    out = []
    with ChildDataStore(p.db) as store:
        open_alerts = store.open_alerts(p.child)
    if _has_records(p.db):
        with RecordStore(p.db) as rs:
            for started, _written in rs.open_sessions():
                if any(plan.child == p.child for plan in started.children):
                    out.append(
                        f"child {p.child!r} is in the nap session running in room {started.room} "
                        f"({started.session}): stop it first (the gateway is still writing their records)"
                    )
    if open_alerts:
        out.append(
            f"child {p.child!r} has {len(open_alerts)} open alert(s) ({', '.join(open_alerts[:3])}): "
            "resolve and acknowledge them first (the running gateway would write them back)"
        )
    return out


def erase(p: Plan, by: str, now_ms: int, progress: Progress | None = None) -> Request:
    """Remove the child's data from every store and log the request. Order: records (one
    transaction), alerts, readings (short transactions), the InfluxDB buffer, InfluxDB — so a
    backfill or a buffered line can never bring back what was erased from SQLite; the binding and
    assignment history lose the child's id last, only when everything else succeeded (a rerun after
    a failure still finds the readings). Never raises for a store that fails: the request is logged
    ``incomplete`` with the reason, and running it again finishes the job."""
    counts: dict[str, int] = {}
    problems: list[str] = []
    if _has_records(p.db):
        try:
            with RecordStore(p.db) as rs:
                _erasure, counts["record_entries_redacted"] = rs.erase(p.child, by, now_ms, f"erase-{now_ms}")
        except RecordStoreError as exc:
            problems.append(str(exc))
    with ChildDataStore(p.db) as store:
        try:
            counts["alerts"], counts["alert_transitions"] = store.erase_alerts(p.child)
            counts["readings"] = store.erase_readings(p.windows, progress)
            counts["reading_rollups"] = store.erase_rollups(p.windows)
        except ChildDataStoreError as exc:
            problems.append(str(exc))
    cfg = p.kit.storage
    if cfg.readings == "influxdb":
        try:
            counts["influx_buffer_lines"] = erase_buffered_lines(p.kit.resolve_port(cfg.buffer_path), p.child)
        except ChildDataStoreError as exc:
            problems.append(str(exc))
        influx = _influx(p.kit)
        assert influx is not None
        with influx:
            try:
                counts["influx_points"] = influx.erase(p.child)
            except ChildDataError as exc:
                problems.append(str(exc))
    with ChildDataStore(p.db) as store:
        if not problems:
            counts["binding_rows"] = store.forget_child_in_bindings(p.child)
            counts["assignment_rows"] = store.forget_child_in_assignments(p.child)
        request = Request(now_ms, "erase", p.child, by, "incomplete" if problems else "done", counts,
                          "; ".join(problems))  # fmt: skip
        store.log_request(request)
    return request
