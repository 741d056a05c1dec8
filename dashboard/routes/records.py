"""Nap-check records (午睡チェック表) pages: per room and day, the automatic records with their
confirmations and corrections as a grid (check times × children), confirm by tap, CSV download and a
printable A4 sheet.

Reads the gateway's SQLite read-only (``RecordReader``); the sheet rows come from
``gateway.records.export.build_sheet`` (the same as ``nurserywatch records export``). A confirmation
is never written here: the page publishes ``command/record`` and the gateway appends the entry.

Every route needs a signed-in staff member (StaffDep), the CSV too: staff confirm the records and see
every cell on the page, the API and the print page, so the same sheet as a file hides nothing more;
confirmations name the signed-in user."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from dashboard.auth.deps import StaffDep, audit
from dashboard.auth.models import Role
from dashboard.deps import INT64_MAX, ApiError, DefaultLangDep, GatewayDbDep, LinkDep, parse_day
from dashboard.i18n import Lang, catalogue, label, pick_lang
from dashboard.live.link import CommandNotSent, LiveLink
from dashboard.pages import NAV, NavItem, page_context, render
from gateway.read import (
    ChainHead,
    RecordReader,
    RecordStoreError,
    SheetRow,
    build_sheet,
    covered_head,
    day_bounds,
    to_csv,
)
from nurserywatch.contract import Position, RecordCommand
from nurserywatch.kit import Kit

router = APIRouter()
NAV.append(NavItem("nav.records", "/records", order=20))

#: Posture marks of a paper 午睡チェック表: 仰 (on the back), 横 (on the side), うつ (face down).
POSTURE_MARK: dict[Lang, dict[Position, str]] = {
    "ja": {Position.SUPINE: "仰", Position.LEFT: "横", Position.RIGHT: "横", Position.PRONE: "うつ",
           Position.UPRIGHT: "起", Position.UNKNOWN: "?"},
    "en": {Position.SUPINE: "back", Position.LEFT: "side", Position.RIGHT: "side", Position.PRONE: "FACE DOWN",
           Position.UPRIGHT: "up", Position.UNKNOWN: "?"},
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Sheet:
    room: str
    day: date
    rows: list[SheetRow]
    #: Column order: the room's children in kit order, then any other child found in the records.
    children: list[tuple[str, str]]  # (id, shown name)
    times: list[int]
    cells: dict[tuple[int, str], SheetRow]
    started_ms: int | None
    ended_ms: int | None
    #: The last chain entry the sheet is made of (printed and in the CSV, for `records verify --expect-head`).
    head: ChainHead | None = None


def _tz(kit: Kit) -> ZoneInfo:
    return ZoneInfo(kit.timezone)


def _day(kit: Kit, now_ms: int, text: str | None) -> date:
    if not text:
        return datetime.fromtimestamp(now_ms / 1000, _tz(kit)).date()
    return parse_day(text, "date", 422, "invalid_request")


def _room(kit: Kit, room: str | None) -> str:
    chosen = room or kit.rooms[0].id
    if kit.room(chosen) is None:
        raise ApiError(404, "unknown_room", f"room {chosen[:64]!r} is not in the kit")
    return chosen


async def load_sheet(kit: Kit, db: Any, room: str, day: date) -> Sheet:
    tz = _tz(kit)
    start, end = day_bounds(day, tz)
    reader = RecordReader(db)
    try:
        # Off the event loop: a day's records are small, but SQLite may wait on the gateway's writer.
        records, followups = await asyncio.to_thread(reader.records, room, start, end)
    except RecordStoreError as exc:
        raise ApiError(503, "records_unavailable", str(exc)) from None
    names = {c.id: c.nickname or c.id for c in kit.children}
    rows = build_sheet(records, followups, tz, names)
    ids = [c.id for c in kit.children if c.room == room]
    ids += sorted({r.child for r in rows} - set(ids))
    cells = {(r.time, r.child): r for r in rows}
    full = [r for r in rows if not r.partial]
    started = min((r.time - round(r.interval_min * 60_000) for r in full), default=None)
    if started is None and rows:
        started = min(r.time for r in rows)
    return Sheet(
        room=room,
        day=day,
        rows=rows,
        children=[(i, names.get(i, i)) for i in ids],
        times=sorted({r.time for r in rows}),
        cells=cells,
        started_ms=started,
        ended_ms=max((r.time for r in rows), default=None),
        head=covered_head([*records, *followups]),
    )


def _hhmm(ms: int | None, tz: ZoneInfo) -> str:
    return "" if ms is None else datetime.fromtimestamp(ms / 1000, tz).strftime("%H:%M")


def _cell(row: SheetRow, lang: Lang) -> dict[str, Any]:
    t = catalogue(lang) if row.alerts else {}  # the rules' names (rule ids stay in "alerts" for scripts)
    return {
        "seq": row.seq,
        "posture": row.posture.value if row.posture else None,
        "posture_mark": POSTURE_MARK[lang][row.posture] if row.posture else "",
        "prone_seen": row.prone_seen,
        "breathing_rate_bpm": row.breathing_rate_bpm,
        "breathing_ok": row.breathing_ok,
        "alerts": [rule for rule, _ in row.alerts],
        "alert_labels": [label(t, "rule", rule) for rule, _ in row.alerts],
        "data_missing": row.data_missing,
        "partial": row.partial,
        "recorded_by": row.recorded_by,
        "confirmed_by": list(row.confirmed_by),
        "confirmed_at": row.confirmed_at,
        "corrected": bool(row.corrections),
        "note": row.note,
    }


def sheet_json(sheet: Sheet, kit: Kit, lang: Lang) -> dict[str, Any]:
    tz = _tz(kit)
    return {
        "room": sheet.room,
        "date": sheet.day.isoformat(),
        "children": [{"id": i, "name": n} for i, n in sheet.children],
        "times": [{"ts": t, "label": _hhmm(t, tz)} for t in sheet.times],
        "started": _hhmm(sheet.started_ms, tz),
        "ended": _hhmm(sheet.ended_ms, tz),
        "cells": [{"ts": t, "child": c, **_cell(r, lang)} for (t, c), r in sorted(sheet.cells.items())],
    }


def _context(request: Request, kit: Kit, lang: Lang, sheet: Sheet, **extra: Any) -> dict[str, Any]:
    data = sheet_json(sheet, kit, lang)
    grid = [
        {"label": t["label"], "ts": t["ts"], "cells": [sheet.cells.get((t["ts"], cid)) for cid, _ in sheet.children]}
        for t in data["times"]
    ]
    ctx = page_context(
        request, kit, lang, "nav.records",
        sheet=sheet, data=data, grid=grid, cell=lambda r: _cell(r, lang),
        room_name=(kit.room(sheet.room) or kit.rooms[0]).name,
        boot={"lang": lang, "t": catalogue(lang), "room": sheet.room, "date": sheet.day.isoformat()},
        **extra,
    )  # fmt: skip
    user = ctx.get("user")
    ctx["may_export"] = user is not None and user.may(Role.STAFF)  # the CSV: the sheet's own role (docstring)
    return ctx


@router.get("/records", response_class=HTMLResponse, include_in_schema=False)
async def records_page(
    request: Request, user: StaffDep, link: LinkDep, db: GatewayDbDep, default_lang: DefaultLangDep,
    room: str | None = None, date: str | None = None, lang: str | None = None,
) -> HTMLResponse:  # fmt: skip
    return await _sheet_page(request, "records.html", link, db, default_lang, room, date, lang)


@router.get("/records/print", response_class=HTMLResponse, include_in_schema=False)
async def records_print(
    request: Request, user: StaffDep, link: LinkDep, db: GatewayDbDep, default_lang: DefaultLangDep,
    room: str | None = None, date: str | None = None, lang: str | None = None,
) -> HTMLResponse:  # fmt: skip
    return await _sheet_page(request, "records_print.html", link, db, default_lang, room, date, lang)


async def _sheet_page(
    request: Request, template: str, link: LiveLink, db: Path, default_lang: Lang,
    room: str | None, date: str | None, lang: str | None,
) -> HTMLResponse:  # fmt: skip
    """The day's sheet of a room, on screen or laid out for print."""
    chosen = pick_lang(lang, default_lang)
    kit = link.state.kit
    sheet = await load_sheet(kit, db, _room(kit, room), _day(kit, link.clock.now_ms(), date))
    return render(request, template, _context(request, kit, chosen, sheet))


@router.get("/records.csv", include_in_schema=False)
async def records_csv(
    user: StaffDep, link: LinkDep, db: GatewayDbDep, default_lang: DefaultLangDep,  # the sheet's role
    room: str | None = None, date: str | None = None, lang: str | None = None,
) -> Response:  # fmt: skip
    chosen = pick_lang(lang, default_lang)
    kit = link.state.kit
    sheet = await load_sheet(kit, db, _room(kit, room), _day(kit, link.clock.now_ms(), date))
    body = to_csv(sheet.rows, chosen, _tz(kit), sheet.head)
    name = f"nap-check-{sheet.room}-{sheet.day.isoformat()}.csv"
    return Response(
        body, media_type="text/csv; charset=utf-8", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


@router.get("/api/records")
async def records_api(
    user: StaffDep, link: LinkDep, db: GatewayDbDep, default_lang: DefaultLangDep,
    room: str | None = None, date: str | None = None, lang: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The sheet of a room and day (default: the first room, today in the kit's time zone)."""
    kit = link.state.kit
    sheet = await load_sheet(kit, db, _room(kit, room), _day(kit, link.clock.now_ms(), date))
    return sheet_json(sheet, kit, pick_lang(lang, default_lang))


class ConfirmRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    by: Annotated[str, Field(min_length=1, max_length=128)] = "staff"


class ConfirmSent(BaseModel):
    status: str = "sent"


@router.post("/api/records/{seq}/confirm", status_code=202)
async def confirm(
    request: Request, seq: int, user: StaffDep, link: LinkDep, db: GatewayDbDep, body: ConfirmRequest | None = None
) -> ConfirmSent:
    """Publish a RecordCommand (confirm) for entry ``seq``; the gateway appends the confirmation."""
    if not 1 <= seq <= INT64_MAX:  # a larger one cannot be a stored entry (SQLite's integers are 64-bit)
        raise ApiError(422, "invalid_request", f"seq must be from 1 to {INT64_MAX}")
    by = user.shown_name  # the signed-in user; a body's `by` is accepted for old pages and ignored
    reader = RecordReader(db)
    try:
        entry = await asyncio.to_thread(reader.entry, seq)
    except RecordStoreError as exc:
        raise ApiError(503, "records_unavailable", str(exc)) from None
    if entry is None:
        raise ApiError(404, "unknown_record", f"there is no entry {seq}")
    if entry.entry.kind not in ("record", "correction"):
        raise ApiError(422, "not_a_record", f"entry {seq} is a {entry.entry.kind}, not a check record")
    try:
        command_id = await link.record_command(RecordCommand(entry=seq, by=by))
    except CommandNotSent as exc:
        raise ApiError(503, exc.code, str(exc)) from None
    audit(request, user, "record.confirm", str(seq), f"command {command_id}")
    return ConfirmSent()
