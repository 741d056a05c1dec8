"""What users read instead of identifiers, and the navigation order (in process, no broker; ~1 s).

Every rule the gateway can raise and every kind of device has a name in both languages (the lists are
read from the code: gateway/rules/ and nurserywatch.kit.DeviceKind, so a new rule without a name fails
here); the alert history, the devices page and the nap-check records show those names, not the ids;
the navigation bar lists staff pages, then the manager's, then the admin's, whatever order the routers
were imported in."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request

import gateway.rules
from dashboard.app import create_app
from dashboard.auth.models import Role
from dashboard.i18n import LANGS, catalogue
from dashboard.pages import NAV, nav_items, templates
from dashboard.routes import records as records_pages
from gateway.alert_changes import Change, Transition
from gateway.db.store import Store
from gateway.records.export import SheetRow
from nurserywatch.clock import ManualClock
from nurserywatch.contract import Position, Severity
from nurserywatch.kit import AgeBand, DeviceKind, Kit
from nurserywatch.mqtt import BrokerURL
from tests.support.dashboard_login import FAST, add_accounts, login
from tests.support.manager_data import NOW, alert, load_test_kit

RULES_DIR = Path(gateway.rules.__file__).parent


def rule_modules() -> list[ModuleType]:
    return [importlib.import_module(f"gateway.rules.{m.name}") for m in pkgutil.iter_modules([str(RULES_DIR)])]


def rule_ids() -> set[str]:
    """Every rule id the gateway can raise: each rule module names its rules in RULE or RULES."""
    ids: set[str] = set()
    for module in rule_modules():
        one = getattr(module, "RULE", None)
        many = getattr(module, "RULES", ())
        ids |= ({one} if isinstance(one, str) else set()) | {r for r in many if isinstance(r, str)}
    return ids


def test_every_module_that_raises_alerts_names_its_rules() -> None:
    # Guards rule_ids(): a module that builds Firing/level_event must declare RULE or RULES, and the
    # first argument of each such call is one of its declared names (a constant or the loop variable).
    for module in rule_modules():
        tree = ast.parse(Path(module.__file__ or "").read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                 and n.func.id in ("Firing", "level_event")]  # fmt: skip
        if not calls or module.__name__.endswith(".events"):
            continue
        declared = {getattr(module, "RULE", None), *getattr(module, "RULES", ())} - {None}
        assert declared, f"{module.__name__} raises alerts but declares no RULE/RULES"
        for call in calls:
            arg = call.args[0] if call.args else next(k.value for k in call.keywords if k.arg == "rule")
            assert isinstance(arg, ast.Name), ast.dump(arg)
            value = getattr(module, arg.id, None)
            assert value in declared or arg.id == "rule", f"{module.__name__}: {arg.id}"


def test_every_rule_and_device_kind_has_a_name_in_both_languages() -> None:
    rules = rule_ids()
    assert {"prone", "apnea", "sensor_lost", "co2"} <= rules and len(rules) >= 10  # the scan found them
    for lang in LANGS:
        t = catalogue(lang)
        for rule in rules:
            assert t.get(f"rule.{rule}", "").strip(), f"no {lang} name for rule {rule!r}"
        for kind in DeviceKind:
            assert t.get(f"kind.{kind.value}", "").strip(), f"no {lang} name for device kind {kind.value!r}"
    ja = catalogue("ja")
    for key in [f"rule.{r}" for r in rules] + [f"kind.{k.value}" for k in DeviceKind]:
        assert not ja[key].isascii(), f"{key}: the Japanese name is not Japanese: {ja[key]!r}"


# ---------------------------------------------------------------- navigation

EXPECTED_NAV = ["nav.room", "nav.records", "nav.trends", "nav.history", "nav.devices", "nav.kit", "nav.admin_users"]


def test_navigation_order_is_staff_then_manager_then_admin() -> None:
    from dashboard.routes import manager as manager_pages  # noqa: F401  (they add their items)

    assert [i.key for i in nav_items()] == EXPECTED_NAV
    # Whatever order the routers were imported in: shuffle NAV and the bar is the same.
    saved = list(NAV)
    try:
        NAV.reverse()
        assert [i.key for i in nav_items()] == EXPECTED_NAV
    finally:
        NAV[:] = saved
    roles = [i.role for i in nav_items()]
    assert roles == sorted(roles, key=lambda r: r.value), roles


# ---------------------------------------------------------------- pages


@dataclass
class Env:
    app: FastAPI
    http: httpx.AsyncClient
    kit: Kit
    db: Path


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    kit, kit_path = load_test_kit(tmp_path)
    db = tmp_path / "gateway.sqlite3"
    rules = sorted(rule_ids())
    made = [alert(f"a{i:02d}", NOW - (i + 1) * 60_000, rule=rule, severity=Severity.WARNING)
            for i, rule in enumerate(rules)]  # fmt: skip
    with Store(db) as store:
        store.record([Transition(Change.RAISED, a, a.started_ts) for a in made])
    data = tmp_path / "dash"
    add_accounts(data, NOW)
    app = create_app(kit, BrokerURL.parse("mqtt://127.0.0.1:1"), clock=ManualClock(NOW), gateway_db=db,
                     data_dir=data, kit_path=kit_path, auth_policy=FAST)  # fmt: skip
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dash") as http:
        await login(http, Role.ADMIN)
        yield Env(app, http, kit, db)
    shutil.rmtree(data, ignore_errors=True)


def cells(html: str, attr: str) -> dict[str, str]:
    return dict(re.findall(rf'<td {attr}="([^"]+)">([^<]*)</td>', html))


@pytest.mark.parametrize("lang", LANGS)
async def test_history_shows_rule_names_not_ids(env: Env, lang: str) -> None:
    t = catalogue(lang)  # type: ignore[arg-type]
    r = await env.http.get("/history", params={"lang": lang, "per_page": "50"})
    assert r.status_code == 200, r.text
    shown = cells(r.text, "data-rule")
    assert set(shown) == rule_ids()  # every rule raised once, each row tagged with its id
    for rule, text in shown.items():
        assert text == t[f"rule.{rule}"], (rule, text)
    # The filter lists the names too; the value sent stays the id.
    options = dict(re.findall(r'<option value="([^"]*)"[^>]*>([^<]*)</option>', r.text))
    assert options["apnea"] == t["rule.apnea"] and options["sensor_lost"] == t["rule.sensor_lost"]


async def test_history_keeps_an_unknown_rule_id_readable(env: Env) -> None:
    # A rule this dashboard has no name for (e.g. from a newer gateway) is shown as its id, not an error.
    with Store(env.db) as store:
        a = alert("zz", NOW - 1000, rule="noise_level")
        store.record([Transition(Change.RAISED, a, a.started_ts)])
    r = await env.http.get("/history", params={"per_page": "50"})
    assert cells(r.text, "data-rule")["noise_level"] == "noise_level"


async def test_devices_page_shows_kind_names_not_ids(env: Env) -> None:
    r = await env.http.get("/devices")
    assert r.status_code == 200, r.text
    shown = cells(r.text, "data-kind")
    ja = catalogue("ja")
    assert shown == {k: ja[f"kind.{k}"] for k in ("posture_clip", "mhz19b", "pms5003")}
    assert shown["mhz19b"] == "CO2センサー（MH-Z19B）"
    assert ">mhz19b<" not in r.text and ">posture_clip<" not in r.text


async def test_navigation_bar_in_order_on_a_page(env: Env) -> None:
    r = await env.http.get("/history")
    bar = r.text.split('<nav class="pages"', 1)[1].split("</nav>", 1)[0]
    labels = re.findall(r">([^<>]+)</a>", bar)
    ja = catalogue("ja")
    assert labels == [ja[k] for k in EXPECTED_NAV]
    assert labels[:2] == ["お昼寝ルーム", "午睡チェック表"] and labels[-1] == "ユーザー管理"


def sheet_row(seq: int, child: str, alerts: tuple[tuple[str, str], ...]) -> SheetRow:
    return SheetRow(
        seq=seq, time=NOW, room="hiyoko", child=child, name=child, age_band=AgeBand("0"), interval_min=5,
        partial=False, posture=Position.SUPINE, prone_seen=False, on_mat=True, breathing_rate_bpm=30,
        breathing_rate_mean_bpm=30, breathing_ok=not alerts, body_temp_c=None, alerts=alerts, data_missing=False,
        missing=(), recorded_by="auto", confirmed_by=(), confirmed_at=None, corrections="", note="",
    )  # fmt: skip


@pytest.mark.parametrize("template", ["records.html", "records_print.html"])
def test_records_show_rule_names_not_ids(template: str, tmp_path: Path) -> None:
    kit, _ = load_test_kit(tmp_path)
    row = sheet_row(5, "c001", (("apnea", "a1"), ("prone", "a2")))
    sheet = records_pages.Sheet(room="hiyoko", day=date(2026, 1, 3), rows=[row], children=[("c001", "はると")],
                                times=[NOW], cells={(NOW, "c001"): row}, started_ms=NOW, ended_ms=NOW)  # fmt: skip
    request = Request({"type": "http", "method": "GET", "path": "/records", "headers": [], "query_string": b""})
    ctx = records_pages._context(request, kit, "ja", sheet)
    html = templates.get_template(template).render(ctx)
    flags = re.findall(r'<span class="flag">([^<]*)</span>', html)
    assert any("呼吸停止の疑い（無呼吸）、うつぶせ寝" in f for f in flags), flags
    assert not any("apnea" in f or "prone" in f for f in flags), flags
    cell = records_pages.sheet_json(sheet, kit, "en")["cells"][0]
    assert cell["alerts"] == ["apnea", "prone"] and cell["alert_labels"] == ["Possible apnea", "Sleeping face down"]


def test_room_view_has_no_name_field() -> None:
    # Acknowledgements, sessions, assignments and confirmations are made under the signed-in user.
    for name in ("index.html", "records.html"):
        source = (Path(records_pages.__file__).parents[1] / "templates" / name).read_text()
        assert "staff-name" not in source and "staff_name" not in source, name
    for script in ("app.js", "records.js"):
        assert "staff-name" not in (Path(records_pages.__file__).parents[1] / "static" / script).read_text(), script
