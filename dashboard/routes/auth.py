"""Login, logout, who-am-I, and the admin's user page (with the newest audit entries).

``POST /login`` takes either a form (the login page; protected by a double-submit token: the
``nw_login_csrf`` cookie must equal the form's ``csrf_token``) or JSON ``{"username", "password"}``
(scripts and tests; a cross-site page cannot send JSON without a CORS preflight, which this app never
allows). Every failure gets the same message, whether or not the user exists."""

from __future__ import annotations

import asyncio
import hmac
import secrets
from datetime import UTC, datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dashboard.auth.deps import (
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    AdminDep,
    AuthState,
    CurrentUserDep,
    _check_csrf,
    _session,
    audit,
    auth_state,
    client_ip,
    form_fields,
    prune_audit_daily,
    refused_login,
)
from dashboard.auth.models import Role, User
from dashboard.auth.store import UserError
from dashboard.i18n import Lang, catalogue, pick_lang
from dashboard.pages import NAV, Header, NavItem, page_context, render

router = APIRouter()
NAV.append(NavItem("nav.admin_users", "/admin/users", Role.ADMIN, order=70))


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(max_length=64)
    password: str = Field(max_length=256)


def _kit(request: Request) -> Header:
    """The page header's place: the site's kit, or the fleet board's header (no kit at the centre)."""
    header = getattr(request.app.state, "header", None)
    return cast(Header, header if header is not None else request.app.state.link.state.kit)


def _lang(request: Request) -> Lang:
    return pick_lang(request.query_params.get("lang"), cast(Lang, request.app.state.default_lang))


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never an open redirect to another host."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _cookie_secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session_cookie(request: Request, response: Response, token: str, max_age_s: int) -> None:
    # SameSite=Strict: nothing links into the dashboard from other sites, so a cross-site request
    # never needs the session (see docs/dashboard.md, "Login and roles").
    response.set_cookie(
        SESSION_COOKIE, token, max_age=max_age_s, httponly=True, samesite="strict",
        secure=_cookie_secure(request), path="/",
    )


def forbidden_page(request: Request, message: str) -> HTMLResponse:
    lang = _lang(request)
    context = page_context(request, _kit(request), lang, "", message=message)
    response = render(request, "forbidden.html", context)
    response.status_code = 403
    return response


def error_page(
    request: Request, status: int, code: str, message: str, text: tuple[str, dict[str, str]] | None
) -> HTMLResponse:
    """A refused page request (bad input) for a browser: the error in the page's language when the
    error names a catalogue ``text``, else its (English) message."""
    lang = _lang(request)
    shown = catalogue(lang)[text[0]].format(**text[1]) if text else message
    context = page_context(request, _kit(request), lang, "", code=code, text=shown)
    response = render(request, "error.html", context)
    response.status_code = status
    return response


# ---------------------------------------------------------------- login / logout


def _login_page(
    request: Request, *, status: int = 200, error: str = "", username: str = "", next_: str = "/"
) -> Response:
    lang = _lang(request)
    token = secrets.token_urlsafe(24)
    context = page_context(
        request, _kit(request), lang, "", login_csrf=token, error=error, username=username, next=_safe_next(next_)
    )
    response = render(request, "login.html", context)
    response.status_code = status
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, max_age=3600, httponly=True, samesite="strict", secure=_cookie_secure(request),
        path="/login",
    )
    return response


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
async def login_page(request: Request, next: str = "/") -> Response:
    if await _session(request) is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return _login_page(request, next_=next)


def pair_key(ip: str, username: str) -> str:
    return f"pair:{ip} {username.lower()}"


def throttle_keys(state: AuthState, username: str, ip: str, now_ms: int) -> tuple[dict[str, int], dict[str, int]]:
    """(keys a failure counts on, keys that can refuse this attempt), each with its limit. Counted: this
    username from this address, this address, this username from anywhere. Checked: all three, except
    that the username's own count is not checked from an address the user signed in from lately — so an
    attacker elsewhere can slow an account down for strangers but never lock staff out of their tablet."""
    policy, name = state.policy, username.lower()
    counted = {pair_key(ip, name): policy.user_failures, f"ip:{ip}": policy.ip_failures,
               f"user:{name}": policy.user_wide_failures}  # fmt: skip
    since = now_ms - policy.known_address_days * 86_400_000
    known = bool(name) and state.store.signed_in_from(name, ip, since)
    checked = {k: v for k, v in counted.items() if not (known and k.startswith("user:"))}
    return counted, checked


@router.post("/login", include_in_schema=False)
async def login(request: Request) -> Response:
    state = auth_state(request)
    t = catalogue(_lang(request))
    is_json = request.headers.get("content-type", "").startswith("application/json")
    if is_json:
        try:
            body = LoginBody.model_validate_json(await request.body())
        except ValidationError:
            return JSONResponse({"error": "invalid_request", "message": "send {\"username\", \"password\"}"}, 422)
        username, password, next_ = body.username.strip(), body.password, "/"
    else:
        fields = await form_fields(request)
        username, password = fields.get("username", "").strip()[:64], fields.get("password", "")[:256]
        next_ = fields.get("next", "/")
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not cookie or not hmac.compare_digest(cookie.encode(), fields.get(CSRF_FIELD, "").encode()):
            return _login_page(request, status=403, error=t["login.bad_form"], username=username, next_=next_)

    now = state.now_ms()
    ip = client_ip(request)
    counted, checked = throttle_keys(state, username, ip, now)
    throttle = state.throttle
    wait_ms = throttle.retry_after_ms(checked, now)
    if wait_ms > 0:
        refused_login(request, "login.throttled", username, f"retry after {wait_ms // 1000} s")
        wait_s = -(-wait_ms // 1000)
        headers = {"Retry-After": str(wait_s)}
        if is_json:
            message = f"too many failed sign-ins; try again in {wait_s} s"
            return JSONResponse({"error": "too_many_attempts", "message": message}, 429, headers=headers)
        page = _login_page(request, status=429, error=t["login.throttled"].format(n=wait_s), username=username,
                           next_=next_)
        page.headers.update(headers)
        return page

    # argon2 takes ~0.1 s of CPU on purpose: off the event loop, so live streams keep flowing.
    user = await asyncio.to_thread(state.store.check_password, username, password, now) if username else None
    if user is None:
        throttle.failed(counted, now)
        refused_login(request, "login.failed", username)
        if is_json:
            return JSONResponse({"error": "login_failed", "message": "wrong username or password"}, 401)
        return _login_page(request, status=401, error=t["login.failed"], username=username, next_=next_)

    throttle.succeeded(pair_key(ip, user.username))  # not the username's own count: see throttle_keys
    prune_audit_daily(state)
    old = await _session(request)
    if old is not None:  # a fresh token on every login: no session fixation
        state.store.end_session(old.token_hash)
    token, session = state.store.create_session(user, now, ip)
    request.state.nw_session = session
    audit(request, user, "login", user.username)
    response: Response
    if is_json:
        response = JSONResponse(_me(user, session.csrf_token))
    else:
        response = RedirectResponse(_safe_next(next_), status_code=303)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    set_session_cookie(request, response, token, state.policy.session_lifetime_s)
    return response


@router.post("/logout", include_in_schema=False)
async def logout(request: Request) -> Response:
    """Ends the session (CSRF-checked: a cross-site page cannot sign staff out mid-nap)."""
    session = await _session(request)
    if session is not None:
        await _check_csrf(request, session)
        auth_state(request).store.end_session(session.token_hash)
        audit(request, session.user, "logout", session.user.username)
    wants_json = not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
    response: Response = (
        JSONResponse({"status": "signed_out"}) if wants_json
        else RedirectResponse(f"/login?lang={_lang(request)}", status_code=303)
    )
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _me(user: User, csrf_token: str) -> dict[str, Any]:
    return {"username": user.username, "display_name": user.display_name, "role": user.role.label,
            "csrf_token": csrf_token}


@router.get("/api/me")
async def me(request: Request, user: CurrentUserDep) -> dict[str, Any]:
    """Who is signed in, and the CSRF token to send with writes."""
    session = await _session(request)
    assert session is not None
    return _me(user, session.csrf_token)


# ---------------------------------------------------------------- user admin


def _fmt_time(kit: Header) -> Any:
    zone = ZoneInfo(kit.timezone)

    def fmt(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")

    return fmt


def _users_page(request: Request, *, status: int = 200, done: str = "", error: str = "") -> HTMLResponse:
    state = auth_state(request)
    kit = _kit(request)
    context = page_context(
        request, kit, _lang(request), "nav.admin_users",
        users=state.store.list_users(), audit=state.store.audit_entries(100), roles=list(Role),
        done=done, error=error, fmt_time=_fmt_time(kit), fleet_mode=_fleet_mode(request),
    )
    response = render(request, "admin_users.html", context)
    response.status_code = status
    return response


@router.get("/admin/users", response_class=HTMLResponse, include_in_schema=False)
async def users_page(request: Request, user: AdminDep, done: str = "") -> HTMLResponse:
    # `done` is echoed only as one of our own action names, never as free text from the URL.
    return _users_page(request, done=done if done in {"added", "role", "sites", "disabled", "enabled"} else "")


def _done(request: Request, what: str) -> RedirectResponse:
    return RedirectResponse(f"/admin/users?lang={_lang(request)}&done={what}", status_code=303)


@router.post("/admin/users", include_in_schema=False)
async def add_user(request: Request, user: AdminDep) -> Response:
    f = await form_fields(request)
    state = auth_state(request)
    try:
        role = Role.parse(f.get("role", ""))
        added = await asyncio.to_thread(
            state.store.add_user, f.get("username", "").strip(), f.get("password", ""), role,
            f.get("display_name", ""), state.now_ms(),
        )
    except UserError as exc:
        shown = catalogue(_lang(request))[exc.text[0]].format(**exc.text[1]) if exc.text else str(exc)
        return _users_page(request, status=400, error=shown)
    except ValueError as exc:
        return _users_page(request, status=400, error=str(exc))
    audit(request, user, "user.add", added.username, f"role={role.label} display_name={added.display_name}")
    if _fleet_mode(request) and f.get("sites", "").strip():
        return _set_sites(request, added.username, user, f.get("sites", ""), "added")
    return _done(request, "added")


def _fleet_mode(request: Request) -> bool:
    """The dashboard runs as the fleet board (dashboard/fleet_app.py): users have site grants there."""
    return getattr(request.app.state, "fleet", None) is not None


@router.post("/admin/users/{username}/sites", include_in_schema=False)
async def change_sites(request: Request, username: str, user: AdminDep) -> Response:
    """The fleet sites a user may see (space- or comma-separated ids, ``*`` for all, empty for none)."""
    return _set_sites(request, username, user, (await form_fields(request)).get("sites", ""), "sites")


def _set_sites(request: Request, username: str, user: User, text: str, done: str) -> Response:
    state = auth_state(request)
    try:
        changed = state.store.set_sites(username, text.replace(",", " ").split(), state.now_ms())
    except UserError as exc:
        return _users_page(request, status=400, error=str(exc))
    audit(request, user, "user.sites", changed.username, " ".join(sorted(changed.sites)) or "(none)")
    return _done(request, done)


@router.post("/admin/users/{username}/role", include_in_schema=False)
async def change_role(request: Request, username: str, user: AdminDep) -> Response:
    f = await form_fields(request)
    state = auth_state(request)
    try:
        role = Role.parse(f.get("role", ""))
        before = state.store.get_user(username)
        changed = state.store.set_role(username, role, state.now_ms())
    except (UserError, ValueError) as exc:
        return _users_page(request, status=400, error=str(exc))
    was = before.user.role.label if before else "?"
    audit(request, user, "user.role", changed.username, f"{was} -> {role.label}")
    return _done(request, "role")


@router.post("/admin/users/{username}/disable", include_in_schema=False)
async def disable_user(request: Request, username: str, user: AdminDep) -> Response:
    return _set_disabled(request, username, user, True)


@router.post("/admin/users/{username}/enable", include_in_schema=False)
async def enable_user(request: Request, username: str, user: AdminDep) -> Response:
    return _set_disabled(request, username, user, False)


def _set_disabled(request: Request, username: str, user: User, disabled: bool) -> Response:
    state = auth_state(request)
    try:
        state.store.set_disabled(username, disabled, state.now_ms())
    except UserError as exc:
        return _users_page(request, status=400, error=str(exc))
    audit(request, user, "user.disable" if disabled else "user.enable", username.lower())
    return _done(request, "disabled" if disabled else "enabled")
