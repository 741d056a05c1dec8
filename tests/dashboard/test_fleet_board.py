"""The fleet board's API and pages against a real nats-server holding the ``fleet_state`` bucket
(tests/support/fleet_board.py): who sees which site (an operator never learns another site exists;
staff and managers have no fleet page), the board's ranking and figures, the drill-down, the monthly
air-quality compliance, a change, a bad entry and a deleted key in the bucket, the board riding through
a restart of the cluster, and the operator role and site grants (store, migration of an older
database, the `users` CLI, the admin page). Under 1 s each, the restart ~5 s."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import nats
import pytest
from typer.testing import CliRunner

from dashboard.auth.deps import open_store, route_roles
from dashboard.auth.models import ALL_SITES, Role
from dashboard.auth.store import UserError
from dashboard.fleet_app import create_fleet_app
from dashboard.fleet_views import compliance, month_bounds
from dashboard.routes.fleet import FleetHeader
from dashboard.settings import DashboardSettings
from fleet.state import OpenAlert
from nurserywatch.cli.main import app as cli_app
from nurserywatch.contract import Severity
from nurserywatch.fleet_layout import FleetLayout
from tests.support.clock import MIN
from tests.support.dashboard_login import FAST, PASSWORD
from tests.support.fleet_board import (
    NOW,
    OPERATOR,
    SITE_A,
    SITE_B,
    SITE_C,
    Board,
    put_state,
    running_board,
    site_a,
    site_b,
    site_c,
    state_bucket,
)
from tests.support.nats_cluster import NatsCluster
from tests.support.waiting import wait_until

TOKYO = ZoneInfo("Asia/Tokyo")


@pytest.fixture
async def fleet(nats_node: NatsCluster) -> AsyncIterator[tuple[Board, Any]]:
    nc, kv = await state_bucket(nats_node.nats_urls)
    try:
        for state in (site_a(), site_b(), site_c()):
            await put_state(kv, state)
        async with running_board(nats_node.nats_urls) as board:
            yield board, kv
    finally:
        await nc.close()


# ---------------------------------------------------------------- permissions


async def test_an_operator_sees_its_sites_only_by_page_and_api(fleet: tuple[Board, Any]) -> None:
    board, _ = fleet
    async with board.signed_in(Role.OPERATOR) as http:
        sites = (await http.get("/api/fleet/sites")).json()["sites"]
        assert [s["site"] for s in sites] == [SITE_A]
        assert (await http.get(f"/api/fleet/sites/{SITE_A}")).status_code == 200
        # Another site and a site that does not exist get the same answer: nothing tells them apart.
        other = await http.get(f"/api/fleet/sites/{SITE_B}")
        missing = await http.get("/api/fleet/sites/no-such-site")
        assert other.status_code == missing.status_code == 404
        assert other.json()["error"] == missing.json()["error"] == "unknown_site"
        assert other.json()["message"].replace(SITE_B, "X") == missing.json()["message"].replace("no-such-site", "X")
        html = {"accept": "text/html"}
        assert (await http.get(f"/fleet/sites/{SITE_A}", headers=html)).status_code == 200
        page = await http.get(f"/fleet/sites/{SITE_B}", headers=html)
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
        for path in ("/fleet", "/fleet/air", f"/fleet/sites/{SITE_A}"):  # no other site named on any page
            text = (await http.get(path, headers=html)).text
            assert SITE_B not in text and SITE_C not in text, path
        air = (await http.get("/api/fleet/air", params={"month": "2026-01"})).json()
        assert {r["site"] for r in air["rooms"]} == {SITE_A}
        assert (await http.get("/api/fleet/air", params={"site": SITE_B})).status_code == 404
        # An operator has no site page and no user admin.
        assert (await http.get("/admin/users")).status_code == 403


@pytest.mark.parametrize("role", [Role.STAFF, Role.MANAGER], ids=lambda r: r.label)
async def test_site_roles_have_no_fleet_page(fleet: tuple[Board, Any], role: Role) -> None:
    board, _ = fleet
    async with board.signed_in(role) as http:
        for path in ("/api/fleet/sites", f"/api/fleet/sites/{SITE_A}", "/api/fleet/air"):
            r = await http.get(path)
            assert (r.status_code, r.json()["error"]) == (403, "forbidden"), path
        page = await http.get("/fleet", headers={"accept": "text/html"})
        assert page.status_code == 403 and "権限がありません" in page.text
    async with board.client() as anonymous:
        assert (await anonymous.get("/api/fleet/sites")).status_code == 401
        r = await anonymous.get("/fleet", headers={"accept": "text/html"})
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=%2Ffleet")


def test_every_fleet_route_needs_a_role(tmp_path: Path) -> None:
    app = create_fleet_app(["nats://127.0.0.1:1"], header=FleetHeader("x"), auth_policy=FAST)
    table = {(m, re.sub(r"\{[^}]+\}", "x", p)): role for m, p, role in route_roles(app)}
    public = {("GET", "/healthz"), ("GET", "/login"), ("POST", "/login"), ("POST", "/logout"), ("GET", "/")}
    assert {k for k, role in table.items() if role is None} == public
    for path in ("/fleet", "/fleet/sites/x", "/fleet/air", "/api/fleet/sites", "/api/fleet/sites/x", "/api/fleet/air"):
        assert table[("GET", path)] == Role.OPERATOR, path
    assert table[("POST", "/admin/users/x/sites")] == Role.ADMIN


# ---------------------------------------------------------------- what the board shows


async def test_the_board_ranks_worst_first_with_its_figures(fleet: tuple[Board, Any]) -> None:
    board, _ = fleet
    async with board.signed_in(Role.ADMIN) as http:
        out = (await http.get("/api/fleet/sites")).json()
    assert out["connected"] and out["synced"] and out["now_ms"] == NOW
    a, b, c = out["sites"]
    assert [a["site"], b["site"], c["site"]] == [SITE_A, SITE_B, SITE_C]  # critical, then the outage, then fine
    assert a["level"] == "critical" and a["alerts"] == {"critical": 1, "warning": 1, "info": 0}
    assert a["oldest_active_ts"] == NOW - 30 * MIN and a["battery_low"] == 1 and a["lag_ms"] == 200
    assert a["records"] == {"status": "verified", "day": "2026-01-14", "seq": 118, "problem": None}
    assert b["level"] == "warning" and not b["link_up"]
    assert (b["link_down_since_ms"], b["link_down_for_ms"], b["link_pending"]) == (NOW - 5 * MIN, 5 * MIN, 42)
    assert b["gateway_age_ms"] == 5 * MIN and "gateway_silent" in b["problems"]
    assert b["records"]["status"] == "problem" and "went back" in b["records"]["problem"]
    assert set(b["problems"]) >= {"link_down", "records_problem", "devices_offline"}
    assert c["level"] == "ok" and c["problems"] == []


async def test_drill_down_shows_ids_only_read_only(fleet: tuple[Board, Any]) -> None:
    board, _ = fleet
    async with board.signed_in(Role.OPERATOR) as http:
        d = (await http.get(f"/api/fleet/sites/{SITE_A}")).json()
        assert [a["id"] for a in d["alerts"]] == ["a-prone-1", "a-co2-1"]  # critical first
        assert d["alerts"][0]["child"] == "c001"
        page = await http.get(f"/fleet/sites/{SITE_A}", params={"lang": "en"}, headers={"accept": "text/html"})
        assert 'data-alert-id="a-prone-1"' in page.text and "c001" in page.text and "Face down for 30 s" in page.text
        assert "<button" not in page.text.split("</header>", 1)[1]  # read only: nothing to press but the header's
        # Nothing on the board writes: no POST route but sign-in, sign-out and user admin.
        assert (await http.post(f"/api/fleet/sites/{SITE_A}")).status_code == 405


async def test_a_change_in_the_bucket_reaches_the_api_and_a_bad_entry_is_counted(fleet: tuple[Board, Any]) -> None:
    board, kv = fleet
    async with board.signed_in(Role.ADMIN) as http:
        restored = site_b()
        restored.link.up, restored.link.down_since_ms, restored.link.pending = True, None, 0

        async def link_up() -> bool:
            sites = (await http.get("/api/fleet/sites")).json()["sites"]
            return bool(next(s for s in sites if s["site"] == SITE_B)["link_up"])

        await put_state(kv, restored)
        await wait_until(link_up, "site B's link up on the board", 10)
        await kv.put("site.hoikuen-x", b"{not json")
        await kv.put("site.hoikuen-y", site_c().model_dump_json().encode())  # the key of another site

        async def counted() -> bool:
            health = (await http.get("/healthz")).json()
            return bool(health["rejected"] == {"bad_state": 1, "site_mismatch": 1})

        await wait_until(counted, "both bad entries counted", 10)
        sites = (await http.get("/api/fleet/sites")).json()["sites"]
        assert sorted(s["site"] for s in sites) == [SITE_A, SITE_B, SITE_C]
        await kv.delete(f"site.{SITE_C}")  # a site leaving the fleet leaves the board

        async def gone() -> bool:
            return SITE_C not in [s["site"] for s in (await http.get("/api/fleet/sites")).json()["sites"]]

        await wait_until(gone, "site C gone", 10)


async def test_monthly_compliance_page_and_api(fleet: tuple[Board, Any]) -> None:
    board, _ = fleet
    async with board.signed_in(Role.OPERATOR) as http:
        now_month = (await http.get("/api/fleet/air")).json()
        assert now_month["month"] == "2026-01" and now_month["months"] == ["2026-01", "2025-12"]
        (room,) = now_month["rooms"]
        co2 = next(r for r in room["rules"] if r["rule"] == "co2")
        # 1.5 h resolved + the active CO2 alert's 30 min up to now, of 10 h observed.
        assert co2 == {"rule": "co2", "over_s": 7200.0, "hours": 2.0, "share": 0.2, "running": True}
        december = (await http.get("/api/fleet/air", params={"month": "2025-12"})).json()
        humidity = next(r for r in december["rooms"][0]["rules"] if r["rule"] == "humidity")
        assert (humidity["hours"], humidity["share"], humidity["running"]) == (0.5, 0.02, False)
        r = await http.get("/api/fleet/air", params={"month": "2026-13"})
        assert (r.status_code, r.json()["error"]) == (400, "bad_month")
        page = await http.get("/fleet/air", params={"month": "2025-12", "lang": "ja"}, headers={"accept": "text/html"})
        assert page.status_code == 200 and 'data-month="2025-12"' in page.text and "湿度が範囲外" in page.text


def test_compliance_counts_a_running_alert_only_within_the_month() -> None:
    state = site_a()
    state.alerts = {"p": OpenAlert(id="p", rule="pm25", severity=Severity.WARNING, active=True, room="risu",
                                   started_ts=month_bounds("2026-01", TOKYO)[0] - 60 * MIN, updated_ts=NOW,
                                   message="m", message_en="m")}  # fmt: skip
    jan = compliance([state], "2026-01", NOW, TOKYO)
    risu = next(r for r in jan.rooms if r.room == "risu")
    pm25 = next(r for r in risu.rules if r.rule == "pm25")
    assert pm25.running and pm25.over_s == (NOW - month_bounds("2026-01", TOKYO)[0]) / 1000 and pm25.share is None
    dec = compliance([state], "2025-12", NOW, TOKYO)
    assert next(r for r in next(x for x in dec.rooms if x.room == "risu").rules if r.rule == "pm25").over_s == 3600


# ---------------------------------------------------------------- the user store


def test_site_grants_and_the_operator_role_in_the_store(tmp_path: Path) -> None:
    store = open_store(tmp_path, FAST)
    try:
        store.add_user("ops", PASSWORD, Role.OPERATOR, "運営", NOW)
        assert store.set_sites("ops", ["b", "a", "a"], NOW).sites == {"a", "b"}
        user = store.get_user("ops")
        assert user is not None and user.user.sites == {"a", "b"} and not user.user.may(Role.STAFF)
        assert user.user.may_see_site("a") and not user.user.may_see_site("c")
        assert store.set_sites("ops", [ALL_SITES], NOW).may_see_site("c")
        with pytest.raises(UserError, match="not a site id"):
            store.set_sites("ops", ["Bad Site!"], NOW)
        assert store.set_sites("ops", [], NOW).fleet_access is False
    finally:
        store.close()


def test_an_older_database_takes_the_operator_role_and_keeps_its_sessions(tmp_path: Path) -> None:
    old_schema = """
        CREATE TABLE users (username TEXT PRIMARY KEY, display_name TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('staff', 'manager', 'admin')), password_hash TEXT NOT NULL,
            disabled INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
            last_login_ms INTEGER);
        CREATE TABLE sessions (token_hash TEXT PRIMARY KEY,
            username TEXT NOT NULL REFERENCES users (username) ON DELETE CASCADE, csrf_token TEXT NOT NULL,
            created_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL, ip TEXT NOT NULL);
        INSERT INTO users VALUES ('boss', '園長', 'admin', 'x', 0, 1, 1, NULL);
        INSERT INTO sessions VALUES ('t', 'boss', 'c', 1, 1, '127.0.0.1');
    """
    with sqlite3.connect(tmp_path / "dashboard.sqlite3") as db:
        db.executescript(old_schema)
    store = open_store(tmp_path, FAST)
    try:
        store.add_user("ops", PASSWORD, Role.OPERATOR, "", NOW)
        assert [r.user.role for r in store.list_users()] == [Role.ADMIN, Role.OPERATOR]
        assert store.count_sessions("boss") == 1
    finally:
        store.close()


async def test_the_board_follows_the_bucket_across_a_restart_of_the_cluster(nats_node: NatsCluster) -> None:
    nc, kv = await state_bucket(nats_node.nats_urls)
    for state in (site_a(), site_b(), site_c()):
        await put_state(kv, state)
    await nc.close()
    async with running_board(nats_node.nats_urls) as board, board.signed_in(Role.ADMIN) as http:

        async def lost() -> bool:
            return not (await http.get("/healthz")).json()["nats_connected"]

        nats_node.kill(0)
        await wait_until(lost, "the board to notice the lost cluster", 10)
        page = await http.get("/fleet", headers={"accept": "text/html"})  # still served, from memory
        assert page.status_code == 200
        assert len((await http.get("/api/fleet/sites")).json()["sites"]) == 3
        nats_node.start(0)
        nats_node.wait_jetstream()
        nc = await nats.connect(servers=nats_node.nats_urls)
        try:
            kv = await nc.jetstream().key_value(FleetLayout.state_bucket)
            restored = site_b()
            restored.link.up = True
            await put_state(kv, restored)

            async def link_up() -> bool:
                out = (await http.get("/api/fleet/sites")).json()
                return bool(out["synced"] and next(s for s in out["sites"] if s["site"] == SITE_B)["link_up"])

            await wait_until(link_up, "the board re-synced with the restarted cluster", 20)
        finally:
            await nc.close()


def test_operators_and_their_sites_from_the_command_line(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")

    def cli(*args: str) -> Any:
        return CliRunner().invoke(cli_app, ["users", *args, "--data-dir", str(tmp_path)])

    assert cli("add", "--username", "ward-ops", "--role", "operator", "--password-file", str(pw)).exit_code == 0
    r = cli("sites", "--username", "ward-ops", "--sites", f"{SITE_B},{SITE_A}")
    assert (r.exit_code, r.stdout.strip()) == (0, f"ward-ops may see: {SITE_A} {SITE_B}")
    r = cli("sites", "--username", "ward-ops", "--sites", "Not A Site")
    assert r.exit_code == 2 and "not a site id" in r.stderr
    assert cli("sites", "--username", "nobody", "--sites", "*").exit_code == 2
    store = open_store(tmp_path, FAST)
    try:
        row = store.get_user("ward-ops")
        assert row is not None and row.user.role == Role.OPERATOR and row.user.sites == {SITE_A, SITE_B}
        assert [(e.action, e.target) for e in store.audit_entries(action="user.sites")] == [("user.sites", "ward-ops")]
    finally:
        store.close()


async def test_an_admin_grants_a_site_on_the_users_page_and_it_applies_at_once(fleet: tuple[Board, Any]) -> None:
    board, _ = fleet
    async with board.signed_in(Role.OPERATOR) as ops, board.signed_in(Role.ADMIN) as admin:
        assert [s["site"] for s in (await ops.get("/api/fleet/sites")).json()["sites"]] == [SITE_A]
        page = await admin.get("/admin/users", headers={"accept": "text/html"})
        assert re.search(rf'value="{SITE_A}"[^>]*data-testid="sites-{OPERATOR}"', page.text)  # fleet mode's column
        form = {"csrf_token": admin.headers["X-CSRF-Token"], "sites": f"{SITE_A} {SITE_B}"}
        r = await admin.post(f"/admin/users/{OPERATOR}/sites", data=form)
        assert r.status_code == 303 and "done=sites" in r.headers["location"]
        assert [s["site"] for s in (await ops.get("/api/fleet/sites")).json()["sites"]] == [SITE_A, SITE_B]
        r = await admin.post(f"/admin/users/{OPERATOR}/sites", data={**form, "sites": "../etc"})
        assert r.status_code == 400 and "not a site id" in r.text


def test_fleet_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NURSERYWATCH_FLEET_NATS", "nats://board:pw@hub-1:4222, tls://hub-2:4222")
    monkeypatch.setenv("NURSERYWATCH_FLEET_REFRESH_S", "10")
    s = DashboardSettings()
    assert s.fleet_servers() == ["nats://board:pw@hub-1:4222", "tls://hub-2:4222"] and s.fleet_refresh_s == 10
    assert (s.fleet_name, s.fleet_timezone, s.fleet_nats_domain) == ("nurserywatch fleet", "Asia/Tokyo", None)
    with pytest.raises(ValueError, match="'hub-3' is not a nats:// or tls:// URL"):  # the password never shown
        DashboardSettings(fleet_nats="http://board:pw@hub-3").fleet_servers()
    assert DashboardSettings(fleet_nats="").fleet_servers() == []
