"""The rules file (configs/rules.yaml): thresholds of every rule, validated on load.

Every problem becomes one RulesError naming the file, the field and what was expected, e.g.
``configs/rules.yaml: prone.min_duration_s: expected a number ≥ 0 (got -5)``.

Layers, most specific last (each layer sets only the keys it names; docs/gateway.md has the table):

1. the top-level rule sections (the defaults; a device bound to no child uses these plus its room's);
2. ``age_bands.{0|1-2|3+}`` — merged over the built-in band defaults (``BAND_DEFAULTS``: the WHO
   fast-breathing limits 60 / 50 / 40 per minute), so naming one key keeps the others;
3. ``rooms.{room}`` — the room's own settings;
4. ``rooms.{room}.age_bands.{band}`` — a room's setting for one age band.

``RulesConfig.resolve(room, band)`` returns the effective ``RuleSet``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nurserywatch.contract import IDENT_RE, Severity
from nurserywatch.kit import AgeBand, Kit
from nurserywatch.yaml_files import load_yaml_model

Ident = Annotated[str, Field(pattern=IDENT_RE.pattern)]
Seconds = Annotated[float, Field(ge=0, le=24 * 3600)]


class RulesError(Exception):
    """A rules file that cannot be used. ``str()`` is the one message shown to the operator."""


class _Strict(BaseModel):
    # extra=forbid: a misspelt key must fail loudly, not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ApneaConfig(_Strict):
    #: Child present and no breathing movement for this long after the last detected breath → critical.
    min_duration_s: Annotated[float, Field(ge=1, le=120)] = 20.0
    #: Breathing is back after this many new breaths (one gasp between two pauses is not breathing) …
    clear_breaths: Annotated[int, Field(ge=1, le=20)] = 3
    #: … and no pause reaching min_duration_s for this long: then the alert resolves.
    clear_after_s: Seconds = 5.0


class BreathingLowConfig(_Strict):
    below_bpm: Annotated[float, Field(gt=0, le=100)] = 10.0
    min_duration_s: Seconds = 15.0
    #: Resolves once the rate is at least below_bpm + hysteresis_bpm for clear_after_s.
    hysteresis_bpm: Annotated[float, Field(ge=0, le=50)] = 2.0
    clear_after_s: Seconds = 10.0
    #: Rates reported with a lower signal quality (0..1) are not judged.
    min_quality: Annotated[float, Field(ge=0, le=1)] = 0.0


class BreathingHighConfig(_Strict):
    #: The age bands set 60 / 50 / 40; this value is for a mat bound to no child.
    above_bpm: Annotated[float, Field(gt=0, le=200)] = 40.0
    min_duration_s: Seconds = 60.0
    #: Resolves once the rate is at most above_bpm − hysteresis_bpm for clear_after_s.
    hysteresis_bpm: Annotated[float, Field(ge=0, le=50)] = 5.0
    clear_after_s: Seconds = 30.0
    #: "Asleep": readings with more motion (0..1) than this are not judged; 1 judges every reading.
    max_motion: Annotated[float, Field(ge=0, le=1)] = 1.0
    min_quality: Annotated[float, Field(ge=0, le=1)] = 0.0


class ProneConfig(_Strict):
    #: Seconds of continuous prone position (message time) before the alert; 0 = at once.
    min_duration_s: Annotated[float, Field(ge=0, le=3600)] = 30.0


class FeverConfig(_Strict):
    warning_c: Annotated[float, Field(ge=30, le=45)] = 37.5
    critical_c: Annotated[float, Field(ge=30, le=45)] = 38.0
    #: A level clears below its threshold − hysteresis_c (critical eases to warning, warning resolves).
    hysteresis_c: Annotated[float, Field(ge=0, le=2)] = 0.2
    min_duration_s: Seconds = 0.0


class SensorLostConfig(_Strict):
    #: A bound mat or clip silent this long during a nap session → sensor lost.
    silence_s: Annotated[float, Field(ge=1, le=600)] = 10.0
    #: Data counts as flowing again while the newest reading is at most this old …
    fresh_s: Annotated[float, Field(gt=0, le=600)] = 3.0
    #: … and the alert resolves once data has flowed (and nothing is offline) for this long.
    clear_after_s: Seconds = 5.0


class ChildOffMatConfig(_Strict):
    #: During a nap session, a child who was on their mat and is off it this long → warning.
    min_duration_s: Seconds = 30.0
    #: Resolves once the child has been back on the mat this long (a restless child does not flap it).
    clear_after_s: Seconds = 5.0


class PresenceUnknownConfig(_Strict):
    #: During a nap session, a bound mat whose presence has been unknown (``present: null``) this long
    #: → an alert (critical when the child was on the mat before, warning otherwise).
    min_duration_s: Seconds = 30.0
    #: Resolves once presence has been known (true or false) this long.
    clear_after_s: Seconds = 0.0


class BatteryLowConfig(_Strict):
    below_pct: Annotated[float, Field(gt=0, le=100)] = 15.0
    #: Resolves at below_pct + hysteresis_pct or more (a new battery).
    hysteresis_pct: Annotated[float, Field(ge=0, le=50)] = 5.0


class Co2Config(_Strict):
    warning_ppm: Annotated[float, Field(gt=0, le=100000)] = 1000.0
    warning_min_duration_s: Seconds = 300.0
    critical_ppm: Annotated[float, Field(gt=0, le=100000)] = 1500.0
    #: A breath on the sensor is not a room: critical needs the level for this long.
    critical_min_duration_s: Seconds = 60.0
    #: Warning resolves below warning_ppm − hysteresis_ppm, critical eases below critical_ppm − hysteresis_ppm …
    hysteresis_ppm: Annotated[float, Field(ge=0, le=10000)] = 100.0
    #: … held for this long.
    clear_after_s: Seconds = 60.0


class RoomTemperatureConfig(_Strict):
    low_c: Annotated[float, Field(ge=-40, le=85)] = 18.0
    high_c: Annotated[float, Field(ge=-40, le=85)] = 28.0
    min_duration_s: Seconds = 600.0
    #: Resolves inside [low_c + hysteresis_c, high_c − hysteresis_c] held for clear_after_s.
    hysteresis_c: Annotated[float, Field(ge=0, le=10)] = 0.5
    clear_after_s: Seconds = 300.0


class HumidityConfig(_Strict):
    low_pct: Annotated[float, Field(ge=0, le=100)] = 40.0
    high_pct: Annotated[float, Field(ge=0, le=100)] = 70.0
    min_duration_s: Seconds = 1800.0
    hysteresis_pct: Annotated[float, Field(ge=0, le=20)] = 2.0
    clear_after_s: Seconds = 600.0


class Pm25Config(_Strict):
    #: The mean is over the readings of the last window_s …
    window_s: Annotated[float, Field(ge=60, le=24 * 3600)] = 3600.0
    #: … and is judged only once the readings in the window span this long (no verdict from 2 minutes of data).
    min_coverage_s: Annotated[float, Field(ge=0, le=24 * 3600)] = 900.0
    warning_ugm3: Annotated[float, Field(gt=0, le=10000)] = 35.0
    critical_ugm3: Annotated[float, Field(gt=0, le=10000)] = 70.0
    #: A level clears at or below its threshold − hysteresis_ugm3.
    hysteresis_ugm3: Annotated[float, Field(ge=0, le=1000)] = 5.0
    min_duration_s: Seconds = 0.0
    clear_after_s: Seconds = 0.0


class FreshnessConfig(_Strict):
    """How long the newest reading of a stream stands for "now". Between readings the gateway's
    timer ticks advance a device's time by the gateway clock, at most this far past its newest
    reading — so an apnea is timed to the tick, and a silent device freezes (sensor lost speaks then)."""

    breathing_s: Annotated[float, Field(gt=0, le=60)] = 3.0
    posture_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    body_temp_s: Annotated[float, Field(gt=0, le=24 * 3600)] = 900.0
    air_s: Annotated[float, Field(gt=0, le=24 * 3600)] = 180.0


@dataclass(frozen=True, slots=True)
class Threshold:
    """One level of a threshold rule, stated once: which value, on which side, and whether the value
    itself is in violation. The rules build their bands from these (gateway/rules/air.py, fever.py)
    and the dashboard draws them, so the two cannot disagree."""

    metric: str
    severity: Severity
    direction: Literal["above", "below"]
    value: float
    #: True: the value itself is in violation (CO2 ≥ 1000); False: only beyond it (PM2.5 > 35).
    inclusive: bool
    #: How far back past ``value`` a reading must come to clear.
    hysteresis: float
    #: Where it comes from in the rules file, e.g. ``co2.warning_ppm``.
    key: str

    def violated_by(self, v: float) -> bool:
        if self.direction == "above":
            return v >= self.value if self.inclusive else v > self.value
        return v <= self.value if self.inclusive else v < self.value

    def cleared_by(self, v: float) -> bool:
        """Back inside by the hysteresis (the band in between holds the alert)."""
        if self.direction == "above":
            edge = self.value - self.hysteresis
            return v < edge if self.inclusive else v <= edge
        edge = self.value + self.hysteresis
        return v > edge if self.inclusive else v >= edge


_W, _C, _I = Severity.WARNING, Severity.CRITICAL, Severity.INFO
#: metric → (rules-file section, its hysteresis field, levels: severity, side, value field, inclusive).
#: CO2 fires *at or above* its levels, PM2.5 (its 1-hour mean) *above* them, room temperature and
#: humidity *outside* [low, high], body temperature at or above.
THRESHOLD_TABLE: dict[str, tuple[str, str, list[tuple[Severity, Literal["above", "below"], str, bool]]]] = {
    "co2": ("co2", "hysteresis_ppm", [(_W, "above", "warning_ppm", True), (_C, "above", "critical_ppm", True)]),
    "pm25": ("pm25", "hysteresis_ugm3", [(_W, "above", "warning_ugm3", False), (_C, "above", "critical_ugm3", False)]),
    "temperature": ("temperature", "hysteresis_c", [(_W, "below", "low_c", False), (_W, "above", "high_c", False)]),
    "humidity": ("humidity", "hysteresis_pct", [(_I, "below", "low_pct", False), (_I, "above", "high_pct", False)]),
    "body_temp": ("fever", "hysteresis_c", [(_W, "above", "warning_c", True), (_C, "above", "critical_c", True)]),
}


#: The breathing rules' names, each also its RuleSet section. Defined here rather than with the rules
#: (gateway/rules/breathing.py) because the nap-check records judge ``breathing_ok`` by them and must
#: load without the rules.
APNEA = "apnea"
BREATHING_LOW = "breathing_rate_low"
BREATHING_HIGH = "breathing_rate_high"


class RuleSet(_Strict):
    """Every rule's thresholds. One effective RuleSet per (room, age band): see RulesConfig.resolve."""

    apnea: ApneaConfig = Field(default_factory=ApneaConfig)
    breathing_rate_low: BreathingLowConfig = Field(default_factory=BreathingLowConfig)
    breathing_rate_high: BreathingHighConfig = Field(default_factory=BreathingHighConfig)
    prone: ProneConfig = Field(default_factory=ProneConfig)
    fever: FeverConfig = Field(default_factory=FeverConfig)
    sensor_lost: SensorLostConfig = Field(default_factory=SensorLostConfig)
    child_off_mat: ChildOffMatConfig = Field(default_factory=ChildOffMatConfig)
    presence_unknown: PresenceUnknownConfig = Field(default_factory=PresenceUnknownConfig)
    battery_low: BatteryLowConfig = Field(default_factory=BatteryLowConfig)
    co2: Co2Config = Field(default_factory=Co2Config)
    temperature: RoomTemperatureConfig = Field(default_factory=RoomTemperatureConfig)
    humidity: HumidityConfig = Field(default_factory=HumidityConfig)
    pm25: Pm25Config = Field(default_factory=Pm25Config)
    freshness: FreshnessConfig = Field(default_factory=FreshnessConfig)

    def thresholds(self, metric: str) -> list[Threshold]:
        """The threshold levels of a metric's rule, lowest severity first ([] for a metric without
        one), from ``THRESHOLD_TABLE``; each level's key in the rules file names its field."""
        entry = THRESHOLD_TABLE.get(metric)
        if entry is None:
            return []
        section, hysteresis, levels = entry
        cfg = getattr(self, section)
        return [
            Threshold(metric, severity, direction, getattr(cfg, field), inclusive, getattr(cfg, hysteresis),
                      f"{section}.{field}")
            for severity, direction, field, inclusive in levels
        ]  # fmt: skip

    def problems(self) -> list[str]:
        """Cross-field mistakes, checked on every effective (room, age band) combination."""
        out = []
        for name, low, high in (
            ("fever.warning_c < fever.critical_c", self.fever.warning_c, self.fever.critical_c),
            ("co2.warning_ppm < co2.critical_ppm", self.co2.warning_ppm, self.co2.critical_ppm),
            ("pm25.warning_ugm3 < pm25.critical_ugm3", self.pm25.warning_ugm3, self.pm25.critical_ugm3),
            ("temperature.low_c < temperature.high_c", self.temperature.low_c, self.temperature.high_c),
            ("humidity.low_pct < humidity.high_pct", self.humidity.low_pct, self.humidity.high_pct),
        ):
            if not low < high:
                out.append(f"{name} is required (got {low:g} and {high:g})")
        return out


_RULESET_FIELDS = frozenset(RuleSet.model_fields)


class NotifyConfig(_Strict):
    """Re-notification and escalation: an active, unacknowledged alert is re-published every
    ``{severity}_renotify_s`` (0 = never) and escalated after ``escalate_after`` re-notifications."""

    critical_renotify_s: Seconds = 30.0
    warning_renotify_s: Seconds = 0.0
    info_renotify_s: Seconds = 0.0
    #: Re-notifications without acknowledgement before the alert is escalated; 0 = never escalate.
    escalate_after: Annotated[int, Field(ge=0, le=1000)] = 3

    def renotify_ms(self, severity: Severity) -> int:
        seconds = {
            Severity.CRITICAL: self.critical_renotify_s,
            Severity.WARNING: self.warning_renotify_s,
            Severity.INFO: self.info_renotify_s,
        }[severity]
        return round(seconds * 1000)


#: Built-in age-band layer (WHO fast-breathing limits); the file's ``age_bands`` merge over it.
BAND_DEFAULTS: dict[str, dict[str, Any]] = {
    AgeBand.INFANT.value: {"breathing_rate_high": {"above_bpm": 60.0}},
    AgeBand.TODDLER.value: {"breathing_rate_high": {"above_bpm": 50.0}},
    AgeBand.PRESCHOOL.value: {"breathing_rate_high": {"above_bpm": 40.0}},
}


def _str_keys(value: Any) -> Any:
    # YAML reads an unquoted `0:` as the integer 0; age bands are the strings "0", "1-2", "3+".
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class RoomRules(RuleSet):
    """A room's overrides, and its overrides per age band."""

    age_bands: dict[AgeBand, RuleSet] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _band_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and "age_bands" in data:
            data = {**data, "age_bands": _str_keys(data["age_bands"])}
        return data


class RulesConfig(RuleSet):
    #: How often the gateway evaluates time-based conditions (apnea timing, silence, durations),
    #: in milliseconds of the injected clock.
    tick_ms: Annotated[int, Field(ge=20, le=1000)] = 200
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    age_bands: dict[AgeBand, RuleSet] = Field(default_factory=dict)
    rooms: dict[Ident, RoomRules] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _band_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        given = _str_keys(data.get("age_bands") or {})
        if not isinstance(given, dict):
            return data  # let field validation report it
        merged: dict[str, Any] = {}
        for band in {*BAND_DEFAULTS, *given}:
            over = given.get(band, {})
            base = BAND_DEFAULTS.get(band, {})
            merged[band] = _deep_merge(base, over) if isinstance(over, dict) else over
        return {**data, "age_bands": merged}

    @model_validator(mode="after")
    def _check_combinations(self) -> RulesConfig:
        where: list[tuple[str, str | None, AgeBand | None]] = [("(top level)", None, None)]
        where += [(f"age_bands.{b.value}", None, b) for b in AgeBand]
        for room_id, rr in self.rooms.items():
            where.append((f"rooms.{room_id}", room_id, None))
            where += [(f"rooms.{room_id}.age_bands.{b.value}", room_id, b) for b in rr.age_bands]
        for label, room, band in where:
            problems = self.resolve(room, band).problems()
            if problems:
                raise ValueError(f"{label}: {problems[0]}")
        return self

    def _layers(self, room: str | None, band: AgeBand | None) -> list[BaseModel]:
        layers: list[BaseModel] = []
        if band is not None and band in self.age_bands:
            layers.append(self.age_bands[band])
        rr = self.rooms.get(room) if room is not None else None
        if rr is not None:
            layers.append(rr)
            if band is not None and band in rr.age_bands:
                layers.append(rr.age_bands[band])
        return layers

    def resolve(self, room: str | None, band: AgeBand | None) -> RuleSet:
        """The effective thresholds for a device in ``room`` watching a child of ``band`` (None: no child)."""
        data = self.model_dump(include=set(_RULESET_FIELDS))
        for layer in self._layers(room, band):
            data = _deep_merge(data, layer.model_dump(include=set(_RULESET_FIELDS), exclude_unset=True))
        return RuleSet.model_validate(data)


def load_rules(path: str | Path) -> RulesConfig:
    """Read and validate a rules file (empty = all defaults). Raises RulesError with one readable message."""
    return load_yaml_model(path, RulesConfig, RulesError, example="configs/rules.yaml", empty_means_defaults=True)


def check_rules_fit_kit(rules: RulesConfig, kit: Kit, source: str | Path) -> None:
    """RulesError when the rules file configures a room the kit does not have (a typo there would
    silently leave that room on the defaults)."""
    known = {r.id for r in kit.rooms}
    for room in sorted(set(rules.rooms) - known):
        raise RulesError(f"{source}: rooms.{room}: not a room of kit {kit.site!r} (rooms: {', '.join(sorted(known))})")
