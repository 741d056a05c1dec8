"""Who is signed in, and what they may do: roles, the session dependencies every route uses, CSRF,
and the audit helper.

Routes declare the least role they need with one of the ``Annotated`` dependencies::

    @router.get("/api/trends")
    async def trends(user: ManagerDep) -> ...: ...

``StaffDep`` < ``ManagerDep`` < ``AdminDep`` (a manager may do everything staff may, and so on);
``FleetDep``: the fleet board (a user with site grants, or an admin; never a site page).
Without a session an API request gets ``401 {"error": "login_required"}`` and a page request is sent
to ``/login?next=…``; a signed-in user below the route's role gets ``403 {"error": "forbidden"}``.
Every state-changing request (POST, PUT, PATCH, DELETE) must also carry the session's CSRF token,
in the ``X-CSRF-Token`` header (fetch) or a ``csrf_token`` form field (HTML forms).

Roles, users and the policy are :mod:`dashboard.auth.models`; the session store (SQLite) is
:mod:`dashboard.auth.store`; the pure rules (throttle, name and password checks) are
:mod:`dashboard.auth.logic`; the login, logout and user admin pages are :mod:`dashboard.routes.auth`
(the app hands its forbidden page to ``install_auth``, so this module does not import the pages)."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, cast
from urllib.parse import parse_qs, quote

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from dashboard.auth.logic import FailureTally, LoginThrottle, TallyRow, check_password
from dashboard.auth.models import AuthPolicy, Role, User
from dashboard.auth.store import AuthStore, Session
from nurserywatch.clock import Clock

log = logging.getLogger(__name__)

SESSION_COOKIE: Final = "nw_session"
LOGIN_CSRF_COOKIE: Final = "nw_login_csrf"
CSRF_HEADER: Final = "X-CSRF-Token"
CSRF_FIELD: Final = "csrf_token"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
#: The dashboard's own database in ``data_dir``.
DB_NAME: Final = "dashboard.sqlite3"


# ---------------------------------------------------------------- errors


class AuthError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class LoginRequired(AuthError):
    def __init__(self) -> None:
        super().__init__(401, "login_required", "sign in first (POST /login)")


class Forbidden(AuthError):
    def __init__(self, message: str) -> None:
        super().__init__(403, "forbidden", message)


# ---------------------------------------------------------------- the app's auth state


@dataclass
class AuthState:
    store: AuthStore
    clock: Clock
    policy: AuthPolicy
    throttle: LoginThrottle
    #: Refused sign-ins, aggregated for the audit log (one row per address, username and window).
    tally: FailureTally
    #: When the audit log was last pruned past its retention (the app's clock, ms).
    pruned_ms: int | None = None

    def now_ms(self) -> int:
        return self.clock.now_ms()


def auth_state(request: Request) -> AuthState:
    return cast(AuthState, request.app.state.auth)


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "?"


def wants_html(request: Request) -> bool:
    """A browser navigating to a page (redirect it to the login page) rather than a script or
    fetch() calling the API (answer JSON)."""
    if request.url.path.startswith("/api/") or request.method not in SAFE_METHODS:
        return False
    return "text/html" in request.headers.get("accept", "")


# ---------------------------------------------------------------- dependencies


async def _session(request: Request) -> Session | None:
    cached = getattr(request.state, "nw_session", False)
    if cached is not False:
        return cast("Session | None", cached)
    token = request.cookies.get(SESSION_COOKIE)
    state = auth_state(request)
    session = state.store.session(token, state.now_ms(), state.policy) if token else None
    request.state.nw_session = session
    return session


async def _check_csrf(request: Request, session: Session) -> None:
    if request.method in SAFE_METHODS:
        return
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        sent = (await form_fields(request)).get(CSRF_FIELD)
    if not sent or not hmac.compare_digest(sent.encode(), session.csrf_token.encode()):
        raise Forbidden(f"missing or wrong CSRF token (send the {CSRF_HEADER} header or a {CSRF_FIELD} field)")


async def current_user(request: Request) -> User:
    """The signed-in user (any role); 401 without a valid session; CSRF checked on writes."""
    session = await _session(request)
    if session is None:
        raise LoginRequired()
    await _check_csrf(request, session)
    return session.user


async def optional_user(request: Request) -> User | None:
    """The signed-in user or None (pages that also work signed out, such as /login)."""
    session = await _session(request)
    return session.user if session else None


def _require(role: Role) -> Callable[[Request], Awaitable[User]]:
    async def dependency(request: Request) -> User:
        user = await current_user(request)
        if not user.may(role):
            raise Forbidden(f"this needs the {role.label} role; {user.username} is {user.role.label}")
        return user

    dependency.__name__ = f"require_{role.label}"
    dependency.nw_role = role  # type: ignore[attr-defined]  # read by required_role()
    return dependency


require_staff = _require(Role.STAFF)
require_manager = _require(Role.MANAGER)
require_admin = _require(Role.ADMIN)


async def require_fleet(request: Request) -> User:
    """The fleet board's users: some site granted, or an admin (which sites: ``User.may_see_site``)."""
    user = await current_user(request)
    if not user.fleet_access:
        raise Forbidden(f"the fleet board shows the sites granted to a user; {user.username} has none")
    return user


require_fleet.nw_role = Role.OPERATOR  # type: ignore[attr-defined]  # read by required_role()

CurrentUserDep = Annotated[User, Depends(current_user)]
OptionalUserDep = Annotated[User | None, Depends(optional_user)]
StaffDep = Annotated[User, Depends(require_staff)]
ManagerDep = Annotated[User, Depends(require_manager)]
AdminDep = Annotated[User, Depends(require_admin)]
FleetDep = Annotated[User, Depends(require_fleet)]


def route_roles(app: FastAPI) -> list[tuple[str, str, Role | None]]:
    """(method, path, least role or None) for every API route of ``app``, through included routers
    (FastAPI ≥ 0.16x keeps them as lazy ``_IncludedRouter`` entries). For the route × role tests."""
    out: list[tuple[str, str, Role | None]] = []

    def visit(routes: list[Any], prefix: str, extra: list[Role]) -> None:
        for route in routes:
            inner = getattr(route, "original_router", None)
            if inner is not None:
                context = getattr(route, "include_context", None)
                more = [r for d in getattr(context, "dependencies", []) if isinstance(
                    r := getattr(d.dependency, "nw_role", None), Role)]
                visit(inner.routes, prefix + getattr(context, "prefix", ""), extra + more)
            elif hasattr(route, "dependant") and hasattr(route, "methods"):
                own = required_role(route)
                roles = [*extra, *([own] if own else [])]
                for method in sorted(route.methods - {"HEAD"}):
                    out.append((method, prefix + route.path, max(roles) if roles else None))

    visit(list(app.routes), "", [])
    return out


def required_role(route: Any) -> Role | None:
    """The least role a route's dependencies demand (None: public)."""
    found: list[Role] = []

    def walk(dependant: Any) -> None:
        for dep in dependant.dependencies:
            role = getattr(dep.call, "nw_role", None)
            if isinstance(role, Role):
                found.append(role)
            elif dep.call is current_user:  # any signed-in user
                found.append(Role.OPERATOR)
            walk(dep)

    walk(route.dependant)
    return max(found) if found else None


async def form_fields(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as a dict (first value of each field). Parsed
    here rather than with FastAPI's Form(), which needs python-multipart for no gain."""
    body = await request.body()
    try:
        pairs = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[0] for k, v in pairs.items()}


def live_session_check(request: Request) -> Callable[[], bool]:
    """For a long-lived response (the live stream): a function that says whether the request's
    session still holds, re-reading it once a minute, and at once after this dashboard ended any session
    (logout, user disabled, new password). Re-reading also marks the session as used, so a tablet showing
    the live room view is never signed out for being idle; a logout, a disabled user or the end of the
    session's lifetime ends the stream (the page then gets 401 and says it is signed out)."""
    state = auth_state(request)
    token = request.cookies.get(SESSION_COOKIE, "")
    checked = [state.now_ms(), state.store.sessions_ended]

    def alive() -> bool:
        now = state.now_ms()
        ended = state.store.sessions_ended
        if now - checked[0] < 60_000 and ended == checked[1]:
            return True
        checked[0], checked[1] = now, ended
        return state.store.session(token, now, state.policy) is not None

    return alive


# ---------------------------------------------------------------- audit


def audit(request: Request, user: User | None, action: str, target: str = "", detail: str = "") -> None:
    """Append one entry to the audit log: who (``user``, None for an anonymous attempt), when (the
    app's clock), what (``action``, e.g. ``"alert.ack"``), on what (``target``), from which address.
    Never raises into the caller's request: a failed write is logged."""
    state = auth_state(request)
    try:
        state.store.audit(state.now_ms(), user, action, target, detail, client_ip(request))
    except Exception:
        log.exception("could not write the audit entry %s %s", action, target)


def refused_login(request: Request, action: str, username: str, detail: str = "") -> None:
    """A refused sign-in (``login.failed``, ``login.throttled``) for the audit log: the first of its
    address, username and window is written at once, the rest as one counted row when the window ends."""
    state = auth_state(request)
    now = state.now_ms()
    write_tally(state, state.tally.due(now))
    if state.tally.add(client_ip(request), username, action, now):
        audit(request, None, action, username, detail)


def write_tally(state: AuthState, rows: list[TallyRow]) -> None:
    for row in rows:
        try:
            state.store.audit(row.last_ms, None, row.action, row.username,
                              f"{row.count} more from this address since the first (window of "
                              f"{state.policy.failure_window_s // 60} min)", row.ip)  # fmt: skip
        except Exception:
            log.exception("could not write the audit summary %s %s", row.action, row.username)


def flush_refused_logins(state: AuthState) -> None:
    """Write every pending count (the dashboard is stopping)."""
    write_tally(state, state.tally.drain())


def prune_audit_daily(state: AuthState) -> None:
    """Prune the audit log past its retention at start and then at most once a day (on a sign-in)."""
    now = state.now_ms()
    if state.pruned_ms is not None and now - state.pruned_ms < 86_400_000:
        return
    state.pruned_ms = now
    try:
        removed = state.store.prune_audit(now, state.policy.audit_retention_days)
    except Exception:
        log.exception("could not prune the audit log")
        return
    if removed:
        log.info("audit log: %d entries older than %d days removed", removed, state.policy.audit_retention_days)


# ---------------------------------------------------------------- wiring


def open_store(data_dir: Path | None, policy: AuthPolicy) -> AuthStore:
    return AuthStore(data_dir / DB_NAME if data_dir is not None else None, policy)


def install_auth(
    app: FastAPI,
    data_dir: Path | None,
    clock: Clock,
    policy: AuthPolicy | None = None,
    *,
    forbidden_page: Callable[[Request, str], Response],
) -> AuthState:
    """Open the users/sessions/audit database in ``data_dir`` (in memory when None: tests that add
    users from code) and answer auth errors: JSON for the API, a redirect to the login page for a
    browser asking for a page, ``forbidden_page`` (the app's page, dashboard/routes/auth.py) for a
    browser without the role."""
    policy = policy or AuthPolicy()
    throttle = LoginThrottle(policy.failure_window_s * 1000, policy.lockout_s * 1000, policy.max_lockout_s * 1000)
    tally = FailureTally(policy.failure_window_s * 1000)
    state = AuthState(open_store(data_dir, policy), clock, policy, throttle, tally)
    app.state.auth = state
    prune_audit_daily(state)

    async def auth_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AuthError)
        if isinstance(exc, LoginRequired) and wants_html(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        if isinstance(exc, Forbidden) and wants_html(request):
            return forbidden_page(request, exc.message)
        return JSONResponse({"error": exc.code, "message": exc.message}, status_code=exc.status)

    app.add_exception_handler(AuthError, auth_error)
    if data_dir is not None and state.store.count_users() == 0:
        log.warning(
            "no dashboard users yet: nobody can sign in. Create the first admin with "
            "`nurserywatch users create-admin --data-dir %s --username NAME`", data_dir,
        )
    return state


def _allowed(password: str, username: str) -> bool:
    try:
        check_password(password, username)
    except ValueError:
        return False
    return True


#: The accounts `nurserywatch demo` (re)creates, with a fresh random password each start.
DEMO_ACCOUNTS: Final = (("staff", Role.STAFF, "保育士デモ"), ("admin", Role.ADMIN, "管理者デモ"))


def demo_accounts(data_dir: Path, now_ms: int) -> list[tuple[str, str, Role]]:
    """Create (or reset) the demo's accounts in ``data_dir``; returns (username, password, role)."""
    import secrets

    store = open_store(data_dir, AuthPolicy())
    made = []
    try:
        for username, role, display in DEMO_ACCOUNTS:
            password = secrets.token_urlsafe(9)
            while not _allowed(password, username):  # a random one may, rarely, be one kind of character
                password = secrets.token_urlsafe(9)
            if store.get_user(username) is None:
                store.add_user(username, password, role, display, now_ms)
            else:
                store.set_password(username, password, now_ms)
                store.set_disabled(username, False, now_ms)
                store.set_role(username, role, now_ms)
            store.audit(now_ms, None, "user.demo_reset", username, "nurserywatch demo", "demo")
            made.append((username, password, role))
    finally:
        store.close()
    return made
