"""Size of the gateway's SQLite after a year of a 60-child nursery, with and without retention.

    .venv/bin/python bench/retention_size.py [--days 2]

Simulates ``--days`` days on an injected clock (bulk inserts into the readings table, payloads made
by the contract's models), measures the file (after VACUUM) holding those days raw, then rolls them
up (gateway/retention/store.py) and deletes every raw row, and measures the rollups alone. A year is
extrapolated linearly from the per-day figures — honest because both tables grow linearly with days:

    without retention: 365 × raw/day
    with the defaults: 30 × raw/day (readings_raw_days) + 365 × rollups/day (readings_downsampled_days ≥ 365)

Assumptions of the nursery (change them below): 60 children, each with a nap mat (one breathing
reading per second) and a posture clip (one reading every 10 s) during a 2.5-hour nap; a body
temperature twice a day; 4 rooms with an air sensor each, one reading a minute all day. Alerts,
sessions and nap-check records are left out (they are small: a few thousand rows a month).

The last lines are the figures: ``retention_size …``.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import tempfile
import time
from contextlib import closing
from pathlib import Path

from gateway.db.store import Store
from gateway.retention.policy import DAY_MS, cutoffs
from gateway.retention.store import connect, prune, roll_up
from nurserywatch.contract import AirReading, BodyTempReading, BreathingReading, Position, PostureReading
from nurserywatch.kit import RetentionConfig

CHILDREN = 60
ROOMS = 4
NAP_S = int(2.5 * 3600)
NAP_START_MS = 4 * 3600_000  # 13:00 JST
T0 = 1_893_456_000_000 - 400 * DAY_MS


def day_rows(day: int, rng: random.Random) -> list[tuple[str, str, int, int, str, int]]:
    base = T0 + day * DAY_MS
    rows = []
    nap = base + NAP_START_MS
    for c in range(CHILDREN):
        for s in range(NAP_S):
            ts = nap + s * 1000 + c
            r = BreathingReading(ts=ts, seq=day * NAP_S + s, rate_bpm=round(rng.gauss(24, 3), 1),
                                 amplitude=round(rng.uniform(0.2, 1), 3), motion=round(rng.random() * 0.1, 3),
                                 present=True, quality=0.9, last_breath_ts=ts - 500)  # fmt: skip
            rows.append((f"mat-{c:02d}", "breathing", ts, r.seq, r.model_dump_json(), ts))
            if s % 10 == 0:
                p = PostureReading(ts=ts, seq=day * NAP_S + s, position=Position.SUPINE, accel_mg=(10, -20, 990))
                rows.append((f"clip-{c:02d}", "posture", ts, p.seq, p.model_dump_json(), ts))
        for k, ts in enumerate((base + 2 * 3600_000, base + 7 * 3600_000)):
            t = BodyTempReading(ts=ts + c, seq=day * 2 + k, celsius=round(rng.gauss(36.6, 0.2), 1))
            rows.append((f"thermo-{c:02d}", "body_temp", t.ts, t.seq, t.model_dump_json(), t.ts))
    for room in range(ROOMS):
        for m in range(24 * 60):
            ts = base + m * 60_000 + room
            a = AirReading(ts=ts, seq=day * 1440 + m, co2_ppm=round(rng.uniform(450, 1400)),
                           pm25_ugm3=round(rng.uniform(2, 30), 1), pm10_ugm3=round(rng.uniform(5, 40), 1),
                           temp_c=round(rng.uniform(20, 26), 1), rh_pct=round(rng.uniform(35, 60), 1))  # fmt: skip
            rows.append((f"air-{room}", "air", ts, a.seq, a.model_dump_json(), ts))
    return rows


def size(path: Path) -> int:
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("VACUUM")
    return path.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=2, help="days to simulate (default 2)")
    args = ap.parse_args()
    rng = random.Random(5)
    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "gw.sqlite3"
        Store(db_path).close()
        empty = size(db_path)
        t = time.perf_counter()
        n = 0
        with closing(sqlite3.connect(db_path)) as db:
            for day in range(args.days):
                rows = day_rows(day, rng)
                n += len(rows)
                with db:
                    db.executemany("INSERT INTO readings (device, stream, ts, seq, payload, received_ts)"
                                   " VALUES (?, ?, ?, ?, ?, ?)", rows)  # fmt: skip
        gen_s = time.perf_counter() - t
        raw = size(db_path) - empty
        t = time.perf_counter()
        end = T0 + args.days * DAY_MS
        with closing(connect(db_path)) as db:
            rolled, _late, written = roll_up(db, end)
            # every raw row past "retention" now: what is left is the rollups alone
            report = prune(db, cutoffs(RetentionConfig(readings_raw_days=1), end + DAY_MS))
        job_s = time.perf_counter() - t
        rollups = size(db_path) - empty
    raw_day, roll_day = raw / args.days, rollups / args.days
    policy = RetentionConfig()
    without = 365 * raw_day
    with_ret = policy.readings_raw_days * raw_day + min(365, policy.readings_downsampled_days) * roll_day
    print(f"simulated {args.days} day(s): {n} readings ({n / args.days:.0f}/day) in {gen_s:.1f} s;"
          f" rolled up {rolled} rows into {written} rollups and deleted {report.raw_deleted} raw rows in {job_s:.1f} s")
    print(f"retention_size raw readings: {raw_day / 1e6:.1f} MB/day")
    print(f"retention_size rollups: {roll_day / 1e3:.1f} kB/day")
    print(f"retention_size one year without retention: {without / 1e9:.2f} GB")
    print(f"retention_size one year with the default retention ({policy.readings_raw_days} d raw,"
          f" {policy.readings_downsampled_days} d rollups): {with_ret / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
