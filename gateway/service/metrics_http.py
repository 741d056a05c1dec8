"""The gateway's tiny HTTP server: ``GET /metrics`` (Prometheus text, or OpenMetrics when the
``Accept`` header asks for it) and nothing else.

The gateway has no web framework and needs none for this: one asyncio server, HTTP/1.0-style (one
request per connection, ``Connection: close``), loopback by default (docs/metrics.md). Anything but
``GET``/``HEAD /metrics`` gets 404/405; a request line or headers over 8 KiB or slower than 5 s
are cut off, so a stuck client cannot pile up connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from prometheus_client import CollectorRegistry

from nurserywatch.prometheus import exposition

log = logging.getLogger(__name__)

MAX_HEAD = 8192
READ_TIMEOUT_S = 5.0


def _accept(head: bytes) -> str | None:
    """The request's ``Accept`` header (the last one, if sent twice), or None."""
    found = None
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"accept":
            found = value.strip().decode("latin-1")
    return found


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, registry: CollectorRegistry) -> None:
    try:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            return
        parts = head.split(b"\r\n", 1)[0].split()
        method, path = (parts[0], parts[1].split(b"?", 1)[0]) if len(parts) == 3 else (b"", b"")
        if path != b"/metrics":
            status, body, ctype = "404 Not Found", b"not found: only GET /metrics\n", "text/plain; charset=utf-8"
        elif method not in (b"GET", b"HEAD"):
            status, body, ctype = "405 Method Not Allowed", b"only GET /metrics\n", "text/plain; charset=utf-8"
        else:
            try:
                body, ctype = exposition(registry, _accept(head))
                status = "200 OK"
            except Exception:  # a bug in a metric must not take the gateway down
                log.exception("rendering /metrics failed")
                status, body, ctype = "500 Internal Server Error", b"internal error\n", "text/plain; charset=utf-8"
        headers = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                   "Connection: close\r\n\r\n")
        writer.write(headers.encode() + (b"" if method == b"HEAD" else body))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def metrics_server(host: str, port: int, registry: CollectorRegistry) -> AsyncIterator[int]:
    """Serve ``registry`` at ``http://host:port/metrics`` while the context is open; yields the
    bound port (``port`` 0 picks a free one). OSError naming the address when it cannot listen."""
    try:
        server = await asyncio.start_server(lambda r, w: _handle(r, w, registry), host, port, limit=MAX_HEAD)
    except OSError as exc:
        raise OSError(exc.errno, f"gateway metrics cannot listen on {host}:{port}: {exc.strerror}") from None
    bound = int(server.sockets[0].getsockname()[1])
    log.info("gateway metrics at http://%s:%d/metrics", f"[{host}]" if ":" in host else host, bound)
    try:
        yield bound
    finally:
        server.close()
        await server.wait_closed()
