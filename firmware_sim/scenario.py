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

Timeline steps carry kind-specific fields (a clip: ``posture``; see each model in
firmware_sim/devices.py); they are checked against the kit's device kind when the scenario is
planned (firmware_sim/io/runner.py).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from nurserywatch.kit import Device
from nurserywatch.yaml_files import describe_validation_error, load_yaml_model, validate_document

Ident = Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,64}$")]


class ScenarioError(Exception):
    """A scenario file that cannot be used. ``str()`` is the one message shown to the user."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Step(BaseModel):
    """One timeline step: ``at_s`` plus fields that depend on the device kind (validated by the
    device's model with validate_steps, once the kit says what the device is)."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)
    at_s: Annotated[float, Field(ge=0)]

    def fields(self) -> dict[str, Any]:
        return {"at_s": self.at_s, **(self.model_extra or {})}


class DeviceScenario(_Strict):
    """What one simulated device does. ``rate_hz`` and ``options`` are read by its model."""

    rate_hz: Annotated[float, Field(gt=0, le=1000)] | None = None
    timeline: Annotated[list[Step], Field(min_length=1)]
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_timeline(self) -> DeviceScenario:
        if self.timeline[0].at_s != 0:
            raise ValueError("timeline[0].at_s: the first step must be at 0 s")
        for i in range(1, len(self.timeline)):
            if self.timeline[i].at_s <= self.timeline[i - 1].at_s:
                raise ValueError(
                    f"timeline[{i}].at_s: {self.timeline[i].at_s} must be later than the step "
                    f"before ({self.timeline[i - 1].at_s})"
                )
        return self


@dataclass(frozen=True)
class SimContext:
    """What a device model may know besides its own scenario entry."""

    device: Device
    loop_s: float | None
    #: Per-device noise seed (scenario seed combined with the device id).
    seed: str
    #: The scenario file's folder, for data files named in options (None: current folder).
    base_dir: Path | None
    #: Where error messages should say the problem is, e.g. "demo.yaml: devices.mat-01".
    where: str


S = TypeVar("S", bound=BaseModel)


def validate_steps(spec: DeviceScenario, model: type[S], ctx: SimContext) -> list[S]:
    """The timeline as ``model`` instances (a pydantic model with ``at_s`` and extra="forbid")."""
    steps = []
    for i, step in enumerate(spec.timeline):
        try:
            steps.append(model.model_validate(step.fields()))
        except ValidationError as exc:
            detail = describe_validation_error(exc, "configs/scenarios/")
            raise ScenarioError(f"{ctx.where}.timeline[{i}].{detail}") from None
    return steps


def validate_options(spec: DeviceScenario, model: type[S], ctx: SimContext) -> S:
    try:
        return model.model_validate(spec.options)
    except ValidationError as exc:
        detail = describe_validation_error(exc, "configs/scenarios/")
        raise ScenarioError(f"{ctx.where}.options.{detail}") from None


class _HasAt(Protocol):
    @property
    def at_s(self) -> float: ...


A = TypeVar("A", bound=_HasAt)


def step_at(steps: Sequence[A], t_s: float, loop_s: float | None) -> A:
    """The step in force at ``t_s`` seconds after the start (timelines restart every loop_s)."""
    if loop_s is not None:
        t_s %= loop_s
    starts = [s.at_s for s in steps]
    return steps[max(0, bisect.bisect_right(starts, t_s) - 1)]


class Faults(_Strict):
    """Fault injection, counted in sentences per device; 0 turns a fault off."""

    bad_checksum_every: Annotated[int, Field(ge=0)] = 0
    garbage_every: Annotated[int, Field(ge=0)] = 0


class Scenario(_Strict):
    devices: Annotated[dict[Ident, DeviceScenario], Field(min_length=1)]
    loop_s: Annotated[float, Field(gt=0)] | None = None
    seed: int = 0
    faults: Faults = Faults()
    _source: str = PrivateAttr(default="<scenario>")
    _base_dir: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> str:
        return self._source

    @property
    def base_dir(self) -> Path | None:
        return self._base_dir

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
    scenario = load_yaml_model(path, Scenario, ScenarioError, example="configs/scenarios/demo.yaml")
    scenario._source = str(path)
    scenario._base_dir = Path(path).resolve().parent
    return scenario


def parse_scenario(data: object, *, source: str = "<scenario>", base_dir: Path | None = None) -> Scenario:
    scenario = validate_document(data, Scenario, ScenarioError, source=source, example="configs/scenarios/demo.yaml")
    scenario._source = source
    scenario._base_dir = base_dir
    return scenario
