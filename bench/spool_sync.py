"""What the edge spool's durability costs: SQLite WAL with synchronous=FULL versus NORMAL.

    .venv/bin/python bench/spool_sync.py [--dir DIR] [--devices 40] [--ticks 300]

Each tick puts one reading per device and commits (what the agent does once per second), then the
publisher pops them and the next commit deletes them — the steady state with the broker up. Prints
the commit time per tick (median, p99, max) for both modes, then the replay rate after an outage
(messages peeked, popped and committed per second). Run it with --dir on the Pi's SD card: fsync
there costs milliseconds, on a server SSD microseconds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import edge.io.spool
from edge.io.spool import Spool
from nurserywatch.clock import SystemClock

PAYLOAD = b'{"ts":1767225600000,"seq":12345,"position":"supine","accel_mg":[12,-30,1002]}'


def steady(directory: Path, mode: str, devices: int, ticks: int) -> list[float]:
    edge.io.spool.SYNCHRONOUS = mode
    spool = Spool(directory / f"steady-{mode}.sqlite3", max_bytes=256 * 2**20, max_age_s=7 * 86400, clock=SystemClock())
    times = []
    for _ in range(ticks):
        for d in range(devices):
            spool.put(f"nurserywatch/v1/site/reading/dev-{d:03d}/posture", PAYLOAD)
        t0 = time.perf_counter()
        spool.commit()
        times.append(time.perf_counter() - t0)
        while (m := spool.peek()) is not None:
            spool.pop(m)
    spool.close()
    return times


def replay(directory: Path, mode: str, messages: int) -> float:
    edge.io.spool.SYNCHRONOUS = mode
    path = directory / f"replay-{mode}.sqlite3"
    spool = Spool(path, max_bytes=256 * 2**20, max_age_s=7 * 86400, clock=SystemClock())
    for i in range(messages):
        spool.put("nurserywatch/v1/site/reading/dev-001/posture", PAYLOAD)
        if i % 40 == 39:
            spool.commit()
    spool.close()
    spool = Spool(path, max_bytes=256 * 2**20, max_age_s=7 * 86400, clock=SystemClock())  # a restarted agent
    t0 = time.perf_counter()
    n = 0
    while (m := spool.peek()) is not None:
        spool.pop(m)
        n += 1
        if n % 100 == 0:  # the agent commits once per second; ~100 PUBACKs/s is a slow broker
            spool.commit()
    spool.commit()
    elapsed = time.perf_counter() - t0
    spool.close()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the test files (default: a temp dir)")
    parser.add_argument("--devices", type=int, default=40)
    parser.add_argument("--ticks", type=int, default=300)
    parser.add_argument("--replay", type=int, default=100_000, help="messages queued before the replay run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for mode in ("NORMAL", "FULL"):
            times = sorted(steady(Path(tmp), mode, args.devices, args.ticks))
            p99 = times[int(len(times) * 0.99) - 1]
            median = statistics.median(times)
            print(
                f"synchronous={mode:6s} commit of {args.devices} readings: median {median * 1e3:.2f} ms,"
                f" p99 {p99 * 1e3:.2f} ms, max {times[-1] * 1e3:.2f} ms"
            )
        for mode in ("NORMAL", "FULL"):
            rate = replay(Path(tmp), mode, args.replay)
            print(f"synchronous={mode:6s} replay (peek/pop/commit, no network): {rate:,.0f} messages/s")


if __name__ == "__main__":
    main()
