"""Scenario files: what each simulated device does over time. Validated on load; every problem is
one ScenarioError naming the file and the field.

Example (configs/scenarios/demo.yaml)::

    devices:
      clip-01:                   # a device id of the kit; its kind comes from the kit
        rate_hz: 10
        timeline:                # posture changes at seconds from the start
          - {at_s: 0, posture: supine}
          - {at_s: 5, posture: prone}
    loop_s: 120                  # optional: restart every timeline every 120 s
    seed: 0                      # optional: noise seed (per device it is combined with the id)
    faults: {bad_checksum_every: 0, garbage_every: 0}   # optional: every n-th sentence is faulty

Postures: supine, prone, left, right, upright, moving (random, far from 1 g).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from firmware_sim.clip import SimPosture
from nurserywatch.yaml_files import load_yaml_model, validate_document

Ident = Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,64}$")]


class ScenarioError(Exception):
    """A scenario file that cannot be used. ``str()`` is the one message shown to the user."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TimelineStep(_Strict):
    at_s: Annotated[float, Field(ge=0)]
    posture: SimPosture


class ClipScenario(_Strict):
    """A posture clip (kit kind ``posture_clip``)."""

    rate_hz: Annotated[float, Field(gt=0, le=1000)] = 10.0
    timeline: Annotated[list[TimelineStep], Field(min_length=1)]

    @model_validator(mode="after")
    def _check_timeline(self) -> ClipScenario:
        if self.timeline[0].at_s != 0:
            raise ValueError("timeline[0].at_s: the first step must be at 0 s")
        for i in range(1, len(self.timeline)):
            if self.timeline[i].at_s <= self.timeline[i - 1].at_s:
                raise ValueError(
                    f"timeline[{i}].at_s: {self.timeline[i].at_s} must be later than the step "
                    f"before ({self.timeline[i - 1].at_s})"
                )
        return self

    def steps(self) -> list[tuple[float, SimPosture]]:
        return [(s.at_s, s.posture) for s in self.timeline]


class Faults(_Strict):
    """Fault injection, counted in sentences per device; 0 turns a fault off."""

    bad_checksum_every: Annotated[int, Field(ge=0)] = 0
    garbage_every: Annotated[int, Field(ge=0)] = 0


class Scenario(_Strict):
    devices: Annotated[dict[Ident, ClipScenario], Field(min_length=1)]
    loop_s: Annotated[float, Field(gt=0)] | None = None
    seed: int = 0
    faults: Faults = Faults()

    @model_validator(mode="after")
    def _check_loop(self) -> Scenario:
        if self.loop_s is None:
            return self
        for device_id, dev in self.devices.items():
            last = dev.timeline[-1].at_s
            if last >= self.loop_s:
                raise ValueError(
                    f"loop_s: {self.loop_s} s restarts before devices.{device_id} reaches its step at {last} s"
                )
        return self


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file. Raises ScenarioError with one readable message."""
    return load_yaml_model(path, Scenario, ScenarioError, example="configs/scenarios/demo.yaml")


def parse_scenario(data: object, *, source: str = "<scenario>") -> Scenario:
    return validate_document(data, Scenario, ScenarioError, source=source, example="configs/scenarios/demo.yaml")
