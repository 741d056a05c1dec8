"""The edge's on-disk store-and-forward queue (edge/io/spool.py) on real SQLite files: order, bounds,
restart, crash (kill -9 of a real process), damaged file and full disk."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter, deque
from pathlib import Path

import pytest

import edge.io.spool
from edge.io.spool import ROW_OVERHEAD, Spool
from nurserywatch.clock import ManualClock

DAY_S = 86_400
TOPIC = "nurserywatch/v1/site/reading/clip-01/posture"


def payload(i: int) -> bytes:
    return json.dumps({"ts": 1_767_225_600_000 + 1000 * i, "seq": i}).encode()


def spool_at(path: Path | None, clock: ManualClock | None = None, **bounds: int) -> Spool:
    bounds.setdefault("max_bytes", 2**20)
    bounds.setdefault("max_age_s", DAY_S)
    return Spool(path, clock=clock or ManualClock(), **bounds)


def drain(spool: Spool) -> list[bytes]:
    out = []
    while (m := spool.peek()) is not None:
        out.append(m.payload)
        spool.pop(m)
    return out


def rows(path: Path) -> list[bytes]:
    with sqlite3.connect(path) as db:
        return [r[0] for r in db.execute("SELECT payload FROM queue ORDER BY id")]


def test_fifo_and_batched_commit(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    spool = spool_at(path)
    assert spool.on_disk and spool.peek() is None and not spool.ready.is_set()
    for i in range(3):
        spool.put(TOPIC, payload(i))
    assert spool.ready.is_set() and len(spool) == 3
    assert rows(path) == [], "nothing reaches the disk before the tick's commit"
    spool.commit()
    assert rows(path) == [payload(0), payload(1), payload(2)]
    head = spool.peek()
    assert head is not None and head.topic == TOPIC and head.payload == payload(0)
    spool.pop(head)
    assert rows(path) == [payload(0), payload(1), payload(2)], "the delete waits for the commit too"
    spool.put(TOPIC, payload(3))
    m = spool.peek()
    assert m is not None and m.payload == payload(1)
    spool.pop(m)
    spool.commit()
    assert rows(path) == [payload(2), payload(3)]
    assert drain(spool) == [payload(2), payload(3)]
    spool.put(TOPIC, payload(4))
    assert drain(spool) == [payload(4)]
    spool.commit()
    assert rows(path) == [], "acknowledged before its commit: never written at all"
    assert len(spool) == 0 and spool.queued_bytes == 0


def test_restart_resumes_the_queue_in_order_with_the_same_bytes(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    spool = spool_at(path)
    for i in range(5):
        spool.put(TOPIC, payload(i))
    spool.commit()
    first = spool.peek()
    assert first is not None
    spool.pop(first)
    spool.commit()
    second = spool.peek()
    assert second is not None
    spool.pop(second)  # acknowledged, but the process ends before the delete is committed ...
    spool._db.close()  # type: ignore[union-attr]  # ... like a crash: no final commit
    spool._lock.close()  # type: ignore[union-attr]

    again = spool_at(path)
    assert again.ready.is_set() and len(again) == 4
    # ... so it is sent again: at-least-once; the gateway drops the repeated (device, seq, ts).
    again.put(TOPIC, payload(5))
    assert drain(again) == [payload(i) for i in (1, 2, 3, 4, 5)]
    again.close()
    assert len(spool_at(path)) == 0


def test_bound_by_bytes_drops_the_oldest_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    size = len(TOPIC) + len(payload(10)) + ROW_OVERHEAD
    spool = spool_at(tmp_path / "spool.sqlite3", max_bytes=10 * size)
    for i in range(10, 25):
        spool.put(TOPIC, payload(i))
        spool.commit()
    assert len(spool) == 10 and spool.queued_bytes == 10 * size
    assert spool.dropped == Counter(spool_full=5)
    assert "spool: dropped the 1 oldest queued readings (spool_full=1; totals spool_full=1)" in caplog.text
    assert len([r for r in caplog.records if "dropped" in r.message]) == 1, "at most one line a minute"
    assert drain(spool) == [payload(i) for i in range(15, 25)]


def test_bound_by_age_drops_the_oldest_and_counts(tmp_path: Path) -> None:
    clock = ManualClock()
    spool = spool_at(tmp_path / "spool.sqlite3", clock, max_age_s=3600)
    for i in range(4):
        spool.put(TOPIC, payload(i))
        spool.commit()
        clock.advance(20 * 60_000)  # 0, 20, 40, 60 minutes
    clock.advance(1)  # now = 80 min + 1 ms: the readings queued at 0 and 20 min are older than an hour
    spool.commit()
    assert spool.dropped == Counter(spool_expired=2)
    assert drain(spool) == [payload(2), payload(3)]


def test_in_flight_message_dropped_by_a_bound_is_not_popped_twice(tmp_path: Path) -> None:
    size = len(TOPIC) + len(payload(0)) + ROW_OVERHEAD
    spool = spool_at(tmp_path / "spool.sqlite3", max_bytes=3 * size)
    for i in range(3):
        spool.put(TOPIC, payload(i))
    spool.commit()
    head = spool.peek()  # being published ...
    spool.put(TOPIC, payload(3))
    spool.commit()  # ... while the bound drops it
    assert head is not None and spool.dropped == Counter(spool_full=1)
    spool.pop(head)  # the PUBACK for it arrives: must not remove payload(1)
    assert drain(spool) == [payload(1), payload(2), payload(3)]


@pytest.mark.parametrize("seed", range(6))
def test_random_operations_match_a_plain_fifo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """Small window so the queue constantly spills to disk and is read back; clean restarts."""
    monkeypatch.setattr(edge.io.spool, "WINDOW", 4)
    rng = random.Random(seed)
    path = tmp_path / "spool.sqlite3"
    spool = spool_at(path)
    model: deque[bytes] = deque()
    n = 0
    for _ in range(600):
        op = rng.random()
        if op < 0.45:
            spool.put(TOPIC, payload(n))
            model.append(payload(n))
            n += 1
        elif op < 0.8:
            m = spool.peek()
            assert (m.payload if m else None) == (model[0] if model else None)
            if m:
                spool.pop(m)
                model.popleft()
        elif op < 0.95:
            spool.commit()
        else:
            spool.close()
            spool = spool_at(path)
        assert len(spool) == len(model)
    assert drain(spool) == list(model)


CRASH_WRITER = """
import sys, time
from edge.io.spool import Spool
from nurserywatch.clock import SystemClock
spool = Spool(sys.argv[1], max_bytes=2**26, max_age_s=86400, clock=SystemClock())
start = int(sys.argv[2])
print("ready", flush=True)
next_commit = time.monotonic() + 1.0
i = start
while True:  # like the agent: readings all the time, one commit per 1 s tick
    spool.put("t", f"{i} {time.time():.4f}".encode())
    i += 1
    if time.monotonic() >= next_commit:
        spool.commit()
        next_commit += 1.0
    time.sleep(0.02)
"""


def test_kill_9_loses_at_most_the_last_second(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    rng = random.Random(1)
    expected_start = 0
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", CRASH_WRITER, str(path), str(expected_start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(1.3, 2.7))
        killed_at = time.time()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kept = [m.decode().split() for m in rows(path)]
        counters = [int(c) for c, _ in kept]
        assert counters == list(range(counters[0], counters[-1] + 1)), "no hole in what survived"
        assert counters[0] == 0 and counters[-1] >= expected_start, "earlier runs' data is still there"
        last_put = float(kept[-1][1])
        assert killed_at - last_put <= 1.0 + 0.25, f"lost {killed_at - last_put:.2f} s"
        expected_start = counters[-1] + 1
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_damaged_file_is_moved_aside_and_a_new_spool_started(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "spool.sqlite3"
    path.write_bytes(b"this is not a database, it is a text file someone copied here\n" * 100)
    spool = spool_at(path)
    assert spool.on_disk
    (aside,) = tmp_path.glob("spool.sqlite3.corrupt-*")
    assert aside.read_bytes().startswith(b"this is not a database")
    assert f"spool {path} is damaged (file is not a database); moved it to {aside}" in caplog.text
    spool.put(TOPIC, payload(1))
    spool.commit()
    assert rows(path) == [payload(1)]


def test_unusable_path_falls_back_to_memory_loudly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "file").write_text("a file where a folder should be")
    spool = spool_at(tmp_path / "file" / "spool.sqlite3")
    assert not spool.on_disk
    error = next(r for r in caplog.records if r.levelno == logging.ERROR)
    assert "cannot create" in error.message and "QUEUEING IN MEMORY ONLY" in error.message
    for i in range(3):
        spool.put(TOPIC, payload(i))
    spool.commit()
    assert drain(spool) == [payload(0), payload(1), payload(2)], "still collecting"


def test_a_second_agent_on_the_same_spool_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "spool.sqlite3"
    first = spool_at(path)
    second = spool_at(path)
    assert first.on_disk and not second.on_disk
    assert "is in use by another edge agent" in caplog.text
    first.close()
    assert spool_at(path).on_disk, "the lock goes with the process that held it"


def test_memory_fallback_is_bounded_too(monkeypatch: pytest.MonkeyPatch) -> None:
    size = len(TOPIC) + len(payload(0)) + ROW_OVERHEAD
    monkeypatch.setattr(edge.io.spool, "MEMORY_MAX_BYTES", 4 * size)
    spool = spool_at(None, max_bytes=2**30)
    for i in range(6):
        spool.put(TOPIC, payload(i))
    assert spool.dropped == Counter(spool_full=2)
    assert drain(spool) == [payload(i) for i in range(2, 6)]


DISK_FULL_WRITER = """
import json, logging, resource, signal, sys
from edge.io.spool import Spool
from nurserywatch.clock import SystemClock
logging.basicConfig(level=logging.ERROR, format="%(message)s")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
spool = Spool(sys.argv[1], max_bytes=2**26, max_age_s=86400, clock=SystemClock())
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))  # the disk is "full" at 200 kB
put = []
for i in range(400):
    spool.put("t", str(i).encode() * 300)
    put.append(i)
    if i % 10 == 9:
        spool.commit()
out = []
while (m := spool.peek()) is not None:
    out.append(int(m.payload[: len(m.payload) // 300]))
    spool.pop(m)
print(json.dumps({"on_disk": spool.on_disk, "put": put, "out": out}))
"""


def test_disk_full_falls_back_to_memory_without_losing_a_reading(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", DISK_FULL_WRITER, str(tmp_path / "spool.sqlite3")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["on_disk"] is False
    assert result["out"] == result["put"], "every reading kept, in order"
    assert "spool: cannot write" in proc.stderr and "QUEUEING IN MEMORY ONLY" in proc.stderr
    assert "disk is full" in proc.stderr or "disk I/O error" in proc.stderr, proc.stderr
