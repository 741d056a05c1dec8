"""The dashboard in fleet mode: the fleet board (dashboard/routes/fleet.py) on the central server, with
the site dashboard's sign-in, users, roles, audit log, pages and error answers — but no site: no kit,
no MQTT, no site page. Its data is the central NATS cluster's fleet state bucket, kept in memory by
one watch (dashboard/fleet_state.py). docs/fleet.md, "Fleet board"."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TypedDict

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from typing_extensions import Unpack

from dashboard.app import HERE, _install_error_handlers, serve_app
from dashboard.auth.deps import flush_refused_logins, install_auth
from dashboard.auth.models import AuthPolicy
from dashboard.fleet_state import FleetStateCopy, watch_fleet_state
from dashboard.http_server import ConnectionGuard, ServerLimits
from dashboard.i18n import DEFAULT_LANG, Lang
from dashboard.routes.auth import forbidden_page
from dashboard.routes.auth import router as auth_router
from dashboard.routes.fleet import FLEET_NAV, FleetHeader
from dashboard.routes.fleet import router as fleet_router
from dashboard.security_headers import SecurityHeaders
from nurserywatch.clock import Clock
from nurserywatch.systemd import Notifier


class FleetOptions(TypedDict, total=False):
    """``create_fleet_app``'s keyword options, passed through by ``serve_fleet_dashboard``."""

    default_lang: Lang
    clock: Clock | None
    data_dir: Path | None
    auth_policy: AuthPolicy | None
    nats_domain: str | None
    nats_user: str | None
    nats_password: str | None
    refresh_s: float


#: How often the board page re-reads /api/fleet/sites (seconds).
REFRESH_S = 5.0


def create_fleet_app(
    nats_servers: Sequence[str],
    *,
    header: FleetHeader,
    default_lang: Lang = DEFAULT_LANG,
    clock: Clock | None = None,
    data_dir: Path | None = None,
    auth_policy: AuthPolicy | None = None,
    nats_domain: str | None = None,
    nats_user: str | None = None,
    nats_password: str | None = None,
    refresh_s: float = REFRESH_S,
) -> FastAPI:
    """``nats_servers``: the central cluster's client URLs (``nats://[user:password@]host:port``);
    ``data_dir``: the board's own users, sessions and audit log (as the site dashboard's)."""
    copy = FleetStateCopy(clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(watch_fleet_state(copy, nats_servers, domain=nats_domain, user=nats_user,
                                                     password=nats_password), name="fleet-state")  # fmt: skip
        try:
            yield
        finally:
            flush_refused_logins(app.state.auth)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(title=f"nurserywatch fleet board — {header.name}", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)  # fmt: skip
    app.add_middleware(SecurityHeaders)
    app.state.fleet = copy
    app.state.header = header
    app.state.nav = FLEET_NAV
    app.state.default_lang = default_lang
    app.state.fleet_refresh_s = refresh_s
    install_auth(app, data_dir, copy.clock, auth_policy, forbidden_page=forbidden_page)
    app.include_router(auth_router)  # login, logout, /api/me, /admin/users (with each user's sites)
    app.include_router(fleet_router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz(request: Request) -> JSONResponse:
        guard = getattr(request.app.state, "connections", None)
        body = {"ok": copy.connected and copy.synced, "nats_connected": copy.connected, "synced": copy.synced,
                "sites": len(copy.sites), "rejected": dict(copy.rejected),
                "connections": guard.counts() if isinstance(guard, ConnectionGuard) else {}}  # fmt: skip
        return JSONResponse(body, status_code=200 if body["ok"] else 503)

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    _install_error_handlers(app)
    return app


async def serve_fleet_dashboard(
    nats_servers: Sequence[str],
    host: str,
    port: int,
    *,
    header: FleetHeader,
    notifier: Notifier | None = None,
    limits: ServerLimits | None = None,
    trusted_proxies: tuple[str, ...] = (),
    **options: Unpack[FleetOptions],
) -> None:
    """The fleet board on ``host:port`` until cancelled (``options``: ``create_fleet_app``'s)."""
    app = create_fleet_app(nats_servers, header=header, **options)
    shown = ", ".join(s.rsplit("@", 1)[-1] for s in nats_servers)
    await serve_app(app, host, port, f"fleet board {header.name!r}", f"NATS {shown}", on_stop=lambda: None,
                    notifier=notifier, limits=limits, trusted_proxies=trusted_proxies)  # fmt: skip
