"""nurserywatch/fleet_nats.py: the central nodes' and the sites' nats-server config, checked by
nats-server itself (``nats-server -t``), and the permissions of a site's user at the centre."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from nurserywatch.fleet_nats import (
    FleetSite,
    HubNode,
    hub_accounts,
    hub_configs,
    hub_node_config,
    site_leaf_remote,
    site_permissions,
)
from nurserywatch.nats_local import NATS_SERVER
from tests.support.certs import self_signed

NODES = [HubNode(f"hub-{i}", f"hub-{i}.example.org") for i in (1, 2, 3)]
SITES = [FleetSite("sakura", "pw-s"), FleetSite("kaede", "pw/k@:", bridged=True)]


def check(conf: str, tmp_path: Path) -> None:
    path = tmp_path / "nats.conf"
    path.write_text(conf)
    run = subprocess.run([NATS_SERVER, "-t", "-c", str(path)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stdout + run.stderr + conf


@pytest.mark.parametrize("tls", [False, True])
def test_central_node_config_is_valid(tmp_path: Path, tls: bool) -> None:
    accounts = hub_accounts(SITES, "worker-pw", "sys-pw")
    conf = hub_node_config(NODES[0], NODES, str(tmp_path / "js"), accounts, tls=self_signed(tmp_path) if tls else None)
    check(conf, tmp_path)
    assert "domain: hub" in conf and "leafnodes {" in conf and "mqtt {" in conf
    assert 'routes: ["nats-route://hub-2.example.org:6222", "nats-route://hub-3.example.org:6222"]' in conf
    assert 'allowed_connection_types: ["LEAFNODE"]' in conf and 'allowed_connection_types: ["MQTT"]' in conf


def test_site_node_config_with_the_leaf_remote_is_valid(tmp_path: Path) -> None:
    remote = site_leaf_remote("sakura", [n.leaf_url for n in NODES], "p@ss/word:", local_account="NURSERYWATCH")
    conf = "\n".join([
        'listen: "127.0.0.1:4222"',
        f'jetstream {{ store_dir: "{tmp_path / "js"}", domain: site-sakura }}',
        'accounts { NURSERYWATCH: { jetstream: enabled, users: [ { user: "gw", password: "x" } ] } }',
        remote,
    ])  # fmt: skip
    check(conf, tmp_path)
    # The password is URL-escaped in the leaf URL (nats-server decodes it).
    assert "nats-leaf://site-sakura:p%40ss%2Fword%3A@hub-1.example.org:7422" in remote


def test_site_permissions_are_its_prefix_and_what_sourcing_needs() -> None:
    publish, subscribe = site_permissions("sakura", bridged=False)
    assert publish == ["nurserywatch.v1.sakura.>", "nwsrc.sakura.>", "$JSC.R.>"]
    assert all(s.startswith(("$JS.site-sakura.API.", "$JS.FC.")) for s in subscribe)
    assert not [s for s in subscribe if "STREAM.DELETE" in s or s.endswith("API.>")]
    assert site_permissions("kaede", bridged=True) == (["nurserywatch.v1.kaede.>"], [])


def test_bad_input_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        hub_accounts([SITES[0], SITES[0]], "w", "s")
    with pytest.raises(ValueError, match="without a user"):
        site_leaf_remote("sakura", ["nats-leaf://u:p@hub:7422"], "pw")
    with pytest.raises(ValueError, match="no central leaf"):
        site_leaf_remote("sakura", [], "pw")
    with pytest.raises(ValueError, match="not one of"):
        hub_node_config(HubNode("x", "x"), NODES, "/var/lib/nats", "")
    with pytest.raises(ValueError):
        FleetSite("Bad Site", "pw")


def test_every_central_node_gets_the_same_accounts(tmp_path: Path) -> None:
    confs = hub_configs(NODES, SITES, "worker-pw", "sys-pw", str(tmp_path / "js"))
    assert list(confs) == ["hub-1", "hub-2", "hub-3"]
    accounts = {c[c.index("accounts {") :] for c in confs.values()}
    assert len(accounts) == 1
    check(confs["hub-2"], tmp_path)
    with pytest.raises(ValueError, match="unique"):
        hub_configs([NODES[0], NODES[0]], SITES, "w", "s", "/var/lib/nats")
