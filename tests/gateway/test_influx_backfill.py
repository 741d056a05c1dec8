"""InfluxDB backfill after a crash and the writer's counters (docs/storage.md).

The backfill mark lives in the disk buffer; at start, readings the gateway's SQLite holds after it
are queued again. Re-sending overlap is safe because InfluxDB keeps one point per series and time
(checked here on the real 1.6.7 server). The end-to-end test kills a real gateway process with
SIGKILL while lines wait in its memory, restarts it, and compares InfluxDB with SQLite.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Awaitable
from pathlib import Path

import aiomqtt
import httpx
import yaml

from gateway.db.reader import StoreReader
from gateway.db.store import Store
from gateway.influx.buffer import WriteBuffer
from gateway.influx.line_protocol import Backoff, Batcher
from gateway.influx.writer import InfluxTarget, InfluxWriter, ReadingKey, backfill, running_writer
from nurserywatch.contract import EdgeStatus, Position, PostureReading, Stream, edge_topic, reading_topic
from nurserywatch.kit import Kit
from nurserywatch.mqtt import BrokerURL
from tests.support.clock import T0
from tests.support.gateway_stack import posture
from tests.support.influx_servers import DB, Server, air, influx_query, line
from tests.support.kits import make_kit
from tests.support.processes import print_logs, spawn, stop
from tests.support.waiting import wait_until

# ---------------------------------------------------------------- the mark and the backfill (no server)


def test_mark_is_kept_in_the_buffer_file(tmp_path: Path) -> None:
    buf = WriteBuffer(tmp_path / "buf.sqlite3")
    assert buf.mark() is None
    buf.set_mark(41)
    buf.set_mark(42)
    buf.push(["m f=1 1"])
    buf.close()
    again = WriteBuffer(tmp_path / "buf.sqlite3")
    assert again.mark() == 42 and len(again) == 1
    again.close()


def _store_posture(db: Path, seqs: range, device: str = "clip-01") -> None:
    with Store(db) as store:
        for i in seqs:
            reading = PostureReading(ts=T0 + i * 100, seq=i, position=Position.SUPINE, accel_mg=(0, 0, -1000))
            assert store.add_reading(device, Stream.POSTURE, reading, T0)


def test_backfill_queues_what_follows_the_mark(tmp_path: Path) -> None:
    kit = make_kit("backfill")
    db = tmp_path / "gw.sqlite3"
    _store_posture(db, range(10))
    _store_posture(db, range(10, 12), device="clip-gone")  # no longer in the kit: cannot be tagged
    reader = StoreReader(db)
    buf = WriteBuffer(tmp_path / "buf.sqlite3")
    devices = {d.id: d for d in kit.devices}.get

    def run(upto: int | None = None) -> int:
        return backfill(buf, reader, kit.site, devices, upto)

    assert run() == 0  # InfluxDB newly switched on: from now on, no copy of the history
    assert buf.mark() == 12 and len(buf) == 0

    buf.set_mark(reader.reading_id("clip-01", "posture", 3, T0 + 300) or 0)
    assert buf.mark() == 4
    assert run(upto=8) == 4  # seq 4..7 (ids 5..8); later ones come live, through the observer
    assert buf.mark() == 8
    assert run() == 2  # seq 8, 9; the two of clip-gone skipped
    _, lines = buf.peek(100)
    assert [int(ln.rsplit(" ", 1)[1]) for ln in lines] == [T0 + i * 100 for i in range(4, 10)]
    assert all(ln.startswith("posture,child=c001,device=clip-01,room=hiyoko,site=backfill ") for ln in lines)
    assert buf.mark() == 12
    assert run() == 0 and len(buf) == 6  # nothing twice

    buf.set_mark(99)  # the gateway's database was replaced (ids start again): no skipping for ever
    assert run() == 0 and buf.mark() == 12
    buf.close()


class _Db:
    """An in-process stand-in for answers no real server gives on demand (503, a chosen 400)."""

    def __init__(self) -> None:
        self.status = 204
        self.lines: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = request.content.decode().splitlines()
        if self.status != 204:
            return httpx.Response(self.status, text="database busy")
        if any("bad" in ln for ln in body):
            return httpx.Response(400, text='{"error":"partial write: field type conflict"}')
        self.lines += body
        return httpx.Response(204)


def _writer(tmp_path: Path, db: _Db, max_lines: int = 3, buffer_max: int = 1000) -> InfluxWriter:
    return InfluxWriter(
        InfluxTarget("http://db.invalid", "v1"), WriteBuffer(tmp_path / "buf.sqlite3", max_lines=buffer_max),
        batcher=Batcher(max_lines=max_lines, max_age_ms=60_000), backoff=Backoff(base_s=0.01, cap_s=0.02),
        transport=httpx.MockTransport(db), create_database=False,
    )  # fmt: skip


def _key(i: int) -> ReadingKey:
    return ("air-1", "air", i, i)


async def test_durable_only_once_written_or_on_disk(tmp_path: Path) -> None:
    """``on_durable`` names the newest reading that is in InfluxDB or on disk — never one that still
    waits in memory, where a kill -9 would lose it."""
    db, safe = _Db(), list[ReadingKey]()
    writer = _writer(tmp_path, db)
    writer.on_durable = safe.append
    async with running_writer(writer):
        for i in range(5):  # one full batch of 3 (written), 2 waiting in memory (batch not due)
            writer.submit(f"m f={i}.0 {i}", _key(i))
        await wait_until(lambda: len(db.lines) == 3, timeout_s=20)
        await asyncio.sleep(0.05)
        assert safe == [_key(2)]
        db.status = 503  # the database goes away: the next batch lands on disk, which is safe too
        writer.submit("m f=5.0 5", _key(5))
        await wait_until(lambda: len(writer.buffer) == 3, timeout_s=20)
        assert safe == [_key(2), _key(5)]
        assert writer.stats.buffered == 3 and writer.stats.retries >= 1
        assert writer.stats.last_error.startswith("HTTP 503: database busy") and writer.stats.last_error_ts
        db.status = 204
        await wait_until(lambda: writer.pending == 0, timeout_s=20)
    writer.buffer.close()
    assert db.lines == [f"m f={i}.0 {i}" for i in range(6)]
    assert writer.stats.counters() == {"written": 6, "buffered": 0, "dropped": 0, "dead_lettered": 0,
                                       "retries": writer.stats.retries, "backfilled": 0}  # fmt: skip


async def test_counters_dropped_and_dead_lettered(tmp_path: Path) -> None:
    db = _Db()
    db.status = 503
    writer = _writer(tmp_path, db, max_lines=2, buffer_max=4)
    async with running_writer(writer):
        for i in range(10):  # database away: 10 lines through a disk buffer of 4 → 6 dropped, oldest first
            writer.submit(f"m f={i}.0 {i}")
        await wait_until(lambda: writer.stats.dropped == 6, timeout_s=20)
        assert writer.stats.buffered == 4
        db.status = 204
        await wait_until(lambda: writer.stats.buffered == 0, timeout_s=20)
        writer.submit("m f=\"bad\" 10")  # a bad point, rejected alone and dead-lettered
        writer.submit("m f=11.0 11")
        await wait_until(lambda: writer.pending == 0, timeout_s=20)
    writer.buffer.close()
    assert db.lines == [f"m f={i}.0 {i}" for i in (6, 7, 8, 9, 11)]
    c = writer.stats.counters()
    assert (c["written"], c["buffered"], c["dropped"], c["dead_lettered"]) == (5, 0, 6, 1)
    assert c["retries"] >= 1
    assert writer.stats.last_error.startswith("HTTP 400: ")  # the rejection came last
    assert "dropped 6, dead_lettered 1" in writer.stats.summary()


# ---------------------------------------------------------------- real InfluxDB 1.6.7


async def test_same_series_and_time_written_twice_is_one_point(influxdb: Server, tmp_path: Path) -> None:
    """What makes re-sending overlap safe, on the real server: the same points written again (as a
    backfill does after a crash) do not add points; the last write of a series and time wins."""
    writer = InfluxWriter(InfluxTarget(influxdb.url, "v1", database=DB), WriteBuffer(tmp_path / "buf.sqlite3"),
                          batcher=Batcher(max_lines=50, max_age_ms=20))  # fmt: skip
    t0 = (int(time.time()) - 3600) * 1000  # recent: InfluxDB drops points older than the retention
    first = [line("air-1", air(t0 + i * 1000, i, 400.0 + i)) for i in range(100)]
    async with running_writer(writer):
        for ln in first:
            writer.submit(ln)
        await wait_until(lambda: writer.stats.written == 100, timeout_s=20)
        for ln in first[50:] + first[60:70] + [line("air-1", air(t0 + 99_000, 99, 1.5))]:
            writer.submit(ln)
        await wait_until(lambda: writer.stats.written == 161, timeout_s=20)
    writer.buffer.close()
    rows = await influx_query(influxdb.url, "SELECT co2_ppm, seq FROM air WHERE time > 0ms")
    assert len(rows) == 100
    assert [r[2] for r in rows] == list(range(100))
    assert rows[-1][1] == 1.5 and rows[98][1] == 498.0


async def test_gateway_killed_mid_stream_influxdb_complete_after_restart(
    influxdb: Server, mosquitto: BrokerURL, tmp_path: Path
) -> None:
    """A real gateway process writing to InfluxDB 1.6.7 is killed with SIGKILL while a batch waits in
    its memory (batch_ms 3 s), then started again: InfluxDB ends with exactly the readings of the
    gateway's SQLite (every published one, none twice)."""
    site = "influx-crash"
    kit = Kit.model_validate({
        **make_kit(site).model_dump(mode="json"),
        "storage": {"readings": "influxdb", "url": influxdb.url, "api": "v1", "database": DB,
                    "buffer_path": str(tmp_path / "influx-buffer.sqlite3"), "batch_ms": 3000},
    })  # fmt: skip
    kit_file, rules_file, db = tmp_path / "kit.yaml", tmp_path / "rules.yaml", tmp_path / "gw.sqlite3"
    kit_file.write_text(yaml.safe_dump(kit.model_dump(mode="json"), allow_unicode=True))
    rules_file.write_text("{}\n")
    args = ["gateway", "--config", str(kit_file), "--rules", str(rules_file), "--db", str(db),
            "--broker", str(mosquitto), "--log-level", "info"]  # fmt: skip
    topic = reading_topic(site, "clip-01", "posture")
    published = 0
    # Recent message times: InfluxDB drops points older than the kit's retention (30 days by default).
    t0 = (int(time.time()) - 3600) * 1000

    async def publish(pub: aiomqtt.Client, n: int) -> None:
        nonlocal published
        for _ in range(n):
            await pub.publish(topic, posture(published, t0 + published * 100, Position.SUPINE), qos=1)
            published += 1

    async def influx_count() -> int:
        rows = await influx_query(influxdb.url, "SELECT count(seq) FROM posture WHERE time > 0ms")
        return int(rows[0][1]) if rows else 0  # type: ignore[call-overload]

    def sqlite_count() -> int:
        return StoreReader(db).count_readings() if db.exists() else 0

    async def subscribed(pub: aiomqtt.Client, log: Path) -> bool:
        """The gateway logs an edge agent coming online once it receives it: it is subscribed."""
        assert gw.poll() is None, "the gateway exited"
        await pub.publish(edge_topic(site, "pi-1"), EdgeStatus(online=True).to_json(), qos=1)
        return "edge agent pi-1 is online" in log.read_text()

    gw, log = spawn("gateway", args, tmp_path)
    logs = {"gateway": log}
    started = time.monotonic()
    try:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="crash-pub") as pub:
            await wait_until(lambda: subscribed(pub, log), "the gateway to subscribe", 20)
            await publish(pub, 300)
            await wait_until(lambda: _equals(influx_count(), 300), "the first 300 readings in InfluxDB", 20)
            await publish(pub, 200)  # these wait in the gateway's memory for the next batch (3 s)
            await wait_until(lambda: _true(sqlite_count() == 500), "500 readings in SQLite", 10.0)
            stop(gw, signal.SIGKILL)
            at_kill = await influx_count()
            assert at_kill < sqlite_count() == 500  # the kill really caught readings on their way
            await publish(pub, 100)  # the broker queues them for the gateway's persistent session

            gw, log = spawn("gateway-2", args, tmp_path)
            logs["gateway-2"] = log
            await wait_until(lambda: _equals(influx_count(), 600), "all 600 readings in InfluxDB", 20)
            stop(gw)
    except BaseException:
        print_logs(logs)
        raise
    finally:
        stop(gw)
    elapsed = time.monotonic() - started
    assert sqlite_count() == published == 600
    assert await influx_count() == 600
    rows = await influx_query(influxdb.url, "SELECT seq FROM posture WHERE time > 0ms")
    assert [r[1] for r in rows] == list(range(600))  # every reading once, in time order
    text = log.read_text()
    backfilled = re.search(r"InfluxDB backfill: (\d+) reading", text)
    assert backfilled is not None, text[-2000:]
    assert 500 - at_kill <= int(backfilled[1]) <= 500  # at least what was lost, never the whole history
    assert re.search(r"InfluxDB writer stopped: written \d+, buffered 0, dropped 0, dead_lettered 0", text)
    print(f"kill -9 with {500 - at_kill} readings not yet in InfluxDB; {backfilled[1]} backfilled; {elapsed:.1f} s")


async def _equals(count: Awaitable[int], expected: int) -> bool:
    return await count == expected


async def _true(value: bool) -> bool:
    return value
