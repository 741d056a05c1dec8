"""A stand-in for systemd's end of sd_notify: a real unix datagram socket a part under test is told
about through ``$NOTIFY_SOCKET``, and what it received, in order."""

from __future__ import annotations

import os
import socket
import time


class NotifySocket:
    """Bound to an abstract address (``@name``, as systemd's own) unless ``path`` is given."""

    def __init__(self, path: str | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.address = path or f"@nurserywatch-test-{os.getpid()}-{id(self)}"
        self.sock.bind(path or "\0" + self.address[1:])
        #: Every datagram received so far, decoded.
        self.received: list[str] = []

    def env(self, watchdog_s: float | None = None) -> dict[str, str]:
        """The variables systemd sets for a ``Type=notify`` unit (with ``WatchdogSec=watchdog_s``)."""
        env = {"NOTIFY_SOCKET": self.address}
        if watchdog_s is not None:
            env["WATCHDOG_USEC"] = str(int(watchdog_s * 1_000_000))
        return env

    def fields(self) -> list[str]:
        """Every ``KEY=value`` line received, in order."""
        return [line for message in self.received for line in message.split("\n")]

    def drain(self) -> list[str]:
        """Take whatever has arrived, without waiting."""
        self.sock.setblocking(False)
        got: list[str] = []
        try:
            while True:
                got.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            pass
        self.received += got
        return got

    def wait_for(self, line: str, count: int = 1, timeout_s: float = 30.0) -> None:
        """Receive until ``line`` has arrived ``count`` times in all; TimeoutError naming what came."""
        deadline = time.monotonic() + timeout_s
        while self.fields().count(line) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {count}× {line!r} within {timeout_s:g} s; received {self.received}")
            self.sock.settimeout(min(left, 0.5))
            try:
                self.received.append(self.sock.recv(4096).decode())
            except TimeoutError:
                pass

    def close(self) -> None:
        self.sock.close()
