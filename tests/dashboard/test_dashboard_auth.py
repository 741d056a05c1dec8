"""Login and roles: every route × every role over real HTTP (the table is the app's own route list,
so a route added later is covered without editing this file), CSRF, login throttling and session
expiry on an injected clock, password storage, the audit log, the CLI, and the login page in a real
headless Chromium."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, expect
from starlette.requests import Request
from typer.testing import CliRunner

from dashboard.app import create_app
from dashboard.auth.deps import (
    SESSION_COOKIE,
    auth_state,
    flush_refused_logins,
    live_session_check,
    route_roles,
)
from dashboard.auth.models import Role
from nurserywatch.cli.main import app as cli_app
from nurserywatch.clock import ManualClock
from nurserywatch.contract import AckCommand, ack_topic
from nurserywatch.mqtt import BrokerURL
from tests.support.dashboard_login import ACCOUNTS, FAST, PASSWORD, add_accounts, login
from tests.support.dashboard_server import Dash, ack_of, dashboard_kit, make_alert, next_message, running_dashboard
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
#: The only routes anyone may call without signing in. A new route missing a role dependency fails
#: test_every_route_needs_a_role until it gets one (or is added here, deliberately).
PUBLIC = {("GET", "/healthz"), ("GET", "/login"), ("POST", "/login"), ("POST", "/logout")}
# Prometheus cannot sign in: /metrics takes no session but answers loopback clients only, or a bearer
# token (dashboard/routes/metrics.py, tests/test_metrics.py).
PUBLIC |= {("GET", "/metrics")}
ROLES = list(Role)


def api_routes(app: FastAPI) -> list[tuple[str, str, Role | None]]:
    """(method, path with every parameter filled in, least role) for every route of the app."""
    return [(m, re.sub(r"\{[^}]+\}", "x", path), role) for m, path, role in route_roles(app)]


@pytest.fixture
async def dash(mosquitto: BrokerURL) -> AsyncIterator[Dash]:
    async with running_dashboard(dashboard_kit(f"auth-{uuid.uuid4().hex[:8]}"), mosquitto, role=None) as d:
        yield d


async def client_as(dash: Dash, role: Role | None) -> httpx.AsyncClient:
    http = httpx.AsyncClient(base_url=dash.base, timeout=5)
    if role is not None:
        await login(http, role)
    return http


async def call(http: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request; a streaming answer (the live stream) is closed after its headers."""
    async with http.stream(method, path, **kwargs) as r:
        if not r.headers.get("content-type", "").startswith("text/event-stream"):
            await r.aread()
        return r


# ---------------------------------------------------------------- route × role


def test_every_route_needs_a_role() -> None:
    app = create_app(dashboard_kit("routes"), BrokerURL("127.0.0.1", 1), auth_policy=FAST)
    routes = api_routes(app)
    assert len(routes) >= 10
    unprotected = {(m, p) for m, p, role in routes if role is None}
    assert unprotected == PUBLIC, f"routes without a role dependency: {sorted(unprotected - PUBLIC)}"
    table = {(m, p): role for m, p, role in routes}
    # The roles of issue #6: staff view and acknowledge; admins manage users.
    assert table[("GET", "/")] == Role.STAFF
    assert table[("GET", "/api/events")] == Role.STAFF
    assert table[("POST", "/api/alerts/x/ack")] == Role.STAFF
    assert table[("GET", "/admin/users")] == Role.ADMIN
    assert table[("POST", "/admin/users")] == Role.ADMIN


async def test_every_route_refuses_what_each_role_may_not_do(dash: Dash, mosquitto: BrokerURL) -> None:
    routes = api_routes(create_app(dash.kit, mosquitto, auth_policy=FAST))
    clients = {role: await client_as(dash, role) for role in [None, *ROLES]}
    checked = 0
    try:
        for method, path, need in routes:
            if need is None:
                continue
            # Signed out: JSON 401 for a script, the login page for a browser asking for a page.
            r = await call(clients[None], method, path)
            assert (r.status_code, r.json()["error"]) == (401, "login_required"), (method, path)
            if method == "GET" and not path.startswith("/api/"):
                r = await call(clients[None], method, path, headers={"accept": "text/html"})
                assert r.status_code == 303 and r.headers["location"].startswith("/login?next=%2F"), (method, path)
            for role in ROLES:
                r = await call(clients[role], method, path)
                if role < need:
                    assert (r.status_code, r.json()["error"]) == (403, "forbidden"), (method, path, role)
                else:
                    assert r.status_code not in (401, 403), (method, path, role, r.status_code)
                checked += 1
            if method != "GET":
                # Allowed role, no CSRF token: refused.
                http = clients[Role.ADMIN]
                token = http.headers.pop("X-CSRF-Token")
                r = await call(http, method, path)
                http.headers["X-CSRF-Token"] = token
                assert (r.status_code, r.json()["error"]) == (403, "forbidden"), (method, path)
                assert "CSRF" in r.json()["message"]
    finally:
        for c in clients.values():
            await c.aclose()
    assert checked >= 30


async def test_wrong_role_on_a_page_gets_a_readable_403(dash: Dash) -> None:
    http = await client_as(dash, Role.STAFF)
    try:
        r = await http.get("/admin/users", headers={"accept": "text/html"})
        assert r.status_code == 403 and r.headers["content-type"].startswith("text/html")
        assert "権限がありません" in r.text
        assert "ユーザー管理" not in r.text  # the navigation shows staff only what staff may open
    finally:
        await http.aclose()


async def test_acknowledgement_uses_the_session_name_and_is_audited(dash: Dash) -> None:
    await login(dash.http, Role.STAFF)
    await dash.publish_alert(make_alert("au1"))

    async def listed() -> bool:
        return await dash.alert_ids() == ["au1"]

    await wait_until(listed)
    await dash.mqtt.subscribe(ack_topic(dash.site), qos=1)
    r = await dash.http.post("/api/alerts/au1/ack", json={"by": "なりすまし"})
    assert r.status_code == 202
    assert ack_of(await next_message(dash.mqtt)) == AckCommand(alert_id="au1", by="田中")
    store = auth_entries(dash.data_dir)
    ack = next(e for e in store if e["action"] == "alert.ack")
    assert (ack["username"], ack["role"], ack["target"], ack["ip"]) == ("tanaka", "staff", "au1", "127.0.0.1")
    assert "なりすまし" in ack["detail"] and "ignored" in ack["detail"]
    assert any(e["action"] == "login" and e["username"] == "tanaka" for e in store)


def auth_entries(data_dir: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(data_dir / "dashboard.sqlite3") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM audit ORDER BY id")]


# ---------------------------------------------------------------- in-process app on a manual clock


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[tuple[FastAPI, ManualClock, httpx.AsyncClient]]:
    """The app in-process (ASGI, no broker needed for auth) on a clock the test moves."""
    clock = ManualClock()
    add_accounts(tmp_path, clock.now_ms())
    kit = dashboard_kit("local")
    app = create_app(kit, BrokerURL("127.0.0.1", 1), clock=clock, data_dir=tmp_path, auth_policy=FAST)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        yield app, clock, http


async def try_login(http: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await http.post("/login", json={"username": username, "password": password})


async def test_login_throttle_per_username_on_an_injected_clock(
    local: tuple[FastAPI, ManualClock, httpx.AsyncClient],
) -> None:
    app, clock, http = local
    wrong = [await try_login(http, "tanaka", "wrong password!") for _ in range(4)]
    assert {r.status_code for r in wrong} == {401}
    # An unknown user is answered exactly like a wrong password: nothing says whether it exists.
    ghost = await try_login(http, "ghost", "wrong password!")
    assert (ghost.status_code, ghost.json()) == (wrong[0].status_code, wrong[0].json())

    fifth = await try_login(http, "tanaka", "wrong password!")
    assert fifth.status_code == 401
    # Five failures: locked for 30 s, even with the right password.
    locked = await try_login(http, "tanaka", PASSWORD)
    assert (locked.status_code, locked.json()["error"], locked.headers["retry-after"]) == (
        429, "too_many_attempts", "30",
    )
    # Other accounts are not affected.
    assert (await try_login(http, "sato", PASSWORD)).status_code == 200
    clock.advance(29_000)
    assert (await try_login(http, "tanaka", PASSWORD)).status_code == 429
    clock.advance(1_000)
    # A further failure while over the limit doubles the lockout.
    assert (await try_login(http, "tanaka", "wrong again!!")).status_code == 401
    r = await try_login(http, "tanaka", PASSWORD)
    assert (r.status_code, r.headers["retry-after"]) == (429, "60")
    clock.advance(60_000)
    assert (await try_login(http, "tanaka", PASSWORD)).status_code == 200
    # Success forgets the username's failures.
    assert (await try_login(http, "tanaka", "wrong password!")).status_code == 401
    assert (await try_login(http, "tanaka", PASSWORD)).status_code == 200

    # Refused sign-ins are aggregated: the first of each address, username and window at once, the rest
    # as one counted row when the window ends (or the dashboard stops).
    entries = auth_state_of(app).store.audit_entries(100)
    assert sorted((e.action, e.target) for e in entries if e.action != "login") == [
        ("login.failed", "ghost"), ("login.failed", "tanaka"), ("login.throttled", "tanaka"),
    ]
    flush_refused_logins(auth_state_of(app))
    refused = [(e.action, e.target, e.detail) for e in auth_state_of(app).store.audit_entries(100)
               if e.action != "login"][:2]  # fmt: skip
    assert sorted(refused) == [
        ("login.failed", "tanaka", "6 more from this address since the first (window of 15 min)"),
        ("login.throttled", "tanaka", "2 more from this address since the first (window of 15 min)"),
    ]


def auth_state_of(app: FastAPI) -> Any:
    return app.state.auth


async def test_login_throttle_per_address(local: tuple[FastAPI, ManualClock, httpx.AsyncClient]) -> None:
    _, clock, http = local
    for n in range(20):  # a spray over many usernames from one address
        assert (await try_login(http, f"user{n}", "wrong password!")).status_code == 401
    assert (await try_login(http, "tanaka", PASSWORD)).status_code == 429
    clock.advance(30_000)
    assert (await try_login(http, "tanaka", PASSWORD)).status_code == 200


async def test_session_idle_timeout_and_lifetime(local: tuple[FastAPI, ManualClock, httpx.AsyncClient]) -> None:
    _, clock, http = local
    await login(http, Role.STAFF)
    assert (await http.get("/api/me")).json()["username"] == "tanaka"
    clock.advance(FAST.session_idle_s * 1000 - 1000)
    assert (await http.get("/api/me")).status_code == 200  # used just in time: idle timer restarts
    clock.advance(FAST.session_idle_s * 1000 - 1000)
    assert (await http.get("/api/me")).status_code == 200
    clock.advance(FAST.session_idle_s * 1000)
    assert (await http.get("/api/me")).status_code == 401  # left alone for an hour

    await login(http, Role.STAFF)
    for _ in range(FAST.session_lifetime_s // 1800 - 1):  # used every 30 min ...
        clock.advance(1_800_000)
        assert (await http.get("/api/me")).status_code == 200
    clock.advance(1_800_000)
    assert (await http.get("/api/me")).status_code == 401  # ... still ends after 12 h


async def test_passwords_and_tokens_are_not_stored_in_the_clear(
    local: tuple[FastAPI, ManualClock, httpx.AsyncClient], tmp_path: Path
) -> None:
    _, _, http = local
    await login(http, Role.ADMIN)
    token = http.cookies[SESSION_COOKIE]
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("dashboard.sqlite3*"))
    assert PASSWORD.encode() not in raw
    assert token.encode() not in raw
    with sqlite3.connect(tmp_path / "dashboard.sqlite3") as db:
        hashes = [h for (h,) in db.execute("SELECT password_hash FROM users")]
        assert len(hashes) == len(ACCOUNTS) and all(h.startswith("$argon2id$") for h in hashes)
        # The audit log is append-only.
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("UPDATE audit SET action = 'nothing'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("DELETE FROM audit")


async def test_cookie_flags_and_csrf_on_login_form(local: tuple[FastAPI, ManualClock, httpx.AsyncClient]) -> None:
    _, _, http = local
    r = await try_login(http, "tanaka", PASSWORD)
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http here; set when served over https
    await http.post("/logout", headers={"X-CSRF-Token": r.json()["csrf_token"]})
    assert (await http.get("/api/me")).status_code == 401

    # The form needs the token of its own page (double submit): a cross-site form has neither.
    form = {"username": "tanaka", "password": PASSWORD, "csrf_token": "forged"}
    r = await http.post("/login", data=form)
    assert r.status_code == 403 and "有効期限" in r.text
    page = await http.get("/login")
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    r = await http.post("/login", data={**form, "csrf_token": token, "next": "//evil.example/"})
    assert (r.status_code, r.headers["location"]) == (303, "/")  # never an open redirect
    assert (await http.get("/api/me")).json()["role"] == "staff"


async def test_admin_form_changes_users_and_they_apply_at_once(
    local: tuple[FastAPI, ManualClock, httpx.AsyncClient],
) -> None:
    app, _, admin = local
    me = await login(admin, Role.ADMIN)
    form = {"csrf_token": me["csrf_token"]}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as staff:
        await login(staff, Role.STAFF)
        r = await admin.post("/admin/users/tanaka/role", data={**form, "role": "manager"})
        assert (r.status_code, r.headers["location"]) == (303, "/admin/users?lang=ja&done=role")
        assert (await staff.get("/api/me")).json()["role"] == "manager"  # same session, new role
        r = await admin.post("/admin/users/tanaka/disable", data=form)
        assert r.status_code == 303
        assert (await staff.get("/api/me")).status_code == 401  # disabled: session gone
        assert (await try_login(staff, "tanaka", PASSWORD)).status_code == 401

    r = await admin.post(
        "/admin/users", data={**form, "username": "Suzuki", "display_name": "鈴木", "role": "staff",
                              "password": "another long one"}
    )
    assert r.status_code == 303
    async with httpx_client(app) as other:
        assert (await try_login(other, "suzuki", "another long one")).status_code == 200
    # Bad input: the page again with the reason, nothing changed.
    r = await admin.post("/admin/users", data={**form, "username": "x y", "role": "staff", "password": "p" * 12})
    assert r.status_code == 400 and "username" in r.text
    r = await admin.post("/admin/users/boss/disable", data=form)
    assert r.status_code == 400 and "last enabled admin" in r.text
    page = await admin.get("/admin/users")
    assert "suzuki" in page.text and "鈴木" in page.text and "user.disable" in page.text

    actions = [(e.action, e.target, e.username) for e in auth_state(request_of(app)).store.audit_entries(100)]
    assert ("user.role", "tanaka", "boss") in actions
    assert ("user.disable", "tanaka", "boss") in actions
    assert ("user.add", "suzuki", "boss") in actions


def httpx_client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def request_of(app: FastAPI, cookie: str = "") -> Request:
    headers = [(b"cookie", f"{SESSION_COOKIE}={cookie}".encode())] if cookie else []
    return Request({"type": "http", "app": app, "headers": headers, "method": "GET", "path": "/", "query_string": b""})


async def test_live_stream_keeps_its_session_and_ends_with_it(
    local: tuple[FastAPI, ManualClock, httpx.AsyncClient],
) -> None:
    app, clock, http = local
    me = await login(http, Role.STAFF)
    alive = live_session_check(request_of(app, http.cookies[SESSION_COOKIE]))
    for _ in range(3 * 60):  # three hours of an open stream, no other request: still signed in
        clock.advance(60_000)
        assert alive()
    assert (await http.get("/api/me")).status_code == 200
    await http.post("/logout", headers={"X-CSRF-Token": me["csrf_token"]})
    clock.advance(60_000)
    assert not alive()  # signed out: the stream ends


# ---------------------------------------------------------------- CLI


def test_cli_creates_the_first_admin_and_manages_users(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("a long enough password\n")

    # The first admin through the real entry point; the rest in-process (same typer app, 10× faster).
    r = subprocess.run(
        [sys.executable, "-m", "nurserywatch", "users", "create-admin", "--data-dir", str(tmp_path), "--username",
         "Root", "--password-file", str(pw)], capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert r.returncode == 0, r.stderr

    @dataclass
    class Ran:
        returncode: int
        stdout: str
        stderr: str

    def cli(*args: str, stdin: str | None = None) -> Ran:
        res = CliRunner().invoke(cli_app, ["users", *args, "--data-dir", str(tmp_path)], input=stdin)
        return Ran(res.exit_code, res.stdout, res.stderr)

    r = cli("add", "--username", "kato", "--role", "staff", "--display-name", "加藤", stdin="typed password 1\n" * 2)
    assert r.returncode == 0, r.stderr
    r = cli("add", "--username", "kato", "--role", "staff", "--password-file", str(pw))
    assert (r.returncode, r.stderr.strip()) == (2, "error: user 'kato' already exists")
    r = cli("add", "--username", "x", "--role", "boss", "--password-file", str(pw))
    assert r.returncode == 2 and "unknown role 'boss'" in r.stderr
    (tmp_path / "short").write_text("short\n")
    r = cli("passwd", "--username", "kato", "--password-file", str(tmp_path / "short"))
    assert r.returncode == 2 and "at least 10 characters" in r.stderr
    r = cli("disable", "--username", "root")
    assert r.returncode == 2 and "last enabled admin" in r.stderr
    assert cli("role", "--username", "kato", "--role", "manager").returncode == 0
    assert cli("list").stdout.splitlines() == ["kato\tmanager\tenabled\t加藤", "root\tadmin\tenabled\t"]
    entries = auth_entries(tmp_path)
    assert [(e["action"], e["target"], e["ip"]) for e in entries] == [
        ("user.add", "root", "cli"), ("user.add", "kato", "cli"), ("user.role", "kato", "cli"),
    ]
    # The prompt's password works; the admin from the file too.
    from dashboard.auth.deps import open_store
    from dashboard.auth.models import AuthPolicy

    store = open_store(tmp_path, AuthPolicy())
    assert store.check_password("kato", "typed password 1", 0) is not None
    assert store.check_password("root", "a long enough password", 0) is not None
    store.close()


# ---------------------------------------------------------------- the login page in Chromium


async def test_login_page_in_the_browser(browser: Browser, dash: Dash) -> None:
    page = await browser.new_page(locale="ja-JP", viewport={"width": 1024, "height": 700})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(dash.base + "/admin/users")
    await page.wait_for_url("**/login?next=%2Fadmin%2Fusers")
    await expect(page.locator("h2")).to_have_text("ログイン")
    await expect(page.locator(".pages a")).to_have_count(0)  # no navigation before signing in

    # A wrong password: one generic message, the username kept, the password not.
    await page.fill("#username", "boss")
    await page.fill("#password", "not the password")
    await page.click('[data-testid="login-submit"]')
    await expect(page.locator('[data-testid="login-error"]')).to_have_text(
        "ログインできませんでした。ユーザー名とパスワードを確認してください。"
    )
    await expect(page.locator("#username")).to_have_value("boss")
    await expect(page.locator("#password")).to_have_value("")
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-login-failed.png"), full_page=True)

    await page.fill("#password", PASSWORD)
    await page.click('[data-testid="login-submit"]')
    await page.wait_for_url("**/admin/users")  # back where the browser wanted to go
    await expect(page.locator('[data-testid="signed-in"]')).to_contain_text("園長")
    await expect(page.locator('[data-testid="signed-in"]')).to_have_attribute("data-role", "admin")

    # The admin adds a staff member with the page's form (its hidden CSRF field).
    form = page.locator('[data-testid="add-user"]')
    await form.locator('input[name="username"]').fill("yamada")
    await form.locator('input[name="display_name"]').fill("山田")
    await form.locator('input[name="password"]').fill("yamada's password")
    await form.locator('button[type="submit"]').click()
    # The password rule, in the page's language: not the username.
    refused = page.locator('[data-testid="admin-error"]')
    await expect(refused).to_contain_text("パスワードにユーザー名を含めないでください。")
    form = page.locator('[data-testid="add-user"]')
    await form.locator('input[name="username"]').fill("yamada")
    await form.locator('input[name="display_name"]').fill("山田")
    await form.locator('input[name="password"]').fill("hinata no hirune 7")
    await form.locator('button[type="submit"]').click()
    await expect(page.locator('[data-testid="admin-done"]')).to_be_visible()
    await expect(page.locator('tr[data-user="yamada"]')).to_have_attribute("data-role", "staff")
    await page.screenshot(path=str(ARTIFACTS / "dashboard-admin-users.png"), full_page=True)

    await page.click('[data-testid="logout"]')
    await page.wait_for_url("**/login?lang=ja")
    await page.goto(dash.base + "/")
    await page.wait_for_url("**/login?next=%2F")
    # English login page.
    await page.goto(dash.base + "/login?lang=en")
    await expect(page.locator("h2")).to_have_text("Sign in")
    assert errors == []
    assert ACCOUNTS[Role.ADMIN][0] == "boss"
