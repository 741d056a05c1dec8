"""What outside testing broke in sign-in and headers (issue 13, item 6): forwarded addresses believed
from anyone on 127.0.0.1, staff locked out by strangers, one audit row per refused sign-in and no
retention, a length-only password rule, the records sheet's roles, missing security headers, and a
public OpenAPI schema."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import Browser
from typer.testing import CliRunner

from dashboard.app import create_app, serve_dashboard
from dashboard.auth.deps import flush_refused_logins, route_roles
from dashboard.auth.logic import PasswordRejected, check_password
from dashboard.auth.models import Role
from dashboard.auth.store import AuthStore
from gateway.db.store import Store
from nurserywatch.cli.main import app as cli_app
from nurserywatch.clock import ManualClock
from nurserywatch.mqtt import BrokerURL
from nurserywatch.ports import free_port
from tests.support.dashboard_login import ACCOUNTS, FAST, PASSWORD, add_accounts, login
from tests.support.dashboard_server import dashboard_kit
from tests.support.waiting import wait_until

NO_BROKER = BrokerURL("127.0.0.1", 1)  # sign-in needs no broker; the MQTT link just keeps retrying
DAY_MS = 86_400_000


@contextlib.asynccontextmanager
async def served(trusted_proxies: tuple[str, ...] = (), gateway_db: Path | None = None) -> AsyncIterator[str]:
    """The real server (uvicorn through serve_dashboard) on a free port; its base URL."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="nw-dash-") as data:
        add_accounts(Path(data))
        task = asyncio.create_task(serve_dashboard(
            dashboard_kit("harden"), NO_BROKER, "127.0.0.1", port, data_dir=Path(data), auth_policy=FAST,
            trusted_proxies=trusted_proxies, gateway_db=gateway_db,
        ))  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(base_url=base, timeout=5) as http:

                async def up() -> bool:
                    with contextlib.suppress(httpx.TransportError):
                        return (await http.get("/login")).status_code == 200
                    return False

                await wait_until(up, "dashboard up", 10)
            yield base
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def audit_rows(data_dir: Path) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(data_dir / "dashboard.sqlite3")) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM audit ORDER BY id")]


# ---------------------------------------------------------------- forwarded headers


@pytest.mark.parametrize("trusted", [False, True])
async def test_forwarded_for_is_believed_only_from_a_configured_proxy(trusted: bool) -> None:
    async with served(("127.0.0.1",) if trusted else ()) as base, httpx.AsyncClient(base_url=base) as http:
        statuses = []
        for n in range(25):  # a client picking a fresh X-Forwarded-For each time, to dodge the address limit
            r = await http.post("/login", json={"username": f"nobody{n}", "password": "wrong password!"},
                                headers={"X-Forwarded-For": f"203.0.113.{n}"})  # fmt: skip
            statuses.append(r.status_code)
        me = await http.post("/login", json={"username": "tanaka", "password": PASSWORD},
                             headers={"X-Forwarded-For": "203.0.113.200"})  # fmt: skip
    if trusted:  # behind nginx: each forwarded address is its own client
        assert set(statuses) == {401} and me.status_code == 200
    else:  # the TCP peer is the client, whatever the header says: 20 failures lock this address
        assert statuses[:20] == [401] * 20 and set(statuses[20:]) == {429}
        assert me.status_code == 429


# ---------------------------------------------------------------- nobody locks staff out


@contextlib.asynccontextmanager
async def from_address(app: FastAPI, ip: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(ip, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as http:
        yield http


@pytest.fixture
def local(tmp_path: Path) -> tuple[FastAPI, ManualClock]:
    clock = ManualClock()
    add_accounts(tmp_path, clock.now_ms())
    return create_app(dashboard_kit("local"), NO_BROKER, clock=clock, data_dir=tmp_path, auth_policy=FAST), clock


async def test_strangers_cannot_lock_staff_out_of_their_tablet(local: tuple[FastAPI, ManualClock]) -> None:
    app, clock = local
    tablet, username = "10.0.0.5", ACCOUNTS[Role.STAFF][0]
    async with from_address(app, tablet) as http:
        await login(http, Role.STAFF)  # the nap room's tablet: a known-good address for tanaka
    clock.advance(3_600_000)
    # An attacker rotating addresses, staying under the per-address limits: 4 wrong passwords from each.
    for n in range(10):
        async with from_address(app, f"10.0.1.{n}") as attacker:
            for _ in range(4):
                r = await attacker.post("/login", json={"username": username, "password": "guess guess 1"})
                assert r.status_code in (401, 429)
    # The tablet still signs in at once with the right password ...
    async with from_address(app, tablet) as http:
        assert (await http.post("/login", json={"username": username, "password": PASSWORD})).status_code == 200
    # ... while a stranger's address is slowed down for this account, even with the right password.
    async with from_address(app, "10.0.2.1") as stranger:
        r = await stranger.post("/login", json={"username": username, "password": PASSWORD})
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    # Wrong passwords from the tablet itself still lock the tablet (per address and username).
    async with from_address(app, tablet) as http:
        for _ in range(FAST.user_failures):
            r = await http.post("/login", json={"username": username, "password": "typo typo 1"})
            assert r.status_code == 401
        assert (await http.post("/login", json={"username": username, "password": PASSWORD})).status_code == 429


# ---------------------------------------------------------------- audit: aggregated, with a retention


async def test_300_refused_sign_ins_make_a_few_counted_rows(local: tuple[FastAPI, ManualClock], tmp_path: Path) -> None:
    app, clock = local
    async with from_address(app, "192.0.2.7") as http:
        for _ in range(300):
            r = await http.post("/login", json={"username": "boss", "password": "not the password"})
            assert r.status_code in (401, 429)
            clock.advance(100)
    state = auth_state_of(app)
    refused = [r for r in audit_rows(tmp_path) if r["action"].startswith("login.")]
    assert [(r["action"], r["target"], r["ip"]) for r in refused] == [
        ("login.failed", "boss", "192.0.2.7"), ("login.throttled", "boss", "192.0.2.7"),
    ]
    flush_refused_logins(state)  # what the dashboard does when it stops (or the window ends)
    refused = [r for r in audit_rows(tmp_path) if r["action"].startswith("login.")]
    assert len(refused) == 4
    counted = sum(1 + int(r["detail"].split()[0]) if "more from this address" in r["detail"] else 0 for r in refused)
    assert counted == 300 - 2 + 2  # the two firsts written at once, the other 298 counted in two rows


def auth_state_of(app: FastAPI) -> Any:
    return app.state.auth


def test_audit_retention_prunes_old_entries_as_an_audited_operation(tmp_path: Path) -> None:
    store = AuthStore(tmp_path / "dashboard.sqlite3", FAST)
    now = 1_000 * DAY_MS
    store.audit(now - 500 * DAY_MS, None, "login", "old", "", "10.0.0.1")
    store.audit(now - 401 * DAY_MS, None, "login", "older than 400 days", "", "10.0.0.1")
    store.audit(now - 399 * DAY_MS, None, "login", "kept", "", "10.0.0.1")
    with contextlib.closing(sqlite3.connect(tmp_path / "dashboard.sqlite3")) as db, pytest.raises(
        sqlite3.DatabaseError, match="append-only"
    ):
        db.execute("DELETE FROM audit")  # not by hand, not even the old ones
    assert store.prune_audit(now, 400) == 2
    entries = store.audit_entries()
    assert [e.target for e in entries if e.action == "login"] == ["kept"]
    (prune,) = [e for e in entries if e.action == "audit.prune"]
    assert prune.detail == "2 entries older than 400 days removed (retention)"
    assert store.prune_audit(now, 400) == 0 and store.prune_audit(now, 0) == 0
    store.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "dashboard.sqlite3")) as db:
        for sql in ("DELETE FROM audit", "DELETE FROM audit_prune", "UPDATE audit_prune SET before_ms = 0"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute(sql)


def test_the_dashboard_prunes_at_start(tmp_path: Path) -> None:
    clock = ManualClock()
    store = AuthStore(tmp_path / "dashboard.sqlite3", FAST)
    store.audit(clock.now_ms() - 401 * DAY_MS, None, "login", "ancient", "", "10.0.0.1")
    store.close()
    app = create_app(dashboard_kit("prune"), NO_BROKER, clock=clock, data_dir=tmp_path, auth_policy=FAST)
    actions = [(e.action, e.target) for e in auth_state_of(app).store.audit_entries()]
    assert ("login", "ancient") not in actions and ("audit.prune", "") in actions


# ---------------------------------------------------------------- the password rule


@pytest.mark.parametrize(
    ("password", "username", "key"),
    [
        ("short 1", "", "password.too_short"),
        ("Tanaka-2026-spring", "tanaka", "password.has_username"),
        ("1234567890", "", "password.common"),
        ("Password2026!", "", "password.common"),  # its letters alone are a common password
        ("qwertyuiop", "", "password.common"),
        ("aaaaaaaaaaaa", "", "password.repetitive"),
        ("abababab1212", "", "password.repetitive"),
        ("sleepingbears", "", "password.one_class"),
        ("72948105736", "", "password.one_class"),
    ],
)
def test_password_rule_refuses(password: str, username: str, key: str) -> None:
    with pytest.raises(PasswordRejected) as caught:
        check_password(password, username)
    assert caught.value.text[0] == key


@pytest.mark.parametrize("password", ["correct horse battery", "hinata no hirune 7", "Sakura-gumi 2026 ohiru",
                                      "ひまわり組のお昼寝2026"])  # fmt: skip
def test_password_rule_allows(password: str) -> None:
    assert check_password(password, "tanaka") == password


def test_the_cli_names_the_rule_in_both_languages(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("password123\n")
    res = CliRunner().invoke(cli_app, ["users", "add", "--data-dir", str(tmp_path), "--username", "kato",
                                       "--password-file", str(pw)])  # fmt: skip
    assert res.exit_code == 2
    assert "commonly used password" in res.stderr and "よく使われるパスワードです" in res.stderr


async def test_the_admin_page_names_the_rule_in_its_language(local: tuple[FastAPI, ManualClock]) -> None:
    app, _ = local
    async with from_address(app, "10.0.0.8") as http:
        me = await login(http, Role.ADMIN)
        form = {"csrf_token": me["csrf_token"], "username": "kato", "role": "staff", "password": "0000000000"}
        r = await http.post("/admin/users?lang=en", data=form)
        assert r.status_code == 400 and "This is a commonly used password" in r.text
        r = await http.post("/admin/users?lang=ja", data=form)
        assert r.status_code == 400 and "よく使われるパスワードです" in r.text


# ---------------------------------------------------------------- one role for the records sheet


def test_the_records_sheet_has_one_role_everywhere(local: tuple[FastAPI, ManualClock]) -> None:
    app, _ = local
    roles = {(m, p): r for m, p, r in route_roles(app)}
    sheet = [("GET", "/records"), ("GET", "/records/print"), ("GET", "/api/records"), ("GET", "/records.csv")]
    assert {roles[k] for k in sheet} == {Role.STAFF}


# ---------------------------------------------------------------- security headers, the schema


async def test_security_headers_and_no_store(local: tuple[FastAPI, ManualClock]) -> None:
    app, _ = local
    async with from_address(app, "10.0.0.8") as http:
        await login(http, Role.ADMIN)
        for path in ("/", "/login", "/api/rooms", "/api/me", "/admin/users", "/healthz", "/static/app.js"):
            r = await http.get(path, follow_redirects=False)
            csp = r.headers.get("content-security-policy", "")
            assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, path
            assert r.headers.get("x-content-type-options") == "nosniff", path
            assert r.headers.get("referrer-policy") == "no-referrer", path
            if path.startswith("/static/"):
                assert "no-store" not in r.headers.get("cache-control", "")
            else:
                assert r.headers.get("cache-control") == "no-store", path


async def test_openapi_schema_is_for_admins_only(local: tuple[FastAPI, ManualClock]) -> None:
    app, _ = local
    async with from_address(app, "10.0.0.8") as http:
        for path in ("/openapi.json", "/docs", "/redoc"):
            assert (await http.get(path)).status_code in (401, 404), path
        await login(http, Role.STAFF)
        assert (await http.get("/openapi.json")).status_code == 403
        await login(http, Role.ADMIN)
        r = await http.get("/openapi.json")
        assert r.status_code == 200 and "/api/alerts" in r.json()["paths"]


async def test_pages_run_under_the_csp_in_chromium(browser: Browser, tmp_path: Path) -> None:
    """Every page in a real Chromium with the policy on: no violation (an inline script or style the
    policy blocks shows as a console error) and no script error."""
    db = tmp_path / "gateway.sqlite3"
    with Store(db):
        pass
    async with served(gateway_db=db) as base:
        page = await browser.new_page(locale="ja-JP")
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        await page.goto(base + "/login")
        await page.fill("#username", ACCOUNTS[Role.ADMIN][0])
        await page.fill("#password", PASSWORD)
        await page.click('[data-testid="login-submit"]')
        await page.wait_for_url(lambda url: "/login" not in url)
        for path in ("/", "/records", "/records/print", "/trends", "/history", "/devices", "/kit", "/admin/users"):
            await page.goto(base + path)
            await page.wait_for_load_state("load")
        await page.goto(base + "/")
        await page.wait_for_selector('#live-status[data-live="ok"]', timeout=5000)  # app.js ran and streams
        await page.close()
        assert problems == []
