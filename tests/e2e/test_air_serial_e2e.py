"""The serial air sensors end to end on real parts: firmware_sim (configs/scenarios/air_serial.yaml)
on real ptys → the edge agent → a real Mosquitto → a test subscriber that validates every payload
with the contract."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.agent.runner import EdgeAgent, run_edge
from firmware_sim.devices import SIM_MODELS, RespondingModel, SimModel, StreamingModel
from firmware_sim.io.runner import run_sim
from firmware_sim.scenario import DeviceScenario, Scenario, SimContext, load_scenario, parse_scenario
from nurserywatch.contract import AirReading, DeviceStatus, decode, reading_topic, status_topic
from nurserywatch.kit import DeviceKind, Kit, load_kit
from nurserywatch.mqtt import BrokerURL
from tests.support.clock import ShiftedClock
from tests.support.edge_recorder import AGENT, Msg, Recorder, is_status, record, site_id
from tests.support.tasks import stop

SCENARIO = Path(__file__).resolve().parents[2] / "configs" / "scenarios" / "air_serial.yaml"
DEVICES = {"pm-01": "pms5003", "co2-01": "mhz19b", "co2-02": "senseair_s8"}
#: (field, value before 6 s, value after, tolerance) as air_serial.yaml scripts them.
SCRIPT = {
    "pm-01": ("pm25_ugm3", 8, 55, 4),
    "co2-01": ("co2_ppm", 600, 1600, 20),
    "co2-02": ("co2_ppm", 800, 1400, 20),
}


def write_air_kit(tmp_path: Path, site: str) -> Kit:
    lines = [
        f"site: {site}",
        "name: air test nursery",
        "rooms: [{id: room1, name: Room 1}]",
        "agents: [{id: pi-1}]",
        "devices:",
        *(
            f"  - {{id: {d}, kind: {kind}, room: room1, agent: pi-1, "
            f"transport: {{type: serial, port: ports/{d}, baud: 9600}}}}"
            for d, kind in DEVICES.items()
        ),
    ]
    path = tmp_path / "kit.yaml"
    path.write_text("\n".join(lines) + "\n")
    return load_kit(path)


def with_faults(scenario: Scenario, **faults: int) -> Scenario:
    data = scenario.model_dump(mode="json", exclude_none=True)
    return parse_scenario({**data, "faults": faults})


def air(rec: Recorder, site: str, device: str) -> list[AirReading]:
    return [decode(AirReading, m.payload) for m in rec.on(reading_topic(site, device, "air"))]


def reached(site: str, device: str, after: bool) -> Callable[[Msg], bool]:
    field, before_value, after_value, tol = SCRIPT[device]
    target = after_value if after else before_value

    def pred(m: Msg) -> bool:
        if m.topic != reading_topic(site, device, "air"):
            return False
        value = getattr(decode(AirReading, m.payload), field)
        return value is not None and abs(value - target) <= tol

    return pred


async def test_each_sensor_publishes_its_scripted_values(mosquitto: BrokerURL, tmp_path: Path) -> None:
    site = site_id()
    kit = write_air_kit(tmp_path, site)
    clock = ShiftedClock()
    async with record(mosquitto, site) as rec:
        sim = asyncio.create_task(run_sim(kit, load_scenario(SCENARIO)))
        edge = asyncio.create_task(run_edge(kit, AGENT, mosquitto, clock))
        try:
            for device in DEVICES:  # CO2 is polled every 5 s, so the 6 s change shows by ~10 s
                await rec.wait_for(reached(site, device, after=True), timeout=15)
        finally:
            await stop(edge)
            await stop(sim)
    t_end = clock.now_ms()

    for device, (field, before_value, after_value, tol) in SCRIPT.items():
        readings = air(rec, site, device)
        values = [getattr(r, field) for r in readings]
        n_before = sum(1 for v in values if abs(v - before_value) <= tol)
        assert values[:n_before] == [v for v in values if abs(v - before_value) <= tol], f"{device}: {values}"
        assert all(abs(v - after_value) <= tol for v in values[n_before:]), f"{device}: {values}"
        assert n_before >= 1 and len(values) > n_before, f"{device}: both levels seen: {values}"
        assert [r.seq for r in readings] == list(range(len(readings))), "a per-channel counter from 0"
        assert all(ShiftedClock.START_MS <= r.ts <= t_end for r in readings), "ts from the injected clock"
        assert [r.ts for r in readings] == sorted(r.ts for r in readings)
        statuses = [decode(DeviceStatus, m.payload).online for m in rec.on(status_topic(site, device))]
        assert statuses[0] is True and statuses[-1] is False, "online while read, offline on shutdown"

    pm = air(rec, site, "pm-01")
    assert all(r.co2_ppm is None and r.pm10_ugm3 is not None and r.pm10_ugm3 >= r.pm25_ugm3 for r in pm)  # type: ignore[operator]
    # The atmospheric PM10 of 80 µg/m³, not the sensor's "CF=1" value (30 + 50 × 1.5 = 105).
    assert abs(pm[-1].pm10_ugm3 - 80) <= 6  # type: ignore[operator]
    assert 700 <= (pm[-1].ts - pm[0].ts) / max(1, len(pm) - 1) <= 1300, "one PM reading per second"
    for device in ("co2-01", "co2-02"):
        co2 = air(rec, site, device)
        assert all(r.pm25_ugm3 is None for r in co2)
        gaps = [b.ts - a.ts for a, b in zip(co2, co2[1:], strict=False)]
        assert gaps and all(4500 <= g <= 5500 for g in gaps), f"{device}: polled every 5 s: {gaps}"


class CorruptStreaming:
    """Test instrumentation around a streaming model: every other frame from the first gets a
    wrong last byte, which is checksum or CRC in all three formats. (The runner's own
    ``bad_checksum_every`` knows only the NMEA sentences.)"""

    def __init__(self, model: StreamingModel) -> None:
        self.model = model
        self.rate_hz = model.rate_hz

    def output(self, index: int) -> bytes:
        frame = self.model.output(index)
        return corrupt(frame) if index % 2 == 0 else frame


class CorruptResponding:
    def __init__(self, model: RespondingModel) -> None:
        self.model = model
        self.replies = 0

    def respond(self, request: bytes, t_s: float) -> bytes:
        reply = self.model.respond(request, t_s)
        if reply:
            reply = corrupt(reply) if self.replies % 2 == 0 else reply
            self.replies += 1
        return reply


def corrupt(frame: bytes) -> bytes:
    return frame[:-1] + bytes([frame[-1] ^ 0x5A])


def corrupting(factory: Callable[[DeviceScenario, SimContext], SimModel]) -> Callable[..., SimModel]:
    def make(spec: DeviceScenario, ctx: SimContext) -> SimModel:
        model = factory(spec, ctx)
        return CorruptStreaming(model) if isinstance(model, StreamingModel) else CorruptResponding(model)

    return make


async def test_garbage_and_bad_checksums_are_counted_and_readings_continue(
    mosquitto: BrokerURL, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, logger="edge")
    for kind in (DeviceKind.PMS5003, DeviceKind.MHZ19B, DeviceKind.SENSEAIR_S8):
        monkeypatch.setitem(SIM_MODELS, kind, corrupting(SIM_MODELS[kind]))
    site = site_id()
    kit = write_air_kit(tmp_path, site)
    agent = EdgeAgent(kit, AGENT, mosquitto, ShiftedClock())
    async with record(mosquitto, site) as rec:
        # And the runner appends a burst of line noise to every frame and reply.
        sim = asyncio.create_task(run_sim(kit, with_faults(load_scenario(SCENARIO), garbage_every=1)))
        edge = asyncio.create_task(agent.run())
        try:
            # The first CO2 replies are corrupted, the second ones (5 s later) are good.
            async with asyncio.timeout(9):
                while any(not air(rec, site, d) for d in DEVICES):
                    await asyncio.sleep(0.05)
        finally:
            await stop(edge)
            await stop(sim)

    for device, (field, before_value, _, tol) in SCRIPT.items():
        problems = agent.channels[device].problems()
        assert problems["garbage"] >= 1 and problems["bad_checksum"] >= 1, f"{device}: {problems}"
        assert set(problems) <= {"garbage", "bad_checksum", "truncated", "no_reply"}, f"{device}: {problems}"
        values = [getattr(r, field) for r in air(rec, site, device)]
        assert values and all(abs(v - before_value) <= tol for v in values), f"{device}: {values}"
        assert f"{device}: rejected" in caplog.text
    for device in ("co2-01", "co2-02"):
        assert agent.channels[device].problems()["no_reply"] == 1, "the corrupted reply left a poll unanswered"
    pm = agent.channels["pm-01"].problems()
    assert len(air(rec, site, "pm-01")) >= 2 and pm["bad_checksum"] >= 2
    assert "Traceback" not in caplog.text


async def test_unplugged_port_goes_offline_and_comes_back(mosquitto: BrokerURL, tmp_path: Path) -> None:
    site = site_id()
    kit = write_air_kit(tmp_path, site)
    scenario = load_scenario(SCENARIO)
    async with record(mosquitto, site) as rec:
        edge = asyncio.create_task(run_edge(kit, AGENT, mosquitto, ShiftedClock()))
        sim = asyncio.create_task(run_sim(kit, scenario))
        try:
            for device in DEVICES:
                await rec.wait_for(reached(site, device, after=False), timeout=8)
            n = len(rec.messages)
            unplugged = time.monotonic()
            await stop(sim)  # every port disappears
            for device in DEVICES:
                await rec.wait_for(is_status(site, device, False), timeout=5, after=n)
            assert time.monotonic() - unplugged < 5.0

            n = len(rec.messages)
            sim = asyncio.create_task(run_sim(kit, scenario))
            for device in DEVICES:
                await rec.wait_for(is_status(site, device, True), timeout=8, after=n)
                await rec.wait_for(reached(site, device, after=False), timeout=8, after=n)
        finally:
            await stop(edge)
            if not sim.done():
                await stop(sim)
    for device in DEVICES:
        statuses = [decode(DeviceStatus, m.payload).online for m in rec.on(status_topic(site, device))]
        assert statuses[:3] == [True, False, True], f"{device}: {statuses}"
