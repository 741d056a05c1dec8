"""Nap-check mat model: a load sensor under the futon, sampled at 25 Hz (docs/devices.md).

Output: ``$NWMAT,<seq>,<fs_hz>,<s1>,...,<sn>*HH\\r\\n`` with ``samples_per_line`` (default 5) signed
ADC samples per sentence, so the default mat writes 5 sentences per second (``rate_hz`` = fs / n).
Sentence ``index`` carries samples ``index·n … index·n + n − 1``; sample ``i`` belongs to time
``i / fs`` s after the start, and ``seq`` = index mod 65536.

The signal, in ADC counts (nominal scale 1 count ≈ 1 g of load; the defaults are options)::

    raw  = offset + drift(t)                                  empty mat: tare offset + slow drift
         + p(t) · (weight + posture_shift)                    p: 0 empty … 1 child on the mat (2 s ramp)
         + p(t) · breathing(t)                                respiration; held during an apnea (below)
         + p(t) · heart(t)                                    small cardiac component (~120/min)
         + movement(t)                                        broadband bursts ≫ breathing
    sample = round(gain(t) · raw + noise)                     gain steps are instantaneous; white noise

- breath(t) = A·(sin φ + 0.2·sin 2φ), φ advancing at the scripted rate. Breath-to-breath variability:
  φ carries a smooth phase jitter with one random knot every 1.5 breaths (rate varies by ≈ ±10 %,
  up to ±17 %), and A varies by ±20 % per breath. The mean rate over many breaths is the scripted
  one exactly, which is what tests compare against.
- apnea: breathing stops where a central apnea does — the chest finishes the expiration in progress
  and rests there (no inspiratory effort: the relaxed, end-expiratory level). From the apnea's start
  the breathing follows its running minimum for ``APNEA_HOLD_S`` and then holds it; when the apnea
  ends it blends back into the breathing over ``APNEA_RAMP_S``. (It used to fade to the breathing's
  midline, which from an expiration is half a breath's *rise* no sleeper makes: a detector that counts
  small breaths saw it as one more breath, and the apnea alert came late.)
- heart(t): ``heart_counts`` at ``heart_bpm`` with a small phase jitter; it continues through an
  apnea (as a heart does), so an apnea is *not* a flat line, only a line without breathing.
- movement: while ``movement`` is on, value noise with knots every 0.12 s and 0.6 s (≈ 0–4 Hz) of
  ``movement_counts``; each movement episode also shifts the weight level by up to ±5 % (the child
  lies differently afterwards).
- slow swings: with ``swing_counts`` > 0, a movement episode also moves the load slowly — value
  noise with a knot every ``SWING_KNOT_S`` (≲ 0.3 Hz, inside and below the breathing band), faded in
  and out over ``SWING_RAMP_S`` — as a child rolling over or rocking does, where ``movement_counts``
  is the jerk of a kick or a bump.
- drift: value noise with one knot a minute, ±``drift_counts``.
- scale: every load term (weight, posture shift, breathing, heart, movement, swings) is given at the
  nominal 1 count ≈ 1 g (``NOMINAL_COUNTS_PER_KG``) and multiplied by ``counts_per_kg`` / 1000 — a
  mat's own calibration; the tare offset, drift and noise are the electronics' and stay in counts.
  ``child_kg``, when given, sets the weight (``child_kg`` kg) and scales the breathing and the heart
  by ``child_kg`` / ``NOMINAL_CHILD_KG``: a lighter child moves the mat less with each breath.
- samples are clipped to the range of a 24-bit ADC (±8 388 607).

Timeline steps set only the fields they name; the others carry over. What the first step leaves
out starts as: empty, 30/min, no apnea, no movement, the ``gain`` option::

    timeline:
      - {at_s: 0, present: true, rate_bpm: 30}
      - {at_s: 120, apnea: true}
      - {at_s: 140, apnea: false}
      - {at_s: 300, movement: true}
      - {at_s: 305, movement: false}
      - {at_s: 400, gain: 0.7}
      - {at_s: 600, present: false}

Pure and deterministic: every random quantity is a hash of (seed, quantity, index) rather than
the state of a generator, so ``output(index)`` depends on ``index`` alone and the runner only
decides *when* bytes are written. ``samples(first, count)`` gives the same values in bulk.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from firmware_sim.encoders.nmea import encode_mat
from firmware_sim.scenario import DeviceScenario, ScenarioError, SimContext, validate_options, validate_steps

FS_HZ = 25
SAMPLES_PER_LINE = 5
ADC_LIMIT = 2**23 - 1
#: Ramps of the state changes, in seconds: lying down / getting up, breathing stopping, movement.
PRESENCE_RAMP_S = 2.0
APNEA_RAMP_S = 1.0
#: An apnea's start: how long the expiration in progress may go on before the level is held.
APNEA_HOLD_S = 1.0
MOVEMENT_RAMP_S = 0.3
#: Slow swings of a movement episode: a value-noise knot every SWING_KNOT_S, faded in over SWING_RAMP_S.
SWING_KNOT_S = 2.0
SWING_RAMP_S = 2.0
#: The defaults describe a 9 kg child on a mat of 1 count per gram.
NOMINAL_COUNTS_PER_KG = 1000.0
NOMINAL_CHILD_KG = 9.0
POSTURE_SHIFT = 0.05
#: Breath-to-breath variability: phase jitter (rad) with a knot every 1.5 breaths, amplitude ±20 %.
PHASE_JITTER_RAD = 0.5
BREATHS_PER_KNOT = 1.5
AMPLITUDE_JITTER = 0.2
DRIFT_KNOT_S = 60.0
#: Time step of the grid on which reference breaths are found.
REFERENCE_GRID_S = 0.01

FloatArray = NDArray[np.float64]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class MatEvent(_Strict):
    """A timeline step that any mat understands; fields left out keep their previous value."""

    at_s: Annotated[float, Field(ge=0)]
    present: bool | None = None
    apnea: bool | None = None
    movement: bool | None = None
    gain: Annotated[float, Field(gt=0, le=100)] | None = None


class MatStep(MatEvent):
    """A step of the synthetic mat, which also breathes at a scripted rate."""

    rate_bpm: Annotated[float, Field(ge=4, le=150)] | None = None


class MatOptions(_Strict):
    """Signal options of a simulated mat (ADC counts; nominal scale 1 count ≈ 1 g)."""

    fs_hz: Annotated[int, Field(ge=1, le=1000)] = FS_HZ
    samples_per_line: Annotated[int, Field(ge=1, le=50)] = SAMPLES_PER_LINE
    #: Combined with the scenario's per-device seed; change it to get another noise realisation.
    seed: int | str = 0
    gain: Annotated[float, Field(gt=0, le=100)] = 1.0
    noise_counts: Annotated[float, Field(ge=0)] = 5.0
    offset_counts: float = 500.0
    weight_counts: Annotated[float, Field(ge=0)] = 9000.0
    #: Half the peak-to-peak of an average breath.
    breath_counts: Annotated[float, Field(ge=0)] = 60.0
    heart_bpm: Annotated[float, Field(ge=30, le=250)] = 120.0
    heart_counts: Annotated[float, Field(ge=0)] = 6.0
    movement_counts: Annotated[float, Field(ge=0)] = 1500.0
    drift_counts: Annotated[float, Field(ge=0)] = 300.0
    #: Slow swings of a movement episode (nominal counts; 0: movement is only the jerk).
    swing_counts: Annotated[float, Field(ge=0)] = 0.0
    #: The mat's calibration: counts per kg of load (the load terms above are at 1000).
    counts_per_kg: Annotated[float, Field(gt=0, le=1e6)] = NOMINAL_COUNTS_PER_KG
    #: The child's weight; None: ``weight_counts`` and ``breath_counts`` as given (a 9 kg child).
    child_kg: Annotated[float, Field(gt=0, le=40)] | None = None


@dataclass(frozen=True, slots=True)
class MatState:
    """What the timeline says at some time (after folding every step up to then)."""

    present: bool = False
    rate_bpm: float = 30.0
    apnea: bool = False
    movement: bool = False
    gain: float = 1.0


class _Timeline:
    """The folded timeline as arrays, one entry per step, for vectorised look-ups."""

    def __init__(self, steps: Sequence[MatEvent], initial: MatState) -> None:
        if not steps:
            raise ValueError("a mat timeline needs at least one step")
        for i in range(1, len(steps)):
            if steps[i].at_s <= steps[i - 1].at_s:
                raise ValueError(f"timeline[{i}].at_s: {steps[i].at_s} must be later than {steps[i - 1].at_s}")
        starts = [0.0] + [s.at_s for s in steps]
        states = [initial]
        for s in steps:
            prev = states[-1]
            states.append(
                MatState(
                    present=prev.present if s.present is None else s.present,
                    rate_bpm=s.rate_bpm if isinstance(s, MatStep) and s.rate_bpm is not None else prev.rate_bpm,
                    apnea=prev.apnea if s.apnea is None else s.apnea,
                    movement=prev.movement if s.movement is None else s.movement,
                    gain=prev.gain if s.gain is None else s.gain,
                )
            )
        self.starts = np.array(starts)
        self.states = states
        self.gain = np.array([s.gain for s in states])
        self.rate_hz = np.array([s.rate_bpm / 60.0 for s in states])
        # Breathing phase (in cycles) at each segment start, so a rate change keeps the phase continuous.
        cycles = [0.0]
        for i in range(1, len(states)):
            cycles.append(cycles[-1] + self.rate_hz[i - 1] * (starts[i] - starts[i - 1]))
        self.cycles0 = np.array(cycles)
        self.presence = _Ramped(starts, [float(s.present) for s in states], PRESENCE_RAMP_S)
        self.apnea = _Ramped(starts, [float(s.apnea) for s in states], APNEA_RAMP_S)
        # When the apnea in force (or the one that ended last) began, per segment; NaN before any.
        began, since = [], math.nan
        for i, state in enumerate(states):
            if state.apnea and (i == 0 or not states[i - 1].apnea):
                since = starts[i]
            began.append(since)
        self.apnea_began = np.array(began)
        self.movement = _Ramped(starts, [float(s.movement) for s in states], MOVEMENT_RAMP_S)
        self.swing = _Ramped(starts, [float(s.movement) for s in states], SWING_RAMP_S)
        # Movement episode number in force: each episode ends with a new lying position.
        episodes, n = [], 0
        for i, state in enumerate(states):
            if state.movement and (i == 0 or not states[i - 1].movement):
                n += 1
            episodes.append(float(n))
        self.episode = _Ramped(starts, episodes, 1.0)

    def segment(self, t: FloatArray) -> NDArray[np.intp]:
        return np.searchsorted(self.starts, t, side="right") - 1


class _Ramped:
    """A step function whose changes are smoothed over ``ramp_s`` (smoothstep)."""

    def __init__(self, starts: Sequence[float], values: Sequence[float], ramp_s: float) -> None:
        changed_at, before, now = [], [], []
        last_change, prev_value, current = 0.0, values[0], values[0]
        for start, value in zip(starts, values, strict=True):
            if value != current:
                last_change, prev_value, current = start, current, value
            changed_at.append(last_change)
            before.append(prev_value)
            now.append(current)
        self.changed_at, self.before, self.now = np.array(changed_at), np.array(before), np.array(now)
        self.ramp_s = ramp_s

    def at(self, t: FloatArray, seg: NDArray[np.intp]) -> FloatArray:
        x = np.clip((t - self.changed_at[seg]) / self.ramp_s, 0.0, 1.0)
        s: FloatArray = self.before[seg] + (self.now[seg] - self.before[seg]) * x * x * (3.0 - 2.0 * x)
        return s


class MatModel:
    """Generates NWMAT sentences for one mat following a timeline (see the module docstring)."""

    def __init__(
        self,
        steps: Sequence[MatEvent],
        options: MatOptions | None = None,
        *,
        seed: str = "",
        loop_s: float | None = None,
    ) -> None:
        self.options = options or MatOptions()
        self.fs_hz = self.options.fs_hz
        self.samples_per_line = self.options.samples_per_line
        self.rate_hz = self.fs_hz / self.samples_per_line
        self.loop_s = loop_s
        self.timeline = _Timeline(steps, MatState(gain=self.options.gain))
        o = self.options
        #: Load terms in this mat's counts (see "scale" in the module docstring).
        self.load_scale = o.counts_per_kg / NOMINAL_COUNTS_PER_KG
        child = 1.0 if o.child_kg is None else o.child_kg / NOMINAL_CHILD_KG
        self.weight_counts = self.load_scale * (o.weight_counts if o.child_kg is None else o.child_kg * 1000.0)
        self.breath_counts = self.load_scale * child * o.breath_counts
        self.heart_counts = self.load_scale * child * o.heart_counts
        key = _key(f"{seed}|{self.options.seed}")
        self._keys = {name: _key(f"{key}:{name}") for name in _STREAMS}
        self._held_levels: dict[float, tuple[FloatArray, FloatArray]] = {}  # apnea start → its level

    # -- public

    def output(self, index: int) -> bytes:
        """Sentence ``index`` since the start (seq = index mod 65536)."""
        n = self.samples_per_line
        return encode_mat(index, self.fs_hz, self.samples(index * n, n).tolist())

    def samples(self, first: int, count: int) -> NDArray[np.int64]:
        """Samples ``first … first + count − 1`` as ADC counts."""
        i = np.arange(first, first + count, dtype=np.int64)
        t_abs = i / self.fs_hz
        t = t_abs % self.loop_s if self.loop_s else t_abs
        return self._render(i, t_abs, t)

    def state_at(self, t_s: float) -> MatState:
        if self.loop_s:
            t_s %= self.loop_s
        return self.timeline.states[int(self.timeline.segment(np.array([t_s]))[0])]

    def truth_rate_bpm(self, t_s: float) -> float | None:
        """The scripted mean breathing rate at ``t_s``, None when there is no breathing to see."""
        state = self.state_at(t_s)
        return state.rate_bpm if state.present and not state.apnea else None

    def breathing_envelope(self, t_s: FloatArray) -> FloatArray:
        """How much of the breathing reaches the mat at mat times ``t_s`` (0…1): the child's
        presence times the breathing's share — 0 from an apnea's start (the level is held, no new
        breath), 1 − the ramp as it ends."""
        t = t_s % self.loop_s if self.loop_s else t_s
        tl = self.timeline
        seg = tl.segment(t)
        out: FloatArray = tl.presence.at(t, seg) * np.where(tl.apnea.now[seg] > 0, 0.0, 1.0 - tl.apnea.at(t, seg))
        return out

    def respiration(self, t_s: FloatArray) -> FloatArray:
        """The breathing at mat times ``t_s`` in counts, before presence, apnea and gain."""
        t = t_s % self.loop_s if self.loop_s else t_s
        return self._respiration(t, self.timeline.segment(t))

    def breathing_on_mat(self, t_s: FloatArray) -> FloatArray:
        """The breathing as it reaches the mat's samples at mat times ``t_s``, in counts: presence,
        apneas and gain applied; no weight, drift, heart, movement or noise (what a breath's size on
        the mat is judged by)."""
        t = t_s % self.loop_s if self.loop_s else t_s
        tl = self.timeline
        seg = tl.segment(t)
        out: FloatArray = tl.gain[seg] * tl.presence.at(t, seg) * self._breathing(t, seg)
        return out

    def reference_breaths(self, t0_s: float, t1_s: float) -> list[float]:
        """Mat times of the breaths between ``t0_s`` and ``t1_s``: the maxima of the breathing as it
        reaches the mat (respiration × envelope, on a 100 Hz grid, parabolic interpolation) where
        at least half of it does. The truth for judging breath detection and apnea timing; a breath
        fading into an apnea counts while its envelope is ≥ 0.5."""
        step = REFERENCE_GRID_S
        t_abs = np.arange(t0_s - step, t1_s + 2 * step, step)
        t = t_abs % self.loop_s if self.loop_s else t_abs
        envelope = self.breathing_envelope(t_abs)
        w = self.timeline.presence.at(t, self.timeline.segment(t)) * self._breathing(t, self.timeline.segment(t))
        i = np.flatnonzero((w[1:-1] > w[:-2]) & (w[1:-1] >= w[2:]) & (w[1:-1] > 0) & (envelope[1:-1] >= 0.5)) + 1
        a, b, c = w[i - 1], w[i], w[i + 1]
        denom = a - 2 * b + c
        shift = np.where(denom < 0, 0.5 * (a - c) / np.where(denom < 0, denom, -1.0), 0.0)
        times = t_abs[i] + shift * step
        return [float(v) for v in times if t0_s <= v <= t1_s]

    # -- signal

    def _render(self, i: NDArray[np.int64], t_abs: FloatArray, t: FloatArray) -> NDArray[np.int64]:
        o, tl = self.options, self.timeline
        seg = tl.segment(t)
        present = tl.presence.at(t, seg)
        breathing = self._breathing(t, seg)
        shift = POSTURE_SHIFT * self.weight_counts * self._posture(tl.episode.at(t, seg))
        raw = (
            o.offset_counts
            + o.drift_counts * _value_noise(self._keys["drift"], t_abs / DRIFT_KNOT_S)
            + present * (self.weight_counts + shift + breathing + self._heart(t))
            + tl.movement.at(t, seg) * self._movement(t_abs)
        )
        if o.swing_counts:  # only then: the default mat's samples stay bit for bit what they were
            swing = _value_noise(self._keys["swing"], t_abs / SWING_KNOT_S)
            raw = raw + tl.swing.at(t, seg) * self.load_scale * o.swing_counts * swing
        noisy = tl.gain[seg] * raw + o.noise_counts * _gaussian(self._keys["noise"], i)
        return np.clip(np.rint(noisy), -ADC_LIMIT, ADC_LIMIT).astype(np.int64)

    def _breathing(self, t: FloatArray, seg: NDArray[np.intp]) -> FloatArray:
        """The respiration with its apneas (see the module docstring), in counts."""
        tl = self.timeline
        w = self._respiration(t, seg)
        a = tl.apnea.at(t, seg)
        if not np.any(a > 0):
            return w
        out = w.copy()
        for began in np.unique(tl.apnea_began[seg][a > 0]):
            grid, held = self._held(float(began))
            mine = (a > 0) & (tl.apnea_began[seg] == began)
            during = mine & (tl.apnea.now[seg] > 0)
            out[during] = np.interp(t[during] - began, grid, held)
            ending = mine & ~during  # blending back into the breathing
            out[ending] = (1.0 - a[ending]) * w[ending] + a[ending] * held[-1]
        return out

    def _held(self, began: float) -> tuple[FloatArray, FloatArray]:
        """An apnea's level from its start: the running minimum of the breathing (the expiration in
        progress goes on) on a fine grid over ``APNEA_HOLD_S``; its last value is held after."""
        cached = self._held_levels.get(began)
        if cached is None:
            grid = np.arange(0.0, APNEA_HOLD_S + REFERENCE_GRID_S, REFERENCE_GRID_S)
            t = began + grid
            w = self._respiration(t, self.timeline.segment(t))
            cached = self._held_levels[began] = (grid, np.minimum.accumulate(w))
        return cached

    def _respiration(self, t: FloatArray, seg: NDArray[np.intp]) -> FloatArray:
        """Breathing before the presence and apnea envelopes, in counts."""
        tl = self.timeline
        cycles = tl.cycles0[seg] + tl.rate_hz[seg] * (t - tl.starts[seg])
        knots = cycles / BREATHS_PER_KNOT
        phi = 2 * math.pi * cycles + PHASE_JITTER_RAD * _value_noise(self._keys["phase"], knots)
        amplitude = self.breath_counts * (1.0 + AMPLITUDE_JITTER * _value_noise(self._keys["amp"], knots))
        out: FloatArray = amplitude * (np.sin(phi) + 0.2 * np.sin(2 * phi))
        return out

    def _heart(self, t: FloatArray) -> FloatArray:
        phi = 2 * math.pi * self.options.heart_bpm / 60.0 * t + 0.4 * _value_noise(self._keys["heart"], t / 2.0)
        out: FloatArray = self.heart_counts * (np.sin(phi) + 0.5 * np.sin(2 * phi))
        return out

    def _movement(self, t_abs: FloatArray) -> FloatArray:
        fast = _value_noise(self._keys["move_fast"], t_abs / 0.12)
        slow = _value_noise(self._keys["move_slow"], t_abs / 0.6)
        out: FloatArray = self.load_scale * self.options.movement_counts * (0.6 * fast + 0.8 * slow)
        return out

    def _posture(self, episode: FloatArray) -> FloatArray:
        """Relative weight shift (−1…1) after each movement episode; none before the first."""
        # Episode numbers are ramped between integers: interpolate between their offsets.
        k = np.floor(episode).astype(np.int64)
        f = episode - k
        key = self._keys["posture"]
        a = np.where(k == 0, 0.0, 2.0 * _uniform(key, k) - 1.0)
        b = 2.0 * _uniform(key, k + 1) - 1.0
        out: FloatArray = a + (b - a) * f
        return out


def make_synthetic_mat(spec: DeviceScenario, ctx: SimContext) -> MatModel:
    """A mat breathing at the timeline's scripted rate (``firmware_sim/models/mat_factory.py`` picks
    this or a replay)."""
    return MatModel(
        validate_steps(spec, MatStep, ctx),
        mat_options(spec, MatOptions, ctx),
        seed=ctx.seed,
        loop_s=ctx.loop_s,
    )


Opts = TypeVar("Opts", bound=MatOptions)


def mat_options(spec: DeviceScenario, model: type[Opts], ctx: SimContext) -> Opts:
    options = validate_options(spec, model, ctx)
    if spec.rate_hz is not None and spec.rate_hz != options.fs_hz / options.samples_per_line:
        raise ScenarioError(
            f"{ctx.where}.rate_hz: a mat writes fs_hz / samples_per_line = "
            f"{options.fs_hz / options.samples_per_line:g} sentences/s; set options.fs_hz or "
            "options.samples_per_line instead"
        )
    return options


_STREAMS = ("noise", "drift", "phase", "amp", "heart", "move_fast", "move_slow", "posture", "swing")


# -- counter-based randomness: a value depends on (key, index) only


def _key(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _mix(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """splitmix64's finaliser (integer arrays wrap silently, which is what it wants)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _uniform(key: int, index: NDArray[np.int64]) -> FloatArray:
    """Uniform in [0, 1) for every index."""
    h = _mix(index.astype(np.uint64) ^ np.uint64(key))
    out: FloatArray = (h >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return out


def _gaussian(key: int, index: NDArray[np.int64]) -> FloatArray:
    """Standard normal for every index (Box–Muller on two hashed uniforms)."""
    u1 = 1.0 - _uniform(key, 2 * index)  # (0, 1]: log() stays finite
    u2 = _uniform(key, 2 * index + 1)
    out: FloatArray = np.sqrt(-2.0 * np.log(u1)) * np.cos(2 * math.pi * u2)
    return out


def _value_noise(key: int, u: FloatArray) -> FloatArray:
    """Random values in [−1, 1] at integer knots, interpolated (smoothstep) in between."""
    k = np.floor(u)
    f = u - k
    ki = k.astype(np.int64)
    a = 2.0 * _uniform(key, ki) - 1.0
    b = 2.0 * _uniform(key, ki + 1) - 1.0
    out: FloatArray = a + (b - a) * f * f * (3.0 - 2.0 * f)
    return out
