"""Which simulated model plays which kind of device. One line per kind.

Two shapes of model, matching how real devices talk:
- StreamingModel: sends on its own (NWIMU clip, NWMAT mat, PMS5003 in active mode); output
  number ``index`` is due ``index / rate_hz`` s after the start, so the bytes depend only on the
  index and the runner only decides *when* they are written.
- RespondingModel: answers requests (MH-Z19B, Senseair S8); gets every chunk read from the port
  and the time since the start, returns the bytes to send back (b"" = no answer).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from firmware_sim.models.clip import make_clip
from firmware_sim.models.mat_factory import make_mat
from firmware_sim.models.mhz19b import make_mhz19b
from firmware_sim.models.pms5003 import make_pms5003
from firmware_sim.models.senseair_s8 import make_senseair_s8
from firmware_sim.scenario import DeviceScenario, SimContext
from nurserywatch.kit import DeviceKind


@runtime_checkable
class StreamingModel(Protocol):
    rate_hz: float

    def output(self, index: int) -> bytes: ...


@runtime_checkable
class RespondingModel(Protocol):
    def respond(self, request: bytes, t_s: float) -> bytes: ...


SimModel = StreamingModel | RespondingModel

SIM_MODELS: dict[DeviceKind, Callable[[DeviceScenario, SimContext], SimModel]] = {
    DeviceKind.POSTURE_CLIP: make_clip,
    DeviceKind.PMS5003: make_pms5003,
    DeviceKind.MHZ19B: make_mhz19b,
    DeviceKind.SENSEAIR_S8: make_senseair_s8,
    DeviceKind.NAP_MAT: make_mat,
}
