"""`nurserywatch fleet-provision` (nurserywatch/cli/provision_fleet.py): the central cluster's files from
the fleet file's ``central`` section. The configs pass ``nats-server -t`` and the units
``systemd-analyze verify``; three real nats-server processes started from the written files form the
centre (JetStream domain hub), where the workers' credentials can make a stream, the board's env file
connects, a site's password reaches the centre only as what it is (a leaf node, or MQTT for a bridged
site), never as a NATS client; re-running keeps the passwords, ``--rotate`` replaces them; a bad
fleet file gets one clear line."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import nats
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from nurserywatch.cli.main import app
from nurserywatch.fleet_layout import HUB_DOMAIN
from nurserywatch.fleet_nats import site_leaf_remote
from nurserywatch.mqtt import load_credentials
from nurserywatch.nats_local import NATS_SERVER
from nurserywatch.ports import free_port, free_ports
from tests.support.certs import self_signed
from tests.support.nats_files import NodeFile, started_nodes
from tests.support.waiting import wait_for, wait_until

PORTS = ("client_port", "cluster_port", "leaf_port", "mqtt_port", "monitor_port")


def records_key() -> str:
    pem = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return "\n".join("      " + line for line in pem.decode().splitlines())


def fleet_yaml(
    central: str, sites: tuple[tuple[str, str], ...] = (("himawari", "leaf"), ("momo", "mqtt_bridge"))
) -> str:
    listed = "".join(f"  - id: {site}\n    name: {site}\n    link: {link}\n    records_key: |\n{records_key()}\n"
                     for site, link in sites)  # fmt: skip
    return f"""
nats: {{urls: ["nats://127.0.0.1:4222"], credentials: out/credentials/fleet-worker.yaml}}
partitions: 2
sites:
{listed}{central}"""


def loopback_central() -> tuple[str, list[dict[str, int]]]:
    ports = iter(free_ports(3 * len(PORTS)))  # distinct: the provisioning refuses a port used twice
    nodes = [{what: next(ports) for what in PORTS} for _ in range(3)]
    lines = ["central:", "  nodes:"]
    for i, ports in enumerate(nodes, 1):
        fields = ", ".join(f"{k}: {v}" for k, v in ports.items())
        lines.append(f"    - {{name: c{i}, host: 127.0.0.1, bind: 127.0.0.1, {fields}}}")
    return "\n".join(lines) + "\n", nodes


def provision(config: Path, out: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["fleet-provision", "--config", str(config), "--out", str(out), *extra])
    return result.exit_code, result.output


def env_values(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return {k: v for k, v in pairs}


@dataclass(frozen=True)
class Centre:
    out: Path
    nodes: list[dict[str, int]]

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{n['client_port']}" for n in self.nodes]


@pytest.fixture(scope="module")
def centre(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Centre]:
    d = tmp_path_factory.mktemp("fleet-centre")
    central, nodes = loopback_central()
    (d / "fleet.yaml").write_text(fleet_yaml(central))
    code, output = provision(d / "fleet.yaml", d / "out")
    assert code == 0, output
    files = [NodeFile(d / "out" / "nats" / f"c{i}" / "nats.conf", (n["client_port"], n["leaf_port"], n["mqtt_port"]),
                      n["monitor_port"]) for i, n in enumerate(nodes, 1)]  # fmt: skip
    with started_nodes(files):
        yield Centre(d / "out", nodes)


# ------------------------------------------------------------------ the files


def test_the_written_files_are_valid_and_secret(centre: Centre) -> None:
    out = centre.out
    for i in (1, 2, 3):
        conf = out / "nats" / f"c{i}" / "nats.conf"
        run = subprocess.run([NATS_SERVER, "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, run.stdout + run.stderr
        assert conf.stat().st_mode & 0o777 == 0o600
    secrets_ = ["fleet-worker.yaml", "system.yaml", "board.env", "sites/himawari.env", "sites/momo.env"]
    for name in secrets_:
        assert (out / "credentials" / name).stat().st_mode & 0o777 == 0o600, name
    # The password is in nats.conf as written (nats-server's plain form, as for a site's nodes).
    worker = load_credentials(out / "credentials" / "fleet-worker.yaml")
    assert worker.username == "fleet" and f'"{worker.password}"' in (out / "nats" / "c1" / "nats.conf").read_text()
    board = env_values(out / "credentials" / "board.env")
    assert board == {"NURSERYWATCH_FLEET_NATS": ",".join(centre.urls), "NURSERYWATCH_FLEET_NATS_USER": "fleet",
                     "NURSERYWATCH_FLEET_NATS_PASSWORD": worker.password}  # fmt: skip
    assert list(env_values(out / "credentials" / "sites" / "himawari.env")) == ["NURSERYWATCH_FLEET_PASSWORD"]


def test_the_node_units_pass_systemd_analyze(centre: Centre, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze (package systemd) is needed to check the units"
    unit = centre.out / "nats" / "c1" / "nurserywatch-fleet-nats-c1.service"
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/opt/nurserywatch/bin/nats-server", NATS_SERVER)
                    .replace("User=nats\nGroup=nats\n", ""))  # fmt: skip
    result = subprocess.run([analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True)
    assert result.stdout + result.stderr == ""


def test_tls_files_and_machine_paths_go_into_the_configs(tmp_path: Path) -> None:
    tls = self_signed(tmp_path)
    extra = (
        f"  name: west-fleet\n  store_dir: {tmp_path}/js\n  files_dir: /etc/nats/fleet\n"
        f"  tls: {{cert_file: {tls.cert_file}, key_file: {tls.key_file}, ca_file: {tls.ca_file}}}\n"
    )
    hosts = (
        "{name: a, host: hub-1.example.org}",
        "{name: b, host: hub-2.example.org}",
        "{name: c, host: hub-3.example.org}",
    )
    central = nodes_yaml(*hosts, extra=extra)
    (tmp_path / "fleet.yaml").write_text(fleet_yaml(central))
    code, output = provision(tmp_path / "fleet.yaml", tmp_path / "out")
    assert code == 0, output
    conf = tmp_path / "out" / "nats" / "b" / "nats.conf"
    text = conf.read_text()
    assert f'cert_file: "{tls.cert_file}"' in text and 'name: "west-fleet"' in text and f"{tmp_path}/js" in text
    assert 'listen: "0.0.0.0:7422"' in text  # no bind: every interface, the default ports
    run = subprocess.run([NATS_SERVER, "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stdout + run.stderr
    unit = (tmp_path / "out" / "nats" / "b" / "nurserywatch-fleet-nats-b.service").read_text()
    assert "ExecStart=/opt/nurserywatch/bin/nats-server -c /etc/nats/fleet/nats.conf" in unit


def test_rerunning_keeps_the_passwords_and_rotate_replaces_them(tmp_path: Path) -> None:
    central, _ = loopback_central()
    (tmp_path / "fleet.yaml").write_text(fleet_yaml(central))
    out = tmp_path / "out"
    files = ["fleet-worker.yaml", "system.yaml", "board.env", "sites/himawari.env", "sites/momo.env"]

    def read() -> dict[str, str]:
        return {f: (out / "credentials" / f).read_text() for f in files}

    code, output = provision(tmp_path / "fleet.yaml", out)
    assert code == 0 and "4 new, 0 kept" in output, output
    first = read()
    code, output = provision(tmp_path / "fleet.yaml", out)
    assert code == 0 and "0 new, 4 kept" in output, output
    assert read() == first
    code, output = provision(tmp_path / "fleet.yaml", out, "--rotate")
    assert code == 0 and "4 new, 0 kept" in output, output
    assert all(read()[f] != first[f] for f in files)
    # A site added gets a password, the others keep theirs; a site removed is reported.
    (tmp_path / "fleet.yaml").write_text(fleet_yaml(central, (("himawari", "leaf"), ("kaede", "leaf"))))
    code, output = provision(tmp_path / "fleet.yaml", out)
    assert code == 0 and "1 new, 3 kept" in output and "sites/momo.env is for a site" in output, output
    assert 'user: "site-momo"' not in (out / "nats" / "c1" / "nats.conf").read_text()


# ------------------------------------------------------------------ three real nodes from the written files


async def test_the_workers_credentials_make_a_replicated_stream_in_domain_hub(centre: Centre) -> None:
    worker = load_credentials(centre.out / "credentials" / "fleet-worker.yaml")
    nc = await nats.connect(centre.urls, user=worker.username, password=worker.password, connect_timeout=5)
    try:
        js = nc.jetstream()
        assert (await js.account_info()).domain == HUB_DOMAIN
        info = await js.add_stream(name="PROVISION_T", subjects=["provision.t.>"], num_replicas=3)
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2  # three copies: the cluster
        ack = await js.publish("provision.t.1", b"x")
        assert ack.stream == "PROVISION_T" and ack.domain == HUB_DOMAIN
    finally:
        await nc.close()


async def test_the_board_env_connects(centre: Centre) -> None:
    board = env_values(centre.out / "credentials" / "board.env")
    nc = await nats.connect(board["NURSERYWATCH_FLEET_NATS"].split(","), user=board["NURSERYWATCH_FLEET_NATS_USER"],
                            password=board["NURSERYWATCH_FLEET_NATS_PASSWORD"], connect_timeout=5)  # fmt: skip
    await nc.close()


@pytest.mark.parametrize("site", ["himawari", "momo"])
async def test_a_site_user_is_no_nats_client(centre: Centre, site: str) -> None:
    password = env_values(centre.out / "credentials" / "sites" / f"{site}.env")["NURSERYWATCH_FLEET_PASSWORD"]
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    with pytest.raises(Exception):  # noqa: B017 — nats-py: NoServersError after the refusal
        await nats.connect(centre.urls[0], user=f"site-{site}", password=password, connect_timeout=5,
                           allow_reconnect=False, max_reconnect_attempts=0, error_cb=on_error)  # fmt: skip
    assert any("authorization violation" in str(e).lower() for e in errors), errors


async def test_a_bridged_site_connects_over_mqtt(centre: Centre) -> None:
    password = env_values(centre.out / "credentials" / "sites" / "momo.env")["NURSERYWATCH_FLEET_PASSWORD"]
    port = centre.nodes[0]["mqtt_port"]

    async def connects() -> bool:
        try:
            async with aiomqtt.Client("127.0.0.1", port, username="site-momo", password=password, identifier="t-momo",
                                      timeout=5) as client:  # fmt: skip
                await client.publish("nurserywatch/v1/momo/gateway", b"{}", qos=1, timeout=5)
            return True
        except aiomqtt.MqttError:
            return False  # the MQTT listener's own streams may still be forming

    await wait_until(connects, "site-momo's MQTT connection", timeout_s=30, every_s=0.5)


def test_a_leaf_site_connects_as_a_leaf_node_with_its_env_password(centre: Centre, tmp_path: Path) -> None:
    password = env_values(centre.out / "credentials" / "sites" / "himawari.env")["NURSERYWATCH_FLEET_PASSWORD"]
    leaf_urls = [f"nats-leaf://127.0.0.1:{n['leaf_port']}" for n in centre.nodes]
    conf = tmp_path / "site.conf"
    conf.write_text(f"server_name: site-himawari\nlisten: 127.0.0.1:{free_port()}\n"
                    + site_leaf_remote("himawari", leaf_urls, password))  # fmt: skip
    proc = subprocess.Popen([NATS_SERVER, "-c", str(conf), "-l", str(tmp_path / "site.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        monitors = [n["monitor_port"] for n in centre.nodes]

        def linked() -> bool:
            for port in monitors:
                with contextlib.suppress(OSError):
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/leafz", timeout=2) as r:
                        if b'"account": "FLEET"' in r.read():
                            return True
            return False

        wait_for(linked, "the site's leaf node connection at the centre", 20, every_s=0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ------------------------------------------------------------------ bad fleet files

NODE = "{{name: {name}, host: {host}, client_port: {port}}}"


def nodes_yaml(*nodes: str, extra: str = "") -> str:
    return "central:\n" + extra + "  nodes:\n" + "".join(f"    - {n}\n" for n in nodes)


BAD = {
    "two nodes": (nodes_yaml("{name: a, host: h1}", "{name: b, host: h2}"), "central.nodes"),
    "names twice": (nodes_yaml("{name: a, host: h1}", "{name: a, host: h2}", "{name: c, host: h3}"),
                    "names must be unique"),
    "port twice": (nodes_yaml("{name: a, host: h1, client_port: 7000, leaf_port: 7000}", "{name: b, host: h2}",
                              "{name: c, host: h3}"), "a.leaf_port 7000 on h1 is already a.client_port"),
    "relative store": (nodes_yaml("{name: a, host: h1}", "{name: b, host: h2}", "{name: c, host: h3}",
                                  extra="  store_dir: var/js\n"), "central.store_dir (line 20): 'var/js': want an "
                       "absolute path"),
    "unknown field": (nodes_yaml("{name: a, host: h1, port: 1}", "{name: b, host: h2}", "{name: c, host: h3}"),
                      "port"),
    "no central": ("", "no central: section"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_fleet_file_gets_one_clear_line(tmp_path: Path, case: str) -> None:
    central, expected = BAD[case]
    (tmp_path / "fleet.yaml").write_text(fleet_yaml(central))
    code, output = provision(tmp_path / "fleet.yaml", tmp_path / "out")
    assert code == 2, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], output
    assert "Traceback" not in output
    assert not (tmp_path / "out" / "credentials").exists()
