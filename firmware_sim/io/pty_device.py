"""A simulated serial device: a real pseudo-terminal whose slave end appears at the kit's port path
(as a symlink), so the edge opens it with pyserial exactly like /dev/ttyUSB0.

The master end is non-blocking. When nobody reads the port (edge stopped, or too slow) the kernel
buffer fills; then bytes are dropped and counted instead of blocking or crashing the simulator —
like a UART that keeps transmitting whether or not anyone listens.
"""

from __future__ import annotations

import contextlib
import os
import tty
from pathlib import Path


class PortError(Exception):
    """The port path cannot be used for a simulated device. ``str()`` says why and what to do."""


class PtyDevice:
    def __init__(self, link: str | Path) -> None:
        self.link = Path(link)
        self.written_bytes = 0
        self.dropped_bytes = 0
        self.dropped_writes = 0
        if self.link.exists() and not self.link.is_symlink():
            raise PortError(
                f"{self.link} exists and is not a symlink; refusing to replace it with a simulated "
                "device (point the kit's port at a free path, e.g. a relative path like run/clip-01)"
            )
        master, slave = os.openpty()
        try:
            # Raw mode: no echo, no line editing, no CR/LF translation — bytes pass unchanged even
            # to a reader (cat, socat) that does not configure the port itself.
            tty.setraw(slave)
            self.slave_name = os.ttyname(slave)
            os.set_blocking(master, False)
            self._link(self.slave_name)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        # Keep no slave fd open: with no reader the kernel discards output instead of queueing
        # stale sentences for the next reader (real USB serial behaves the same way).
        os.close(slave)
        self._master: int | None = master

    def _link(self, target: str) -> None:
        try:
            self.link.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.link.with_name(f".{self.link.name}.{os.getpid()}.tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(target)
            os.replace(tmp, self.link)  # atomic; also replaces a stale symlink from a crashed run
        except OSError as exc:
            raise PortError(
                f"cannot create the simulated port {self.link}: {exc.strerror or exc} (point the kit's "
                "port at a writable path, e.g. a relative path like run/clip-01)"
            ) from None

    def write(self, data: bytes) -> int:
        """Write what the kernel accepts now; drop (and count) the rest. Returns bytes written."""
        if self._master is None:
            raise ValueError(f"{self.link}: device is closed")
        try:
            n = os.write(self._master, data)
        except OSError:  # BlockingIOError: buffer full; EIO: no reader on some kernels
            n = 0
        self.written_bytes += n
        if n < len(data):
            self.dropped_bytes += len(data) - n
            self.dropped_writes += 1
        return n

    def read(self, max_bytes: int = 4096) -> bytes:
        """What the reader of the port has written (requests to a responding device); b"" if none."""
        if self._master is None:
            raise ValueError(f"{self.link}: device is closed")
        try:
            return os.read(self._master, max_bytes)
        except OSError:  # BlockingIOError: nothing yet; EIO: nobody has the port open
            return b""

    def close(self) -> None:
        """Close the pty and remove the symlink if it still points at this device."""
        if self._master is None:
            return
        with contextlib.suppress(OSError):
            if self.link.is_symlink() and os.readlink(self.link) == self.slave_name:
                self.link.unlink()
        os.close(self._master)
        self._master = None

    def __enter__(self) -> PtyDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
