"""The dashboard web app (FastAPI) and its entry point.

``create_app`` builds the app around one :class:`LiveLink` (the MQTT side); its lifespan runs the
MQTT subscriber task. ``serve_dashboard`` runs it under uvicorn until cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any, TypedDict

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from typing_extensions import Unpack

from dashboard.auth.deps import (
    AdminDep,
    StaffDep,
    audit,
    flush_refused_logins,
    install_auth,
    live_session_check,
    wants_html,
)
from dashboard.auth.models import AuthPolicy
from dashboard.deps import ApiError, DefaultLangDep, LinkDep, get_link_of
from dashboard.http_server import ConnectionGuard, EmbeddedServer, ServerLimits, server_config
from dashboard.i18n import DEFAULT_LANG, Lang, pick_lang
from dashboard.live.link import CommandNotSent, LiveLink
from dashboard.live.sse import event_stream
from dashboard.live.state import AlertFilter
from dashboard.pages import render
from dashboard.routes.auth import error_page, forbidden_page
from dashboard.routes.auth import router as auth_router
from dashboard.routes.integrator import install_integrator_pages
from dashboard.routes.manager import router as manager_router
from dashboard.routes.metrics import install_metrics
from dashboard.routes.records import router as records_router
from dashboard.routes.staff import router as staff_router
from dashboard.security_headers import SecurityHeaders
from dashboard.views import RoomView, room_page_context, rooms_view
from gateway.read import RulesConfig
from nurserywatch.clock import Clock
from nurserywatch.command_auth import CommandSigner
from nurserywatch.contract import Alert
from nurserywatch.kit import Kit
from nurserywatch.mqtt import Brokers, describe_brokers
from nurserywatch.systemd import Notifier

log = logging.getLogger(__name__)

HERE = Path(__file__).parent


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


# ---------------------------------------------------------------- routes

router = APIRouter()


class AckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    # Accepted for old clients but ignored: the acknowledgement is made under the signed-in user's
    # name, so nobody can acknowledge in someone else's name (a different `by` is noted in the audit log).
    by: Annotated[str, Field(min_length=1, max_length=128)] | None = None


class AckSent(BaseModel):
    status: str = "sent"


class Health(BaseModel):
    ok: bool
    mqtt_connected: bool
    alerts: int
    live_clients: int
    rejected: dict[str, int]
    #: The HTTP server's connection guard: open, cap, evicted, refused, timed_out, accept_errors
    #: (empty when the app runs under another server).
    connections: dict[str, int]


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index(
    request: Request, link: LinkDep, default_lang: DefaultLangDep, user: StaffDep, lang: str | None = None,
    room: str | None = None,
) -> HTMLResponse:  # fmt: skip
    chosen = pick_lang(lang, default_lang)
    context = room_page_context(request, link, chosen, room)  # dashboard/views.py: room selector, boot data
    return render(request, "index.html", context)


@router.get("/api/events", include_in_schema=False)
async def events(request: Request, link: LinkDep, user: StaffDep) -> StreamingResponse:
    sub = link.fanout.subscribe()
    snapshot = link.state.snapshot(link.clock.now_ms())
    session_alive = live_session_check(request)

    async def stream() -> AsyncIterator[str]:
        try:
            async for chunk in event_stream(snapshot, sub, tick=link.tick_event):
                if not session_alive():  # signed out or disabled: end the stream (keep-alives come every 15 s)
                    break
                yield chunk
        finally:
            link.fanout.unsubscribe(sub)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/api/alerts")
async def list_alerts(link: LinkDep, user: StaffDep, state: Annotated[AlertFilter, Query()] = "all") -> list[Alert]:
    return link.state.alerts_list(state)


@router.post("/api/alerts/{alert_id}/ack", status_code=202)
async def acknowledge(
    request: Request, alert_id: str, link: LinkDep, user: StaffDep, body: AckRequest | None = None
) -> AckSent:
    if alert_id not in link.state.alerts:
        raise ApiError(404, "unknown_alert", f"alert {alert_id!r} is not in the dashboard's current list")
    try:
        command_id = await link.acknowledge(alert_id, user.shown_name)
    except CommandNotSent as exc:
        raise ApiError(503, exc.code, str(exc)) from None
    named = body.by if body and body.by else None
    ignored = f"; body named {named!r}, ignored" if named and named not in (user.shown_name, user.username) else ""
    audit(request, user, "alert.ack", alert_id, f"command {command_id}{ignored}")
    return AckSent()


@router.get("/api/rooms")
async def rooms(link: LinkDep, user: StaffDep) -> list[RoomView]:
    return rooms_view(link.state, link.clock.now_ms())


@router.get("/openapi.json", include_in_schema=False)
async def openapi_schema(request: Request, user: AdminDep) -> JSONResponse:
    """The API's OpenAPI schema, for admins only."""
    return JSONResponse(request.app.openapi())


@router.get("/healthz", responses={503: {"model": Health}})
async def healthz(request: Request, link: LinkDep) -> JSONResponse:
    health = Health(
        ok=link.connected,
        mqtt_connected=link.connected,
        alerts=len(link.state.alerts),
        live_clients=len(link.fanout),
        rejected=dict(link.state.rejected),
        connections=guard.counts() if isinstance(guard := getattr(request.app.state, "connections", None),
                                                 ConnectionGuard) else {},  # fmt: skip
    )
    return JSONResponse(health.model_dump(), status_code=200 if health.ok else 503)


# ---------------------------------------------------------------- app


def create_app(
    kit: Kit,
    broker: Brokers,
    *,
    default_lang: Lang = DEFAULT_LANG,
    clock: Clock | None = None,
    gateway_db: Path | None = None,
    data_dir: Path | None = None,
    rules: RulesConfig | None = None,
    kit_path: Path | None = None,
    auth_policy: AuthPolicy | None = None,
    metrics_token: str | None = None,
    command_key: CommandSigner | None = None,
) -> FastAPI:
    """``gateway_db`` is the gateway's SQLite file, opened read-only for records, history and trends;
    ``data_dir`` is where the dashboard keeps its own database (users, sessions, audit log);
    ``command_key`` signs every staff command (None: commands are refused, the gateway would too)."""
    if command_key is None:  # the room view still works; every command is refused with a clear error
        log.error("no command key (--command-key): the dashboard cannot sign staff commands, so acknowledging, "
                  "nap sessions, records and assignments are refused (docs/deploy.md, \"Securing MQTT\")")
    link = LiveLink(kit, broker, clock=clock, command_key=command_key)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(link.run(), name="dashboard-mqtt")
        try:
            yield
        finally:
            flush_refused_logins(app.state.auth)  # the pending counts of refused sign-ins, to the audit log
            link.fanout.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # No /docs or /redoc: their pages load scripts from a CDN, and the dashboard vendors everything. The
    # schema is served below to admins only (it maps every route an attacker could try).
    app = FastAPI(title=f"nurserywatch dashboard — {kit.name}", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)  # fmt: skip
    app.add_middleware(SecurityHeaders)  # CSP, frame-ancestors, nosniff, no-store (dashboard/security_headers.py)
    app.state.link = link
    app.state.default_lang = default_lang
    app.state.gateway_db = gateway_db
    app.state.data_dir = data_dir
    install_auth(app, data_dir, link.clock, auth_policy, forbidden_page=forbidden_page)  # users, sessions, audit log
    app.state.rules = rules  # the thresholds of the manager pages (None: the built-in defaults)
    app.include_router(router)
    app.include_router(auth_router)  # login, logout, /api/me, /admin/users
    app.include_router(manager_router)
    app.include_router(records_router)  # STAFF: records, sessions, assignments
    app.include_router(staff_router)
    install_integrator_pages(app, kit_path)
    install_metrics(app, metrics_token)  # /metrics: loopback only, or this token (docs/metrics.md)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    _install_error_handlers(app)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    """Every error is JSON ``{"error", "message"}``; never a traceback or an HTML page."""

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        if wants_html(request):  # a browser opening a page with bad input: a page in its language
            return error_page(request, exc.status, exc.code, exc.message, exc.text)
        return _error(exc.status, exc.code, exc.message)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        response = _error(exc.status_code, code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _error(422, "invalid_request", _describe_validation(exc.errors()))

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, "internal_error", "internal error; see the dashboard log")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(Exception, internal_error)


def _describe_validation(errors: Any) -> str:
    parts = []
    for err in list(errors)[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "request"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


# ---------------------------------------------------------------- entry point


class AppOptions(TypedDict, total=False):
    """``create_app``'s keyword options, passed through by ``serve_dashboard``."""

    clock: Clock | None
    gateway_db: Path | None
    data_dir: Path | None
    rules: RulesConfig | None
    kit_path: Path | None
    auth_policy: AuthPolicy | None
    metrics_token: str | None
    command_key: CommandSigner | None


async def serve_dashboard(
    kit: Kit,
    broker: Brokers,
    host: str,
    port: int,
    *,
    lang: Lang = DEFAULT_LANG,
    notifier: Notifier | None = None,
    limits: ServerLimits | None = None,
    trusted_proxies: tuple[str, ...] = (),
    **options: Unpack[AppOptions],
) -> None:
    """Serve the dashboard on ``host:port`` until cancelled, then shut down cleanly (live streams
    closed, MQTT task stopped). ``port`` 0 picks a free port (logged). ``notifier``: systemd's
    (READY once serving, the watchdog from uvicorn's main loop). ``limits``: connections and timeouts
    (dashboard/http_server.py); ``trusted_proxies``: the addresses whose X-Forwarded-For and
    X-Forwarded-Proto are believed (none by default). ``options``: see ``create_app``."""
    app = create_app(kit, broker, default_lang=lang, **options)
    await serve_app(app, host, port, f"dashboard for {kit.site}", f"MQTT {describe_brokers(broker)}",
                    on_stop=get_link_of(app).fanout.close, notifier=notifier, limits=limits,
                    trusted_proxies=trusted_proxies)  # fmt: skip


async def serve_app(
    app: FastAPI,
    host: str,
    port: int,
    what: str,
    source: str,
    *,
    on_stop: Callable[[], None],
    notifier: Notifier | None = None,
    limits: ServerLimits | None = None,
    trusted_proxies: tuple[str, ...] = (),
) -> None:
    """Serve ``app`` (the site dashboard, or the fleet board: dashboard/fleet_app.py) as
    ``serve_dashboard`` says; ``on_stop`` ends its live streams first; ``what`` and ``source`` name it
    in the log line."""
    limits = limits or ServerLimits()
    guard = ConnectionGuard(limits.connection_cap())
    app.state.connections = guard  # its counts are in /healthz
    # Bind here rather than in uvicorn, which calls sys.exit() when the port is taken.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"dashboard cannot listen on {host}:{port}: {exc.strerror}") from None
    bound_port = sock.getsockname()[1]
    notifier = notifier or Notifier(None)
    server = EmbeddedServer(server_config(app, limits, trusted_proxies), guard, limits, notifier)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="dashboard-http")
    try:
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started:
            shown = f"[{host}]" if family == socket.AF_INET6 else host
            log.info("%s at http://%s:%d/ (%s)", what, shown, bound_port, source)
            notifier.ready(f"serving on port {bound_port}")
        await asyncio.shield(serving)
    except asyncio.CancelledError:
        on_stop()  # end live streams, or uvicorn waits for them to finish
        server.should_exit = True
        await serving
        raise
    finally:
        sock.close()
