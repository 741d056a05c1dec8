"""Real InfluxDB 1.x processes for the storage tests: started on free loopback ports with their own data folder,
stoppable and restartable mid-test; and reading back what was written."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.influx.line_protocol import reading_line
from nurserywatch.contract import (
    AirReading,
    Reading,
    Stream,
)
from nurserywatch.ports import free_port
from tests.support.waiting import wait_for

INFLUXD = Path("/usr/bin/influxd")


DB = "nurserywatch"


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=0.5).status_code < 300
    except httpx.HTTPError:
        return False


@dataclass
class Server:
    """A real database process that a test can stop and start again (same port, same data)."""

    url: str
    argv: list[str]
    ready_path: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: _answers(self.url + self.ready_path), f"{self.url}{self.ready_path} to answer", 15)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def influx_config(d: Path, port: int, rpc_port: int) -> str:
    # Only HTTP on loopback: no usage reporting, no RPC/backup listener beyond loopback, no _internal
    # monitor database, no subscriber, no continuous queries, no pprof.
    return f"""reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{d / "meta"}"
  logging-enabled = false
[data]
  dir = "{d / "data"}"
  wal-dir = "{d / "wal"}"
  query-log-enabled = false
[monitor]
  store-enabled = false
[subscriber]
  enabled = false
[continuous_queries]
  enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
  pprof-enabled = false
[logging]
  level = "warn"
"""


@pytest.fixture
def influxdb(tmp_path: Path) -> Iterator[Server]:
    if not INFLUXD.exists():
        pytest.fail("influxd is not installed; run `make test`, which installs it (apt package influxdb)")
    port = free_port()
    conf = tmp_path / "influxdb.conf"
    conf.write_text(influx_config(tmp_path / "influxdb", port, free_port()))
    server = Server(f"http://127.0.0.1:{port}", [str(INFLUXD), "run", "-config", str(conf)], "/ping",
                    tmp_path / "influxd.log")  # fmt: skip
    server.start()
    try:
        yield server
    finally:
        server.stop()


def air(ts: int, seq: int, co2: float | None, temp: float | None = None) -> AirReading:
    return AirReading(ts=ts, seq=seq, co2_ppm=co2, temp_c=temp)


def line(
    device: str, reading: Reading, stream: Stream = Stream.AIR, room: str = "hiyoko", child: str | None = None
) -> str:
    out = reading_line(site="sakura", room=room, device=device, child=child, stream=stream, reading=reading)
    assert out is not None
    return out


async def influx_query(url: str, q: str) -> list[list[object]]:
    async with httpx.AsyncClient(base_url=url) as client:
        r = await client.get("/query", params={"db": DB, "epoch": "ms", "q": q})
    r.raise_for_status()
    series = r.json()["results"][0].get("series", [])
    return [row for s in series for row in s["values"]]
