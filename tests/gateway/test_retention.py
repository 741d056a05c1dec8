"""Retention and downsampling (docs/storage.md "Retention"): the kit section, the cutoffs, 15-min
rollups that give bit-for-bit the same trends as the raw rows, late readings, deletion of alerts,
sessions and records (the chain still verifies and still catches tampering), the InfluxDB disk
buffer, the hourly job on the injected clock, and a v1 retention policy on the real InfluxDB 1.6.7.
About 6 s, most of it the real influxd."""

from __future__ import annotations

import asyncio
import random
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import httpx
import numpy as np
import pytest

from gateway.alert_changes import Change, Transition
from gateway.db.reader import StoreReader
from gateway.db.store import Store
from gateway.influx.buffer import WriteBuffer
from gateway.influx.line_protocol import Backoff
from gateway.influx.writer import InfluxTarget, InfluxWriter
from gateway.records.entries import RecordsPruned, SessionStarted, SessionStopped
from gateway.records.reader import RecordReader
from gateway.records.store import RecordStore, prune_records
from gateway.retention.job import RetentionRunner, run_retention
from gateway.retention.policy import (
    DAY_MS,
    ROLLUP_FIELDS,
    ROLLUP_MS,
    cutoffs,
    local_midnight_ms,
    read_plan,
)
from gateway.retention.store import connect, prune, roll_up
from gateway.trends.queries import HOUR_MS, METRICS, RANGES, Bucket, TrendWindow, window
from nurserywatch.contract import AirReading, Alert, AlertState, Severity, Stream
from nurserywatch.kit import Kit, KitError, RetentionConfig, load_kit
from tests.support.influx_servers import Server

NOW = 1_893_456_000_000  # 2030-01-01 00:00 UTC: on a 15-min boundary
DEVICES = ["air-1", "air-2", "air-3"]


# ---------------------------------------------------------------- kit


def kit_with(tmp_path: Path, retention: str) -> Kit:
    p = tmp_path / "kit.yaml"
    p.write_text(
        "site: sakura\nname: x\nrooms: [{id: hiyoko, name: h}]\nagents: [{id: pi}]\n" + retention
    )
    return load_kit(p)


def test_kit_retention_defaults_and_overrides(tmp_path: Path) -> None:
    kit = kit_with(tmp_path, "")
    assert kit.retention == RetentionConfig()
    assert (kit.retention.readings_raw_days, kit.retention.readings_downsampled_days) == (30, 400)
    assert kit.retention.records_days >= 5 * 365
    kit = kit_with(tmp_path, "retention: {readings_raw_days: 7, records_days: 3660}\n")
    assert (kit.retention.readings_raw_days, kit.retention.records_days) == (7, 3660)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("{readings_raw_days: 60, readings_downsampled_days: 30}",
         "retention.readings_downsampled_days (line 5): 30 is shorter than"),
        ("{readings_raw_days: 0}", "readings_raw_days"),
        ("{influx_buffer_days: 40}", "retention.influx_buffer_days (line 5): 40 is longer than readings_raw_days (30)"),
        ("{records_years: 5}", "records_years"),
        ("{alerts_days: forever}", "alerts_days"),
    ],
)
def test_kit_retention_errors_are_one_clear_line(tmp_path: Path, section: str, message: str) -> None:
    with pytest.raises(KitError) as exc:
        kit_with(tmp_path, f"retention: {section}\n")
    assert message in str(exc.value) and "\n" not in str(exc.value).strip()


# ---------------------------------------------------------------- pure parts


def test_rollups_cover_every_trend_metric_and_range() -> None:
    for stream, field in METRICS.values():
        assert field in ROLLUP_FIELDS[stream]
    for _length, bucket in RANGES.values():
        assert bucket % ROLLUP_MS == 0


def test_cutoffs() -> None:
    now = NOW + 7 * 60_000 + 123
    c = cutoffs(RetentionConfig(readings_raw_days=2, records_days=10), now, "Asia/Tokyo")
    assert c.rollup_until_ms == NOW
    assert c.raw_before_ms == NOW - 2 * DAY_MS and c.raw_before_ms % ROLLUP_MS == 0
    assert c.rollups_before_ms == NOW - 400 * DAY_MS
    # records: whole local days (Asia/Tokyo midnight is 15:00 UTC)
    assert c.records_before_ms == local_midnight_ms(now - 10 * DAY_MS, "Asia/Tokyo")
    assert (c.records_before_ms - 15 * HOUR_MS) % DAY_MS == 0 and c.records_before_ms <= now - 10 * DAY_MS


def test_read_plan_uses_raw_for_the_partial_head_and_the_tail() -> None:
    w = TrendWindow("co2", Stream.AIR, "co2_ppm", NOW - DAY_MS + 5, NOW + 1, ROLLUP_MS)
    plan = read_plan(w, rolled_until=NOW - HOUR_MS, raw_from=NOW - 2 * DAY_MS)
    assert (plan.rollups_from, plan.rollups_until) == (NOW - DAY_MS + ROLLUP_MS, NOW - HOUR_MS)
    assert plan.raw == ((NOW - DAY_MS + 5, NOW - DAY_MS + ROLLUP_MS), (NOW - HOUR_MS, NOW + 1))
    # the head's raw rows are gone: its whole rollup bucket is used instead
    plan = read_plan(w, rolled_until=NOW - HOUR_MS, raw_from=NOW - HOUR_MS)
    assert plan.rollups_from == NOW - DAY_MS and plan.raw == ((NOW - HOUR_MS, NOW + 1),)


# ---------------------------------------------------------------- readings: rollups equal raw


def fill(db: Path, days: int, step_ms: int = 5 * 60_000, seed: int = 1) -> dict[str, list[tuple[int, float]]]:
    """Air readings of three sensors every ``step_ms`` for ``days`` before NOW (values with full
    float precision, so any difference in summation order would show)."""
    rng = random.Random(seed)
    out: dict[str, list[tuple[int, float]]] = {d: [] for d in DEVICES}
    Store(db).close()  # creates the schema
    with closing(sqlite3.connect(db)) as raw, raw:  # closed: the copies below need no -wal file
        rows = []
        for i, dev in enumerate(DEVICES):
            for k, ts in enumerate(range(NOW - days * DAY_MS + i * 7_919, NOW, step_ms)):
                co2 = rng.uniform(400, 1500)
                reading = AirReading(ts=ts, seq=k, co2_ppm=co2, temp_c=rng.uniform(18, 28) if k % 3 else None)
                rows.append((dev, "air", ts, k, reading.model_dump_json(), ts))
                out[dev].append((ts, co2))
        rows.sort(key=lambda r: r[2])  # arrival order
        raw.executemany(
            "INSERT INTO readings (device, stream, ts, seq, payload, received_ts) VALUES (?, ?, ?, ?, ?, ?)", rows
        )
    return out


def trends(db: Path, now: int, devices: list[str] = DEVICES) -> dict[tuple[str, str], list[Bucket]]:
    reader = StoreReader(db)
    return {(m, r): list(reader.reading_buckets(window(m, r, now), devices))
            for m in ("co2", "temperature") for r in RANGES}  # fmt: skip


def test_trends_from_rollups_equal_trends_from_raw_rows_exactly(tmp_path: Path) -> None:
    raw_db, kept_db, pruned_db = tmp_path / "raw.sqlite3", tmp_path / "kept.sqlite3", tmp_path / "pruned.sqlite3"
    data = fill(raw_db, days=32, step_ms=10 * 60_000)
    shutil.copy(raw_db, kept_db)
    shutil.copy(raw_db, pruned_db)
    total = StoreReader(raw_db).count_readings()
    # rolled up, raw rows kept (long raw retention) / rolled up and raw rows older than 1 day deleted
    with connect(kept_db) as db:
        rolled, late, _written = roll_up(db, NOW)
        assert (rolled, late) == (total, 0)
    with connect(pruned_db) as db:
        roll_up(db, NOW)
        report = prune(db, cutoffs(RetentionConfig(readings_raw_days=1), NOW))
    left = StoreReader(pruned_db).count_readings()
    assert report.raw_deleted == total - left and left < total / 30
    expected = trends(raw_db, NOW)
    assert trends(kept_db, NOW) == expected
    assert trends(pruned_db, NOW) == expected, "only rollups left: the same buckets, bit for bit"
    assert sum(len(b) for b in expected.values()) > 400
    # and they are the right answer: the 30-day co2 buckets against numpy on the raw values
    w = window("co2", "30d", NOW)
    ts = np.array([t for d in DEVICES for t, _v in data[d]])
    vs = np.array([v for d in DEVICES for _t, v in data[d]])
    for b in expected[("co2", "30d")]:
        vals = vs[(ts >= max(b.start_ms, w.start_ms)) & (ts < min(b.start_ms + w.bucket_ms, w.end_ms))]
        assert b.mean == pytest.approx(float(vals.mean()), rel=1e-12)
        assert (b.min, b.max) == (vals.min(), vals.max())
    # a window not on a 15-min boundary while the raw rows of its head are still there: still equal
    later = NOW + 7 * 60_000 + 1
    assert trends(kept_db, later) == trends(raw_db, later)
    # a room with one device only
    assert trends(pruned_db, NOW, ["air-2"]) == trends(raw_db, NOW, ["air-2"])


def test_late_readings_are_rolled_up_on_the_next_run(tmp_path: Path) -> None:
    raw_db, db_path = tmp_path / "raw.sqlite3", tmp_path / "gw.sqlite3"
    fill(raw_db, days=3, step_ms=15 * 60_000)
    shutil.copy(raw_db, db_path)
    policy = RetentionConfig(readings_raw_days=1)
    with connect(db_path) as db:
        roll_up(db, NOW)
        prune(db, cutoffs(policy, NOW))
    # replayed from an edge's spool: one inside raw retention, one whose bucket's raw rows are gone
    late = [(NOW - 3 * HOUR_MS + 11, 2222.5), (NOW - 2 * DAY_MS + 13, 3333.25)]
    for path in (raw_db, db_path):
        with Store(path) as store:
            for k, (ts, co2) in enumerate(late):
                assert store.add_reading("air-1", Stream.AIR, AirReading(ts=ts, seq=10_000 + k, co2_ppm=co2), NOW)
    before = trends(db_path, NOW)
    with connect(db_path) as db:
        rolled, n_late, _w = roll_up(db, NOW + HOUR_MS)
        assert n_late == 2
        report = prune(db, cutoffs(policy, NOW + HOUR_MS))
    assert report.raw_deleted >= 1  # the old late one, now counted in its rollup
    after = trends(db_path, NOW)
    assert after != before
    expected = trends(raw_db, NOW)
    # inside raw retention: exact; where the late value was added to a rollup: the same up to rounding
    for key, buckets in expected.items():
        assert len(after[key]) == len(buckets)
        for a, b in zip(after[key], buckets, strict=True):
            assert (a.start_ms, a.min, a.max) == (b.start_ms, b.min, b.max)
            assert a.mean == pytest.approx(b.mean, rel=1e-14)
    with connect(db_path) as db:  # a second run finds nothing late any more
        assert roll_up(db, NOW + HOUR_MS)[1] == 0


def test_old_rollups_are_deleted(tmp_path: Path) -> None:
    db_path = tmp_path / "gw.sqlite3"
    fill(db_path, days=5, step_ms=HOUR_MS)
    with connect(db_path) as db:
        roll_up(db, NOW)
        report = prune(db, cutoffs(RetentionConfig(readings_raw_days=1, readings_downsampled_days=2), NOW))
        oldest = db.execute("SELECT MIN(bucket) FROM reading_rollups").fetchone()[0]
    assert report.rollups_deleted > 0 and oldest >= NOW - 2 * DAY_MS


# ---------------------------------------------------------------- alerts, sessions


def alert(aid: str, state: AlertState, ts: int, acked: bool) -> Alert:
    return Alert(id=aid, rule="prone", severity=Severity.CRITICAL, state=state, child="c01", room="hiyoko",
                 device=None, started_ts=ts, updated_ts=ts, acknowledged=acked,
                 resolved_ts=ts if state is AlertState.RESOLVED else None, message="m", message_en="m")  # fmt: skip


def test_old_alerts_go_but_never_an_active_or_unacknowledged_one(tmp_path: Path) -> None:
    db_path = tmp_path / "gw.sqlite3"
    old, recent = NOW - 500 * DAY_MS, NOW - 10 * DAY_MS
    with Store(db_path) as store:
        for aid, state, ts, acked in [("old-done", AlertState.RESOLVED, old, True),
                                      ("old-active", AlertState.ACTIVE, old, False),
                                      ("old-unacked", AlertState.RESOLVED, old, False),
                                      ("recent-done", AlertState.RESOLVED, recent, True)]:  # fmt: skip
            store.record([Transition(Change.RAISED, alert(aid, AlertState.ACTIVE, ts, False), ts),
                          Transition(Change.RESOLVED, alert(aid, state, ts, acked), ts)])  # fmt: skip
    with connect(db_path) as db:
        report = prune(db, cutoffs(RetentionConfig(), NOW))
    reader = StoreReader(db_path)
    assert (report.alerts_deleted, report.transitions_deleted) == (1, 2)
    assert sorted(a.id for a in reader.alerts()) == ["old-active", "old-unacked", "recent-done"]
    assert reader.transitions("old-done") == [] and len(reader.transitions("old-active")) == 2


# ---------------------------------------------------------------- nap-check records


def write_days(db: Path, days: int, *, open_last: bool = False) -> None:
    with RecordStore(db) as store:
        for d in range(days):
            ts = NOW - (days - d) * DAY_MS + 3 * HOUR_MS  # noon in Tokyo
            entries: list[SessionStarted | SessionStopped] = [
                SessionStarted(session=f"s{d}", room="hiyoko", ts=ts, by="x", children=())
            ]
            if not (open_last and d == days - 1):
                entries.append(SessionStopped(session=f"s{d}", room="hiyoko", ts=ts + HOUR_MS, by="x"))
            store.append(entries)


def test_pruned_records_still_verify_and_tampering_is_still_caught(tmp_path: Path) -> None:
    db = tmp_path / "gw.sqlite3"
    write_days(db, 10)
    before = RecordReader(db).verify()
    assert before.ok and before.entries == 20
    cutoff = local_midnight_ms(NOW - 4 * DAY_MS, "Asia/Tokyo")
    assert prune_records(db, cutoff, NOW) == 12  # the 6 oldest days, whole
    reader = RecordReader(db)
    rows = list(reader.stored())
    assert rows[0].seq == 13 and all(r.seq > 12 for r in rows)
    anchor = reader.entry(21)
    assert anchor is not None and isinstance(anchor.entry, RecordsPruned)
    assert (anchor.entry.upto_seq, anchor.entry.entries, anchor.entry.before_ts) == (12, 12, cutoff)
    result = reader.verify()
    assert result.ok, result.problem
    assert result.entries == 9 and result.head.seq == 21
    assert prune_records(db, cutoff, NOW) == 0  # nothing more is old enough
    # a later pruning supersedes the first anchor (which is pruned with the rest)
    assert prune_records(db, local_midnight_ms(NOW - 2 * DAY_MS, "Asia/Tokyo"), NOW + 1) == 4
    assert reader.verify().ok and reader.pruned_anchor() is not None

    def tampered(sql: str, trigger: str) -> str:
        copy = tmp_path / f"t{abs(hash(sql))}.sqlite3"
        shutil.copy(db, copy)
        with sqlite3.connect(copy) as c:
            c.execute(f"DROP TRIGGER {trigger}")
            c.execute(sql)
        result = RecordReader(copy).verify()
        assert not result.ok
        return str(result.problem)

    first = next(iter(reader.stored())).seq
    last = reader.verify().head.seq
    # more of the beginning deleted behind the anchor's back
    assert "deleted" in tampered(f"DELETE FROM record_entries WHERE seq = {first}", "record_entries_no_delete")
    # the anchor itself deleted
    assert tampered(f"DELETE FROM record_entries WHERE seq = {last}", "record_entries_no_delete")
    # a kept entry edited
    assert "edited" in tampered(
        f"UPDATE record_entries SET body = replace(body, '\"by\":\"x\"', '\"by\":\"y\"') WHERE seq = {first + 1}",
        "record_entries_no_update",
    )
    # everything deleted up to the anchor, leaving only it: its link no longer fits
    assert tampered(f"DELETE FROM record_entries WHERE seq < {last}", "record_entries_no_delete")


def test_an_open_session_is_never_pruned(tmp_path: Path) -> None:
    db = tmp_path / "gw.sqlite3"
    write_days(db, 3, open_last=True)
    assert prune_records(db, NOW, NOW) == 4  # the two closed days only; the open start stays
    assert RecordReader(db).verify().ok


# ---------------------------------------------------------------- the InfluxDB disk buffer


def test_the_influx_buffer_drops_its_oldest_lines_past_retention(tmp_path: Path) -> None:
    buf = WriteBuffer(tmp_path / "buf.sqlite3")
    lines = [f"air,device=a co2_ppm=1 {NOW - (10 - d) * DAY_MS}" for d in range(10)]
    buf.push(lines)
    assert buf.drop_older_than(NOW - 7 * DAY_MS, chunk=2) == 3
    assert len(buf) == 7 and buf.peek(1)[1] == [lines[3]]


# ---------------------------------------------------------------- the job on the injected clock


async def test_the_job_runs_hourly_on_the_gateway_clock(tmp_path: Path) -> None:
    db_path = tmp_path / "gw.sqlite3"
    fill(db_path, days=3, step_ms=15 * 60_000)
    kit = kit_with(tmp_path, "retention: {readings_raw_days: 1, influx_buffer_days: 1}\n")
    buf = WriteBuffer(tmp_path / "buf.sqlite3")
    buf.push([f"air,device=a co2_ppm=1 {NOW - 2 * DAY_MS}", f"air,device=a co2_ppm=1 {NOW}"])
    runner = RetentionRunner(kit, db_path, buffer=buf)
    runner.on_tick(NOW)
    await runner.wait()
    report = runner.last_report
    assert report is not None and runner.runs == 1
    assert report.rolled_rows == 3 * 3 * 96 and report.raw_deleted == 3 * 2 * 96
    assert report.influx_buffer_dropped == 1 and len(buf) == 1
    runner.on_tick(NOW + 30 * 60_000)  # not due yet
    await runner.wait()
    assert runner.runs == 1
    runner.on_tick(NOW + HOUR_MS)
    await runner.wait()
    assert runner.runs == 2 and runner.last_report is not None and runner.last_report.raw_deleted == 3 * 4
    # the same as one call of the job itself: nothing left to do
    assert run_retention(db_path, kit, NOW + HOUR_MS).raw_deleted == 0


# ---------------------------------------------------------------- InfluxDB 1.6.7 retention policy


async def test_influxdb_v1_gets_the_raw_retention_as_its_default_policy(
    influxdb: Server,
    tmp_path: Path,
) -> None:
    writer = InfluxWriter(InfluxTarget(influxdb.url, "auto", database="nw"), WriteBuffer(tmp_path / "b.sqlite3"),
                          backoff=Backoff(base_s=0.05, cap_s=0.2))  # fmt: skip
    writer.retention_days = 30
    task = asyncio.create_task(writer.run())
    try:
        async with httpx.AsyncClient(base_url=influxdb.url) as client:
            for _ in range(100):
                r = await client.get("/query", params={"q": 'SHOW RETENTION POLICIES ON "nw"'})
                series = r.json()["results"][0].get("series")
                if series and series[0]["values"][0][1] == "720h0m0s":
                    break
                await asyncio.sleep(0.05)
            cols, values = series[0]["columns"], series[0]["values"]
            policy = dict(zip(cols, values[0], strict=True))
            assert policy == {"name": "autogen", "duration": "720h0m0s", "shardGroupDuration": "24h0m0s",
                              "replicaN": 1, "default": True}  # fmt: skip
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await writer.aclose()
