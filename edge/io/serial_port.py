"""Thin shell around pyserial: keep a serial port open and hand every chunk of bytes to a callback.

    await read_serial(port, baud, on_data, on_state=..., label="clip-01")   # until cancelled

Request/response devices (MH-Z19B, Senseair S8) pass ``request`` and ``poll_interval_s``: the
request bytes are written on open and then every ``poll_interval_s`` while the port is open.

The port is read through the event loop (``loop.add_reader`` on the port's fd, no thread), so
cancellation is immediate. When the port cannot be opened or disappears (USB unplugged, simulator
stopped) it is retried with capped exponential backoff; this never raises for port trouble. The
input buffer is flushed on open: bytes queued before we listened are stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable

import serial

log = logging.getLogger(__name__)


async def read_serial(
    port: str,
    baud: int,
    on_data: Callable[[bytes], None],
    *,
    on_state: Callable[[bool], None] | None = None,
    label: str | None = None,
    request: Callable[[], bytes | None] | None = None,
    poll_interval_s: float | None = None,
    min_backoff_s: float = 0.1,
    max_backoff_s: float = 5.0,
) -> None:
    """Read ``port`` forever. ``on_state(True/False)`` is called when the port opens / is lost."""
    name = label or port
    backoff = min_backoff_s
    last_error: str | None = None
    while True:
        try:
            ser = serial.Serial(port, baud, timeout=0, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as exc:  # ValueError: settings pyserial refuses
            error = _short(exc)
            if error != last_error:  # log each new problem once, not every retry
                log.warning("%s: cannot open %s (%s); retrying every ≤%.0f s", name, port, error, max_backoff_s)
                last_error = error
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff_s)
            continue
        try:
            ser.reset_input_buffer()
            log.info("%s: reading %s at %d baud", name, port, baud)
            last_error = None
            backoff = min_backoff_s
            if on_state:
                on_state(True)
            poller = (
                asyncio.create_task(_poll(ser.fileno(), request, poll_interval_s, name))
                if request is not None and poll_interval_s
                else None
            )
            try:
                reason = await _pump(ser.fileno(), on_data, name)
            finally:
                if poller is not None:
                    poller.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await poller
        finally:
            ser.close()
        log.warning("%s: %s disappeared (%s); reconnecting", name, port, reason)
        if on_state:
            on_state(False)


async def _pump(fd: int, on_data: Callable[[bytes], None], name: str) -> str:
    """Feed ``on_data`` until the port reports end of file or an error; returns the reason."""
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[str] = loop.create_future()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            data, reason = b"", _short(exc)
        else:
            reason = "end of file"
        if not data:
            loop.remove_reader(fd)
            if not gone.done():
                gone.set_result(reason)
            return
        try:
            on_data(data)
        except Exception:  # a bug downstream must not kill the port reader
            log.exception("%s: error while handling %d bytes", name, len(data))

    loop.add_reader(fd, readable)
    try:
        return await gone
    finally:
        loop.remove_reader(fd)


async def _poll(fd: int, request: Callable[[], bytes | None], interval_s: float, name: str) -> None:
    """Write the device's request now and every ``interval_s``; a failed write is logged, and the
    reader notices a port that is really gone."""
    loop = asyncio.get_running_loop()
    due = loop.time()
    while True:
        data = request()
        if data:
            try:
                os.write(fd, data)
            except OSError as exc:
                log.warning("%s: cannot write request (%s)", name, _short(exc))
        due += interval_s
        await asyncio.sleep(max(0.0, due - loop.time()))


def _short(exc: BaseException) -> str:
    """The OS reason ("No such file or directory") without pyserial's repetition of the path."""
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__
