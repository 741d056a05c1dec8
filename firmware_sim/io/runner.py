"""Runs a scenario: one real pty per simulated serial device, sentences written in real time.

    await run_sim(kit, scenario, duration_s=None)

Every device of the kit that the scenario names gets a PtyDevice at
``kit.resolve_port(device.transport.port)``. Sentence ``n`` of a device is due ``n / rate_hz``
seconds after the common start, so timelines of all devices stay aligned and do not drift. The
symlinks are removed on exit (cancellation, duration reached or error).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass

from firmware_sim.devices import SIM_MODELS, RespondingModel, SimModel, StreamingModel
from firmware_sim.encoders.nmea import corrupt_checksum
from firmware_sim.io.pty_device import PtyDevice
from firmware_sim.scenario import Faults, Scenario, ScenarioError, SimContext
from nurserywatch.kit import Device, Kit, SerialTransport

log = logging.getLogger(__name__)

#: A device that fell further behind than this (machine suspended, loop blocked) skips ahead
#: instead of bursting the backlog; the edge then sees a seq gap, as with real lost data.
MAX_LAG_S = 1.0


class FaultInjector:
    """Makes every n-th sentence faulty, as configured in the scenario (pure, seeded)."""

    def __init__(self, faults: Faults, seed: str) -> None:
        self.faults = faults
        self._rng = random.Random(seed)
        self.bad_checksums = 0
        self.garbage_chunks = 0

    def apply(self, index: int, sentence: bytes) -> bytes:
        n = index + 1
        if self.faults.bad_checksum_every and n % self.faults.bad_checksum_every == 0:
            # NMEA sentences carry *HH; the binary formats (PMS5003, MH-Z19B, Modbus) end in their
            # checksum/CRC byte, so flipping bits of the last byte breaks them all.
            sentence = corrupt_checksum(sentence) if b"*" in sentence else sentence[:-1] + bytes([sentence[-1] ^ 0x5A])
            self.bad_checksums += 1
        if self.faults.garbage_every and n % self.faults.garbage_every == 0:
            sentence += self._garbage()
            self.garbage_chunks += 1
        return sentence

    def _garbage(self) -> bytes:
        # Binary line noise that contains no '$' and no line end, then a line end: one garbage run.
        alphabet = [b for b in range(256) if b not in b"$\r\n"]
        return bytes(self._rng.choice(alphabet) for _ in range(self._rng.randint(4, 40))) + b"\r\n"


@dataclass
class _SimDevice:
    device: Device
    port: str
    model: SimModel
    faults: FaultInjector


def plan(kit: Kit, scenario: Scenario) -> list[_SimDevice]:
    """Match the scenario's devices to the kit and build their models; raises ScenarioError for a
    mismatch or a timeline that does not fit the device's kind."""
    planned: list[_SimDevice] = []
    known = ", ".join(d.id for d in kit.devices) or "none"
    for device_id, spec in scenario.devices.items():
        device = kit.device(device_id)
        where = f"{scenario.source}: devices.{device_id}"
        if device is None:
            raise ScenarioError(f"{where}: not a device of kit {kit.site!r} (known: {known})")
        factory = SIM_MODELS.get(device.kind)
        if factory is None:
            raise ScenarioError(f"{where}: the simulator cannot play a {device.kind.value} yet")
        if not isinstance(device.transport, SerialTransport):
            log.warning("%s: %s transport is not simulated yet; skipping", device_id, device.transport.type)
            continue
        ctx = SimContext(device, scenario.loop_s, f"{scenario.seed}:{device_id}", scenario.base_dir, where)
        planned.append(
            _SimDevice(
                device=device,
                port=kit.resolve_port(device.transport.port),
                model=factory(spec, ctx),
                faults=FaultInjector(scenario.faults, seed=f"{scenario.seed}:{device_id}:faults"),
            )
        )
    return planned


async def run_sim(kit: Kit, scenario: Scenario, *, duration_s: float | None = None) -> None:
    """Simulate the scenario's devices until cancelled (or for ``duration_s``)."""
    planned = plan(kit, scenario)
    if not planned:
        log.warning("the scenario names no serial device of this kit; nothing to simulate")
    ptys: list[PtyDevice] = []
    try:
        for sim in planned:
            ptys.append(PtyDevice(sim.port))
            log.info(
                "%s: simulated %s on %s -> %s", sim.device.id, sim.device.kind.value, sim.port, ptys[-1].slave_name
            )
        start = asyncio.get_running_loop().time()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(duration_s), asyncio.TaskGroup() as tg:
                for sim, pty in zip(planned, ptys, strict=True):
                    if isinstance(sim.model, StreamingModel):
                        tg.create_task(_drive(sim, sim.model, pty, start), name=f"sim-{sim.device.id}")
                    else:
                        tg.create_task(_answer(sim, sim.model, pty, start), name=f"sim-{sim.device.id}")
    finally:
        for sim, pty in zip(planned, ptys, strict=False):
            pty.close()
            log.info(
                "%s: stopped; %d bytes written, %d dropped (no reader keeping up), %d bad checksums "
                "and %d garbage chunks injected",
                sim.device.id,
                pty.written_bytes,
                pty.dropped_bytes,
                sim.faults.bad_checksums,
                sim.faults.garbage_chunks,
            )


async def _drive(sim: _SimDevice, model: StreamingModel, pty: PtyDevice, start: float) -> None:
    loop = asyncio.get_running_loop()
    rate = model.rate_hz
    index = 0
    dropping = False
    while True:
        due = start + index / rate
        now = loop.time()
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > MAX_LAG_S:
            behind = int((now - start) * rate) - index
            log.warning("%s: %.1f s behind schedule; skipping %d sentences", sim.device.id, now - due, behind)
            index += behind
        data = sim.faults.apply(index, model.output(index))
        written = pty.write(data)
        if written < len(data) and not dropping:
            log.warning("%s: the reader of %s is not keeping up; dropping output", sim.device.id, sim.port)
        elif written == len(data) and dropping:
            log.info("%s: the reader of %s caught up", sim.device.id, sim.port)
        dropping = written < len(data)
        index += 1


#: How often a responding device looks for a request. Real sensors answer within ~10–50 ms.
REQUEST_POLL_S = 0.01


async def _answer(sim: _SimDevice, model: RespondingModel, pty: PtyDevice, start: float) -> None:
    # Polled rather than loop.add_reader: with no reader on the other end a pty master reports
    # "readable" (EIO) forever, which would spin the event loop.
    loop = asyncio.get_running_loop()
    answered = 0
    while True:
        await asyncio.sleep(REQUEST_POLL_S)
        request = pty.read()
        if not request:
            continue
        reply = model.respond(request, loop.time() - start)
        if reply:
            pty.write(sim.faults.apply(answered, reply))
            answered += 1
