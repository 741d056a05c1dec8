"""The edge's pure pieces between decoder and MQTT: ClipChannel, RejectLog (the queue after them:
tests/test_edge_spool.py)."""

from __future__ import annotations

from collections import Counter

from edge.agent.reject_log import RejectLog
from edge.channels.clip import ClipChannel
from nurserywatch.contract import Position, PostureReading

SUPINE_7 = b"$NWIMU,7,10,-5,990*56\r\n"
PRONE_8 = b"$NWIMU,8,20,0,-1010*6F\r\n"


def test_one_reading_per_new_sample_with_arrival_time_and_seq() -> None:
    ch = ClipChannel("clip-01")
    assert ch.reading() is None
    ch.on_bytes(SUPINE_7, now_ms=1000)
    ch.on_bytes(PRONE_8[:10], now_ms=1100)
    assert ch.reading() == PostureReading(ts=1000, seq=7, position=Position.SUPINE, accel_mg=(10, -5, 990))
    assert ch.reading() is None, "nothing new since"
    ch.on_bytes(PRONE_8[10:], now_ms=1200)  # the sample completes when its line end arrives
    assert ch.reading() == PostureReading(ts=1200, seq=8, position=Position.PRONE, accel_mg=(20, 0, -1010))


def test_seq_gaps_wrong_kind_and_rejects_are_counted() -> None:
    ch = ClipChannel("clip-01")
    ch.on_bytes(b"$NWIMU,65534,0,0,1000*78\r\n", now_ms=0)
    ch.on_bytes(b"$NWIMU,2,0,0,1000*7B\r\n", now_ms=0)  # 65535, 0, 1 missing (wraps)
    ch.on_bytes(b"$NWMAT,1,25,100*6A\r\n$NWIMU,2,0,0,1000*7A\r\n", now_ms=0)
    assert ch.lost == 3
    assert ch.problems() == Counter({"unexpected_frame": 1, "bad_checksum": 1})


def test_port_reopen_drops_a_partial_line() -> None:
    ch = ClipChannel("clip-01")
    ch.on_bytes(SUPINE_7[:12], now_ms=0)
    ch.port_opened()
    ch.on_bytes(PRONE_8, now_ms=5)
    assert ch.problems() == Counter()
    reading = ch.reading()
    assert reading is not None and reading.seq == 8


def test_reject_log_is_rate_limited_and_reports_increments() -> None:
    log = RejectLog(interval_s=10)
    assert log.summary("clip-01", Counter(), None, now_s=0) is None
    assert log.summary("clip-01", Counter(bad_checksum=2), "last one", now_s=0) == (
        "clip-01: rejected 2 sentence(s) (bad_checksum=2); totals bad_checksum=2; last: last one"
    )
    assert log.summary("clip-01", Counter(bad_checksum=3, garbage=1), "x", now_s=5) is None, "too soon"
    assert log.summary("clip-02", Counter(garbage=1), "y", now_s=5) is not None, "per source"
    assert log.summary("clip-01", Counter(bad_checksum=3, garbage=1), "z", now_s=10.5) == (
        "clip-01: rejected 2 sentence(s) (bad_checksum=1, garbage=1); totals bad_checksum=3, garbage=1; last: z"
    )
    assert log.summary("clip-01", Counter(bad_checksum=3, garbage=1), "z", now_s=30) is None, "nothing new"
