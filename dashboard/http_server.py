"""The dashboard's HTTP server: uvicorn's h11 protocol behind our own accept loop and a connection
guard, so idle or trickling clients cannot take the dashboard (and its ``/healthz``) down.

Why not uvicorn's defaults: a connection that never sends a request is kept for ever (uvicorn's
keep-alive timer only starts after a first response), ``limit_concurrency`` answers 503 only after
accepting, and asyncio's accept loop (Python 3.11) logs and re-schedules itself up to ``backlog``
times per wake-up when ``accept()`` fails with EMFILE — 1,100 idle connections at 1,024 descriptors
made 200,000 log lines a minute and no answer at all. Here:

- **a cap on open connections** below the descriptor limit (``RLIMIT_NOFILE`` soft limit minus
  ``reserve_fds`` for the databases, the broker link and the log, at most ``max_connections``),
  enforced right after ``accept()``, before any transport exists: at the cap a new connection evicts
  the oldest connection that is still waiting for its request (idle, or a request only partly sent);
  when every open connection is busy serving a request, the new one is closed at once. Both counted;
- **a request timeout**: from connecting, and from the end of each response, a client has
  ``request_timeout_s`` to deliver a complete request (head and body) or the connection is closed —
  a slowloris holds nothing. A request being served (a live stream) is never timed out by this;
- uvicorn's **keep-alive timeout** (``keep_alive_s``) for an idle connection after a response;
- **accept() errors** back off (50 ms doubling to 1 s) and are logged at most once a minute with a count.

Counts are in ``/healthz`` (``connections``), and one log line a minute at most summarises them."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, cast

import h11
import uvicorn
from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from nurserywatch.systemd import Notifier

log = logging.getLogger(__name__)

#: accept() errors that mean "out of resources for now": wait and retry, never spin.
_RESOURCE_ERRORS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: A connection that went away between the handshake and accept(): nothing to do.
_GONE_ERRORS: Final = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.ECONNRESET})
LOG_EVERY_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What the dashboard's HTTP server allows (docs/dashboard.md, *Connections and timeouts*)."""

    #: Time to deliver a complete request (head and body) after connecting or after a response.
    request_timeout_s: float = 5.0
    #: uvicorn's keep-alive: an idle connection after a response is closed after this.
    keep_alive_s: int = 5
    #: Never more open connections than this, whatever the descriptor limit.
    max_connections: int = 4096
    #: Descriptors kept for everything else: SQLite files (users, the gateway's database from worker
    #: threads), the MQTT link, the log, the interpreter's own.
    reserve_fds: int = 128
    #: The kernel's queue of handshaken connections not yet accepted (kernel memory, no descriptor of
    #: ours; capped by net.core.somaxconn). Short, and a burst of connections waits for SYN retries.
    backlog: int = 2048

    def connection_cap(self) -> int:
        """The cap for this process: ``max_connections`` or the descriptor limit less the reserve."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(8, min(self.max_connections, soft - self.reserve_fds))


@dataclass
class ConnectionGuard:
    """Open connections, which of them are waiting for a request (oldest first), and the counts."""

    cap: int
    open: set[GuardedH11Protocol] = field(default_factory=set)
    #: Connections waiting for (the rest of) a request, in the order they started waiting.
    waiting: dict[GuardedH11Protocol, None] = field(default_factory=dict)
    evicted: int = 0
    refused: int = 0
    timed_out: int = 0
    accept_errors: int = 0
    _logged: dict[str, int] = field(default_factory=dict)
    _last_log: float | None = None

    def counts(self) -> dict[str, int]:
        return {"open": len(self.open), "cap": self.cap, "evicted": self.evicted, "refused": self.refused,
                "timed_out": self.timed_out, "accept_errors": self.accept_errors}  # fmt: skip

    def make_room(self, now: float) -> bool:
        """Before a just-accepted connection gets a transport: True when it may stay (after evicting
        the oldest waiting connection if at the cap), False when it must be closed at once."""
        if len(self.open) < self.cap:
            return True
        if self.waiting:
            victim = next(iter(self.waiting))
            self.left(victim)
            victim.transport.close()
            self.evicted += 1
            self._note(now, f"connection cap ({self.cap}) reached: closing the oldest connection still waiting "
                            "for a request")  # fmt: skip
            return True
        self.refused += 1
        self._note(now, f"connection cap ({self.cap}) reached and every connection is serving a request: "
                        "refusing new connections")  # fmt: skip
        return False

    def joined(self, conn: GuardedH11Protocol) -> None:
        self.open.add(conn)

    def left(self, conn: GuardedH11Protocol) -> None:
        self.open.discard(conn)
        self.waiting.pop(conn, None)

    def timed_out_now(self, now: float) -> None:
        self.timed_out += 1
        self._note(now, "closing connections that did not send a complete request in time")

    def accept_failed(self, now: float, exc: OSError) -> None:
        self.accept_errors += 1
        self._note(now, f"accept() failed: {exc.strerror or exc} (out of descriptors? raise LimitNOFILE)")

    def _note(self, now: float, first_line: str) -> None:
        """At most one log line a minute: the first event of a kind at once, then a summary."""
        counts = {k: v for k, v in self.counts().items() if k not in ("open", "cap")}
        if self._last_log is not None and now - self._last_log < LOG_EVERY_S:
            return
        if self._last_log is None:
            message = first_line
        else:
            message = "connections since the last report: " + ", ".join(
                f"{k} {v - self._logged.get(k, 0)}" for k, v in counts.items()
            )
        log.warning("%s (open %d, totals %s; /healthz has the counts)", message, len(self.open), counts)
        self._last_log, self._logged = now, counts


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the request timeout and the guard's bookkeeping."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 guard: ConnectionGuard, request_timeout_s: float) -> None:  # fmt: skip
        super().__init__(config, server_state, app_state)
        self.guard = guard
        self.request_timeout_s = request_timeout_s
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.guard.joined(self)
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.guard.left(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def _watch(self) -> None:
        """Arm the request timer while the client owes us (the rest of) a request; disarm it once the
        request is complete. Armed once per request: trickling bytes do not push the deadline."""
        owes = self.conn.their_state in (h11.IDLE, h11.SEND_BODY)
        if owes and not self.transport.is_closing():
            if self._deadline is None:
                self._deadline = self.loop.call_later(self.request_timeout_s, self._timed_out)
                self.guard.waiting[self] = None
        else:
            self._disarm()

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.guard.waiting.pop(self, None)

    def _timed_out(self) -> None:
        self._deadline = None
        self.guard.waiting.pop(self, None)
        if not self.transport.is_closing():
            self.guard.timed_out_now(self.loop.time())
            self.transport.close()  # FIN, not RST: a browser then simply opens a new one


class AcceptLoop:
    """Accepts on one listening socket and hands each connection to ``factory``: in place of
    ``loop.create_server`` (uvicorn's ``Server.servers`` only needs ``close`` and ``wait_closed``)."""

    def __init__(self, sock: socket.socket, factory: Callable[[], asyncio.Protocol], guard: ConnectionGuard,
                 backlog: int) -> None:  # fmt: skip
        sock.setblocking(False)
        sock.listen(backlog)
        self._sock = sock
        self._factory = factory
        self._guard = guard
        self._task = asyncio.create_task(self._run(), name="dashboard-accept")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.05
        while True:
            try:
                conn, _ = await loop.sock_accept(self._sock)
            except OSError as exc:
                if exc.errno in _GONE_ERRORS:
                    continue
                if exc.errno not in _RESOURCE_ERRORS:
                    raise
                self._guard.accept_failed(loop.time(), exc)
                await asyncio.sleep(backoff)  # wait for descriptors to come back; never spin
                backoff = min(1.0, backoff * 2)
                continue
            backoff = 0.05
            if not self._guard.make_room(loop.time()):
                conn.close()
                continue
            try:
                await loop.connect_accepted_socket(self._factory, conn)
            except OSError:
                conn.close()

    def close(self) -> None:
        self._task.cancel()

    async def wait_closed(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class EmbeddedServer(uvicorn.Server):
    """uvicorn with our accept loop and connection guard, and without its own signal handling: the
    caller owns the process and stops us by setting ``should_exit`` (``serve_dashboard``). Its main
    loop (every 0.1 s) pings systemd's watchdog through ``notifier``: a hung event loop stops the pings."""

    def __init__(self, config: Config, guard: ConnectionGuard, limits: ServerLimits, notifier: Notifier) -> None:
        super().__init__(config)
        self.guard = guard
        self.limits = limits
        self.notifier = notifier

    async def on_tick(self, counter: int) -> bool:
        self.notifier.alive()
        return await super().on_tick(counter)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)  # as uvicorn does: the app's startup failed (logged by uvicorn)
        config, state, app_state, guard = self.config, self.server_state, self.lifespan.state, self.guard

        def protocol() -> asyncio.Protocol:
            return GuardedH11Protocol(config, state, app_state, guard, self.limits.request_timeout_s)

        loops = [AcceptLoop(s, protocol, guard, self.limits.backlog) for s in sockets or []]
        self.servers = cast("list[asyncio.base_events.Server]", loops)  # uvicorn needs close/wait_closed only
        self.started = True


def server_config(app: Any, limits: ServerLimits, trusted_proxies: tuple[str, ...]) -> Config:
    """uvicorn's settings for the dashboard. Forwarded headers (X-Forwarded-For/-Proto) are believed
    only from ``trusted_proxies`` (none by default), never from whoever happens to be on 127.0.0.1."""
    return Config(
        app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=3, http="h11",
        timeout_keep_alive=limits.keep_alive_s, backlog=limits.backlog,
        proxy_headers=bool(trusted_proxies), forwarded_allow_ips=list(trusted_proxies) or None,
    )  # fmt: skip
