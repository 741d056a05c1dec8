"""Manager pages and their API: air-quality trends per room with the rules' threshold bands, the
alert history with filters, and the time spent beyond each air threshold (docs/dashboard.md,
"Manager and integrator pages"). Every route needs the manager role.

Trends come through gateway/trends/reader.py (InfluxDB when the kit stores readings there, else the
gateway's SQLite); history and the time-above summary always read the gateway's SQLite, which keeps
every alert and every reading whichever backend the trends use."""

from __future__ import annotations

import asyncio
import math
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from dashboard.air_summary import ROOM_AIR_METRICS, UNITS, time_covered, time_in_violation
from dashboard.auth.deps import ManagerDep
from dashboard.auth.models import Role
from dashboard.deps import ApiError, DefaultLangDep, LinkDep, parse_day
from dashboard.i18n import catalogue, pick_lang
from dashboard.pages import NAV, NavItem, page_context, render
from gateway.read import (
    METRICS,
    RANGES,
    RulesConfig,
    StoreError,
    StoreReader,
    Threshold,
    TrendError,
    day_bounds,
    reads_influx,
    room_devices,
    room_trend,
    window,
)
from nurserywatch.contract import Alert, Severity
from nurserywatch.kit import Kit

router = APIRouter()
NAV.extend([
    NavItem("nav.trends", "/trends", Role.MANAGER, order=30),
    NavItem("nav.history", "/history", Role.MANAGER, order=40),
])

PER_PAGE_MAX = 200


# ---------------------------------------------------------------- shared helpers


def rules_of(request: Request) -> RulesConfig:
    """The rules the dashboard was started with (built-in defaults when none were given)."""
    return cast(RulesConfig, getattr(request.app.state, "rules", None) or RulesConfig())


def gateway_db_or_503(request: Request) -> Path:
    path = cast(Path | None, request.app.state.gateway_db)
    if path is None:
        raise ApiError(503, "no_gateway_db", "this dashboard was started without the gateway's database (--db)")
    return path


def check_room(kit: Kit, room: str | None, *, required: bool) -> str | None:
    rooms = [r.id for r in kit.rooms]
    if room in (None, ""):
        if required:
            raise ApiError(400, "bad_room", f"room: required (one of {', '.join(rooms)})")
        return None
    if room not in rooms:
        raise ApiError(400, "bad_room", f"room: {room!r} is not a room of this kit (one of {', '.join(rooms)})")
    return room


def check_range(range_: str | None) -> str:
    if range_ not in RANGES:
        raise ApiError(400, "bad_range", f"range: {range_!r} is not one of {', '.join(RANGES)}")
    return range_


def fmt_ts(ms: int | None, tz: str, with_date: bool = True) -> str:
    """A timestamp in the site's time zone, for server-rendered pages."""
    if ms is None:
        return "—"
    dt = datetime.fromtimestamp(ms / 1000, ZoneInfo(tz))
    return dt.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


def fmt_duration(ms: int, lang: str) -> str:
    minutes = round(ms / 60_000)
    h, m = divmod(minutes, 60)
    if lang == "ja":
        return f"{h}時間{m:02d}分" if h else f"{m}分"
    return f"{h} h {m:02d} min" if h else f"{m} min"


# ---------------------------------------------------------------- trends


class TrendBucket(BaseModel):
    start: int
    mean: float
    min: float
    max: float


class ThresholdOut(BaseModel):
    level: Severity
    direction: Literal["above", "below"]
    value: float
    inclusive: bool
    key: str

    @classmethod
    def of(cls, t: Threshold) -> ThresholdOut:
        return cls(level=t.severity, direction=t.direction, value=t.value, inclusive=t.inclusive, key=t.key)


class TrendOut(BaseModel):
    room: str
    metric: str
    range: str
    unit: str
    source: Literal["sqlite", "influxdb"]
    start_ms: int
    end_ms: int
    bucket_ms: int
    buckets: list[TrendBucket]
    thresholds: list[ThresholdOut]


@router.get("/api/trends")
async def trends_api(
    request: Request,
    link: LinkDep,
    user: ManagerDep,
    room: str | None = None,
    metric: str | None = None,
    range: str = "24h",  # noqa: A002 - the query parameter's documented name
) -> TrendOut:
    kit = link.state.kit
    room_id = cast(str, check_room(kit, room, required=True))
    if metric not in METRICS:
        raise ApiError(400, "bad_metric", f"metric: {metric!r} is not one of {', '.join(METRICS)}")
    range_ = check_range(range)
    now = link.clock.now_ms()
    w = window(metric, range_, now)
    influx = reads_influx(kit)
    db = request.app.state.gateway_db
    if not influx and db is None:
        gateway_db_or_503(request)
    try:
        buckets = await room_trend(kit, db or "", room_id, metric, range_, now)
    except (StoreError, httpx.HTTPError, TrendError) as exc:
        # Parameters are checked above, so a TrendError here is the database's error answer.
        where = "InfluxDB" if influx else "the gateway's SQLite"
        raise ApiError(503, "database_unavailable", f"cannot read trends from {where}: {exc}") from None
    rules = rules_of(request).resolve(room_id, None)
    return TrendOut(
        room=room_id, metric=metric, range=range_, unit=UNITS.get(metric, ""),
        source="influxdb" if influx else "sqlite", start_ms=w.start_ms, end_ms=w.end_ms, bucket_ms=w.bucket_ms,
        buckets=[TrendBucket(start=b.start_ms, mean=b.mean, min=b.min, max=b.max) for b in buckets],
        thresholds=[ThresholdOut.of(t) for t in rules.thresholds(metric)],
    )  # fmt: skip


@router.get("/trends", response_class=HTMLResponse, include_in_schema=False)
async def trends_page(
    request: Request,
    link: LinkDep,
    default_lang: DefaultLangDep,
    user: ManagerDep,
    room: str | None = None,
    range: str = "24h",  # noqa: A002
    lang: str | None = None,
) -> HTMLResponse:
    chosen = pick_lang(lang, default_lang)
    kit = link.state.kit
    room_id = room if room in {r.id for r in kit.rooms} else kit.rooms[0].id
    range_ = range if range in RANGES else "24h"
    t = catalogue(chosen)
    boot = {
        "lang": chosen, "room": room_id, "range": range_, "timezone": kit.timezone,
        "metrics": [{"id": m, "unit": UNITS[m], "label": t[f"metric.{m}"]} for m in ROOM_AIR_METRICS],
        "t": {k: v for k, v in t.items() if k.startswith(("trends.", "severity."))},
    }  # fmt: skip
    context = page_context(
        request, kit, chosen, "nav.trends", room=room_id, range=range_, ranges=list(RANGES), boot=boot,
        metrics=ROOM_AIR_METRICS,
    )  # fmt: skip
    return render(request, "trends.html", context)


# ---------------------------------------------------------------- time above thresholds


class ThresholdTime(ThresholdOut):
    ms: int


class MetricSummary(BaseModel):
    metric: str
    unit: str
    #: The room's sensors for this metric (0: nothing to summarise).
    sensors: int
    #: Time with at least one current reading of this metric (the rest is unknown, not "fine").
    covered_ms: int
    thresholds: list[ThresholdTime]


class RoomSummary(BaseModel):
    room: str
    name: str
    metrics: list[MetricSummary]


class AirSummaryOut(BaseModel):
    range: str
    start_ms: int
    end_ms: int
    rooms: list[RoomSummary]


def air_summary(kit: Kit, rules: RulesConfig, db: Path, range_: str, now_ms: int, room: str | None) -> AirSummaryOut:
    """The time-above summary from the gateway's SQLite (blocking: run it in a thread)."""
    reader = StoreReader(db)
    hold_ms = round(rules.freshness.air_s * 1000)
    first = window(ROOM_AIR_METRICS[0], range_, now_ms)
    out = []
    for r in kit.rooms:
        if room is not None and r.id != room:
            continue
        effective = rules.resolve(r.id, None)
        metrics = []
        for metric in ROOM_AIR_METRICS:
            w = window(metric, range_, now_ms)
            devices = room_devices(kit, r.id, w.stream)
            samples = reader.reading_values(w.stream, w.field, devices, w.start_ms - hold_ms, w.end_ms)
            covered = time_covered(samples, w.start_ms, w.end_ms, hold_ms)
            beyond = [ThresholdTime(**ThresholdOut.of(t).model_dump(),
                                    ms=time_in_violation(samples, t, w.start_ms, w.end_ms, hold_ms))
                      for t in effective.thresholds(metric)]  # fmt: skip
            metrics.append(MetricSummary(metric=metric, unit=UNITS[metric], sensors=len(devices), covered_ms=covered,
                                         thresholds=beyond))  # fmt: skip
        out.append(RoomSummary(room=r.id, name=r.name, metrics=metrics))
    return AirSummaryOut(range=range_, start_ms=first.start_ms, end_ms=first.end_ms, rooms=out)


async def _air_summary(request: Request, kit: Kit, range_: str, now_ms: int, room: str | None) -> AirSummaryOut:
    db = gateway_db_or_503(request)
    try:
        return await asyncio.to_thread(air_summary, kit, rules_of(request), db, range_, now_ms, room)
    except StoreError as exc:
        raise ApiError(503, "database_unavailable", f"cannot read readings from the gateway's SQLite: {exc}") from None


@router.get("/api/air-summary")
async def air_summary_api(
    request: Request,
    link: LinkDep,
    user: ManagerDep,
    range: str = "24h",  # noqa: A002
    room: str | None = None,
) -> AirSummaryOut:
    kit = link.state.kit
    return await _air_summary(
        request, kit, check_range(range), link.clock.now_ms(), check_room(kit, room, required=False)
    )


# ---------------------------------------------------------------- alert history


class HistoryFilters(BaseModel):
    room: str | None = None
    rule: str | None = None
    severity: Severity | None = None
    acknowledged: bool | None = None
    date_from: date | None = None
    date_to: date | None = None
    page: int = 1
    per_page: int = 50


class HistoryOut(BaseModel):
    total: int
    page: int
    per_page: int
    pages: int
    items: list[Alert]


def parse_history_filters(kit: Kit, q: dict[str, str]) -> HistoryFilters:
    """The history query string (also what the page's GET form sends: empty fields mean "any"),
    checked field by field with one 400 message each."""
    f = HistoryFilters(room=check_room(kit, q.get("room"), required=False), rule=q.get("rule") or None)
    if f.rule is not None and len(f.rule) > 64:
        raise ApiError(400, "bad_filter", "rule: at most 64 characters")
    if q.get("severity"):
        try:
            f.severity = Severity(q["severity"])
        except ValueError:
            raise ApiError(400, "bad_filter", f"severity: {q['severity']!r} is not one of "
                           f"{', '.join(s.value for s in Severity)}") from None  # fmt: skip
    ack = q.get("acknowledged") or ""
    if ack:
        if ack not in ("true", "false"):
            raise ApiError(400, "bad_filter", f"acknowledged: {ack!r} is not true or false (or empty for either)")
        f.acknowledged = ack == "true"
    for key, attr in (("from", "date_from"), ("to", "date_to")):
        if q.get(key):
            setattr(f, attr, parse_day(q[key], key, 400, "bad_filter"))
    if f.date_from and f.date_to and f.date_to < f.date_from:
        raise ApiError(400, "bad_filter", f"to: {f.date_to} is before from: {f.date_from}")
    for key, lo, hi in (("page", 1, 1_000_000), ("per_page", 1, PER_PAGE_MAX)):
        if q.get(key):
            try:
                value = int(q[key])
            except ValueError:
                value = lo - 1
            if not lo <= value <= hi:
                raise ApiError(400, "bad_filter", f"{key}: {q[key][:40]!r} is not a whole number from {lo} to {hi}")
            setattr(f, key, value)
    return f


def query_history(kit: Kit, db: Path, f: HistoryFilters) -> HistoryOut:
    """One page of the history (blocking). Dates are the site's local days, ``to`` included."""
    zone = ZoneInfo(kit.timezone)
    since = day_bounds(f.date_from, zone)[0] if f.date_from else None
    until = day_bounds(f.date_to, zone)[1] if f.date_to else None
    total, items = StoreReader(db).alert_history(
        room=f.room, rule=f.rule, severity=f.severity.value if f.severity else None, acknowledged=f.acknowledged,
        since_ts=since, until_ts=until, limit=f.per_page, offset=(f.page - 1) * f.per_page,
    )  # fmt: skip
    return HistoryOut(total=total, page=f.page, per_page=f.per_page, pages=max(1, math.ceil(total / f.per_page)),
                      items=items)  # fmt: skip


async def _history(request: Request, kit: Kit) -> tuple[HistoryFilters, HistoryOut, list[str]]:
    f = parse_history_filters(kit, dict(request.query_params))
    db = gateway_db_or_503(request)
    try:
        out = await asyncio.to_thread(query_history, kit, db, f)
        rules = await asyncio.to_thread(StoreReader(db).alert_rules)
    except StoreError as exc:
        raise ApiError(503, "database_unavailable", f"cannot read alerts from the gateway's SQLite: {exc}") from None
    return f, out, rules


@router.get("/api/alerts/history")
async def history_api(request: Request, link: LinkDep, user: ManagerDep) -> HistoryOut:
    """Query: room, rule, severity, acknowledged (true|false), from, to (YYYY-MM-DD, site time,
    inclusive), page (from 1), per_page (1–200, default 50). Newest first."""
    return (await _history(request, link.state.kit))[1]


@router.get("/history", response_class=HTMLResponse, include_in_schema=False)
async def history_page(
    request: Request, link: LinkDep, default_lang: DefaultLangDep, user: ManagerDep, lang: str | None = None
) -> HTMLResponse:
    chosen = pick_lang(lang, default_lang)
    kit = link.state.kit
    q = dict(request.query_params)
    f, out, known_rules = await _history(request, kit)
    summary_range = q.get("summary_range") or "24h"
    summary_range = summary_range if summary_range in RANGES else "24h"
    summary = await _air_summary(request, kit, summary_range, link.clock.now_ms(), None)

    def link_with(**changes: Any) -> str:
        params = {k: v for k, v in {**q, **{k: str(v) for k, v in changes.items()}}.items() if v != ""}
        params["lang"] = chosen
        return "?" + urlencode(params)

    context = page_context(
        request, kit, chosen, "nav.history", filters=f, history=out, known_rules=known_rules,
        query=q, summary=summary, summary_range=summary_range, ranges=list(RANGES), severities=list(Severity),
        fmt_ts=lambda ms: fmt_ts(ms, kit.timezone), fmt_duration=lambda ms: fmt_duration(ms, chosen),
        link_with=link_with, nickname={c.id: c.nickname for c in kit.children}, room_name={r.id: r.name
                                                                                            for r in kit.rooms},
    )  # fmt: skip
    return render(request, "history.html", context)
