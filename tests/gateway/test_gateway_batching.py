"""Batched commits (gateway/engine/site.py, Store.begin/commit): readings from the message loop are
committed in batches and acknowledged after the commit. What must still hold:

* the other writers of the same file on the gateway's thread (nap-check records, assignments) never
  wait for the batch's write lock: a session command and an assignment in the middle of a burst of
  readings are stored at once, with no ``store_error``;
* a write inside a batch that fails rolls back only itself (a SAVEPOINT), not the batch;
* retention's worker thread waits for a batch instead of failing;
* a timer tick during a burst commits the batch first.

Real Mosquitto (the session fixture); ~3 s.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from pathlib import Path

import aiomqtt
import pytest

from gateway.db.reader import StoreReader
from gateway.db.store import Store
from gateway.records.reader import RecordReader
from gateway.retention.job import run_retention
from nurserywatch.clock import ManualClock
from nurserywatch.contract import (
    AssignCommand,
    Position,
    PostureReading,
    SessionAction,
    SessionCommand,
    Stream,
    assign_command_topic,
    reading_topic,
    session_command_topic,
)
from nurserywatch.mqtt import BrokerURL
from tests.support.clock import T0
from tests.support.commands import signed
from tests.support.gateway_stack import TICKING, gateway
from tests.support.kits import make_kit
from tests.support.waiting import wait_until

SITE_IDS = iter(range(10_000))
QUIET = logging.getLogger("tests.batching.mqtt")  # not a warning per publish waiting for the window
QUIET.setLevel(logging.ERROR)
#: Three children (1-2), the first two on posture clips clip-0 and clip-1.
CHILDREN = {f"c{i}": "1-2" for i in range(3)}
CLIPS = {f"clip-{i}": f"c{i}" for i in range(2)}


def posture(seq: int, ts: int) -> bytes:
    return PostureReading(ts=ts, seq=seq, position=Position.SUPINE, accel_mg=(0, 0, -1000)).to_json()


async def test_commands_in_a_reading_burst_are_stored_without_waiting(mosquitto: BrokerURL, tmp_path: Path) -> None:
    site = f"batch{next(SITE_IDS)}"
    kit = make_kit(site, name="batch", children=CHILDREN, devices=CLIPS)
    db, clock = tmp_path / "gw.sqlite3", ManualClock(T0 + 3_600_000)
    n = 2000
    async with gateway(kit, mosquitto, db, clock, rules=TICKING) as stats:  # ticks every 50 ms: some land mid-burst
        async with aiomqtt.Client(
            mosquitto.host, mosquitto.port, identifier=f"{site}-pub", max_inflight_messages=100, logger=QUIET
        ) as pub:
            messages = []
            for k in range(n):
                for i in range(2):
                    messages.append((reading_topic(site, f"clip-{i}", Stream.POSTURE), posture(k, T0 + k * 100)))
                # in the middle of the burst, apart: both write through their own connections
                if k == n // 3:
                    cmd = SessionCommand(room="hiyoko", action=SessionAction.START, by="田中")
                    topic = session_command_topic(site)
                    messages.append((topic, signed(topic, cmd, clock.now_ms())))
                if k == 2 * n // 3:
                    assign = AssignCommand(device="clip-1", child="c2", by="田中")
                    topic = assign_command_topic(site)
                    messages.append((topic, signed(topic, assign, clock.now_ms())))
            for j in range(0, len(messages), 100):  # not one by one: the gateway's batches fill up
                await asyncio.gather(*(pub.publish(topic, p, qos=1) for topic, p in messages[j : j + 100]))
            # Not a speed test: how fast 4,000 readings drain depends on the machine and its load.
            await wait_until(lambda: stats.readings_stored >= 2 * n, "every reading stored", 60)
        assert stats.ticks > 0
    assert stats.rejected["store_error"] == 0 and stats.rejected["internal_error"] == 0, stats.rejected
    assert StoreReader(db).count_readings() == 2 * n
    assert [s.room for s in StoreReader(db).sessions() if s.active] == ["hiyoko"]
    assert list(RecordReader(db).stored()), "the session's sheet was written to the records"
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT device, child FROM device_assignments").fetchall()
    assert rows == [("clip-1", "c2")]


def test_a_failed_write_inside_a_batch_rolls_back_only_itself(tmp_path: Path) -> None:
    with Store(tmp_path / "gw.sqlite3") as store:
        store.begin()
        reading = PostureReading(ts=T0, seq=1, position=Position.SUPINE, accel_mg=(0, 0, -1000))
        assert store.add_reading("clip-0", Stream.POSTURE, reading, T0)
        with pytest.raises(RuntimeError), store._transaction():  # a nested write: a SAVEPOINT of the batch
            store._db.execute("INSERT INTO sessions (room, body) VALUES ('x', NULL)")
            raise RuntimeError("boom")
        assert store.in_batch
        store.commit()
        assert not store.in_batch
        assert StoreReader(store.path).count_readings() == 1
        with sqlite3.connect(store.path) as conn:
            assert conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0
        store.commit()  # nothing open: a no-op


def test_retention_thread_waits_for_a_batch_then_runs(tmp_path: Path) -> None:
    kit = make_kit("batchret", name="batch", children=CHILDREN, devices=CLIPS)
    db = tmp_path / "gw.sqlite3"
    with Store(db) as store:
        store.begin()
        reading = PostureReading(ts=T0, seq=1, position=Position.SUPINE, accel_mg=(0, 0, -1000))
        store.add_reading("clip-0", Stream.POSTURE, reading, T0)
        result: list[object] = []
        worker = threading.Thread(target=lambda: result.append(run_retention(db, kit, T0 + 400 * 86_400_000)))
        worker.start()
        time.sleep(0.3)
        assert worker.is_alive(), "retention did not wait for the open batch"
        store.commit()
        worker.join(timeout=5)
        assert not worker.is_alive() and len(result) == 1, "retention did not finish once the batch was committed"
    assert StoreReader(db).count_readings() == 0  # 400 days later: pruned by the run that waited
