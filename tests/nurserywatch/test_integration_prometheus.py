"""Prometheus and Grafana (docs/integrations.md): the alert rules for the stack itself, checked and
unit-tested by the real promtool; a real Prometheus scraping a real gateway and dashboard with the
example scrape config and evaluating the rules on them; every metric the rules and the Grafana
dashboard name present in a real scrape of both endpoints.

promtool and prometheus come from Debian's ``prometheus`` package (``scripts/bootstrap.sh --test``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from nurserywatch.clock import ManualClock
from nurserywatch.contract import Position, reading_topic
from nurserywatch.kit import Kit, StorageConfig
from nurserywatch.mqtt import BrokerURL
from nurserywatch.ports import free_port
from tests.support.clock import T0
from tests.support.commands import signer_on
from tests.support.dashboard_server import running_dashboard
from tests.support.gateway_stack import client, posture
from tests.support.kits import make_kit
from tests.support.metrics_scrape import gateway_with_metrics, names, scrape, value
from tests.support.processes import stop
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "configs" / "prometheus"
RULES = PROM / "nurserywatch-rules.yml"
RULE_TESTS = PROM / "nurserywatch-rules.test.yml"
SCRAPE_CONFIG = PROM / "prometheus.yml"
GRAFANA = ROOT / "configs" / "grafana" / "nurserywatch-stack.json"
G = "nurserywatch_gateway_"
D = "nurserywatch_dashboard_"
#: What Prometheus makes itself for every target (not on any /metrics page).
SYNTHETIC = {"up"}
#: Metric names in PromQL: ours and the process collector's. (Functions, labels and keywords are none of these.)
NAME = re.compile(r"\b(?:nurserywatch_(?:gateway|dashboard)|process|python)_[a-zA-Z0-9_]+\b|\bup\b")


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run scripts/bootstrap.sh --test (Debian package prometheus)")
    return found


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *map(str, args)], capture_output=True, text=True, timeout=60)


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def grafana_exprs() -> list[str]:
    dash = json.loads(GRAFANA.read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def used_names(expr: str) -> set[str]:
    return set(NAME.findall(expr))


def declared(text: str) -> set[str]:
    """The sample names a /metrics page (text format) declares, samples or not yet: an alert gauge
    with no open alert has its ``# TYPE`` line and no sample."""
    out: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            out |= {name + s for s in ("_bucket", "_sum", "_count")} if kind == "histogram" else {name}
    return out


# ---------------------------------------------------------------- promtool


def test_promtool_checks_the_rules_and_the_scrape_config() -> None:
    checked = promtool("check", "rules", RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout
    config = promtool("check", "config", SCRAPE_CONFIG)
    assert config.returncode == 0, config.stdout + config.stderr
    assert "SUCCESS: 1 rule files found" in config.stdout
    tested = promtool("test", "rules", RULE_TESTS)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_firing_unit_test(tmp_path: Path) -> None:
    """An alert whose expression can never fire fails the unit tests: none goes untested."""
    names_ = [r["alert"] for r in alert_rules()]
    assert len(names_) == 8 and len(set(names_)) == 8
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    for alert in names_:
        doc = yaml.safe_load(RULES.read_text())
        for rule in (r for g in doc["groups"] for r in g["rules"]):
            if rule.get("alert") == alert:
                rule["expr"] = "vector(1) > 2"  # never true
        (tmp_path / RULES.name).write_text(yaml.safe_dump(doc, sort_keys=False))
        broken = promtool("test", "rules", tmp_path / RULE_TESTS.name)
        assert broken.returncode != 0, f"{alert} never firing passed the unit tests"
        assert f"alertname: {alert}," in broken.stdout + broken.stderr


def test_grafana_dashboard_is_well_formed() -> None:
    dash = json.loads(GRAFANA.read_text())
    assert dash["uid"] == "nurserywatch-stack" and dash["__inputs"][0]["pluginId"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) >= 10
    for p in dash["panels"]:
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"]
        assert p["targets"] and all(used_names(t["expr"]) for t in p["targets"]), p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"])
    # panels do not overlap on Grafana's 24-column grid
    cells: set[tuple[int, int]] = set()
    for p in dash["panels"]:
        gp = p["gridPos"]
        assert gp["x"] + gp["w"] <= 24
        mine = {(x, y) for x in range(gp["x"], gp["x"] + gp["w"]) for y in range(gp["y"], gp["y"] + gp["h"])}
        assert not mine & cells, f"{p['title']} overlaps"
        cells |= mine
    # every alert's metrics are on the dashboard too
    on_board = set().union(*map(used_names, grafana_exprs()))
    for rule in alert_rules():
        assert used_names(rule["expr"]) <= on_board, rule["alert"]


# ---------------------------------------------------------------- real scrape, real Prometheus


def influx_kit(site: str, tmp_path: Path) -> Kit:
    """``readings: influxdb`` to an address where nothing listens: the writer's metrics are there and
    its lines pile up (what NurseryWatchInfluxBufferGrowing watches)."""
    storage = StorageConfig(readings="influxdb", url=f"http://127.0.0.1:{free_port()}", api="v1",
                            buffer_path=str(tmp_path / "influx-buffer.sqlite3"))  # fmt: skip
    return make_kit(site).model_copy(update={"storage": storage})


@pytest.fixture
def prometheus_bin() -> str:
    return tool("prometheus")


def prometheus_config(tmp_path: Path, gateway: str, dashboard: str) -> Path:
    """configs/prometheus/prometheus.yml with the test's targets, a 1 s interval and the rules file."""
    cfg = yaml.safe_load(SCRAPE_CONFIG.read_text())
    cfg["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    cfg["rule_files"] = [str(RULES)]
    targets = {"nurserywatch-gateway": gateway, "nurserywatch-dashboard": dashboard}
    assert {job["job_name"] for job in cfg["scrape_configs"]} == set(targets)
    for job in cfg["scrape_configs"]:
        job["static_configs"][0]["targets"] = [targets[job["job_name"]]]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_prometheus(binary: str, config: Path, data: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={data}", f"--web.listen-address=127.0.0.1:{port}",
         "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=(data.parent / "prometheus.log").open("wb"), start_new_session=True,
    )  # fmt: skip


async def test_real_prometheus_scrapes_both_and_evaluates_the_rules(
    mosquitto: BrokerURL, tmp_path: Path, prometheus_bin: str
) -> None:
    tmp_dirs = tmp_path
    (tmp_dirs / "tsdb").mkdir()
    prometheus_port = free_port()
    site = f"prom-{uuid.uuid4().hex[:8]}"
    clock = ManualClock(T0)
    topic = reading_topic(site, "clip-01", "posture")
    async with (
        gateway_with_metrics(influx_kit(site, tmp_dirs), mosquitto, tmp_dirs / "gw.sqlite3", clock) as (_, gw_url),
        running_dashboard(make_kit(site), mosquitto, command_key=signer_on(clock)) as dash,
        client(mosquitto) as pub,
        httpx.AsyncClient(timeout=5) as http,
    ):
        await pub.publish(topic, b"{not json", qos=1)
        for i in range(5):
            await pub.publish(topic, posture(i + 1, T0 + i * 1000, Position.SUPINE), qos=1)

        async def settled() -> bool:
            g, d = await scrape(http, gw_url), await scrape(http, f"{dash.base}/metrics")
            return (value(g, G + "readings_received_total", stream="posture") == 6
                    and sum(v for (n, _), v in g.items() if n == G + "influx_pending") >= 5
                    and value(d, D + "gateway_heartbeat_age_seconds") < 5)  # fmt: skip

        await wait_until(settled, "readings in, InfluxDB lines waiting, a live heartbeat seen", 10)
        gw, dsh = await scrape(http, gw_url), await scrape(http, f"{dash.base}/metrics")
        assert value(gw, G + "rejected_total", reason="bad_json") == 1
        gw_text, dsh_text = (await http.get(gw_url)).text, (await http.get(f"{dash.base}/metrics")).text
        assert names(gw) <= declared(gw_text) and names(dsh) <= declared(dsh_text)

        # every metric the rules and the Grafana dashboard name is on one of the two pages
        scraped = declared(gw_text) | declared(dsh_text) | SYNTHETIC
        for rule in alert_rules():
            missing = used_names(rule["expr"]) - scraped
            assert not missing, f"{rule['alert']} names metrics no endpoint serves: {missing}"
        for expr in grafana_exprs():
            assert used_names(expr) <= scraped, f"Grafana query names metrics no endpoint serves: {expr}"
        assert {G + "influx_pending", G + "mqtt_outgoing_queue", G + "rejected_total"} <= names(gw)
        assert D + "gateway_heartbeat_age_seconds" in names(dsh)

        # a real Prometheus with the example scrape config (targets swapped) and the rules
        gw_target = gw_url.removeprefix("http://").removesuffix("/metrics")
        config = prometheus_config(tmp_dirs, gw_target, dash.base.removeprefix("http://"))
        proc = run_prometheus(prometheus_bin, config, tmp_dirs / "tsdb", prometheus_port)
        api = f"http://127.0.0.1:{prometheus_port}/api/v1"
        try:
            await wait_until(lambda: targets_up(http, api), "Prometheus: both targets up", 20, every_s=0.2)
            await wait_until(lambda: rules_evaluated(http, api), "Prometheus: every rule evaluated", 10, every_s=0.2)
            rules = (await http.get(f"{api}/rules")).json()["data"]["groups"][0]["rules"]
            assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()}
            assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
            # a healthy stack: nothing pending or firing
            assert [(r["name"], r["state"]) for r in rules if r["state"] != "inactive"] == []
            # the samples went through Prometheus's own parser (it asks for OpenMetrics first)
            q = await http.get(f"{api}/query", params={"query": G + 'rejected_total{reason="bad_json"}'})
            assert [float(s["value"][1]) for s in q.json()["data"]["result"]] == [1.0]
            q = await http.get(f"{api}/query", params={"query": "process_resident_memory_bytes"})
            assert {s["metric"]["job"] for s in q.json()["data"]["result"]} == {
                "nurserywatch-gateway", "nurserywatch-dashboard"}  # fmt: skip
        finally:
            stop(proc)


async def targets_up(http: httpx.AsyncClient, api: str) -> bool:
    try:
        active = (await http.get(f"{api}/targets")).json()["data"]["activeTargets"]
    except httpx.TransportError:
        return False
    return len(active) == 2 and all(t["health"] == "up" for t in active)


async def rules_evaluated(http: httpx.AsyncClient, api: str) -> bool:
    rules = (await http.get(f"{api}/rules")).json()["data"]["groups"][0]["rules"]
    return all(r.get("lastEvaluation", "").startswith("20") for r in rules) and bool(rules)

