"""`nurserywatch kit provision` for a site of a fleet (the kit's ``nats.fleet``): each node's config gets
the site's JetStream domain and a leaf node remote to the centre, valid for nats-server itself, and
the site's out stream definition; the password comes from the environment, never the kit file."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nurserywatch.cli.main import app
from nurserywatch.cli.provision_nats import server_name
from nurserywatch.fleet_layout import SiteOutLayout
from nurserywatch.kit import load_kit
from nurserywatch.nats_local import NATS_SERVER

KIT = """
site: sakura
name: Fleet site
rooms: [{id: r1, name: Room 1}]
agents: [{id: pi-a}]
devices:
  - {id: co2-a, kind: mhz19b, room: r1, agent: pi-a, transport: {type: serial, port: ttys/a}}
children: []
nats:
  nodes:
    - {name: n1, host: 127.0.0.1, client_port: 14222, cluster_port: 16222, mqtt_port: 18883, monitor_port: 18222}
    - {name: n2, host: 127.0.0.2, client_port: 14222, cluster_port: 16222, mqtt_port: 18883, monitor_port: 18222}
    - {name: n3, host: 127.0.0.3, client_port: 14222, cluster_port: 16222, mqtt_port: 18883, monitor_port: 18222}
  fleet:
    leaf_urls: ["nats-leaf://hub-1.example.org:7422", "nats-leaf://hub-2.example.org:7422"]
    password_env: SAKURA_FLEET_PASSWORD
"""


def provision(tmp_path: Path) -> tuple[int, str]:
    (tmp_path / "kit.yaml").write_text(KIT)
    result = CliRunner().invoke(
        app, ["kit", "provision", "--config", str(tmp_path / "kit.yaml"), "--out", str(tmp_path / "out")]
    )
    return result.exit_code, result.output


def test_a_fleet_site_node_is_a_leaf_node_in_its_own_domain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAKURA_FLEET_PASSWORD", "centre/issued:pw")
    code, output = provision(tmp_path)
    assert code == 0, output
    conf_file = tmp_path / "out" / "nats" / "n1" / "nats.conf"
    conf = conf_file.read_text()
    assert 'domain: "site-sakura"' in conf
    assert '"nats-leaf://site-sakura:centre%2Fissued%3Apw@hub-1.example.org:7422"' in conf
    assert 'account: "NURSERYWATCH"' in conf
    # Unique at the centre (it drops the older of two leaf node links from servers of one name); the
    # node's files and unit keep the kit's name.
    assert 'server_name: "sakura-n1"' in conf
    assert (conf_file.parent / "nurserywatch-nats-n1.service").exists()
    run = subprocess.run([NATS_SERVER, "-t", "-c", str(conf_file)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stdout + run.stderr
    out = SiteOutLayout("sakura")
    stream = json.loads((tmp_path / "out" / "nats" / "streams" / f"{out.stream}.json").read_text())
    assert stream["subjects"] == out.subjects and stream["num_replicas"] == 3


def test_a_fleet_site_without_its_password_is_refused_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAKURA_FLEET_PASSWORD", raising=False)
    code, output = provision(tmp_path)
    assert code != 0
    assert "$SAKURA_FLEET_PASSWORD" in output and "Traceback" not in output


def test_a_fleet_sites_server_names_are_unique_at_the_centre(tmp_path: Path) -> None:
    """In a fleet each node's server_name carries the site (unless its name already starts with it);
    outside a fleet it stays the kit's node name (a JetStream node's name must never change)."""
    (tmp_path / "kit.yaml").write_text(KIT.replace("{name: n2,", "{name: sakura-n2,"))
    kit = load_kit(tmp_path / "kit.yaml")
    assert kit.nats is not None
    assert [server_name(kit, n) for n in kit.nats.nodes] == ["sakura-n1", "sakura-n2", "sakura-n3"]
    (tmp_path / "kit.yaml").write_text(KIT.replace("{name: n2,", "{name: sakura-n2,").split("  fleet:")[0])
    kit = load_kit(tmp_path / "kit.yaml")
    assert kit.nats is not None
    assert [server_name(kit, n) for n in kit.nats.nodes] == ["n1", "sakura-n2", "n3"]
