"""Integrator pages and their API: devices (online/offline, last seen, battery, RSSI), edge agents
(online, clock, version) and the kit check (the kit file the dashboard was started with, validated
again now). Admin only: they show the installation's inner workings (ports, agent versions, file
paths), which a manager does not need to run a nursery (docs/dashboard.md).

Device and agent status are the live MQTT mirror (retained ``status/+`` and ``edge/+``); "last
reading" comes from the gateway's SQLite when the dashboard has it."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import cast

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from dashboard.auth.deps import AdminDep
from dashboard.auth.models import Role
from dashboard.deps import DefaultLangDep, LinkDep
from dashboard.i18n import pick_lang
from dashboard.pages import NAV, NavItem, page_context, render
from dashboard.routes.manager import fmt_ts
from gateway.read import RulesConfig, RulesError, StoreError, StoreReader, check_rules_fit_kit
from nurserywatch.contract import Stream
from nurserywatch.kit import DeviceKind, Kit, KitError, load_kit

router = APIRouter()
NAV.extend([
    NavItem("nav.devices", "/devices", Role.ADMIN, order=50),
    NavItem("nav.kit", "/kit", Role.ADMIN, order=60),
])


class DeviceOut(BaseModel):
    id: str
    kind: DeviceKind
    room: str
    agent: str
    child: str | None
    #: From the device's retained status; None: no status received yet.
    online: bool | None
    status_ts: int | None
    battery_pct: float | None
    rssi_dbm: float | None
    #: Message time of its newest stored reading (any stream); None: none stored or no database.
    last_reading_ts: int | None
    #: The later of the two: when the system last heard of it.
    last_seen_ts: int | None


class AgentOut(BaseModel):
    id: str
    online: bool | None
    ts: int | None
    version: str | None
    #: False: the agent's clock is not plausible yet (it holds readings); None: not reported.
    clock_ok: bool | None
    #: The devices the agent reports it runs, and the kit's devices for it.
    devices: list[str]
    kit_devices: list[str]


class DevicesOut(BaseModel):
    devices: list[DeviceOut]
    agents: list[AgentOut]
    #: Why ``last_reading_ts`` is missing, when the gateway's SQLite could not be read.
    readings_error: str | None


def last_readings(db: Path) -> dict[str, int]:
    """device → message time of its newest stored reading (blocking)."""
    reader = StoreReader(db)
    out: dict[str, int] = {}
    for stream in Stream:
        if stream is Stream.WAVEFORM:
            continue  # raw samples are not stored
        for r in reader.latest_readings(stream):
            out[r.device] = max(out.get(r.device, 0), r.reading.ts)
    return out


async def devices_view(request: Request, kit: Kit, link: LinkDep) -> DevicesOut:
    db = cast(Path | None, request.app.state.gateway_db)
    readings: dict[str, int] = {}
    error = None if db is not None else "this dashboard was started without the gateway's database (--db)"
    if db is not None:
        try:
            readings = await asyncio.to_thread(last_readings, db)
        except StoreError as exc:
            error = str(exc)
    state = link.state
    devices = []
    for d in kit.devices:
        st = state.device_status.get(d.id)
        last = readings.get(d.id)
        seen = [t for t in (st.ts if st else None, last) if t is not None]
        devices.append(DeviceOut(
            id=d.id, kind=d.kind, room=d.room, agent=d.agent, child=d.child,
            online=st.online if st else None, status_ts=st.ts if st else None,
            battery_pct=st.battery_pct if st else None, rssi_dbm=st.rssi_dbm if st else None,
            last_reading_ts=last, last_seen_ts=max(seen) if seen else None,
        ))  # fmt: skip
    agents = []
    for a in kit.agents:
        es = state.edge_status.get(a.id)
        agents.append(AgentOut(
            id=a.id, online=es.online if es else None, ts=es.ts if es else None, version=es.version if es else None,
            clock_ok=es.clock_ok if es else None, devices=list(es.devices) if es else [],
            kit_devices=[d.id for d in kit.devices_of_agent(a.id)],
        ))  # fmt: skip
    return DevicesOut(devices=devices, agents=agents, readings_error=error)


@router.get("/api/devices")
async def devices_api(request: Request, link: LinkDep, user: AdminDep) -> DevicesOut:
    return await devices_view(request, link.state.kit, link)


@router.get("/devices", response_class=HTMLResponse, include_in_schema=False)
async def devices_page(
    request: Request, link: LinkDep, default_lang: DefaultLangDep, user: AdminDep, lang: str | None = None
) -> HTMLResponse:
    chosen = pick_lang(lang, default_lang)
    kit = link.state.kit
    view = await devices_view(request, kit, link)
    context = page_context(
        request, kit, chosen, "nav.devices", view=view, fmt_ts=lambda ms: fmt_ts(ms, kit.timezone),
        nickname={c.id: c.nickname for c in kit.children}, room_name={r.id: r.name for r in kit.rooms},
    )  # fmt: skip
    return render(request, "devices.html", context)


# ---------------------------------------------------------------- kit check


class KitCheckOut(BaseModel):
    #: The kit file the dashboard was started with (None: started from code with a Kit object).
    file: str | None
    ok: bool
    #: One line per problem, as `nurserywatch kit check` prints them (file, field, what was expected).
    problems: list[str]
    #: The file differs from what it was when the dashboard started (restart to use it).
    changed: bool


def file_digest(path: Path | None) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path is not None else None
    except OSError:
        return None


def install_integrator_pages(app: FastAPI, kit_path: Path | None) -> None:
    """Add the routes; remember the kit file's contents now, to tell later whether it changed."""
    app.state.kit_path = kit_path
    app.state.kit_digest = file_digest(kit_path)
    app.include_router(router)


def check_kit_file(path: Path | None, started_digest: str | None, rules: RulesConfig | None) -> KitCheckOut:
    """Validate the kit file again (blocking: reads it). The kit loader lists every problem;
    the rules file is then checked against it (a room the kit lacks), as the gateway does on start."""
    if path is None:
        return KitCheckOut(file=None, ok=True, problems=[], changed=False)
    changed = file_digest(path) != started_digest
    try:
        kit = load_kit(path)  # the file as it is now
    except KitError as exc:
        return KitCheckOut(file=str(path), ok=False, problems=str(exc).splitlines(), changed=changed)  # one a line
    problems: list[str] = []
    if rules is not None:
        try:
            check_rules_fit_kit(rules, kit, "rules")
        except RulesError as exc:
            problems.append(str(exc))
    return KitCheckOut(file=str(path), ok=not problems, problems=problems, changed=changed)


async def _kit_check(request: Request, kit: Kit) -> KitCheckOut:
    path = cast(Path | None, request.app.state.kit_path)
    rules = cast(RulesConfig | None, request.app.state.rules)
    return await asyncio.to_thread(check_kit_file, path, request.app.state.kit_digest, rules)


@router.get("/api/kit/check")
async def kit_check_api(request: Request, link: LinkDep, user: AdminDep) -> KitCheckOut:
    return await _kit_check(request, link.state.kit)


@router.get("/kit", response_class=HTMLResponse, include_in_schema=False)
async def kit_page(
    request: Request, link: LinkDep, default_lang: DefaultLangDep, user: AdminDep, lang: str | None = None
) -> HTMLResponse:
    chosen = pick_lang(lang, default_lang)
    kit = link.state.kit
    context = page_context(request, kit, chosen, "nav.kit", check=await _kit_check(request, kit))
    return render(request, "kit.html", context)
