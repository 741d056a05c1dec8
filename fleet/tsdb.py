"""The fleet's readings into the central time-series store: the gateway's InfluxDB writer
(gateway/influx/writer.py), with one call more — ``write_now`` — so a fleet worker acknowledges a batch
only once its readings are in the database, or, while the database does not answer, in the writer's
on-disk buffer (drained by the writer's task, oldest first, as on a site).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from fleet.config import TimeSeriesConfig
from gateway.influx.buffer import WriteBuffer
from gateway.influx.line_protocol import Batcher, reading_line
from gateway.influx.writer import InfluxTarget, InfluxWriter
from nurserywatch.contract import Reading, Stream


class FleetInfluxWriter(InfluxWriter):
    async def write_now(self, lines: Sequence[str]) -> bool:
        """Write ``lines`` now; True when the database took them. Otherwise (no answer, the write API not
        known yet, a backlog on disk to keep behind) they go to the on-disk buffer: False."""
        if not lines:
            return True
        if not self._path or len(self.buffer):
            self._push(list(lines))
            self._wake.set()
            return False
        self._in_flight += len(lines)
        try:
            written = await self._send(list(lines))
        finally:
            self._in_flight -= len(lines)
        if not written:
            self._push(list(lines))
            self._wake.set()
        return written


def fleet_writer(cfg: TimeSeriesConfig, buffer_path: Path) -> FleetInfluxWriter:
    """The writer the fleet file's ``timeseries:`` describes (its token from ``token_env``)."""
    target = InfluxTarget(cfg.url or "", cfg.api, database=cfg.database, org=cfg.org or "", bucket=cfg.bucket or "",
                          token=os.environ.get(cfg.token_env) or None)  # fmt: skip
    buffer = WriteBuffer(buffer_path, max_lines=cfg.buffer_max_lines)
    return FleetInfluxWriter(target, buffer, batcher=Batcher(max_lines=cfg.batch_lines, max_age_ms=cfg.batch_ms))


def fleet_line(site: str, room: str | None, device: str, stream: Stream, reading: Reading) -> str | None:
    """A site's reading as the centre writes it: the site's schema (docs/storage.md) with tag ``site``;
    ``room`` when the centre knows it (the status or an alert), no ``child`` (the centre does not bind devices)."""
    return reading_line(site=site, room=room or "", device=device, child=None, stream=stream, reading=reading)
