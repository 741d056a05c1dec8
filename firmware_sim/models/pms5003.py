"""Plantower PMS5003 in active mode, written from the datasheet layout (docs/devices.md), not from
the edge: a 32-byte frame about once a second.

    42 4D | 00 1C | 13 words u16 big-endian | checksum u16 big-endian = sum of bytes 0..29

Words: 1–3 PM1.0/PM2.5/PM10 "CF=1", 4–6 the same under atmospheric conditions, 7–12 particle
counts (> 0.3, 0.5, 1.0, 2.5, 5.0, 10 µm per 0.1 L), 13 reserved.

Scenario timeline steps (µg/m³, atmospheric, as the edge publishes them)::

    - {at_s: 0, pm25_ugm3: 8}                               # pm1 and pm10 follow from pm2.5
    - {at_s: 60, pm1_ugm3: 30, pm25_ugm3: 45, pm10_ugm3: 70}

Without pm1_ugm3 / pm10_ugm3 the model uses 0.7 × and 1.2 × PM2.5 (typical indoors). Each frame
adds seeded noise (σ = 0.5 µg/m³ or 3 %, whichever is larger) and keeps PM1 ≤ PM2.5 ≤ PM10.
"CF=1" equals the atmospheric value up to 30 µg/m³ and grows 1.5 × as fast above, as Plantower
sensors report. ``rate_hz`` defaults to 1.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from firmware_sim.scenario import DeviceScenario, SimContext, step_at, validate_options, validate_steps

DEFAULT_RATE_HZ = 1.0
PM_LIMIT_UGM3 = 1000  # the datasheet's maximum range
#: Word 13 as real sensors send it (firmware version 0x97, error code 0).
RESERVED_WORD = 0x9700
NOISE_FLOOR_UGM3 = 0.5
NOISE_FRACTION = 0.03
_U16 = 0xFFFF


def encode_frame(words: Sequence[int]) -> bytes:
    """A PMS5003 frame carrying the 13 data words."""
    if len(words) != 13:
        raise ValueError(f"a PMS5003 frame carries 13 data words, got {len(words)}")
    head = b"BM" + struct.pack(">H13H", 2 * 13 + 2, *words)
    total = 0
    for byte in head:
        total = (total + byte) & _U16
    return head + struct.pack(">H", total)


def cf1_from_atmospheric(atm: int) -> int:
    return atm if atm <= 30 else min(_U16, round(30 + (atm - 30) * 1.5))


def particle_counts(pm25: int, pm10: int) -> tuple[int, int, int, int, int, int]:
    """Plausible counts per 0.1 L, larger for larger mass, decreasing with particle size."""
    coarse = pm10 - pm25
    raw = [150 + 60 * pm25, 45 + 18 * pm25, 9 + 3 * pm25, round(0.5 * pm25 + 0.3 * coarse), round(0.3 * coarse)]
    raw.append(round(0.1 * coarse))
    out: list[int] = []
    for n in raw:
        out.append(min(n, out[-1]) if out else min(n, _U16))
    return (out[0], out[1], out[2], out[3], out[4], out[5])


class PmsStep(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    at_s: float
    pm25_ugm3: Annotated[float, Field(ge=0, le=PM_LIMIT_UGM3)]
    pm1_ugm3: Annotated[float, Field(ge=0, le=PM_LIMIT_UGM3)] | None = None
    pm10_ugm3: Annotated[float, Field(ge=0, le=PM_LIMIT_UGM3)] | None = None


class PmsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Pms5003Model:
    """A StreamingModel: frame ``index`` belongs to ``index / rate_hz`` s after the start."""

    def __init__(self, steps: Sequence[PmsStep], *, rate_hz: float, loop_s: float | None, seed: str) -> None:
        self.steps = list(steps)
        self.rate_hz = rate_hz
        self.loop_s = loop_s
        self.seed = seed

    def values(self, index: int) -> tuple[int, int, int]:
        """(PM1, PM2.5, PM10) atmospheric for frame ``index``, noise included."""
        step = step_at(self.steps, index / self.rate_hz, self.loop_s)
        pm25 = step.pm25_ugm3
        pm1 = step.pm1_ugm3 if step.pm1_ugm3 is not None else 0.7 * pm25
        pm10 = step.pm10_ugm3 if step.pm10_ugm3 is not None else 1.2 * pm25
        rng = random.Random(f"{self.seed}:{index}")  # the bytes depend on the index only
        n1, n25, n10 = (self._noisy(rng, v) for v in (pm1, pm25, pm10))
        n25 = max(n25, n1)
        return n1, n25, max(n10, n25)

    def output(self, index: int) -> bytes:
        pm1, pm25, pm10 = self.values(index)
        cf1 = [cf1_from_atmospheric(v) for v in (pm1, pm25, pm10)]
        return encode_frame([*cf1, pm1, pm25, pm10, *particle_counts(pm25, pm10), RESERVED_WORD])

    @staticmethod
    def _noisy(rng: random.Random, value: float) -> int:
        sigma = max(NOISE_FLOOR_UGM3, NOISE_FRACTION * value)
        return max(0, min(_U16, round(value + rng.gauss(0.0, sigma))))


def make_pms5003(spec: DeviceScenario, ctx: SimContext) -> Pms5003Model:
    validate_options(spec, PmsOptions, ctx)
    steps = validate_steps(spec, PmsStep, ctx)
    return Pms5003Model(steps, rate_hz=spec.rate_hz or DEFAULT_RATE_HZ, loop_s=ctx.loop_s, seed=ctx.seed)
