"""Posture clip model: a 3-axis accelerometer worn on the chest/belly (docs/devices.md).

Axes: +z out of the body, +y towards the head, +x towards the child's left. At rest the sensor
reads the reaction to gravity, so each posture has one dominant axis (table below); the model adds
small seeded Gaussian noise. ``moving`` stands for a child being picked up or rolling over: a
random direction and a magnitude far from 1 g.

Pure: sample ``index`` belongs to time ``index / rate_hz`` s after the start, so the runner only
decides *when* bytes are written, never *what* they are.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from firmware_sim.encoders.nmea import encode_imu
from firmware_sim.scenario import DeviceScenario, SimContext, validate_steps


class SimPosture(StrEnum):
    SUPINE = "supine"
    PRONE = "prone"
    LEFT = "left"
    RIGHT = "right"
    UPRIGHT = "upright"
    MOVING = "moving"


ONE_G_MG = 1000
#: Reaction to gravity in milli-g (x, y, z) for each resting posture.
GRAVITY_MG: dict[SimPosture, tuple[int, int, int]] = {
    SimPosture.SUPINE: (0, 0, ONE_G_MG),
    SimPosture.PRONE: (0, 0, -ONE_G_MG),
    SimPosture.LEFT: (-ONE_G_MG, 0, 0),
    SimPosture.RIGHT: (ONE_G_MG, 0, 0),
    SimPosture.UPRIGHT: (0, ONE_G_MG, 0),
}
#: Sensor noise plus breathing motion, per axis (1 sigma).
NOISE_MG = 15.0
#: An accelerometer of ±16 g full scale saturates here.
FULL_SCALE_MG = 16000


class PostureClip:
    """Generates NWIMU sentences for one clip following a posture timeline."""

    def __init__(
        self,
        timeline: Sequence[tuple[float, SimPosture]],
        *,
        rate_hz: float,
        loop_s: float | None = None,
        seed: int | str = 0,
        noise_mg: float = NOISE_MG,
    ) -> None:
        if not timeline or timeline[0][0] != 0:
            raise ValueError("a timeline starts with a posture at 0 s")
        if rate_hz <= 0:
            raise ValueError(f"rate_hz must be positive, got {rate_hz}")
        self._starts = [at for at, _ in timeline]
        self._postures = [p for _, p in timeline]
        self.rate_hz = rate_hz
        self.loop_s = loop_s
        self._noise = noise_mg
        self._rng = random.Random(seed)

    def posture_at(self, t_s: float) -> SimPosture:
        if self.loop_s is not None:
            t_s %= self.loop_s
        return self._postures[bisect.bisect_right(self._starts, t_s) - 1]

    def accel_at(self, t_s: float) -> tuple[int, int, int]:
        posture = self.posture_at(t_s)
        if posture is SimPosture.MOVING:
            return self._moving()
        gx, gy, gz = GRAVITY_MG[posture]
        return (self._noisy(gx), self._noisy(gy), self._noisy(gz))

    def output(self, index: int) -> bytes:
        """The ``index``-th sentence since the start (seq = index mod 65536)."""
        return encode_imu(index, *self.accel_at(index / self.rate_hz))

    sentence = output

    def _noisy(self, value: int) -> int:
        return _clamp(round(value + self._rng.gauss(0.0, self._noise)))

    def _moving(self) -> tuple[int, int, int]:
        # Random direction, magnitude well away from 1 g (0.2–0.6 g or 1.6–2.5 g).
        theta = math.acos(self._rng.uniform(-1.0, 1.0))
        phi = self._rng.uniform(0.0, 2 * math.pi)
        magnitude = ONE_G_MG * self._rng.choice([self._rng.uniform(0.2, 0.6), self._rng.uniform(1.6, 2.5)])
        return (
            _clamp(round(magnitude * math.sin(theta) * math.cos(phi))),
            _clamp(round(magnitude * math.sin(theta) * math.sin(phi))),
            _clamp(round(magnitude * math.cos(theta))),
        )


def _clamp(value: int) -> int:
    return max(-FULL_SCALE_MG, min(FULL_SCALE_MG, value))


class ClipStep(BaseModel):
    """A clip's timeline step in a scenario: ``{at_s: 5, posture: prone}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    at_s: float
    posture: SimPosture


DEFAULT_RATE_HZ = 10.0


def make_clip(spec: DeviceScenario, ctx: SimContext) -> PostureClip:
    steps = validate_steps(spec, ClipStep, ctx)
    return PostureClip(
        [(s.at_s, s.posture) for s in steps], rate_hz=spec.rate_hz or DEFAULT_RATE_HZ, loop_s=ctx.loop_s, seed=ctx.seed
    )
