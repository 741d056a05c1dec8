"""Winsen MH-Z19B CO2 sensor, written from its datasheet (docs/devices.md), not from the edge.

Commands and replies are 9 bytes, starting FF, ending with a checksum that makes bytes 1..8 sum
to 0 modulo 256. The model answers the read command only::

    FF 01 86 00 00 00 00 00 79   →   FF 86 HH LL TT 00 00 00 CS     CO2 = HH·256 + LL ppm

Like the real sensor it stays silent for everything else: other commands (calibration, ABC,
range — acted on by a real sensor, ignored here), requests with a bad checksum, noise. Byte 4 is
the module temperature + 40 (not in the datasheet; real sensors send it, see the captures in
avaldebe/PyPMS tests/captured_data/MHZ19B.hexdump).

Scenario timeline steps::

    - {at_s: 0, co2_ppm: 600}
    - {at_s: 30, co2_ppm: 1600}

Each answer adds seeded noise (σ = 3 ppm). No ``rate_hz``: the sensor speaks when asked.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from firmware_sim.scenario import DeviceScenario, ScenarioError, SimContext, step_at, validate_options, validate_steps

FRAME_BYTES = 9
START = 0xFF
READ_CO2 = 0x86
CO2_LIMIT_PPM = 10000  # the widest range the MH-Z19B can be set to
NOISE_PPM = 3.0
MODULE_TEMP_C = 25
#: Bytes kept while looking for a request; older bytes are noise nobody will complete.
MAX_PENDING = 64


def frame_checksum(body: bytes) -> int:
    """The byte that makes bytes 1..8 of a frame sum to zero modulo 256."""
    return -sum(body[1:8]) % 256


def encode_reply(co2_ppm: int, temperature_c: int = MODULE_TEMP_C) -> bytes:
    body = bytes([START, READ_CO2, co2_ppm >> 8 & 0xFF, co2_ppm & 0xFF, temperature_c + 40, 0, 0, 0])
    return body + bytes([frame_checksum(body)])


class Co2Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    at_s: float
    co2_ppm: Annotated[float, Field(ge=0, le=CO2_LIMIT_PPM)]


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Co2Timeline:
    """The scripted CO2 level with seeded noise (shared by the CO2 sensor models)."""

    def __init__(self, steps: Sequence[Co2Step], *, loop_s: float | None, seed: str) -> None:
        self.steps = list(steps)
        self.loop_s = loop_s
        self._rng = random.Random(seed)

    def ppm_at(self, t_s: float) -> int:
        value = step_at(self.steps, t_s, self.loop_s).co2_ppm + self._rng.gauss(0.0, NOISE_PPM)
        return max(0, min(CO2_LIMIT_PPM, round(value)))


def co2_timeline(spec: DeviceScenario, ctx: SimContext, sensor: str) -> Co2Timeline:
    """Validate a CO2 sensor's scenario entry (it has no rate and no options)."""
    if spec.rate_hz is not None:
        raise ScenarioError(f"{ctx.where}.rate_hz: the {sensor} answers requests; it has no rate")
    validate_options(spec, NoOptions, ctx)
    return Co2Timeline(validate_steps(spec, Co2Step, ctx), loop_s=ctx.loop_s, seed=ctx.seed)


class Mhz19bModel:
    """A RespondingModel: gets every chunk read from the port, returns the replies."""

    def __init__(self, timeline: Co2Timeline) -> None:
        self.timeline = timeline
        self._pending = b""
        self.answered = 0
        self.ignored = 0

    def respond(self, request: bytes, t_s: float) -> bytes:
        buf = (self._pending + request)[-MAX_PENDING:]
        replies = b""
        while (start := buf.find(START)) >= 0 and len(buf) - start >= FRAME_BYTES:
            frame = buf[start : start + FRAME_BYTES]
            if frame_checksum(frame) != frame[8]:
                buf = buf[start + 1 :]  # not a command: look again from the next byte
                continue
            buf = buf[start + FRAME_BYTES :]
            if frame[2] == READ_CO2:
                replies += encode_reply(self.timeline.ppm_at(t_s))
                self.answered += 1
            else:
                self.ignored += 1
        self._pending = buf[buf.find(START) :] if START in buf else b""
        return replies


def make_mhz19b(spec: DeviceScenario, ctx: SimContext) -> Mhz19bModel:
    return Mhz19bModel(co2_timeline(spec, ctx, "MH-Z19B"))
