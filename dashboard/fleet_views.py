"""What the fleet board shows, computed from the sites' ``SiteState`` (dashboard/fleet_state.py): one
summary row per site ranked worst first, a site's read-only detail, and the monthly air-quality
compliance per room. Pure functions of the states and the time; the routes are dashboard/routes/fleet.py.

Children appear by their pseudonymous id only: the centre never receives a nickname."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from fleet.state import DeviceHealth, EdgeHealth, LinkState, OpenAlert, RecordsHeadState, SiteState
from nurserywatch.contract import Severity

#: Below this battery level a device counts as low (the gateway's battery_low rule warns at 15 %).
BATTERY_LOW_PCT = 15.0
#: A gateway heartbeat older than this: the site's gateway is silent (it beats about once a second).
GATEWAY_SILENT_MS = 60_000
#: The air rules whose active time the compliance table sums (gateway/rules/air.py).
AIR_RULES = ("co2", "pm25", "temperature", "humidity")

MONTH_RE = re.compile(r"\d{4}-(0[1-9]|1[0-2])")

Level = Literal["critical", "warning", "ok"]
RecordsStatus = Literal["verified", "problem", "none"]


class AlertCounts(BaseModel):
    critical: int = 0
    warning: int = 0
    info: int = 0


class RecordsSummary(BaseModel):
    status: RecordsStatus
    day: str | None = None
    seq: int | None = None
    problem: str | None = None


class SiteSummary(BaseModel):
    site: str
    partition: int
    #: The row's colour: critical (an open critical alert), warning (anything else needing a look), ok.
    level: Level
    #: Why (stable keys, shown translated): critical_alert, link_down, gateway_offline, gateway_silent,
    #: records_problem, warning_alert, devices_offline, battery_low, edges_offline.
    problems: list[str]
    #: Open alerts (active, or resolved and not acknowledged) by severity.
    alerts: AlertCounts
    oldest_active_ts: int | None
    devices: int
    devices_offline: int
    battery_low: int
    edges_offline: int
    link_up: bool
    link_down_since_ms: int | None
    link_down_for_ms: int | None
    #: Messages the site holds that the centre has not sourced yet.
    link_pending: int
    lag_ms: int | None
    gateway_online: bool | None
    gateway_age_ms: int | None
    records: RecordsSummary
    last_arrival_ms: int | None
    readings: int


class SiteDetail(BaseModel):
    summary: SiteSummary
    alerts: list[OpenAlert]
    devices: list[DeviceHealth]
    edges: list[EdgeHealth]
    link: LinkState
    records: RecordsHeadState | None
    rejected: dict[str, int]


class RuleTime(BaseModel):
    rule: str
    over_s: float
    hours: float
    #: over_s / observed_s (None: the site reported no observed time for the room this month).
    share: float | None
    #: An alert of this rule is active in the room now (its running time is included).
    running: bool


class RoomCompliance(BaseModel):
    site: str
    room: str
    observed_s: float | None
    rules: list[RuleTime]


class Compliance(BaseModel):
    month: str
    #: Months any shown site has figures for, newest first (the current month always).
    months: list[str]
    rooms: list[RoomCompliance]


# ---------------------------------------------------------------- board


def summarize(state: SiteState, now_ms: int) -> SiteSummary:
    counts = AlertCounts()
    oldest: int | None = None
    for a in state.alerts.values():
        setattr(counts, a.severity.value, getattr(counts, a.severity.value) + 1)
        if a.active and (oldest is None or a.started_ts < oldest):
            oldest = a.started_ts
    offline = sum(1 for d in state.devices.values() if d.online is False)
    low = sum(1 for d in state.devices.values() if d.battery_pct is not None and d.battery_pct < BATTERY_LOW_PCT)
    edges_off = sum(1 for e in state.edges.values() if not e.online)
    link = state.link
    down_for = None if link.up or link.down_since_ms is None else max(0, now_ms - link.down_since_ms)
    gw_age = None if state.gateway_ts is None else max(0, now_ms - state.gateway_ts)
    if state.records is None:
        records = RecordsSummary(status="none")
    else:
        r = state.records
        records = RecordsSummary(status="verified" if r.verified else "problem", day=r.day, seq=r.seq,
                                 problem=None if r.verified else (r.problem or "not verified"))  # fmt: skip
    flags = {
        "critical_alert": counts.critical > 0,
        "link_down": not link.up,
        "gateway_offline": state.gateway_online is False,
        "gateway_silent": state.gateway_online is not False and gw_age is not None and gw_age > GATEWAY_SILENT_MS,
        "records_problem": records.status == "problem",
        "warning_alert": counts.warning > 0,
        "devices_offline": offline > 0,
        "battery_low": low > 0,
        "edges_offline": edges_off > 0,
    }
    problems = [k for k, on in flags.items() if on]
    level: Level = "critical" if counts.critical else "warning" if problems else "ok"
    return SiteSummary(
        site=state.site, partition=state.partition, level=level, problems=problems, alerts=counts,
        oldest_active_ts=oldest, devices=len(state.devices), devices_offline=offline, battery_low=low,
        edges_offline=edges_off, link_up=link.up, link_down_since_ms=None if link.up else link.down_since_ms,
        link_down_for_ms=down_for, link_pending=link.pending, lag_ms=state.lag_ms, gateway_online=state.gateway_online,
        gateway_age_ms=gw_age, records=records, last_arrival_ms=state.last_arrival_ms, readings=state.readings,
    )  # fmt: skip


def _worst_first(s: SiteSummary) -> tuple[object, ...]:
    outage = any(p in s.problems for p in ("link_down", "gateway_offline", "gateway_silent", "records_problem"))
    return (-s.alerts.critical, not outage, -(s.link_down_for_ms or 0), -s.alerts.warning,
            -(s.devices_offline + s.battery_low + s.edges_offline), -(s.lag_ms or 0), s.site)  # fmt: skip


def board(states: Iterable[SiteState], now_ms: int) -> list[SiteSummary]:
    """Every given site's summary, worst first: open critical alerts, then outages (link, gateway,
    records chain; the longest outage first), then warnings and device trouble, then lag."""
    return sorted((summarize(s, now_ms) for s in states), key=_worst_first)


_SEVERITY_ORDER = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}


def detail(state: SiteState, now_ms: int) -> SiteDetail:
    alerts = sorted(state.alerts.values(), key=lambda a: (not a.active, _SEVERITY_ORDER[a.severity], a.started_ts))
    return SiteDetail(
        summary=summarize(state, now_ms), alerts=alerts,
        devices=sorted(state.devices.values(), key=lambda d: (d.online is not False, d.device)),
        edges=sorted(state.edges.values(), key=lambda e: (e.online, e.agent)), link=state.link, records=state.records,
        rejected=dict(state.rejected),
    )  # fmt: skip


# ---------------------------------------------------------------- air-quality compliance


def month_of(ms: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(ms / 1000, zone).strftime("%Y-%m")


def month_bounds(month: str, zone: ZoneInfo) -> tuple[int, int]:
    """[start, end) of a ``YYYY-MM`` month in ``zone``, in ms. ValueError for anything else."""
    if not MONTH_RE.fullmatch(month):
        raise ValueError(f"{month[:20]!r} is not a month like 2026-01")
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=zone)
    following = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return round(start.timestamp() * 1000), round(following.timestamp() * 1000)


def compliance(states: Iterable[SiteState], month: str, now_ms: int, zone: ZoneInfo) -> Compliance:
    """Per site and room of ``month``: the time each air rule's alerts were active (the resolved ones
    the worker summed, plus the running time of the active ones within the month, up to now), in hours
    and as a share of the time the room's air was observed. Months are the sites' (the worker keys them
    in the site's time zone); ``zone`` places "now" and the running alerts (the board's time zone)."""
    start_ms, end_ms = month_bounds(month, zone)
    states = list(states)
    months = {month_of(now_ms, zone)}
    rows = []
    for state in sorted(states, key=lambda s: s.site):
        months.update(state.air_over_s, state.air_observed_s)
        over = state.air_over_s.get(month, {})
        observed = state.air_observed_s.get(month, {})
        running: dict[tuple[str, str], float] = {}
        for a in state.alerts.values():
            if a.active and a.rule in AIR_RULES and a.room:
                overlap = min(now_ms, end_ms) - max(a.started_ts, start_ms)
                if overlap > 0:
                    key = (a.room, a.rule)
                    running[key] = running.get(key, 0.0) + overlap / 1000
        for room in sorted(set(over) | set(observed) | {r for r, _ in running}):
            seen = observed.get(room)
            rules = []
            for rule in AIR_RULES:
                total = over.get(room, {}).get(rule, 0.0) + running.get((room, rule), 0.0)
                rules.append(RuleTime(rule=rule, over_s=round(total, 1), hours=round(total / 3600, 2),
                                      share=round(total / seen, 4) if seen else None,
                                      running=(room, rule) in running))  # fmt: skip
            rows.append(RoomCompliance(site=state.site, room=room, observed_s=seen, rules=rules))
    return Compliance(month=month, months=sorted(months, reverse=True), rooms=rows)
