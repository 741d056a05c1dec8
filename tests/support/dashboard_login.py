"""Users and sign-in for dashboard tests: one account per role in a data folder, and logging in an
HTTP client (JSON /login; the CSRF token goes into the client's default headers) or a browser page
(the real login form)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from dashboard.auth.deps import open_store
from dashboard.auth.models import AuthPolicy, Role
from nurserywatch.clock import ManualClock

#: Cheap argon2 parameters: tests hash dozens of times (the real cost is ~0.1 s per hash).
FAST = AuthPolicy(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1)
PASSWORD = "correct horse battery"
#: role → (username, display name)
ACCOUNTS: dict[Role, tuple[str, str]] = {
    Role.STAFF: ("tanaka", "田中"),
    Role.MANAGER: ("sato", "佐藤"),
    Role.ADMIN: ("boss", "園長"),
    Role.OPERATOR: ("kobayashi", "小林"),  # the fleet board's role: no site page (tests/dashboard/test_fleet_board.py)
}


def add_accounts(data_dir: Path, now_ms: int | None = None) -> None:
    store = open_store(data_dir, FAST)
    try:
        for role, (username, display) in ACCOUNTS.items():
            if store.get_user(username) is None:
                store.add_user(username, PASSWORD, role, display, now_ms or ManualClock().now_ms())
    finally:
        store.close()


async def login(http: httpx.AsyncClient, role: Role = Role.STAFF) -> dict[str, Any]:
    """Sign ``http`` in as the account of ``role``; later writes carry the CSRF header."""
    r = await http.post("/login", json={"username": ACCOUNTS[role][0], "password": PASSWORD})
    assert r.status_code == 200, r.text
    me: dict[str, Any] = r.json()
    http.headers["X-CSRF-Token"] = me["csrf_token"]
    return me


def login_sync(http: httpx.Client, username: str, password: str) -> dict[str, Any]:
    r = http.post("/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    me: dict[str, Any] = r.json()
    http.headers["X-CSRF-Token"] = me["csrf_token"]
    return me


def browser_login_sync(page: Any, base: str, username: str, password: str, path: str = "/") -> None:
    """Open ``path``; the dashboard sends the browser to its login page; sign in with the form."""
    page.goto(base + path)
    page.wait_for_url("**/login?next=*")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click('[data-testid="login-submit"]')
    page.wait_for_url(lambda url: "/login" not in url)
