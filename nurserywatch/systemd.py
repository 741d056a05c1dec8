"""systemd's service notifications (sd_notify(3)) for ``Type=notify`` units with ``WatchdogSec=``:
a datagram of ``KEY=value`` lines to the socket in ``$NOTIFY_SOCKET``. No dependency; without
``NOTIFY_SOCKET`` (not started by systemd: tests, the demo, a terminal) every call does nothing.

The parts call ``ready()`` once they serve, ``alive()`` from their *main loop* each round (so a loop
that hangs stops the pings and systemd restarts the part after ``WatchdogSec``), ``status()`` for
``systemctl status`` and ``stopping()`` when a shutdown begins.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class Notifier:
    """One part's line to systemd. ``address``: ``$NOTIFY_SOCKET`` (a path, or ``@name`` for an
    abstract socket); None: off. ``watchdog_s``: systemd's watchdog interval (``$WATCHDOG_USEC``);
    None: no watchdog, ``alive()`` sends nothing."""

    def __init__(
        self, address: str | None, watchdog_s: float | None = None, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        # An abstract socket name starts with '@', which stands for the leading NUL byte.
        self._address = "\0" + address[1:] if address and address.startswith("@") else address
        self.watchdog_s = watchdog_s if self._address else None
        self._monotonic = monotonic
        self._last_ping: float | None = None
        self._sock: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """What systemd passes to the main process. The watchdog is ours only if ``$WATCHDOG_PID``
        is unset or names this process (as sd_watchdog_enabled(3) decides)."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        if address is not None and not address.startswith(("/", "@")):
            log.warning("NOTIFY_SOCKET=%s: only unix sockets are supported; not notifying systemd", address)
            address = None
        watchdog_s: float | None = None
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog_s = int(usec) / 1_000_000
        return cls(address, watchdog_s)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def ready(self, status: str | None = None) -> None:
        self._send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> None:
        self._send(f"STATUS={text}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def alive(self) -> None:
        """Call on every round of the main loop: sends ``WATCHDOG=1`` once half the watchdog
        interval has passed since the last one, so a round late by less than half still counts."""
        if self.watchdog_s is None:
            return
        now = self._monotonic()
        if self._last_ping is None or now - self._last_ping >= self.watchdog_s / 2:
            self._last_ping = now
            self._send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.sendto(message.encode(), self._address)
        except OSError as exc:
            # Never fatal (systemd may be restarting); said once, since a watchdog ping repeats.
            if not self._failed:
                self._failed = True
                log.warning("cannot notify systemd at NOTIFY_SOCKET: %s", exc)
            return
        self._failed = False
