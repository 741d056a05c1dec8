"""The trend read path (``GET /api/trends``): InfluxQL over ``/query`` when the kit stores readings
in InfluxDB, else the gateway's SQLite — the same buckets either way (gateway/trends/queries.py).

A module of its own, apart from the InfluxDB writer, so the dashboard's read interface
(gateway/read.py) carries the read path without the gateway's write side."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx

from gateway.db.reader import StoreReader
from gateway.trends.queries import Bucket, TrendWindow, buckets_from_influx, influxql, room_devices, window
from nurserywatch.kit import Kit


async def influx_trend(
    url: str, database: str, room: str, w: TrendWindow, *, token: str | None = None, timeout_s: float = 10.0
) -> list[Bucket]:
    """A trend from InfluxQL over ``/query`` (1.x; 2.x through a DBRP mapping; 3.x). Raises
    httpx.HTTPError when the server does not answer or answers with an error status."""
    headers = {"Authorization": f"Token {token}"} if token else {}
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, headers=headers) as client:
        r = await client.get("/query", params={"db": database, "epoch": "ms", "q": influxql(room, w)})
    r.raise_for_status()
    return buckets_from_influx(r.json())


def reads_influx(kit: Kit) -> bool:
    """True when trends come from InfluxDB (the kit's ``storage: readings: influxdb``)."""
    return kit.storage.readings == "influxdb" and kit.storage.url is not None


async def room_trend(kit: Kit, db_path: str | Path, room: str, metric: str, range_: str, now_ms: int) -> list[Bucket]:
    """``GET /api/trends?room=&metric=&range=``: from InfluxDB when the kit stores readings there,
    else from the gateway's SQLite (same buckets). Raises TrendError for an unknown metric or range."""
    w = window(metric, range_, now_ms)
    cfg = kit.storage
    if reads_influx(kit):
        assert cfg.url is not None
        return await influx_trend(cfg.url, cfg.database, room, w, token=os.environ.get(cfg.token_env) or None)
    return await asyncio.to_thread(StoreReader(db_path).reading_buckets, w, room_devices(kit, room, w.stream))
