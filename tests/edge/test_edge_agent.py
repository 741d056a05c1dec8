"""The edge agent end to end on real parts: firmware_sim on real ptys → run_edge → real Mosquitto →
a test subscriber that validates every payload with the contract."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.agent.runner import SILENCE_S, WILL_PAYLOAD, run_edge
from firmware_sim.encoders.nmea import encode_imu
from firmware_sim.io.pty_device import PtyDevice
from firmware_sim.io.runner import run_sim
from nurserywatch.contract import (
    DeviceStatus,
    EdgeStatus,
    Position,
    PostureReading,
    decode,
    edge_topic,
    reading_topic,
    status_topic,
)
from nurserywatch.mqtt import BrokerURL
from nurserywatch.ports import free_port
from tests.support.clock import ShiftedClock
from tests.support.edge_recorder import AGENT, Msg, is_status, record, site_id
from tests.support.kits import write_kit
from tests.support.scenarios import clip_scenario
from tests.support.tasks import stop


def is_edge(site: str, online: bool) -> Callable[[Msg], bool]:
    return lambda m: m.topic == edge_topic(site, AGENT) and decode(EdgeStatus, m.payload).online is online


async def retained(broker: BrokerURL, site: str) -> dict[str, bytes]:
    """What a subscriber arriving now gets from the broker's retained store."""
    async with record(broker, site) as late:
        await asyncio.sleep(0.3)
    assert all(m.retain for m in late.messages)
    return {m.topic: m.payload for m in late.messages}


async def test_edge_publishes_posture_and_status(
    mosquitto: BrokerURL, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge")
    site = site_id()
    kit = write_kit(tmp_path, site=site, devices=("clip-01", "clip-02"))  # only clip-01 is simulated
    clock = ShiftedClock()
    posture = reading_topic(site, "clip-01", "posture")
    async with record(mosquitto, site) as rec:
        sim = asyncio.create_task(
            run_sim(kit, clip_scenario(10, (0, "supine"), (1.5, "prone"), faults={"bad_checksum_every": 5}))
        )
        edge = asyncio.create_task(run_edge(kit, AGENT, mosquitto, clock))
        await rec.wait_for(lambda m: m.topic == posture and decode(PostureReading, m.payload).position == "prone")
        t_end = clock.now_ms()

        hello = decode(EdgeStatus, rec.on(edge_topic(site, AGENT))[0].payload)
        assert hello.online and hello.version == "0.1.0" and hello.devices == ["clip-01", "clip-02"]
        assert hello.ts is not None and ShiftedClock.START_MS <= hello.ts <= t_end
        assert [decode(DeviceStatus, m.payload).online for m in rec.on(status_topic(site, "clip-01"))] == [True]
        assert [decode(DeviceStatus, m.payload).online for m in rec.on(status_topic(site, "clip-02"))] == [False]
        rooms = {d.id: d.room for d in kit.devices}  # each status names the device's room, for the centre
        assert all(decode(DeviceStatus, m.payload).room == rooms[m.topic.rsplit("/", 1)[1]]
                   for m in rec.messages if "/status/" in m.topic)  # fmt: skip

        readings = [decode(PostureReading, m.payload) for m in rec.on(posture)]
        assert [r.position for r in readings] == [Position.SUPINE] * (len(readings) - 1) + [Position.PRONE]
        assert 1 <= len(readings) - 1 <= 3
        assert all(ShiftedClock.START_MS <= r.ts <= t_end for r in readings)
        assert all(700 <= b.ts - a.ts <= 1300 and b.seq > a.seq for a, b in zip(readings, readings[1:], strict=False))
        assert readings[-1].accel_mg is not None and readings[-1].accel_mg[2] < -900
        assert rec.on(reading_topic(site, "clip-02", "posture")) == []
        assert re.search(
            r"WARNING .* clip-01: rejected \d+ sentence\(s\) \(bad_checksum=\d+\); totals bad_checksum=\d+; "
            r"last: bad_checksum: computed [0-9A-F]{2}, sentence says [0-9A-F]{2}: b'\$NWIMU,",
            caplog.text,
        )
        assert re.search(r"clip-02: cannot open .*/ports/clip-02 \(No such file or directory\); retrying", caplog.text)

        before = await retained(mosquitto, site)
        assert decode(EdgeStatus, before[edge_topic(site, AGENT)]).online
        assert decode(DeviceStatus, before[status_topic(site, "clip-01")]).online

        await stop(sim)  # the port disappears
        await rec.wait_for(is_status(site, "clip-01", False))
        n = len(rec.messages)
        await stop(edge)
        bye = decode(EdgeStatus, (await rec.wait_for(is_edge(site, False), after=n)).payload)
        assert bye.version == "0.1.0" and bye.ts is not None, "a goodbye, not the last will"

    after = await retained(mosquitto, site)
    assert not decode(EdgeStatus, after[edge_topic(site, AGENT)]).online
    for device in ("clip-01", "clip-02"):
        goodbye = decode(DeviceStatus, after[status_topic(site, device)])
        assert not goodbye.online and goodbye.room == rooms[device]


class TcpProxy:
    """A switchable relay to the broker: the test can keep the broker unreachable, or cut a live
    connection the way a pulled network cable or crashed process does (no MQTT DISCONNECT)."""

    def __init__(self, target: BrokerURL) -> None:
        self.target = target
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        if self._server:
            self._server.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        broker_r, broker_w = await asyncio.open_connection(self.target.host, self.target.port)
        self._writers |= {client_w, broker_w}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(client_r, broker_w), pipe(broker_r, client_w))


async def test_broker_outage_queues_readings_and_the_will_reports_a_cut(mosquitto: BrokerURL, tmp_path: Path) -> None:
    site = site_id()
    kit = write_kit(tmp_path, site=site)
    clock = ShiftedClock()
    proxy = TcpProxy(mosquitto)
    posture = reading_topic(site, "clip-01", "posture")
    async with record(mosquitto, site) as rec:
        sim = asyncio.create_task(run_sim(kit, clip_scenario(10, (0, "supine"))))
        edge = asyncio.create_task(run_edge(kit, AGENT, BrokerURL("127.0.0.1", proxy.port), clock))
        try:
            await asyncio.sleep(2.5)  # broker unreachable: readings wait in the edge's queue
            assert rec.messages == []
            outage_end = clock.now_ms()
            await proxy.start()
            await rec.wait_for(is_edge(site, True), timeout=8)
            await rec.wait_for(lambda m: m.topic == posture and decode(PostureReading, m.payload).ts > outage_end)
            readings = [decode(PostureReading, m.payload) for m in rec.on(posture)]
            queued = [r for r in readings if r.ts < outage_end]
            assert len(queued) >= 2, "readings taken during the outage were delivered afterwards"
            assert [r.seq for r in readings] == sorted({r.seq for r in readings}), "in order, no duplicates"

            n = len(rec.messages)
            proxy.cut()  # the broker sees the connection die without DISCONNECT
            will = await rec.wait_for(is_edge(site, False), after=n)
            assert will.payload == WILL_PAYLOAD == b'{"online": false}'
            await rec.wait_for(is_edge(site, True), after=n, timeout=8)  # reconnected, announced again
            await rec.wait_for(is_status(site, "clip-01", True), after=n)
        finally:
            await stop(edge)
            await stop(sim)
            await proxy.close()


EDGE_PROCESS = """
import asyncio, sys
from edge.agent.runner import run_edge
from nurserywatch.clock import SystemClock
from nurserywatch.kit import load_kit
from nurserywatch.mqtt import BrokerURL
asyncio.run(run_edge(load_kit(sys.argv[1]), sys.argv[2], BrokerURL.parse(sys.argv[3]), SystemClock()))
"""


async def test_last_will_when_the_edge_process_is_killed(mosquitto: BrokerURL, tmp_path: Path) -> None:
    site = site_id()
    write_kit(tmp_path, site=site)
    async with record(mosquitto, site) as rec:
        proc = subprocess.Popen(
            [sys.executable, "-c", EDGE_PROCESS, str(tmp_path / "kit.yaml"), AGENT, str(mosquitto)],
            stderr=subprocess.PIPE,
        )
        try:
            await rec.wait_for(is_edge(site, True), timeout=15)
            n = len(rec.messages)
            proc.kill()  # SIGKILL: no goodbye possible
            proc.wait(timeout=5)
            will = await rec.wait_for(is_edge(site, False), after=n)
            assert will.payload == WILL_PAYLOAD
        finally:
            proc.kill()
            proc.wait(timeout=5)
    after = await retained(mosquitto, site)
    assert after[edge_topic(site, AGENT)] == WILL_PAYLOAD
    assert decode(EdgeStatus, after[edge_topic(site, AGENT)]) == EdgeStatus(online=False)


async def test_unknown_agent_is_a_clear_error(mosquitto: BrokerURL, tmp_path: Path) -> None:
    kit = write_kit(tmp_path)
    with pytest.raises(ValueError, match=r"agent 'pi-9' is not in the kit of site 'testsite' \(known agents: pi-1\)"):
        await run_edge(kit, "pi-9", mosquitto, ShiftedClock())


async def test_a_port_that_is_open_but_silent_is_reported_offline(mosquitto: BrokerURL, tmp_path: Path) -> None:
    site = site_id()
    kit = write_kit(tmp_path, site=site)
    port = PtyDevice(tmp_path / "ports" / "clip-01")  # opens fine, then says nothing useful
    clock = ShiftedClock()
    try:
        async with record(mosquitto, site) as rec:
            edge = asyncio.create_task(run_edge(kit, AGENT, mosquitto, clock, spool_path=tmp_path / "spool.sqlite3"))
            await rec.wait_for(is_status(site, "clip-01", True))
            opened = time.monotonic()
            port.write(b"\x00\x13garbage, not a sentence\r\n")
            await rec.wait_for(is_status(site, "clip-01", False), timeout=10)
            silent_for = time.monotonic() - opened
            assert SILENCE_S - 1 <= silent_for <= SILENCE_S + 2.5, silent_for  # counted from the port opening
            n = len(rec.messages)
            for seq in range(30):  # valid sentences again: back online
                port.write(encode_imu(seq, 0, 0, 1000))
                await asyncio.sleep(0.1)
                if any(is_status(site, "clip-01", True)(m) for m in rec.messages[n:]):
                    break
            await rec.wait_for(is_status(site, "clip-01", True), after=n, timeout=5)
            await stop(edge)
    finally:
        port.close()
