"""The fleet board's pages and JSON API (docs/fleet.md, "Fleet board"): every permitted site ranked
worst first, a read-only page per site, and the monthly air-quality compliance per room. Served by
the fleet app (dashboard/fleet_app.py) from its live copy of the fleet state (dashboard/fleet_state.py).

Who sees what: a user sees the sites granted to it (``User.sites``; ``*``: all), an admin every site
(``FleetDep``, dashboard/auth/deps.py). A site that is not granted is answered exactly like a site that
does not exist (404 ``unknown_site``), so the board never tells an operator which other sites exist."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel

from dashboard.auth.deps import FleetDep
from dashboard.auth.models import Role, User
from dashboard.deps import ApiError, DefaultLangDep
from dashboard.fleet_state import FleetStateCopy
from dashboard.fleet_views import Compliance, SiteDetail, SiteSummary, board, compliance, detail, month_of
from dashboard.i18n import Lang, catalogue, label, pick_lang
from dashboard.pages import NavItem, page_context, render
from dashboard.routes.manager import fmt_duration, fmt_ts
from fleet.state import SiteState
from nurserywatch.contract import IDENT_RE

router = APIRouter()

#: The fleet app's navigation bar (it has no site pages).
FLEET_NAV = [
    NavItem("nav.fleet_board", "/fleet", Role.OPERATOR, order=10),
    NavItem("nav.fleet_air", "/fleet/air", Role.OPERATOR, order=20),
    NavItem("nav.admin_users", "/admin/users", Role.ADMIN, order=70),
]


@dataclass(frozen=True, slots=True)
class FleetHeader:
    """The page header of the fleet board (``dashboard.pages.Header``): its name, and the time zone its
    server-rendered times are shown in (the board's own table uses the browser's)."""

    name: str
    timezone: str = "Asia/Tokyo"


class BoardOut(BaseModel):
    now_ms: int
    #: Connected to the central NATS and holding the state bucket's current contents.
    connected: bool
    synced: bool
    sites: list[SiteSummary]


def _copy(request: Request) -> FleetStateCopy:
    return cast(FleetStateCopy, request.app.state.fleet)


def _header(request: Request) -> FleetHeader:
    return cast(FleetHeader, request.app.state.header)


def visible(user: User, copy: FleetStateCopy) -> list[SiteState]:
    return [state for site, state in copy.sites.items() if user.may_see_site(site)]


def site_state(user: User, copy: FleetStateCopy, site: str) -> SiteState:
    """The site's state if this user may see it; the same 404 whether it is not granted or unknown."""
    state = copy.sites.get(site) if IDENT_RE.fullmatch(site) and user.may_see_site(site) else None
    if state is None:
        shown = site[:64]
        raise ApiError(404, "unknown_site", f"no site {shown!r} on this board", ("fleet.unknown_site", {"site": shown}))
    return state


def _month(request: Request, month: str | None) -> tuple[str, ZoneInfo]:
    zone = ZoneInfo(_header(request).timezone)
    chosen = month or month_of(_copy(request).clock.now_ms(), zone)
    return chosen, zone


def _compliance(request: Request, user: User, month: str | None, site: str | None) -> Compliance:
    copy = _copy(request)
    chosen, zone = _month(request, month)
    states = [site_state(user, copy, site)] if site else visible(user, copy)
    try:
        return compliance(states, chosen, copy.clock.now_ms(), zone)
    except ValueError as exc:
        raise ApiError(400, "bad_month", f"month: {exc}", ("fleet.bad_month", {"value": chosen[:20]})) from None


# ---------------------------------------------------------------- JSON API


@router.get("/api/fleet/sites")
async def sites_api(request: Request, user: FleetDep) -> BoardOut:
    """Every site this user may see, worst first (docs/fleet.md lists the fields)."""
    copy = _copy(request)
    now = copy.clock.now_ms()
    return BoardOut(now_ms=now, connected=copy.connected, synced=copy.synced, sites=board(visible(user, copy), now))


@router.get("/api/fleet/sites/{site}")
async def site_api(request: Request, site: str, user: FleetDep) -> SiteDetail:
    copy = _copy(request)
    return detail(site_state(user, copy, site), copy.clock.now_ms())


@router.get("/api/fleet/air")
async def air_api(request: Request, user: FleetDep, month: str | None = None, site: str | None = None) -> Compliance:
    """Query: month (YYYY-MM, default the current one), site (default every permitted site)."""
    return _compliance(request, user, month, site)


# ---------------------------------------------------------------- pages


def _context(request: Request, lang: Lang, current: str, **extra: Any) -> dict[str, Any]:
    header = _header(request)
    t = catalogue(lang)

    def short(ms: int) -> str:  # a lag or a heartbeat's age: seconds (one decimal below 10 s) under a minute
        if ms >= 60_000:
            return fmt_duration(ms, lang)
        return t["fleet.unit.s"].format(n=f"{ms / 1000:.1f}" if ms < 10_000 else round(ms / 1000))

    return page_context(request, header, lang, current, fmt_ts=lambda ms: fmt_ts(ms, header.timezone),
                        fmt_duration=lambda ms: fmt_duration(ms, lang), fmt_short=short,
                        rule_name=lambda r: label(t, "rule", r), **extra)  # fmt: skip


@router.get("/", include_in_schema=False)
async def home(request: Request, default_lang: DefaultLangDep, lang: str | None = None) -> RedirectResponse:
    return RedirectResponse(f"/fleet?lang={pick_lang(lang, default_lang)}", status_code=303)


@router.get("/fleet", response_class=HTMLResponse, include_in_schema=False)
async def board_page(
    request: Request, default_lang: DefaultLangDep, user: FleetDep, lang: str | None = None
) -> HTMLResponse:
    chosen = pick_lang(lang, default_lang)
    t = catalogue(chosen)
    boot = {
        "lang": chosen, "refresh_s": request.app.state.fleet_refresh_s,
        "t": {k: v for k, v in t.items() if k.startswith(("fleet.", "severity."))},
    }  # fmt: skip
    return render(request, "fleet.html", _context(request, chosen, "nav.fleet_board", boot=boot))


@router.get("/fleet/sites/{site}", response_class=HTMLResponse, include_in_schema=False)
async def site_page(
    request: Request, site: str, default_lang: DefaultLangDep, user: FleetDep, lang: str | None = None
) -> HTMLResponse:
    chosen = pick_lang(lang, default_lang)
    copy = _copy(request)
    view = detail(site_state(user, copy, site), copy.clock.now_ms())
    return render(request, "fleet_site.html", _context(request, chosen, "", view=view))


@router.get("/fleet/air", response_class=HTMLResponse, include_in_schema=False)
async def air_page(
    request: Request, default_lang: DefaultLangDep, user: FleetDep, lang: str | None = None, month: str | None = None
) -> HTMLResponse:
    chosen = pick_lang(lang, default_lang)
    view = _compliance(request, user, month or None, None)
    return render(request, "fleet_air.html", _context(request, chosen, "nav.fleet_air", view=view))
