"""Sustained points/s into each readings backend: the gateway's SQLite (``Store.add_reading``, one
commit per reading, as the gateway does it today), InfluxDB 1.6.7 over v1 ``/write`` and
VictoriaMetrics over ``/api/v2/write``, both through ``InfluxWriter`` (batches of 5000 lines).

    .venv/bin/python bench/storage_ingest.py [--points 200000]

Starts ``/usr/bin/influxd`` and ``/usr/bin/victoria-metrics`` itself on free loopback ports with
temporary data directories. Readings are breathing readings of 60 mats (the largest stream of a
nursery), encoded once per reading inside the timed loop (``reading_line``), like the gateway's
observer does. The figure for the HTTP backends is from the first submit until the writer has
nothing pending (every batch acknowledged by the server).

The last lines are the figures: ``storage_ingest <backend>: <n> points/s``.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from gateway.db.store import Store
from gateway.influx.buffer import WriteBuffer
from gateway.influx.line_protocol import reading_line
from gateway.influx.writer import InfluxTarget, InfluxWriter, create_database, running_writer
from nurserywatch.contract import BreathingReading, Stream
from nurserywatch.ports import free_port

T0 = int(time.time() * 1000) - 24 * 3600_000  # recent: VictoriaMetrics' default retention is a month


def wait(url: str) -> None:
    for _ in range(300):
        try:
            if httpx.get(url, timeout=0.5).status_code < 300:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{url} did not answer")


def readings(n: int) -> list[tuple[str, str, BreathingReading]]:
    return [
        (f"mat-{i % 60:02d}", f"c{i % 60:03d}",
         BreathingReading(ts=T0 + (i // 60) * 1000, seq=i // 60, rate_bpm=30 + i % 7, amplitude=0.4, motion=0.05,
                          present=True, quality=0.9, last_breath_ts=T0 + (i // 60) * 1000 - 700))
        for i in range(n)
    ]  # fmt: skip


def bench_sqlite(data: list[tuple[str, str, BreathingReading]], d: Path) -> float:
    store = Store(d / "gw.sqlite3")
    t0 = time.perf_counter()
    for dev, _child, r in data:
        store.add_reading(dev, Stream.BREATHING, r, r.ts)
    elapsed = time.perf_counter() - t0
    store.close()
    return len(data) / elapsed


async def bench_http(data: list[tuple[str, str, BreathingReading]], target: InfluxTarget, d: Path) -> float:
    if target.api == "v1":
        await create_database(target.url, target.database)
    writer = InfluxWriter(target, WriteBuffer(d / f"buf-{target.api}.sqlite3"))
    async with running_writer(writer):
        t0 = time.perf_counter()
        for i, (dev, child, r) in enumerate(data):
            line = reading_line(site="himawari", room="hiyoko", device=dev, child=child, stream=Stream.BREATHING,
                                reading=r)  # fmt: skip
            assert line is not None
            writer.submit(line)
            if i % 5000 == 4999:
                await asyncio.sleep(0)  # let the writer task run, as the gateway's event loop would
        while writer.pending:
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - t0
    writer.buffer.close()
    if writer.stats.written != len(data) or writer.stats.dead_lettered:
        raise SystemExit(f"{target.url}: {writer.stats}")
    return len(data) / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=200_000)
    args = ap.parse_args()
    data = readings(args.points)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        iport, vport = free_port(), free_port()
        (d / "influxdb.conf").write_text(
            f'reporting-disabled = true\nbind-address = "127.0.0.1:{free_port()}"\n'
            f'[meta]\n  dir = "{d}/meta"\n  logging-enabled = false\n'
            f'[data]\n  dir = "{d}/data"\n  wal-dir = "{d}/wal"\n  query-log-enabled = false\n'
            "[monitor]\n  store-enabled = false\n[subscriber]\n  enabled = false\n"
            "[continuous_queries]\n  enabled = false\n"
            f'[http]\n  bind-address = "127.0.0.1:{iport}"\n  log-enabled = false\n'
        )
        procs = [
            subprocess.Popen(["/usr/bin/influxd", "run", "-config", str(d / "influxdb.conf")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            subprocess.Popen(["/usr/bin/victoria-metrics", f"-httpListenAddr=127.0.0.1:{vport}",
                              f"-storageDataPath={d}/vm", "-retentionPeriod=100y", "-loggerLevel=ERROR"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        ]  # fmt: skip
        try:
            wait(f"http://127.0.0.1:{iport}/ping")
            wait(f"http://127.0.0.1:{vport}/health")
            sqlite = bench_sqlite(data, d)
            influx = asyncio.run(bench_http(data, InfluxTarget(f"http://127.0.0.1:{iport}", "v1"), d))
            victoria = asyncio.run(bench_http(
                data, InfluxTarget(f"http://127.0.0.1:{vport}", "v2", org="o", bucket="nurserywatch"), d
            ))  # fmt: skip
        finally:
            for p in procs:
                p.terminate()
                p.wait(timeout=10)
    print(f"{args.points} breathing readings of 60 mats")
    print(f"storage_ingest sqlite (Store.add_reading, one commit each): {sqlite:,.0f} points/s")
    print(f"storage_ingest influxdb 1.6.7 v1 /write: {influx:,.0f} points/s")
    print(f"storage_ingest victoria-metrics /api/v2/write: {victoria:,.0f} points/s")


if __name__ == "__main__":
    main()
