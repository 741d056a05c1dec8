"""Loopback ports: pick a free one, wait until something listens (the demo, tests and benchmarks)."""

from __future__ import annotations

import collections
import contextlib
import random
import socket
import time

#: Where ``free_port`` picks: below the kernel's ephemeral range (32768-60999 by default), which every
#: outgoing connection takes its local port from — a port picked there can be taken by some client's
#: connection before the caller binds it (seen: a nats-server of a loaded test run could not listen).
PICK_RANGE = (10_000, 32_768)
#: Ports in that range browsers refuse to load (Chromium's restricted ports: ``ERR_UNSAFE_PORT``, seen
#: failing a dashboard browser test that drew 10080).
BROWSER_UNSAFE = frozenset({10080})
_pick = random.Random()
#: Ports this process handed out lately: never handed out again while they are here. Each pick only
#: checks that nothing listens *now*; one nats-server node's five listeners, picked one after the
#: other before any was bound, drew the same port twice (MQTT and monitor: the node could not start).
_given: collections.deque[int] = collections.deque(maxlen=4096)


def _bound(host: str, port: int) -> socket.socket | None:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((host, port))
    except OSError:
        s.close()
        return None
    return s


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports nothing listens on right now (the caller binds them soon after), each held
    until all are picked."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(200 * n):
            if len(ports) == n:
                break
            port = _pick.randrange(*PICK_RANGE)
            s = None if port in BROWSER_UNSAFE or port in _given else _bound(host, port)
            if s is not None:
                stack.enter_context(s)
                ports.append(int(s.getsockname()[1]))
        while len(ports) < n:  # a crowded range: the kernel's choice
            s = stack.enter_context(socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET))
            s.bind((host, 0))
            ports.append(int(s.getsockname()[1]))
        _given.extend(ports)
        return ports


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the caller binds it soon after)."""
    return free_ports(1, host)[0]


def wait_for_port(port: int, timeout_s: float = 10.0, host: str = "127.0.0.1") -> None:
    """Return once ``host:port`` accepts a connection; TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s} s")
