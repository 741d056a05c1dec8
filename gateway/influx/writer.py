"""The I/O shell that writes readings to InfluxDB over HTTP (httpx): v1 ``/write`` (InfluxDB 1.x,
including Debian's 1.6.7) or v2 ``/api/v2/write`` (InfluxDB 2.x, 3.x, 1.8+, VictoriaMetrics).

What to send and what each answer means is decided in gateway/influx/line_protocol.py; this module only moves
bytes. The gateway hands lines over with ``submit`` (never blocks, never waits for the database —
alerting must not), a background task batches them by size and time and posts them. When the
database does not answer (or answers 429/5xx), the batch goes into the on-disk ``WriteBuffer``; from
then on every new line goes behind it, and the buffer is drained oldest first, with backoff and
jitter honouring Retry-After, until it is empty. A batch rejected with 400 (a bad point; InfluxDB's
"partial write") is split until the bad point stands alone; that point is dead-lettered (logged,
counted) and the rest written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Literal

import httpx

from gateway.db.reader import StoreError, StoreReader
from gateway.engine.observers import AcceptedReading, GatewayObserver, ObserverContext, ObserverFactory
from gateway.influx.buffer import WriteBuffer
from gateway.influx.line_protocol import Backoff, Batcher, Verdict, classify, parse_retry_after, reading_line, split
from gateway.influx.stats import WriterStats
from gateway.retention.job import influx_retention
from gateway.trends.queries import quote_ident
from gateway.trends.reader import influx_trend as influx_trend  # re-exported: moved to the read module
from gateway.trends.reader import room_trend as room_trend
from nurserywatch.kit import Device, Kit

log = logging.getLogger("nurserywatch.gateway.influx")

Api = Literal["v1", "v2"]
ApiChoice = Literal["v1", "v2", "auto"]


@dataclass(frozen=True, slots=True)
class InfluxTarget:
    url: str
    #: "auto": asked from /ping by the writer task before its first write (see ``api_from_version``).
    api: ApiChoice
    #: v1: the database (InfluxDB 1.x; for 2.x through a DBRP mapping).
    database: str = "nurserywatch"
    #: v2: organisation, bucket and token.
    org: str = ""
    bucket: str = ""
    token: str | None = None

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"} if self.token else {}

    def write_request(self) -> tuple[str, dict[str, str], dict[str, str]]:
        """Path, query parameters and headers of a write (the API must be known)."""
        headers = {"Content-Type": "text/plain; charset=utf-8", **self.auth_headers()}
        if self.api == "auto":
            raise ValueError("the write API is not known yet (api: auto)")
        if self.api == "v1":
            return "/write", {"db": self.database, "precision": "ms"}, headers
        return "/api/v2/write", {"org": self.org, "bucket": self.bucket, "precision": "ms"}, headers


def api_from_version(version: str | None) -> Api:
    """The write API a server offers, from its ``X-Influxdb-Version`` header: 1.x → v1; 2.x, 3.x → v2.
    No header (a compatible server such as VictoriaMetrics): v1, which those servers all accept."""
    if not version:
        return "v1"
    major = version.strip().lstrip("vV").split(".", 1)[0]
    return "v1" if major in ("0", "1") else "v2"


async def detect_api(url: str, timeout_s: float = 5.0) -> Api:
    """Ask ``/ping`` which API the server speaks (raises httpx.HTTPError when nothing answers)."""
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s) as client:
        r = await client.get("/ping")
    return api_from_version(r.headers.get("X-Influxdb-Version"))


async def create_database(url: str, database: str, timeout_s: float = 5.0) -> None:
    """InfluxDB 1.x: create the database if it is missing (``CREATE DATABASE`` is idempotent)."""
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s) as client:
        r = await client.post("/query", data=_create_database(database))
    r.raise_for_status()


#: A reading's identity in the gateway's SQLite (its UNIQUE key): device, stream, seq, ts.
ReadingKey = tuple[str, str, int, int]


class InfluxWriter:
    """Batches submitted lines and writes them; see the module docstring. Run ``run()`` as a task."""

    def __init__(
        self,
        target: InfluxTarget,
        buffer: WriteBuffer,
        *,
        batcher: Batcher | None = None,
        backoff: Backoff | None = None,
        drain_lines: int = 5000,
        max_queue: int = 50_000,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        create_database: bool = True,
    ) -> None:
        self.target = target
        self.buffer = buffer
        # "is None", not "or": an empty Batcher is falsy (it has a length), and was silently replaced.
        self.batcher = batcher if batcher is not None else Batcher()
        self.backoff = backoff if backoff is not None else Backoff()
        self.drain_lines = drain_lines
        self.create_database = create_database
        #: The kit's retention.readings_raw_days, applied when the database is prepared (ReadingsSink sets it).
        self.retention_days: int | None = None
        self.max_queue = max_queue
        self.stats = WriterStats()
        self._queue: deque[str] = deque()
        self._wake = asyncio.Event()
        self._path, self._params, self._headers = "", dict[str, str](), dict[str, str]()
        self._client = httpx.AsyncClient(
            base_url=target.url, timeout=timeout_s, transport=transport, headers=target.auth_headers()
        )
        self._retry_after: float | None = None
        self._in_flight = 0
        #: Backfill bookkeeping: lines leave memory (written, or pushed to disk) in submission order,
        #: so counting them tells which submitted readings are safe (see ``on_durable``).
        self.on_durable: Callable[[ReadingKey], None] | None = None
        self._submitted = 0
        self._left_memory = 0
        self._keys: deque[tuple[int, ReadingKey]] = deque()
        self._last_outage_log = 0.0
        self.stats.buffered = len(buffer)
        self._failed = False
        self._last_dead_log = 0.0

    # ------------------------------------------------------------ the gateway's side

    def submit(self, line: str, key: ReadingKey | None = None) -> None:
        """Queue one line. Never blocks on the database; past ``max_queue`` lines in memory (the
        writer task is behind), they go to the on-disk buffer. ``key``: the reading's identity in the
        gateway's SQLite, reported to ``on_durable`` once the line is written or on disk."""
        self._queue.append(line)
        self._submitted += 1
        if key is not None:
            self._keys.append((self._submitted, key))
        # Not while a batch is in flight: if it failed, it would land on disk behind newer lines. A
        # request lasts at most ``timeout_s``, so the queue stays bounded anyway.
        if len(self._queue) >= self.max_queue and not self._in_flight:
            self._spill()
        self._wake.set()

    @property
    def pending(self) -> int:
        """Lines not written yet: in memory, in the current batch and on disk."""
        return len(self._queue) + len(self.batcher) + self._in_flight + len(self.buffer)

    # ------------------------------------------------------------ the task

    async def run(self) -> None:
        """The writer task. On cancellation (the gateway stopping) whatever is in memory goes to the
        on-disk buffer, to be written after the next start."""
        try:
            await self._prepare()
            await self._loop()
        except asyncio.CancelledError:
            self._spill()
            raise

    async def _prepare(self) -> None:
        """Learn the write API (``auto``) and, for v1, create the database — retried with backoff
        for as long as the database does not answer (lines meanwhile wait in memory, then on disk)."""
        while True:
            try:
                if self.target.api == "auto":
                    r = await self._client.get("/ping")
                    api = api_from_version(r.headers.get("X-Influxdb-Version"))
                    if api == "v2" and not (self.target.org and self.target.bucket):
                        log.error("%s speaks the v2 write API: the kit's storage needs org and bucket", self.target.url)
                        api = "v1"  # the 1.x compatibility endpoint of 2.x needs a DBRP mapping, but it may work
                    self.target = replace(self.target, api=api)
                    log.info("InfluxDB at %s: using the %s write API", self.target.url, api)
                if self.target.api == "v1" and self.create_database:
                    r = await self._client.post("/query", data=_create_database(self.target.database))
                    if r.status_code >= 300:  # no admin rights: the database may exist anyway
                        log.warning("cannot create database %s: HTTP %d", self.target.database, r.status_code)
                if self.retention_days is not None:
                    await influx_retention(self._client, self.target.api, self.target.database, self.retention_days)
                break
            except httpx.HTTPError as exc:
                self.stats.retries += 1
                self._error(f"{self.target.url} not reachable: {exc!r}")
                log.debug("InfluxDB not reachable yet: %r", exc)
                if len(self._queue) >= self.max_queue // 2:
                    self._spill()
                await asyncio.sleep(self.backoff.next_delay())
        self.backoff.reset()
        self._path, self._params, self._headers = self.target.write_request()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if len(self.buffer):
                await self._drain_once()
                continue
            while self._queue:
                full = self.batcher.add(self._queue.popleft(), _ms(loop.time()))
                if full is not None:
                    await self._write_or_buffer(full)
                    if len(self.buffer):
                        break
            if len(self.buffer):
                continue
            due = self.batcher.due_at()
            if due is not None and _ms(loop.time()) >= due:
                await self._write_or_buffer(self.batcher.take())
                continue
            self._wake.clear()
            timeout = None if due is None else max(0.0, (due - _ms(loop.time())) / 1000)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    async def flush(self) -> bool:
        """Write everything pending now (for shutdown and tests); True when nothing is left. What
        cannot be written stays in the on-disk buffer for the next start."""
        self._spill()
        if not self._path:  # the API is not known yet: the database never answered
            return not len(self.buffer)
        while len(self.buffer):
            upto, lines = self.buffer.peek(self.drain_lines)
            if not await self._send(lines):
                return False
            self._ack(upto)
        return True

    async def aclose(self) -> None:
        await self._client.aclose()

    # ------------------------------------------------------------ internals

    def _spill(self) -> None:
        """Move the current batch and the memory queue to the end of the on-disk buffer (in order)."""
        lines = self.batcher.take() + list(self._queue)
        self._queue.clear()
        if lines:
            self._push(lines)

    def _push(self, lines: list[str]) -> None:
        """Lines from memory to the end of the disk buffer: from here on they survive a crash."""
        self.stats.dropped += self.buffer.push(lines)
        self.stats.buffered = len(self.buffer)
        self._safe(len(lines))

    def _ack(self, upto: int) -> None:
        self.buffer.ack(upto)
        self.stats.buffered = len(self.buffer)

    def _safe(self, n: int) -> None:
        """The next ``n`` lines in submission order left memory (written, dead-lettered or on disk):
        tell ``on_durable`` the newest reading that is now safe."""
        self._left_memory += n
        newest: ReadingKey | None = None
        while self._keys and self._keys[0][0] <= self._left_memory:
            newest = self._keys.popleft()[1]
        if newest is not None and self.on_durable is not None:
            self.on_durable(newest)

    async def _write_or_buffer(self, batch: list[str]) -> None:
        self._in_flight = len(batch)
        try:
            written = await self._send(batch)
        except asyncio.CancelledError:  # stopping mid-write: the batch must not vanish with the task
            self._in_flight = 0
            self._push(batch)
            raise
        finally:
            self._in_flight = 0
        if written:
            self._safe(len(batch))
        else:
            self._push(batch)
            self._spill()  # everything newer goes behind it: drained in order
            log.warning("InfluxDB not writable; buffering on disk (%d lines)", len(self.buffer))

    async def _drain_once(self) -> None:
        if self._failed:  # wait after every failure, also the one that started the outage
            await asyncio.sleep(self.backoff.next_delay(self._retry_after))
        self._spill()
        upto, lines = self.buffer.peek(self.drain_lines)
        if await self._send(lines):
            self._ack(upto)
            self.backoff.reset()
            if not len(self.buffer):
                log.info("InfluxDB writable again; buffer drained (%s)", self.stats.summary())
        elif time.monotonic() - self._last_outage_log >= 60.0:  # an outage says how it goes, once a minute
            self._last_outage_log = time.monotonic()
            log.warning("InfluxDB still not writable: %d lines on disk; %s", len(self.buffer), self.stats.last_error)

    async def _send(self, batch: list[str]) -> bool:
        """Write a batch, splitting it around bad points. False: the database is not writable now
        (the whole batch is to be tried again; points already taken are overwritten harmlessly)."""
        todo = [batch]
        while todo:
            part = todo.pop()
            if not part:
                continue
            status, retry_after = await self._post(part)
            verdict = classify(status)
            if verdict is Verdict.WRITTEN:
                self.stats.written += len(part)
            elif verdict is Verdict.REJECTED and len(part) == 1:
                self._dead_letter(part[0])
            elif verdict is Verdict.REJECTED:
                left, right = split(part)
                todo += [right, left]  # left first: keep the order
            else:
                self.stats.retries += 1
                self._retry_after, self._failed = retry_after, True
                return False
        self._failed = False
        return True

    async def _post(self, lines: list[str]) -> tuple[int | None, float | None]:
        body = ("\n".join(lines) + "\n").encode()
        try:
            r = await self._client.post(self._path, params=self._params, headers=self._headers, content=body)
        except httpx.HTTPError as exc:
            log.debug("InfluxDB write failed: %r", exc)
            self._error(f"write failed: {exc!r}")
            return None, None
        if r.status_code >= 300:
            log.debug("InfluxDB answered %d: %s", r.status_code, r.text[:300])
            self._error(f"HTTP {r.status_code}: {r.text[:200].strip()}")
        return r.status_code, parse_retry_after(r.headers.get("Retry-After"), time.time())

    def _error(self, what: str) -> None:
        self.stats.last_error, self.stats.last_error_ts = what, time.time()

    def _dead_letter(self, line: str) -> None:
        self.stats.dead_lettered += 1
        self.stats.dead_letters.append(line)
        now = time.monotonic()
        if now - self._last_dead_log >= 10.0:  # rate-limited; the counter has them all
            self._last_dead_log = now
            log.error("InfluxDB rejected a point; dead-lettered (%d so far): %s", self.stats.dead_lettered, line)


def _create_database(database: str) -> dict[str, str]:
    return {"q": f"CREATE DATABASE {quote_ident(database)}"}


def _ms(loop_time_s: float) -> int:
    return int(loop_time_s * 1000)


class InfluxObserver(GatewayObserver):
    """Hands every stored reading to the writer, on the gateway's observer hook (gateway/engine/observers.py),
    including out-of-order ones the rules refuse as stale: InfluxDB must hold what SQLite holds."""

    def __init__(self, writer: InfluxWriter, site: str) -> None:
        self.writer = writer
        self.site = site

    def on_stored(self, accepted: AcceptedReading) -> None:
        line = reading_line(
            site=self.site, room=accepted.room, device=accepted.device, child=accepted.child,
            stream=accepted.stream, reading=accepted.reading,
        )  # fmt: skip
        if line is not None:
            r = accepted.reading
            self.writer.submit(line, (accepted.device, accepted.stream.value, r.seq, r.ts))


@asynccontextmanager
async def running_writer(writer: InfluxWriter) -> AsyncIterator[InfluxWriter]:
    """Run the writer's task for the duration of the block; on exit, flush what can be written
    (the rest stays in the on-disk buffer) and close."""
    task = asyncio.create_task(writer.run(), name="influx-writer")
    try:
        yield writer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(writer.flush(), 10.0)  # what is not written stays in the buffer
        await writer.aclose()


class ReadingsSink:
    """The kit's ``storage:`` for readings, as ``run_gateway`` wires it: with ``readings: influxdb``
    an InfluxWriter whose task runs beside the gateway and an observer feeding it; with ``sqlite``
    nothing (the gateway's own store already holds the readings)."""

    def __init__(self, kit: Kit) -> None:
        self.kit = kit
        self.writer: InfluxWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._reader: StoreReader | None = None
        cfg = kit.storage
        if cfg.readings == "influxdb":
            assert cfg.url is not None  # the kit model checks it
            target = InfluxTarget(
                cfg.url, cfg.api, database=cfg.database, org=cfg.org or "", bucket=cfg.bucket or "",
                token=os.environ.get(cfg.token_env) or None,
            )  # fmt: skip
            buffer = WriteBuffer(kit.resolve_port(cfg.buffer_path), max_lines=cfg.buffer_max_lines)
            self.writer = InfluxWriter(target, buffer, batcher=Batcher(max_lines=cfg.batch_lines,
                                                                       max_age_ms=cfg.batch_ms))  # fmt: skip
            self.writer.retention_days = kit.retention.readings_raw_days

    @property
    def observers(self) -> list[ObserverFactory]:
        return [] if self.writer is None else [self._observer]

    def _observer(self, ctx: ObserverContext) -> GatewayObserver:
        assert self.writer is not None
        self._reader = StoreReader(ctx.db_path)
        # The gateway is not connected yet: every reading after this one will come live.
        upto = self._reader.max_reading_id()
        self._task = asyncio.get_running_loop().create_task(self._run(ctx, upto), name="influx-writer")
        return InfluxObserver(self.writer, ctx.kit.site)

    async def _run(self, ctx: ObserverContext, upto: int) -> None:
        """The writer task, after the backfill. That runs here, once the gateway is fully built (its
        device → child bindings include today's assignments), and before this task writes anything,
        so no live line has left memory yet; the mark only starts following live lines after it."""
        assert self.writer is not None and self._reader is not None
        try:
            backfill(self.writer.buffer, self._reader, ctx.kit.site, ctx.device, upto, self.writer.stats)
        except StoreError as exc:  # the live path must not stop for it
            log.error("InfluxDB backfill failed: %s", exc)
        self.writer.on_durable = self._mark
        await self.writer.run()

    def _mark(self, key: ReadingKey) -> None:
        """Move the backfill mark to the reading ``key`` (written to InfluxDB or on disk, and so is
        everything submitted before it). One indexed lookup per batch, not per reading."""
        assert self.writer is not None and self._reader is not None
        try:
            reading_id = self._reader.reading_id(*key)
        except StoreError as exc:  # the mark stays behind: at worst more is re-sent after a crash
            log.warning("backfill mark not moved: %s", exc)
            return
        if reading_id is not None and reading_id > (self.writer.buffer.mark() or 0):
            self.writer.buffer.set_mark(reading_id)

    async def aclose(self) -> None:
        """Stop the writer task (what is in memory goes to the on-disk buffer) and close."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.writer is not None:
            log.info("InfluxDB writer stopped: %s", self.writer.stats.summary())
            await self.writer.aclose()
            self.writer.buffer.close()


#: Readings read from the gateway's SQLite per page when backfilling.
BACKFILL_PAGE = 5000


def backfill(
    buffer: WriteBuffer,
    reader: StoreReader,
    site: str,
    device: Callable[[str], Device | None],
    upto: int | None = None,
    stats: WriterStats | None = None,
) -> int:
    """At start: put every reading the gateway stored after the buffer's mark (see WriteBuffer) and
    up to ``upto`` (default: the newest) into the disk buffer, and move the mark to ``upto``. Those
    are the readings a crash (kill -9, power loss) caught in memory; some of them may be in InfluxDB
    already, and writing them again is harmless (same series and time: one point). ``device`` gives
    a device's room and child as the gateway binds them now (``ObserverContext.device``). A buffer without a
    mark (InfluxDB newly switched on) starts at ``upto``: history is not copied. Returns the number
    of readings queued."""
    top = reader.max_reading_id() if upto is None else upto
    mark = buffer.mark()
    if mark is None or mark > top:
        if mark is not None:  # the gateway's database was replaced: its ids start again
            log.warning("backfill mark %d is past the newest reading (%d): starting from there", mark, top)
        buffer.set_mark(top)
        return 0
    queued = skipped = 0
    while mark < top and (rows := [r for r in reader.readings_after(mark, BACKFILL_PAGE) if r[0] <= top]):
        lines: list[str] = []
        for _, stored in rows:
            dev = device(stored.device)
            if dev is None:
                skipped += 1  # a device no longer in the kit: its room and child are unknown
                continue
            line = reading_line(site=site, room=dev.room, device=dev.id, child=dev.child,
                                stream=stored.stream, reading=stored.reading)  # fmt: skip
            if line is not None:
                lines.append(line)
        dropped = buffer.push(lines)
        mark = rows[-1][0]
        buffer.set_mark(mark)  # after the push: a crash in between re-sends, never skips
        queued += len(lines)
        if stats is not None:
            stats.dropped += dropped
    buffer.set_mark(top)
    if stats is not None:
        stats.backfilled += queued
        stats.buffered = len(buffer)
    if queued or skipped:
        log.info("InfluxDB backfill: %d reading(s) stored after the last confirmed one queued for writing%s",
                 queued, f"; {skipped} of devices no longer in the kit skipped" if skipped else "")  # fmt: skip
    return queued
