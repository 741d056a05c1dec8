"""Line protocol, batching, retry policy (gateway/influx/line_protocol.py) and the on-disk write buffer
(gateway/influx/buffer.py): table tests, no servers. Real servers: tests/gateway/test_gateway_influx_servers.py."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest
import yaml

from gateway.influx.buffer import WriteBuffer
from gateway.influx.line_protocol import (
    Backoff,
    Batcher,
    Verdict,
    classify,
    encode_line,
    parse_retry_after,
    reading_line,
    split,
)
from gateway.influx.writer import InfluxTarget, InfluxWriter, ReadingsSink, api_from_version
from nurserywatch.contract import Reading, Stream, parse_reading
from nurserywatch.kit import KitError, load_kit

TS = 1_764_400_000_123

LINES: list[tuple[str, str | None, Stream, str, str | None]] = [
    # (device, child, stream, raw payload, expected line)
    (
        "mat-1", "c-01", Stream.BREATHING,
        f'{{"ts": {TS}, "seq": 7, "rate_bpm": 32, "amplitude": 0.5, "motion": 0.1, "present": true,'
        f' "quality": 0.9, "last_breath_ts": {TS - 500}}}',
        "breathing,child=c-01,device=mat-1,room=hiyoko,site=sakura rate_bpm=32.0,amplitude=0.5,motion=0.1,"
        f"quality=0.9,present=true,last_breath_ts={TS - 500}i,seq=7i {TS}",
    ),
    (   # nulls are left out; an unbound mat has no child tag
        "mat-2", None, Stream.BREATHING, f'{{"ts": {TS}, "seq": 0, "rate_bpm": null, "present": false}}',
        f"breathing,device=mat-2,room=hiyoko,site=sakura present=false,seq=0i {TS}",
    ),
    (
        "clip-1", "c-01", Stream.POSTURE, f'{{"ts": {TS}, "seq": 3, "position": "prone", "accel_mg": [1, -2, 980]}}',
        'posture,child=c-01,device=clip-1,room=hiyoko,site=sakura position="prone",accel_x_mg=1.0,'
        f"accel_y_mg=-2.0,accel_z_mg=980.0,seq=3i {TS}",
    ),
    (
        "thermo-1", "c-01", Stream.BODY_TEMP, f'{{"ts": {TS}, "seq": 1, "celsius": 37.25}}',
        f"body_temp,child=c-01,device=thermo-1,room=hiyoko,site=sakura celsius=37.25,seq=1i {TS}",
    ),
    (
        "air-1", None, Stream.AIR, f'{{"ts": {TS}, "seq": 9, "co2_ppm": 1234, "pm25_ugm3": 12.5, "temp_c": -1.5}}',
        f"air,device=air-1,room=hiyoko,site=sakura co2_ppm=1234.0,pm25_ugm3=12.5,temp_c=-1.5,seq=9i {TS}",
    ),
    (   # raw samples are not written
        "mat-1", "c-01", Stream.WAVEFORM, f'{{"ts": {TS}, "seq": 1, "fs_hz": 50, "t0": {TS}, "samples": [1, 2]}}',
        None,
    ),
]  # fmt: skip


@pytest.mark.parametrize(("device", "child", "stream", "raw", "expected"), LINES)
def test_reading_to_line(device: str, child: str | None, stream: Stream, raw: str, expected: str | None) -> None:
    reading: Reading = parse_reading(stream, raw)
    line = reading_line(site="sakura", room="hiyoko", device=device, child=child, stream=stream, reading=reading)
    assert line == expected


ESCAPES = [
    # (measurement, tags, fields, expected)
    ("my measure,x", {"t k": "a,b=c"}, {"f": 1.0}, r"my\ measure\,x,t\ k=a\,b\=c f=1.0 5"),
    # A backslash is kept as is in names, keys and tag values (the 1.x parser does not unescape it
    # there), also right before an escaped character; only string fields double it.
    ("m", {"t": "back\\slash"}, {"f=k y": 2.5}, r"m,t=back\slash f\=k\ y=2.5 5"),
    ("me\\as", {"t\\k": "a\\,b", "u": "c\\ d"}, {"f\\k": 1.0}, r"me\as,t\k=a\\,b,u=c\\ d f\k=1.0 5"),
    ("m", {}, {"s": 'say "hi" \\ bye'}, r'm s="say \"hi\" \\ bye" 5'),
    ("m", {"b": "2", "a": "1", "empty": ""}, {"i": 3, "t": True}, "m,a=1,b=2 i=3i,t=true 5"),
    ("m", {}, {"small": 1e-7, "big": 1.5e20}, "m small=1e-07,big=1.5e+20 5"),
]


@pytest.mark.parametrize(("measurement", "tags", "fields", "expected"), ESCAPES)
def test_escaping(measurement: str, tags: dict[str, str], fields: dict[str, float | int | bool | str],
                  expected: str) -> None:
    assert encode_line(measurement, tags, fields, 5) == expected


@pytest.mark.parametrize("fields", [{}, {"x": float("nan")}, {"x": float("inf")}])
def test_points_that_cannot_be_encoded(fields: dict[str, float | int | bool | str]) -> None:
    with pytest.raises(ValueError):
        encode_line("m", {}, fields, 1)


@pytest.mark.parametrize(
    ("measurement", "tags", "fields", "message"),
    [
        ("m", {"t": "end\\"}, {"f": 1.0}, "ending in a backslash"),  # would escape the space after it
        ("m\\", {}, {"f": 1.0}, "ending in a backslash"),
        ("m", {"t": "two\nlines"}, {"f": 1.0}, "newline"),
        ("m", {}, {"s": "two\nlines"}, "newline"),
    ],
)
def test_what_line_protocol_cannot_carry_is_refused(
    measurement: str, tags: dict[str, str], fields: dict[str, float | int | bool | str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        encode_line(measurement, tags, fields, 1)


def test_batcher_full_by_lines_and_bytes_due_by_age() -> None:
    b = Batcher(max_lines=3, max_bytes=1000, max_age_ms=500)
    assert b.due_at() is None
    assert b.add("a", 100) is None and b.due_at() == 600
    assert b.add("b", 200) is None and b.due_at() == 600  # the age counts from the first line
    assert b.add("c", 300) == ["a", "b", "c"]
    assert len(b) == 0 and b.due_at() is None
    b = Batcher(max_lines=100, max_bytes=10, max_age_ms=500)
    assert b.add("12345", 0) is None
    assert b.add("1234", 0) == ["12345", "1234"]  # 6 + 5 bytes with newlines ≥ 10
    assert b.add("x", 7) is None and b.take() == ["x"] and b.take() == []


@pytest.mark.parametrize(
    ("status", "verdict"),
    [(204, Verdict.WRITTEN), (200, Verdict.WRITTEN), (400, Verdict.REJECTED), (413, Verdict.REJECTED),
     (None, Verdict.RETRY), (429, Verdict.RETRY), (500, Verdict.RETRY), (503, Verdict.RETRY),
     (401, Verdict.RETRY), (404, Verdict.RETRY)],
)  # fmt: skip
def test_classify(status: int | None, verdict: Verdict) -> None:
    assert classify(status) is verdict


def test_split_keeps_order_and_every_line() -> None:
    assert split(["a", "b", "c"]) == (["a"], ["b", "c"])
    assert split(["a", "b"]) == (["a"], ["b"])


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [(None, None), ("", None), ("7", 7.0), (" 2.5 ", 2.5), ("-3", 0.0), ("soon", None),
     (format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True), 30.0),
     (format_datetime(datetime.fromtimestamp(NOW - 30, UTC), usegmt=True), 0.0)],
)  # fmt: skip
def test_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds


def test_backoff_grows_with_jitter_is_capped_and_honours_retry_after() -> None:
    b = Backoff(base_s=1.0, cap_s=8.0, max_retry_after_s=80.0, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(6)]
    for attempt, d in enumerate(delays):
        ceiling = min(8.0, 2.0**attempt)
        assert ceiling / 2 <= d <= ceiling
    assert len(set(delays)) == len(delays)  # jittered
    assert b.next_delay(retry_after_s=20.0) == 20.0
    assert b.next_delay(retry_after_s=1000.0) == 80.0  # a silly Retry-After cannot stop writes for ever
    b.reset()
    assert b.next_delay() <= 1.0


def test_write_buffer_in_order_bounded_and_persistent(tmp_path: Path) -> None:
    path = tmp_path / "buf.sqlite3"
    buf = WriteBuffer(path, max_lines=5)
    assert buf.peek(10) == (0, [])
    assert buf.push([f"l{i}" for i in range(4)]) == 0
    assert buf.push(["l4", "l5", "l6"]) == 2  # the two oldest go
    assert len(buf) == 5 and buf.dropped == 2
    upto, lines = buf.peek(3)
    assert lines == ["l2", "l3", "l4"]
    buf.ack(upto)
    assert len(buf) == 2
    buf.close()
    buf = WriteBuffer(path, max_lines=5)  # survives a restart
    assert len(buf) == 2 and buf.peek(10)[1] == ["l5", "l6"]
    buf.push(["l7"])
    upto, lines = buf.peek(10)
    assert lines == ["l5", "l6", "l7"]
    buf.ack(upto)
    assert len(buf) == 0 and buf.peek(1) == (0, [])
    buf.close()


@pytest.mark.parametrize(
    ("version", "api"),
    [("1.6.7~rc0", "v1"), ("1.8.10", "v1"), ("v2.7.1", "v2"), ("2.0.0-beta", "v2"), ("3.0.1", "v2"),
     (None, "v1"), ("", "v1")],
)  # fmt: skip
def test_write_api_from_ping_version(version: str | None, api: str) -> None:
    assert api_from_version(version) == api


def test_write_requests() -> None:
    v1 = InfluxTarget("http://db:8086", "v1", database="nw")
    assert v1.write_request() == ("/write", {"db": "nw", "precision": "ms"},
                                  {"Content-Type": "text/plain; charset=utf-8"})  # fmt: skip
    v2 = InfluxTarget("http://db:8086", "v2", org="o", bucket="b", token="s3cret")
    assert v2.write_request() == (
        "/api/v2/write", {"org": "o", "bucket": "b", "precision": "ms"},
        {"Content-Type": "text/plain; charset=utf-8", "Authorization": "Token s3cret"},
    )  # fmt: skip
    with pytest.raises(ValueError):
        InfluxTarget("http://db:8086", "auto").write_request()


KIT = {
    "site": "sakura", "name": "n", "rooms": [{"id": "hiyoko", "name": "ひよこ"}], "agents": [{"id": "pi-1"}],
}  # fmt: skip


@pytest.mark.parametrize(
    ("storage", "error"),
    [
        ({"readings": "influxdb"}, "storage.url"),
        ({"readings": "influxdb", "url": "127.0.0.1:8086"}, "storage.url"),
        ({"readings": "influxdb", "url": "http://db:8086", "api": "v2"}, "org, bucket"),
        ({"readings": "influxdb", "url": "http://db:8086", "api": "v3"}, "storage.api"),
        ({"readings": "postgres"}, "storage.readings"),
        ({"readings": "sqlite", "token": "x"}, "storage.token"),  # tokens come from the environment
        ({"buffer_max_lines": 10}, "storage.buffer_max_lines"),
    ],
)
def test_kit_storage_errors(tmp_path: Path, storage: dict[str, object], error: str) -> None:
    path = tmp_path / "kit.yaml"
    path.write_text(yaml.safe_dump({**KIT, "storage": storage}, allow_unicode=True))
    with pytest.raises(KitError, match=re.escape(error)):
        load_kit(path)


def test_kit_storage_default_is_sqlite_and_influxdb_wires_an_observer(tmp_path: Path) -> None:
    path = tmp_path / "kit.yaml"
    path.write_text(yaml.safe_dump(KIT, allow_unicode=True))
    kit = load_kit(path)
    assert kit.storage.readings == "sqlite" and ReadingsSink(kit).observers == []
    path.write_text(yaml.safe_dump({**KIT, "storage": {"readings": "influxdb", "url": "http://127.0.0.1:8086"}}))
    sink = ReadingsSink(load_kit(path))
    assert sink.writer is not None and len(sink.observers) == 1
    assert sink.writer.target.api == "auto" and sink.writer.target.database == "nurserywatch"
    assert sink.writer.buffer.path == tmp_path / "nurserywatch-influx-buffer.sqlite3"  # next to the kit
    sink.writer.buffer.close()


def test_submit_spills_to_disk_past_max_queue_in_order(tmp_path: Path) -> None:
    """A writer task that is behind (or a database that does not answer) never grows memory past
    ``max_queue``: the lines go to the disk buffer, oldest first."""
    writer = InfluxWriter(InfluxTarget("http://db.invalid", "v1"), WriteBuffer(tmp_path / "b.sqlite3"), max_queue=10)
    for i in range(25):
        writer.submit(f"m f={i}.0 {i}")
    assert len(writer.buffer) == 20 and writer.pending == 25
    assert writer.buffer.peek(100)[1] == [f"m f={i}.0 {i}" for i in range(20)]
    writer.buffer.close()
