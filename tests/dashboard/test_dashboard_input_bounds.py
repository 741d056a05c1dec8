"""Out-of-range input on every route: ids past SQLite's 64-bit integers, dates whose day has no end in
the calendar (9999-12-31), huge pages. Each is a 400/422 naming the parameter (a page in the browser's
language), never a 500."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from dashboard.app import create_app
from dashboard.auth.deps import current_user, require_admin, require_manager, require_staff, route_roles
from dashboard.auth.models import Role, User
from gateway.db.store import Store
from nurserywatch.mqtt import BrokerURL
from tests.support.manager_data import FAST_AUTH, load_test_kit

TOO_BIG = str(2**63)  # one past SQLite's largest integer


@pytest.fixture
async def app(tmp_path: Path) -> FastAPI:
    kit, kit_path = load_test_kit(tmp_path)
    db = tmp_path / "gateway.sqlite3"
    with Store(db):  # the gateway's schema, no rows
        pass
    app = create_app(kit, BrokerURL.parse("mqtt://127.0.0.1:1"), gateway_db=db, kit_path=kit_path,
                     auth_policy=FAST_AUTH)  # fmt: skip
    admin = User("boss", Role.ADMIN, "園長")
    for dependency in (require_staff, require_manager, require_admin, current_user):
        app.dependency_overrides[dependency] = lambda: admin
    return app


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # a 500 is an answer to look at
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as client:
        yield client


@pytest.mark.parametrize(
    ("method", "url", "status", "fragment"),
    [
        ("POST", f"/api/records/{TOO_BIG}/confirm", 422, "seq must be from 1 to 9223372036854775807"),
        ("POST", "/api/records/0/confirm", 422, "seq must be from 1"),
        ("GET", "/records?date=9999-12-31", 422, "date: 9999-12-31 is out of range (the last day is 9999-12-30)"),
        ("GET", "/records/print?date=9999-12-31", 422, "out of range"),
        ("GET", "/records.csv?date=9999-12-31", 422, "out of range"),
        ("GET", "/api/records?date=9999-12-31", 422, "out of range"),
        ("GET", "/api/records?date=2026-02-30", 422, "date: '2026-02-30' is not a date like 2026-01-31"),
        ("GET", "/api/alerts/history?to=9999-12-31", 400, "to: 9999-12-31 is out of range"),
        ("GET", "/api/alerts/history?from=9999-12-31", 400, "from: 9999-12-31 is out of range"),
        ("GET", "/history?to=9999-12-31", 400, "out of range"),
        ("GET", f"/api/alerts/history?page={TOO_BIG}", 400, "page:"),
    ],
)
async def test_out_of_range_is_a_clear_error(
    http: httpx.AsyncClient, method: str, url: str, status: int, fragment: str
) -> None:
    r = await http.request(method, url)
    assert r.status_code == status, r.text
    assert fragment in r.json()["message"]


async def test_the_earliest_and_latest_days_still_work(http: httpx.AsyncClient) -> None:
    for day in ("0001-01-01", "9999-12-30"):
        assert (await http.get("/api/records", params={"date": day})).status_code == 200
        assert (await http.get("/api/alerts/history", params={"from": day, "to": day})).status_code == 200


@pytest.mark.parametrize(
    ("lang", "text"),
    [("ja", "日付「9999-12-31」は範囲外です（9999-12-30 まで指定できます）。"),
     ("en", "Date '9999-12-31' is out of range (the last possible day is 9999-12-30).")],
)  # fmt: skip
async def test_a_browser_gets_the_error_as_a_page_in_its_language(
    http: httpx.AsyncClient, lang: str, text: str
) -> None:
    for path in ("/records", "/records/print"):
        r = await http.get(path, params={"date": "9999-12-31", "lang": lang}, headers={"Accept": "text/html"})
        assert r.status_code == 422
        assert r.headers["content-type"].startswith("text/html")
        assert 'data-error="invalid_request"' in r.text and text in html.unescape(r.text)


async def test_no_route_answers_500_to_out_of_range_input(app: FastAPI, http: httpx.AsyncClient) -> None:
    """Every route of the app (its own list, so a new one is covered), every path parameter past int64,
    every date-like and number-like query parameter at its extreme."""
    query = {"date": "9999-12-31", "from": "9999-12-31", "to": "9999-12-31", "page": TOO_BIG, "per_page": TOO_BIG,
             "room": "x" * 5000, "range": "x" * 5000, "metric": "x" * 5000, "state": "x" * 5000}  # fmt: skip
    for method, path, _ in route_roles(app):
        if path in ("/api/events", "/logout", "/api/me"):  # a stream that never ends; no input (and /api/me
            continue  # reads the real session, which the overridden role dependencies do not make)
        url = re.sub(r"\{[^}]+\}", TOO_BIG, path)
        r = await http.request(method, url, params=query, json={} if method == "POST" else None)
        assert r.status_code != 500, f"{method} {url}: {r.text[:200]}"
