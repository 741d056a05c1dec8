"""nats-server processes started from provisioned config files (``kit provision``, ``fleet-provision``),
as an operator would start them; each waited for until it listens and its JetStream is healthy."""

from __future__ import annotations

import contextlib
import subprocess
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from nurserywatch.nats_local import NATS_SERVER
from nurserywatch.ports import wait_for_port
from tests.support.waiting import wait_for


def healthy(monitor_port: int) -> bool:
    """The node's /healthz answers ok (its JetStream is current)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/healthz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@dataclass(frozen=True)
class NodeFile:
    """A written nats.conf, the ports to wait for and the node's monitoring port."""

    conf: Path
    ports: tuple[int, ...]
    monitor_port: int


@contextlib.contextmanager
def started_nodes(nodes: Sequence[NodeFile]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """One nats-server per file (its log beside it, nats.log), stopped at exit."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for node in nodes:
            log = node.conf.with_name("nats.log")
            procs.append(subprocess.Popen([NATS_SERVER, "-c", str(node.conf), "-l", str(log)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
        for node, proc in zip(nodes, procs, strict=True):
            for port in node.ports:
                wait_for_port(port, 20)
            assert proc.poll() is None, node.conf.with_name("nats.log").read_text()
            wait_for(lambda p=node.monitor_port: healthy(p), f"{node.conf.parent.name}'s JetStream", 30)  # type: ignore[misc]
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
