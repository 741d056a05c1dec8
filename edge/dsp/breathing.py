"""Breathing features from a nap mat's samples, once per second. Pure numpy.

    analyzer = BreathingAnalyzer(fs_hz=25)
    analyzer.add(t0_ms, samples)          # consecutive samples, the first at t0_ms (any chunking)
    features = analyzer.features()        # once per second: BreathingFeatures (frozen)

Method, every second, on the samples of the last ``window_s`` (20 s):

- **motion** (0..1): jerk — RMS of the second difference over the last second, which breathing
  (≤ 1.5 Hz) barely touches and movement fills — against a floor that follows the quietest recent
  seconds (drops at once, rises 5 %/s); 2× the floor → 0, 20× → 1. A *motion second* has motion
  ≥ 0.5 and, once breaths are known, a jerk of at least 0.75 × the size of a breath (so sensor noise
  coming back after a quiet pause is not movement). A motion second, or a jump of the 1 s level by
  more than half ``weight_min_counts`` and more than two typical breaths (a gain step, the child
  lying differently; breathing itself moves the 1 s level by up to a swing, and an unnormalised
  mat's deep breaths reach the weight step), ends the current *clean segment*: movement is
  reported as motion, never turned into breaths or a rate.
- **band-pass**: the clean part of the window (≥ 3 s) has a quadratic trend removed (a curved drift
  left in would ring at the window's edges) and is band-passed 0.2–1.5 Hz (12–90/min, soft edges)
  with one FFT. Samples closer than 0.6 s to the window's ends are not trusted yet: a breath is
  found ~1–2.5 s after its peak (the fall after it, the filter's edge, the 1 s cadence) but carries
  its own time.
- **breaths, one by one** (``last_breath_ts``): the band-passed samples go, once each, through a
  hysteresis (zig-zag) detector that alternates between troughs and peaks: a *breath* is a peak
  with a rise of ≥ T before it and a fall of ≥ T after it, both within 1.5 breath periods (2–5 s;
  a slower swing is drift, not a breath); the fall must also reach half the rise or half the
  typical swing, the smaller. That last part is for apneas: breathing stops at end-expiration, so
  the mat's level ends half a breath below the breathing's mean, and the band-pass settles back
  over a few seconds — a slow rise that hardly falls again. Counted as a breath it made the alert
  5 s late (simulated pauses at 20/min, once the simulator's apnea rested where real ones do). Each
  second's samples come from a new filtering of the moved window; where they jump from the last
  sample scanned by more than 5σ of the noise they are shifted to continue from it (a settling level
  made a 1 s sawtooth at the seams, a "breath" a second in an apnea); and a rise slower than 1.5
  periods restarts the search for a trough. No
  midline is needed, so a wandering baseline or a sharp inspiration does not matter. Its time is
  the vertex of a parabola through the samples within ±10 % of a period of the highest one. The
  threshold adapts::

      T = max(0.4 × typical swing, 9 × σ of the noise in the band)

  *typical swing*: the median rise of the last 9 breaths of the segment, at most 3× the window's
  current peak-to-peak amplitude (so breathing that turns much shallower, or smaller after a
  sigh, is learnt within seconds); it fades 3 %/s once no breath came for 1.5 periods; a new
  segment learns it again. *Noise*: the band 3 Hz–80 % of Nyquist (above breathing and most of the
  cardiac component) is measured robustly (MAD) and scaled to the breathing band as white noise.
  A swing of 9σ of band-limited noise is rare enough that noise, drift and the heart do not make
  breaths in an apnea (none in 2 h of simulated apnea at any noise level): ``last_breath_ts`` stops
  at the last real breath, and the gateway times the apnea from it.
- **small breaths** (``last_breath_ts`` only): breathing often fades before a pause, and a last
  breath under 0.4 × the typical swing would leave the apnea timed from the breath before — the
  alert early by a breath or two. A second zig-zag runs over the same samples with
  ``T_small = max(0.2 × typical swing, 9 × σ of the noise)``: the breaths it finds move
  ``last_breath_ts`` on, but are not counted for the rate (half-size swings of an irregular breath
  would double it). The noise floor is the same, so noise makes no more breaths in an apnea than
  before; what it may take is a small swing of a shallow, restless passage — a later last breath,
  never an earlier alert.
- **too small to tell** (both detectors): a swing under ``MIN_OF_RECENT`` (0.2) × the median of
  the breaths of the last ``SIZE_MEMORY_S`` (60 s; not faded, not capped by the window's
  amplitude) is not a breath. The threshold follows the window's amplitude down within seconds of
  an apnea's start, and there the band-pass settling plus drift made a "breath" 10 s into a 40 s
  pause (quiet mat, drift ±2000): the alert at 30 s. A mat cannot tell a swing that small from
  none; the visible alert is the safe side. **Unless they come as a train**: ``TRAIN`` (3) such
  swings in a row at the breathing's rhythm (each interval 0.6–1.6 periods, within 35 % of each
  other, sizes within 2.5× of each other) are breathing that turned shallow — the last one is a
  breath, and so is each further one that keeps the rhythm. The settling after an apnea starts is
  a single slow swing, never a train; without this rule breathing that became five times shallower
  within a minute went unseen for up to a minute (whole-night belt recordings, issue 14).
- **faint breaths** (``last_breath_ts`` only): a third zig-zag with ``T_faint = FAINT_SIGMAS``
  (5) × σ of the noise — under the 9σ floor — whose swings count only as a *train*: ``FAINT_TRAIN``
  (4) in a row at the breathing's rhythm (each interval 0.6–1.6 periods of the breaths before,
  within 35 % of each other, sizes within 2×); the last of such a train, and each further one
  that keeps it, moves ``last_breath_ts`` on. Breathing on a light mat often stays regular while
  shallower than the floor for minutes, and every such passage of 20 s was a false apnea alarm
  (whole-night tuning recordings, issue 14). One swing of 5σ is common in an apnea's noise; four
  evenly spaced at the breathing's period and of like size are not (none in 6.7 h of simulated
  apnea, noise 0–20, drift ±300/±2000, 20–60/min; the band-pass settling is one slow swing, and
  its ringing decays far faster than 2× over three periods). A faint breath is reported at its
  own peak, so an apnea is still timed from the last swing of the train. Measured on the tuning
  nights' scripted pauses (lightest mat): at 4σ noise made trains inside pauses — one, the last real
  breaths trailing into noise (sizes 9.9, 6.9, 5.0, 4.8σ), made an alert 24 s after the last breath
  (sizes within 2× now refuse it), one of noise alone (4.4–5.3σ) came 12 s into a 15 s pause — and at
  5σ none: 5σ is kept, a margin of one σ. Irregular breathing under the floor, or breaths under
  ~5σ, are still not seen one by one: the visible alert is the safe side.
- **rhythm in the spectrum** (``last_breath_ts`` only, a lower bound): once the last breath is older
  than ``SPECTRAL_S`` (15 s) + ``SPECTRAL_LEAD_S`` (0.5 s), each second the band-passed clean signal
  of the last 15 s (its untrusted 0.6 s edges left out) is Hann-windowed and its power spectrum
  looked at within ``SPECTRAL_BAND`` (0.8–1.25) × the breathing's frequency (the median interval of
  the breaths before). A peak of ``SPECTRAL_SNR`` (30) × the level white noise of the measured σ would
  give there says some breath came in that span — its time unknown, so the breath is reported at the
  span's start less 0.5 s: never later than the real last breath, so an apnea is never timed from a
  later moment than its true start (the alert is early, the safe side, after breathing that was only
  seen this way). While the rhythm lasts the alert is held; it fires ~4.5 s after the rhythm stops
  being seen. Only while the last breath is younger than ``SPECTRAL_HOLD_S`` (20 s, the apnea rule):
  a claim may keep the alert from being raised, never resolve one (the gateway counts each new
  ``last_breath_ts`` as a breath; claims once a second resolved an open alert 3.4 s into a real
  pause, so the next alert came 23.4 s after the last breath — tuning night 24, 4 kg child).
  Measured on the tuning nights' scripted pauses (300 windows of four degradations starting 0.5 s
  after the last breath, settling and drift included): at most 11.6 × the white-noise
  level; white noise alone passes 30 × with a probability of ~1e-12 a second.
- **the last breath's time** (``last_breath_ms``): a breath's time is its *inspiration peak* (the
  top of the chest's or belly's rise, where expiration begins) — the same definition as the
  references that judge it (``MatModel.reference_breaths``: the maximum of the breathing reaching
  the mat; ``ReplayMat.reference_breaths``: the maximum of the smoothed clean belt, both to a
  fraction of a sample). A peak is a broad maximum, and the band-pass (which leaves out the
  breath's sharper harmonics) moves it: measured against those references the estimate lies
  within about −0.2…+0.2 s (0.5–99.5 %; ±0.07 s for 90 %), see bench/README.md. The apnea rule
  must not claim "no breath for 20 s" before 20 s have passed, so ``last_breath_ms`` is the
  estimate plus ``LAST_BREATH_GUARD_MS`` (0.2 s): the latest the peak can plausibly have been.
  With the gateway's 200 ms tick the alert then comes 20.2–20.4 s after the estimated peak — within
  20.0–21.0 s of the true one for a timing error of −0.2…+0.6 s. The breaths used for the rate are
  not shifted. The gateway rule is not scheduled to the exact deadline: the tick's 0–0.2 s is
  part of that budget, and an exact deadline would not help the early side.
- **rate_bpm**: 60 / the mean interval between consecutive breaths of the last ``window_s``, counting
  only intervals inside one clean segment (one spanning a movement is not a breath interval) —
  the true count of an irregular rhythm, where the autocorrelation of the first version often
  locked onto two breaths (halved rates). Needs ≥ 2 intervals spanning ≥ 4 s; null in a motion
  second, and once the last breath is older than 2.5 intervals + 1.6 s (an apnea: within seconds).
- **quality** (0..1): the normalised autocorrelation of the band-passed clean window at the breathing
  period (1 = perfectly regular); 0 when there is no rate.
- **amplitude**: peak-to-peak of the band-passed signal over the last 6 s (2·median|y|/0.707), in
  ADC counts; it falls to the noise level in an apnea.
- **present**: from the weight level (median of the last second), with hysteresis. Empty mat: the
  empty level follows slow drift (30 s time constant); a rise of ≥ ``weight_min_counts`` held for 2
  quiet seconds → present. Occupied: the occupied level follows drift and gain changes; a drop of ≥
  max(``weight_min_counts``, 70 % of the weight) held for 2 quiet seconds with no breathing rhythm,
  the last 3 levels within a quarter of ``weight_min_counts`` (a mat a child left rests; a level
  that swings — a child rocking, a belt artefact — is not an empty mat) → empty. A clear breathing
  rhythm (quality ≥ 0.5) on its own also means present: after an edge restart during a nap there is
  no empty level to compare with. Until there is evidence ``present`` is null (unknown): a rise or a
  rhythm → true; from 10 s after the first sample, a breath of the start-up window with the level
  not dropped by ``weight_min_counts`` since → true (a child who lay down before the edge started
  and breathed too few times for a rhythm, then maybe stopped); a drop of ``weight_min_counts`` held
  2 quiet seconds → false (picked up). With none of these it stays null — never a guessed false: a
  still empty mat and a child already in apnea when the edge started look the same, and "empty"
  makes the gateway drop the apnea (it raises ``presence_unknown`` during a nap instead). An apnea
  leaves the weight alone: ``present`` stays true. Breaths are reported (``last_breath_ts``) on an
  occupied mat, and on an unknown one only from the start-up window (later, a lone one is most
  likely a knock on an empty mat).

How well it does — rate error, apnea sensitivity and timing, false apnea alarms, on simulated mats
and on four real chest-belt recordings degraded into mat signals: ``bench/breathing_accuracy.py``,
figures in bench/README.md, for a *tuning* set (recordings 07 and 16, simulator seeds 0–1) and a
*held-out* set (recordings 12 and 25, seeds 2–3). The constants were first tuned on all four
recordings; since the split only the tuning set has been looked at (the reference's timing and
``LAST_BREATH_GUARD_MS``), so the held-out figures are less optimistic, not untouched.

Limits: one respiratory source per mat; rates outside 12–90/min are not measured; the rate is a
20 s mean and lags a change by up to ~10 s. Breaths smaller than 9σ of the in-band noise are not
seen one by one (only as a regular train over 5σ, or as a rhythm in the spectrum): with the nominal
breath of ±60 counts, white noise up to ~10 counts per sample at 25 Hz is fine, at 20 counts (a
breath ≈ 9σ) irregular breaths are missed and false apnea alarms follow. A breath
cut short by an apnea that begins mid-inspiration is not a breath (no fall after it): the alert
then comes up to one breath early. After a motion second or a level jump no breath can be found
for ~3.6 s (the band-pass needs 3 s of new data), so movement lasting 20 s or more leaves
``last_breath_ts`` behind and the gateway's apnea rule fires: a moving child's breathing cannot be
seen, and safety comes first (decided: an alert for 20 s of continuous movement is kept — staff
look at a child who has moved for 20 s in a nap; a quiet "cannot see" would hide an apnea that
follows a movement). Small movements (jerk below 0.75 × a breath) are not motion
seconds and go through the band-pass. ``weight_min_counts`` (1000, i.e. ~1 kg at the nominal
1 count ≈ 1 g; ``BreathingConfig.for_scale`` makes it 1 kg on the kit's ``counts_per_kg``)
assumes that scale and a gain within about ×0.5…×2; an empty mat's
level that drifts by more than ~1000 counts a minute can read as a child lying down; a child who is
already on the mat when the edge starts and is in apnea is reported ``present: null`` until picked
up (no weight step, no rhythm, no breath seen) — and so is an empty mat the edge started on, until
a child lies down on it; a drop in gain of more than 70 % while
occupied looks like the child leaving. Gaps of lost data up to 2 s are bridged by holding the last value; longer
gaps restart the windows (not the presence state).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class BreathingConfig:
    window_s: float = 20.0
    band_hz: tuple[float, float] = (0.2, 1.5)
    #: Smallest weight step that means a child lay down (counts at the mat's nominal gain).
    weight_min_counts: float = 1000.0
    #: Gaps of lost samples up to this long are bridged; longer ones restart the windows.
    max_gap_s: float = 2.0
    startup_s: float = 10.0

    @classmethod
    def for_scale(cls, counts_per_kg: float | None) -> BreathingConfig:
        """The config for a mat of this scale (the kit's ``counts_per_kg``): a weight step of
        ``CHILD_STEP_KG``; None keeps the default, which assumes the nominal ~1 count per gram."""
        if counts_per_kg is None:
            return cls()
        if not counts_per_kg > 0:
            raise ValueError(f"counts_per_kg must be positive, got {counts_per_kg}")
        return cls(weight_min_counts=CHILD_STEP_KG * counts_per_kg)


#: The weight step that means a child lay down or left, in kg: half the lightest child (2 kg), well
#: above a posture shift (±5 % of the weight) and a calibrated mat's drift.
CHILD_STEP_KG = 1.0


# Tuning constants (see the module docstring).
MOTION_FLAG = 0.5
MOTION_STAY = 0.3
MOTION_VS_BREATH = 0.75
#: A level jump (segment end) must exceed this many typical breath swings as well as half the weight step.
JUMP_VS_BREATH = 2.0
#: Seconds of 1 s levels whose spread stands for a breath's size while no breath is known yet.
LEVEL_SPREAD_S = 5
#: "Empty" needs the level to rest: its last EMPTY_STEADY_S 1 s levels within EMPTY_SPREAD × the weight step.
EMPTY_STEADY_S = 3
EMPTY_SPREAD = 0.25
FLOOR_RISE = 1.05
LEVEL_ALPHA = 1.0 / 30.0
OFF_FRACTION = 0.7
RHYTHM_QUALITY = 0.5
#: Shortest clean segment that is band-passed, and how far inside it samples are trusted.
MIN_FILTER_S = 3.0
EDGE_S = 0.6
#: Hysteresis of the breath detector: a fraction of the typical swing, and a floor in σ of the
#: in-band noise.
SWING_FRACTION = 0.4
#: The small-breath detector's fraction: breaths this small only move the last breath (apnea timing).
SMALL_FRACTION = 0.2
#: Safety first: a swing under this fraction of the breaths of the last ``SIZE_MEMORY_S`` (their
#: median, not faded, not capped by the window's amplitude) is not a breath for either detector —
#: the band-pass settling after an apnea starts, on drift, made one 10–13 s into the pause, and a
#: mat cannot tell a breath that small from none: the visible alert is the safe side.
MIN_OF_RECENT = 0.2
SIZE_MEMORY_S = 60.0
#: … unless such swings come as a train: ``TRAIN`` in a row, each interval within TRAIN_PERIODS of the
#: breathing period and of each other (TRAIN_SPREAD), sizes within TRAIN_SIZES of each other. Breathing
#: that turns shallow keeps its rhythm; the settling after an apnea starts is one slow swing.
TRAIN = 3
TRAIN_PERIODS = (0.6, 1.6)
TRAIN_SPREAD = 0.35
TRAIN_SIZES = 2.5
#: Faint breaths (``last_breath_ts`` only): a swing under the noise floor but over ``FAINT_SIGMAS`` σ of
#: the in-band noise is a breath only as the last of ``FAINT_TRAIN`` such swings in a row at the
#: breathing's rhythm (``TRAIN_PERIODS``, within ``FAINT_SPREAD`` of each other, sizes within
#: ``FAINT_SIZES``). 0 turns the faint detector off.
FAINT_SIGMAS = 5.0
FAINT_TRAIN = 4
FAINT_SPREAD = 0.35
FAINT_SIZES = 2.0
#: Rhythm under the floor (``last_breath_ts`` only): when the last breath is older than
#: ``SPECTRAL_S`` + ``SPECTRAL_LEAD_S``, the band-passed clean signal of the last ``SPECTRAL_S`` (its
#: untrusted edges left out) is looked at as a spectrum; a peak within ``SPECTRAL_BAND`` × the breathing's
#: frequency of ``SPECTRAL_SNR`` × the level white noise of the measured σ would give there means a breath
#: came in that span — reported at its start less ``SPECTRAL_LEAD_S`` (never later than a real one).
#: 0 turns it off.
SPECTRAL_SNR = 30.0
SPECTRAL_S = 15.0
SPECTRAL_LEAD_S = 0.5
SPECTRAL_BAND = (0.8, 1.25)
#: … and only while the last breath is younger than this (the gateway's apnea rule: 20 s): a claim may
#: keep an apnea alert from being raised, never resolve one (a claim is a lower bound; three of them
#: resolved a false alarm 3.4 s into a scripted pause of a tuning night, and the new alert came 23.4 s
#: after the last breath). Breathing that is seen only after the alert resolves it breath by breath.
SPECTRAL_HOLD_S = 20.0
#: A breath's fall must reach this fraction of its rise or of the typical swing, the smaller (the
#: band-pass settling after a level change rises without falling back: not a breath).
FALL_FRACTION = 0.5
NOISE_SIGMAS = 9.0
#: A jump between two seconds' band-passed samples beyond this many σ of the noise is the filtering's.
SEAM_SIGMAS = 5.0
TYPICAL_BREATHS = 9
MIN_TYPICAL = 3
#: The typical swing fades this much per second once no breath came for FADE_AFTER periods.
SWING_FADE = 0.97
FADE_AFTER = 1.5
AMP_CAP = 3.0
#: Rate: at least this many intervals spanning this long; "recent" last breath for a rate.
MIN_INTERVALS = 2
MIN_SPAN_S = 4.0
RECENT_PERIODS = 2.5
AMPLITUDE_S = 6.0
#: A breath rises and falls within STALE_PERIODS breath periods (bounded): a slower swing is not one.
STALE_PERIODS = 1.5
STALE_MIN_MS = 2000.0
STALE_MAX_MS = 5000.0
DEFAULT_PERIOD_MS = 3000.0
#: Breath time: parabola fitted within ±this fraction of a period around the highest sample.
PEAK_FIT_PERIODS = 0.1
#: ``last_breath_ms`` is the breath's peak as estimated plus this guard: the latest the peak can
#: plausibly have been (see "The last breath's time" in the module docstring).
LAST_BREATH_GUARD_MS = 200.0
RING_S = 8.0
SINE_MEDIAN = 0.707  # median |sin| as a fraction of the amplitude
BAND_EDGE_HZ = 0.1
DETREND_ORDER = 2
#: Noise is measured between this frequency and this fraction of the Nyquist frequency (above
#: breathing and most of the cardiac component); MAD → σ for Gaussian noise.
NOISE_BAND_HZ = 3.0
NOISE_BAND_TOP = 0.8
ROBUST_SIGMA = 1.4826


@dataclass(frozen=True, slots=True)
class BreathingFeatures:
    t_ms: int  # time of the newest sample analysed
    rate_bpm: float | None
    amplitude: float | None
    motion: float
    present: bool | None
    quality: float
    last_breath_ms: int | None


@dataclass(frozen=True, slots=True)
class Breath:
    t_ms: float
    swing: float  # rise from the trough before it, in counts
    segment: int  # clean segment it was found in


class BreathingAnalyzer:
    """Incremental breathing features for one mat (see the module docstring)."""

    def __init__(self, fs_hz: float, config: BreathingConfig | None = None) -> None:
        if fs_hz <= 0:
            raise ValueError(f"fs_hz must be positive, got {fs_hz}")
        self.fs = float(fs_hz)
        self.config = cfg = config or BreathingConfig()
        self._win = max(int(round(cfg.window_s * self.fs)), 4)
        self._edge = max(int(round(EDGE_S * self.fs)), 1)
        self._buf = np.zeros(2 * self._win + int(self.fs * cfg.max_gap_s) + 64)
        self._n = 0  # samples in _buf
        self._total = 0  # samples appended since the start (gap fill included)
        self._t_last_ms: float | None = None  # time of the newest sample
        self._t_first_ms: float | None = None
        self._clean_from = 0  # absolute index where the current clean segment starts
        self._segment = 0
        self.restarts = 0  # gaps too long to bridge, or time going backwards
        # Motion and presence state.
        self._floor: float | None = None
        self._moving = False  # the last second was a motion second
        self._level_prev: float | None = None
        self._levels: deque[float] = deque(maxlen=LEVEL_SPREAD_S)  # the last seconds' levels
        self._present: bool | None = None
        self._empty_level: float | None = None
        self._occupied_level: float | None = None
        self._streak = 0  # consecutive seconds voting for a presence change
        #: While presence is unknown: the newest breath reported and the 1 s level when it was.
        self._breath_seen: tuple[float, float] | None = None
        # Breath detector state (absolute sample indices).
        self._scanned = 0  # samples before this index have been through the detector
        self._zz = _ZigZag()  # the breath detector
        self._zz_small = _ZigZag()  # the small-breath detector (last breath only)
        self._zz_faint = _ZigZag()  # the faint-breath detector (last breath only, trains under the floor)
        self._faint: deque[tuple[float, float]] = deque(maxlen=max(FAINT_TRAIN, 1))
        self._ring = np.zeros(int(RING_S * self.fs) + 8)  # band-passed samples already scanned, by index
        self._threshold = 0.0
        self._least = 0.0  # smallest swing that can be a breath (``_least_breath``)
        #: The noise floor (``NOISE_SIGMAS`` × σ of the in-band noise, counts): no detector takes a
        #: smaller swing. Read by the accuracy bench to say why a breath was not seen.
        self.floor = 0.0
        self._swing_ref: float | None = None  # faded typical swing
        self.breaths: deque[Breath] = deque(maxlen=128)
        #: The latest swings too small for the breaths before them (time, swing): a train of them is breathing.
        self._train: deque[tuple[float, float]] = deque(maxlen=TRAIN)
        self._last_breath_ms: float | None = None  # last breath reported (mat not empty)
        self._trend: FloatArray | None = None  # orthonormal polynomial basis for the detrend
        self._white = 0.0  # σ per sample of white noise giving the measured in-band σ
        self._hann_cache: FloatArray | None = None
        self._masks: dict[int, tuple[FloatArray, FloatArray | None, float]] = {}

    # -- input

    def add(self, t0_ms: float, samples: Sequence[int] | NDArray[np.int64]) -> None:
        """Append consecutive samples, the first taken at ``t0_ms``."""
        k = len(samples)
        if not k:
            return
        step = 1000.0 / self.fs
        if self._t_last_ms is not None:
            gap = int(round((t0_ms - self._t_last_ms) / step)) - 1
            if gap < 0 or gap * step > self.config.max_gap_s * 1000.0:
                self._restart()
            elif gap > 0:
                self._append(np.full(gap, self._buf[self._n - 1]))
        if self._t_first_ms is None:
            self._t_first_ms = t0_ms
        self._append(np.asarray(samples, dtype=np.float64))
        self._t_last_ms = t0_ms + (k - 1) * step

    def _append(self, values: FloatArray) -> None:
        k = len(values)
        if self._n + k > len(self._buf):
            keep = min(self._n, self._win)  # only the window is ever looked at
            self._buf[:keep] = self._buf[self._n - keep : self._n]
            self._n = keep
            if k > len(self._buf) - keep:  # a huge chunk: its tail is all we need
                values, k = values[-(len(self._buf) - keep) :], len(self._buf) - keep
        self._buf[self._n : self._n + k] = values
        self._n += k
        self._total += k

    def _restart(self) -> None:
        self.restarts += 1
        self._n = 0
        self._new_segment()
        self._level_prev = None
        self._levels.clear()

    def _new_segment(self) -> None:
        self._clean_from = self._total
        self._segment += 1
        self._zz.reset(self._total)  # the detectors start afresh: first a trough
        self._zz_small.reset(self._total)
        self._zz_faint.reset(self._total)
        self._train.clear()
        self._faint.clear()
        self._swing_ref = None  # the child may lie differently: breath sizes are learnt again

    # -- once per second

    def features(self) -> BreathingFeatures | None:
        """Features of the data so far; None before the first sample."""
        if self._t_last_ms is None or self._n == 0:
            return None
        fs, cfg = self.fs, self.config
        now = self._t_last_ms
        x = self._buf[max(0, self._n - self._win) : self._n]
        second = int(round(fs))
        motion, jerk = self._motion(x[-second - 1 :])
        level = _median(x[-second:])
        # A motion second: jerk well above the quiet floor and, once breaths are known, comparable
        # to a breath — sensor noise that returns after a quiet pause is not movement.
        size = self._breath_size()
        flag = MOTION_STAY if self._moving else MOTION_FLAG  # hysteresis: a movement's fading tail is movement
        moving = self._moving = motion >= flag and (size is None or jerk >= MOTION_VS_BREATH * size)
        # A level jump ends the clean segment; breathing itself moves the 1 s level by up to about a
        # swing, so a jump must also exceed JUMP_VS_BREATH breaths (an unnormalised mat's breaths reach
        # the weight step: every breath restarted the segment and none was found — false apneas).
        # Before any breath is known, the levels' own recent spread stands for a breath's size.
        swing = size if size is not None else (max(self._levels) - min(self._levels) if self._levels else 0.0)
        step = max(cfg.weight_min_counts / 2, JUMP_VS_BREATH * swing)
        jumped = self._level_prev is not None and abs(level - self._level_prev) > step
        self._level_prev = level
        self._levels.append(level)
        if moving or jumped:
            self._new_segment()

        start = max(len(x) - (self._total - self._clean_from), 0)
        clean = x[start:]
        amplitude = None
        acf: FloatArray | None = None
        if len(clean) >= MIN_FILTER_S * fs:
            y, acf, noise = self._bandpass(clean)
            amplitude = 2.0 * _median(np.abs(y[-int(AMPLITUDE_S * fs) :])) / SINE_MEDIAN
            self._scan(y, now, amplitude, noise)
            self._spectral_rhythm(y, now, noise)
        rate, quality = self._rate(now, acf) if not moving else (None, 0.0)  # breathing is not seen while moving
        present = self._presence(level, now, moving, rhythm=rate is not None and quality >= RHYTHM_QUALITY)
        if present is False:
            rate, quality = None, 0.0
        return BreathingFeatures(
            t_ms=int(round(now)),
            rate_bpm=None if rate is None else round(rate, 1),
            amplitude=None if amplitude is None else round(amplitude, 1),
            motion=round(motion, 3),
            present=present,
            quality=round(min(max(quality, 0.0), 1.0), 3),
            last_breath_ms=None if self._last_breath_ms is None else int(round(self._last_breath_ms)),
        )

    # -- pieces

    def _motion(self, x: FloatArray) -> tuple[float, float]:
        """Motion (0..1) of the last second, and its jerk (RMS of the second difference)."""
        if len(x) < 3:
            return 0.0, 0.0
        rms = max(float(np.sqrt(np.mean(np.square(np.diff(x, 2))))), 0.5)
        self._floor = rms if self._floor is None else min(rms, self._floor * FLOOR_RISE)
        return min(max(math.log10(rms / (2.0 * self._floor)), 0.0), 1.0), rms

    def _breath_size(self) -> float | None:
        """Median swing of the last breaths, whatever their segment (not faded)."""
        if not self.breaths:
            return None
        return statistics.median(b.swing for b in itertools.islice(reversed(self.breaths), TYPICAL_BREATHS))

    def _mask(self, nfft: int) -> tuple[FloatArray, FloatArray | None, float]:
        """The band-pass mask for an FFT length, the high band's mask (None when the sample rate
        leaves no room for one) and the ratio of their white-noise gains."""
        cached = self._masks.get(nfft)
        if cached is None:
            lo, hi = self.config.band_hz
            f = np.fft.rfftfreq(nfft, 1.0 / self.fs)
            rise = np.clip((f - (lo - BAND_EDGE_HZ)) / BAND_EDGE_HZ, 0.0, 1.0)
            fall = np.clip(((hi + BAND_EDGE_HZ) - f) / BAND_EDGE_HZ, 0.0, 1.0)
            mask = np.sin(0.5 * np.pi * rise) ** 2 * np.sin(0.5 * np.pi * fall) ** 2
            top = NOISE_BAND_TOP * self.fs / 2.0
            high = ((f >= NOISE_BAND_HZ) & (f <= top)).astype(np.float64)
            if top - NOISE_BAND_HZ >= 1.0:
                cached = (mask, high, math.sqrt(float(np.sum(mask**2)) / float(np.sum(high))))
            else:
                cached = (mask, None, 0.0)
            self._masks[nfft] = cached
        return cached

    def _bandpass(self, x: FloatArray) -> tuple[FloatArray, FloatArray, float]:
        """Band-passed signal, its (biased) autocorrelation, both from one FFT, and σ of the
        noise in the band, estimated from the band above it (white noise: same density)."""
        n = len(x)
        if self._trend is None or len(self._trend) != n:  # the window's length is the same most seconds
            self._trend, _r = np.linalg.qr(np.vander(np.linspace(-1.0, 1.0, n), DETREND_ORDER + 1))
        q = self._trend
        d = x - q @ (q.T @ x)  # a curved drift left in would ring at the window's edges
        nfft = 1 << (2 * n - 1).bit_length()  # zero padding: linear, not circular
        mask, high, ratio = self._mask(nfft)
        raw = np.fft.rfft(d, nfft)
        spec = raw * mask
        y = np.fft.irfft(spec, nfft)[:n]
        acf = np.fft.irfft(np.abs(spec) ** 2, nfft)[:n]
        if high is not None:
            h = np.fft.irfft(raw * high, nfft)[self._edge : n - self._edge]
            noise = ROBUST_SIGMA * _median(np.abs(h)) * ratio
        else:  # no band above breathing to measure: the jerk floor, generously
            noise = 2.0 * (self._floor or 0.0) / math.sqrt(6.0)
        # σ per sample of the white noise that would give this in-band σ (the spectral rhythm's yardstick)
        self._white = noise * math.sqrt((nfft / 2.0) / max(float(np.sum(mask**2)), 1e-12))
        return y, acf, noise

    def _spectral_rhythm(self, y: FloatArray, now: float, noise: float) -> None:
        """Evidence of breathing under the noise floor from the spectrum (see ``SPECTRAL_SNR``)."""
        if SPECTRAL_SNR <= 0 or self._last_breath_ms is None or noise <= 0:
            return
        span = int(round(SPECTRAL_S * self.fs))
        if len(y) < span + 2 * self._edge:
            return
        end_ms = now - self._edge * 1000.0 / self.fs  # the newest trusted sample
        claim = end_ms - SPECTRAL_S * 1000.0 - SPECTRAL_LEAD_S * 1000.0
        if claim <= self._last_breath_ms:
            return  # it could not move the last breath: not needed
        if now - self._last_breath_ms >= SPECTRAL_HOLD_S * 1000.0:
            return  # the apnea alert is raised by now: only breaths resolve it, not a lower bound
        period = self._period_ms()
        if period is None:
            return
        seg = y[len(y) - self._edge - span : len(y) - self._edge]
        window = self._hann(span)
        nfft = 8 * span
        power = np.abs(np.fft.rfft(seg * window, nfft)) ** 2
        f = np.fft.rfftfreq(nfft, 1.0 / self.fs)
        f0 = 1000.0 / period
        band = (f >= SPECTRAL_BAND[0] * f0) & (f <= SPECTRAL_BAND[1] * f0)
        if not band.any():
            return
        expected = self._white**2 * float(np.sum(window**2))
        if float(power[band].max()) >= SPECTRAL_SNR * expected:
            self._report(claim - LAST_BREATH_GUARD_MS)  # ``_report`` adds the guard back: the claim itself

    def _hann(self, n: int) -> FloatArray:
        if self._hann_cache is None or len(self._hann_cache) != n:
            self._hann_cache = np.hanning(n)
        return self._hann_cache

    # -- breaths

    def _scan(self, y: FloatArray, now: float, amplitude: float, noise: float) -> None:
        """Run the breath detector over the samples of y that became trustworthy since last time."""
        y0 = self._total - len(y)  # absolute index of y[0]
        first = max(self._scanned - y0, self._edge)
        end = len(y) - self._edge
        if end <= first:
            return
        self._fade_swing(now)
        typical = amplitude if self._swing_ref is None else min(self._swing_ref, AMP_CAP * amplitude)
        self.floor = NOISE_SIGMAS * noise
        t = self._threshold = max(SWING_FRACTION * typical, self.floor, 1e-9)
        period = self._period_ms() or DEFAULT_PERIOD_MS
        longest = int(min(max(STALE_PERIODS * period, STALE_MIN_MS), STALE_MAX_MS) * self.fs / 1000.0)
        ring, size = self._ring, len(self._ring)
        # Each second's band-pass is a new filtering of a moved window: its samples need not meet the
        # ones scanned before. Joined as they come, a level still settling (an apnea resting at
        # end-expiration) became a 1 s sawtooth whose every tooth was a breath. A jump at the seam
        # beyond what the noise explains (5σ) is the filtering's: the new samples are shifted to
        # continue from the last one scanned (the detector needs no absolute level). Smaller ones
        # are left: joining every seam made noisy breaths worse (noise 20: 4 false alarms in 2.8 h).
        seam = 0.0
        last = self._scanned - 1 - y0
        if 0 <= last and first == last + 1:
            seam = float(y[last]) - float(ring[(self._scanned - 1) % size])
            if abs(seam) < SEAM_SIGMAS * noise:
                seam = 0.0
        ring[np.arange(y0 + first, y0 + end) % size] = y[first:end] - seam
        lo, hi = y0 + first, y0 + end
        learnt = typical if self._swing_ref is None else self._swing_ref  # not capped by a fading amplitude
        self._least = self._least_breath(now)
        for at, i, swing in self._zz.run(ring, lo, hi, t, longest, learnt):
            self._breath(at, i, swing, period, now)
        small = max(SMALL_FRACTION * typical, NOISE_SIGMAS * noise, 1e-9)
        if small < t:
            for at, i, swing in self._zz_small.run(ring, lo, hi, small, longest, learnt):
                if swing >= self._least:
                    self._report(self._peak_ms(at, i, period, now))
                else:
                    self._small_swing(at, i, swing, period, now)
        else:
            self._zz_small.follow(self._zz)
        faint = max(FAINT_SIGMAS * noise, 1e-9)
        if FAINT_SIGMAS > 0 and faint < small:
            for at, i, swing in self._zz_faint.run(ring, lo, hi, faint, longest, learnt):
                self._faint_swing(at, i, swing, period, now)
        else:
            self._zz_faint.follow(self._zz_small)
        self._scanned = y0 + end

    @property
    def least(self) -> float:
        """The smallest swing that is a breath now for its size (``MIN_OF_RECENT`` × recent breaths)."""
        return self._least

    @property
    def segment(self) -> int:
        """The clean segment's number: it changes where movement or a level jump restarted the analysis."""
        return self._segment

    def _least_breath(self, now: float) -> float:
        """The smallest swing that can be a breath: ``MIN_OF_RECENT`` × the median of the breaths of
        the last ``SIZE_MEMORY_S`` (any segment); 0 with none (a new child, a gain change: learnt
        afresh after a minute at most, with the alert on the safe side meanwhile)."""
        since = now - SIZE_MEMORY_S * 1000.0
        recent = [b.swing for b in itertools.islice(reversed(self.breaths), TYPICAL_BREATHS) if b.t_ms >= since]
        return MIN_OF_RECENT * statistics.median(recent) if recent else 0.0

    def _breath(self, at: int, now_index: int, swing: float, period_ms: float, now: float) -> None:
        if swing < self._threshold:  # an older, higher threshold
            return
        if swing < self._least:  # too small to tell, unless it continues a rhythm
            self._small_swing(at, now_index, swing, period_ms, now)
            return
        self._train.clear()
        self._add_breath(self._peak_ms(at, now_index, period_ms, now), swing)

    def _small_swing(self, at: int, now_index: int, swing: float, period_ms: float, now: float) -> None:
        """A swing under ``least``: a breath only as the last of a regular train of them (see ``TRAIN``)."""
        t_ms = self._peak_ms(at, now_index, period_ms, now)
        train = self._train
        if train and t_ms - train[-1][0] < TRAIN_PERIODS[0] * period_ms / 2:
            return  # the same swing, found by the other detector
        train.append((t_ms, swing))
        if len(train) < TRAIN:
            return
        if _regular_train(train, period_ms, TRAIN_SPREAD, TRAIN_SIZES):
            self._add_breath(t_ms, swing)

    def _faint_swing(self, at: int, now_index: int, swing: float, period_ms: float, now: float) -> None:
        """A swing of the faint detector (any size over ``FAINT_SIGMAS`` σ): reported as the last breath
        only as the last of a regular train of ``FAINT_TRAIN`` of them at the breathing's rhythm."""
        train = self._faint
        t_ms = self._peak_ms(at, now_index, period_ms, now)
        train.append((t_ms, swing))
        if len(train) < FAINT_TRAIN:
            return
        if _regular_train(train, period_ms, FAINT_SPREAD, FAINT_SIZES):
            self._report(t_ms)

    def _add_breath(self, t_ms: float, swing: float) -> None:
        self.breaths.append(Breath(t_ms, swing, self._segment))
        recent = [b.swing for b in list(self.breaths)[-TYPICAL_BREATHS:] if b.segment == self._segment]
        # One or two breaths could be a sigh or the tail of a movement: until there are three, the
        # window's amplitude stands for the typical swing.
        self._swing_ref = statistics.median(recent) if len(recent) >= MIN_TYPICAL else None
        self._report(t_ms)

    def _peak_ms(self, at: int, now_index: int, period_ms: float, now: float) -> float:
        """The peak's time: a parabola through the samples within ±10 % of a period of the highest one."""
        w = max(1, int(round(PEAK_FIT_PERIODS * period_ms * self.fs / 1000.0)))
        lo = max(at - w, self._clean_from + self._edge, self._total - len(self._ring) + 1)
        idx = np.arange(lo, min(at + w, now_index) + 1)
        shift = 0.0
        if len(idx) >= 3 and idx[0] < at < idx[-1]:
            c2, c1 = _parabola(
                range(int(idx[0]) - at, int(idx[-1]) - at + 1), self._ring[idx % len(self._ring)].tolist()
            )
            if c2 < 0:
                shift = min(max(-c1 / (2.0 * c2), float(idx[0] - at)), float(idx[-1] - at))
        return now - (self._total - 1 - at - shift) * 1000.0 / self.fs

    def _report(self, t_ms: float) -> None:
        """A breath at ``t_ms`` becomes the last breath (``last_breath_ms``, with its guard)."""
        latest = t_ms + LAST_BREATH_GUARD_MS  # no apnea is claimed before 20 s have surely passed
        # Reported on an occupied mat, and while presence is unknown only for breaths of the start-up
        # window (a child who lay down before the edge started). Later, an unknown mat's lone "breath"
        # is most likely a knock on an empty mat, and the gateway would time an apnea from it; a
        # child who really breathes there shows a rhythm (present) within seconds.
        assert self._t_first_ms is not None
        startup = self._present is None and t_ms - self._t_first_ms < self.config.startup_s * 1000.0
        if (self._present is True or startup) and (self._last_breath_ms is None or latest > self._last_breath_ms):
            self._last_breath_ms = latest

    def _period_ms(self) -> float | None:
        """Median interval of the recent breaths of one segment."""
        ibis = self._intervals(None)
        return statistics.median(ibis) if ibis else None

    def _intervals(self, since_ms: float | None) -> list[float]:
        out: list[float] = []
        prev: Breath | None = None
        for b in list(self.breaths)[-(TYPICAL_BREATHS + 1) :] if since_ms is None else self.breaths:
            if since_ms is not None and b.t_ms < since_ms:
                continue
            if prev is not None and prev.segment == b.segment:
                out.append(b.t_ms - prev.t_ms)
            prev = b
        return out

    def _fade_swing(self, now: float) -> None:
        if self._swing_ref is None or not self.breaths:
            return
        period = self._period_ms() or DEFAULT_PERIOD_MS
        if now - self.breaths[-1].t_ms > FADE_AFTER * period + EDGE_S * 1000.0 + 1000.0:
            self._swing_ref *= SWING_FADE

    # -- rate

    def _rate(self, now: float, acf: FloatArray | None) -> tuple[float | None, float]:
        ibis = self._intervals(now - self.config.window_s * 1000.0)
        if len(ibis) < MIN_INTERVALS or sum(ibis) < MIN_SPAN_S * 1000.0:
            return None, 0.0
        period = sum(ibis) / len(ibis)
        last = self.breaths[-1].t_ms
        if now - last > RECENT_PERIODS * period + EDGE_S * 1000.0 + 1000.0:
            return None, 0.0
        quality = 0.0
        if acf is not None and acf[0] > 0:
            k = int(round(period * self.fs / 1000.0))
            n = len(acf)
            if 0 < k < n - self.fs:
                quality = float(acf[k] / acf[0] * n / (n - k))
        return 60_000.0 / period, quality

    # -- presence

    def _presence(self, level: float, now: float, moving: bool, *, rhythm: bool) -> bool | None:
        cfg = self.config
        if moving:  # levels are meaningless while the child moves
            self._streak = 0
            return self._present
        if self._present is not True:
            if self._empty_level is None:
                self._empty_level = level
            if self._present is None and self._last_breath_ms is not None:
                if self._breath_seen is None or self._breath_seen[0] != self._last_breath_ms:
                    self._breath_seen = (self._last_breath_ms, level)
            rise = level - self._empty_level
            if rise >= cfg.weight_min_counts or rhythm:
                self._streak += 1
                if self._streak >= 2:
                    self._set_present(True, level, stepped=rise >= cfg.weight_min_counts)
            elif self._present is None and self._empty_level - level >= cfg.weight_min_counts:
                # Unknown, and the weight went: something that was on the mat left — empty.
                self._streak += 1
                if self._streak >= 2 and self._steady():
                    self._set_present(False, level, stepped=True)
            else:
                self._streak = 0
                self._empty_level += (level - self._empty_level) * LEVEL_ALPHA
                assert self._t_first_ms is not None
                if self._present is None and now - self._t_first_ms >= cfg.startup_s * 1000.0:
                    # No rise, no rhythm, no drop: still unknown — unless breaths were seen and the
                    # weight is still there: a child who lay down before the edge started and
                    # breathed too few times for a rhythm (then maybe stopped). A still mat with no
                    # evidence is NOT called empty: a child already in apnea when the edge started
                    # looks the same, and "empty" would hide the apnea (the gateway alerts on a
                    # presence that stays unknown during a nap instead).
                    seen = self._breath_seen
                    if seen is not None and seen[1] - level < cfg.weight_min_counts:
                        self._set_present(True, level, stepped=False)
            return self._present
        assert self._occupied_level is not None
        threshold = cfg.weight_min_counts
        if self._empty_level is not None:
            threshold = max(threshold, OFF_FRACTION * (self._occupied_level - self._empty_level))
        if self._occupied_level - level >= threshold and not rhythm:
            self._streak += 1
            if self._streak >= 2 and self._steady():
                self._set_present(False, level, stepped=True)
        else:
            self._streak = 0
            self._occupied_level += (level - self._occupied_level) * LEVEL_ALPHA
        return self._present

    def _steady(self) -> bool:
        """Whether the last ``EMPTY_STEADY_S`` levels lie within ``EMPTY_SPREAD`` × the weight step: a mat
        a child left rests; one whose level swings (a child moving, a belt artefact) is not empty."""
        last = list(self._levels)[-EMPTY_STEADY_S:]
        return len(last) >= EMPTY_STEADY_S and max(last) - min(last) < EMPTY_SPREAD * self.config.weight_min_counts

    def _set_present(self, present: bool, level: float, *, stepped: bool) -> None:
        self._present = present
        self._streak = 0
        if stepped:
            self._new_segment()  # the level step would spoil the band-pass
        if present:
            self._occupied_level = level
            if not stepped:
                self._empty_level = None  # we came in on an occupied mat: its empty level is unknown
        else:
            self._empty_level = level
            self._occupied_level = None


@dataclass(slots=True)
class _ZigZag:
    """A hysteresis (zig-zag) detector over band-passed samples: it alternates between troughs and
    peaks; a breath is a peak with a rise of ≥ T before it and a fall after it of ≥ T and ≥ half the
    rise or half the typical swing (the smaller), both within ``longest`` samples (a slower swing is
    drift, not a breath). A rise that falls back less than that before rising again is the band-pass
    settling after a change of level — breathing that stops at end-expiration leaves the mat half a
    breath lower — not a breath."""

    mode: int = -1  # +1: rising (looking for a peak), -1: falling (looking for a trough)
    ext: float = math.inf  # the current extreme
    at: int = 0  # index of the peak candidate
    trough: float = 0.0  # value of the trough before the rising swing …
    trough_at: int = 0  # … and its index
    pending: tuple[int, float, float, float] | None = None  # a peak awaiting its fall: index, value, rise, fall needed

    def reset(self, index: int) -> None:
        self.mode, self.ext, self.trough_at, self.pending = -1, math.inf, index, None

    def follow(self, other: _ZigZag) -> None:
        self.mode, self.ext, self.at, self.trough, self.trough_at, self.pending = (
            other.mode,
            other.ext,
            other.at,
            other.trough,
            other.trough_at,
            other.pending,
        )

    def run(
        self, ring: FloatArray, lo: int, hi: int, t: float, longest: int, typical: float
    ) -> list[tuple[int, int, float]]:
        """Scan absolute indices lo..hi-1 of ``ring`` with threshold ``t``; the breaths found: (peak
        index, index where the fall completed it, rise before the peak)."""
        found: list[tuple[int, int, float]] = []
        size = len(ring)
        mode, ext, at, trough, trough_at = self.mode, self.ext, self.at, self.trough, self.trough_at
        pending = self.pending
        for i in range(lo, hi):
            v = float(ring[i % size])
            if pending is not None:  # a peak whose fall has reached T: a breath once it falls half its rise
                if pending[1] - v >= pending[3]:
                    found.append((pending[0], i, pending[2]))
                    pending = None
                elif i - pending[0] > longest:
                    pending = None
            if mode > 0:  # rising: the peak is the highest sample until the signal falls by T
                if v > ext:
                    ext, at = v, i
                    if at - trough_at > longest:  # a rise this slow is drift and can be no breath: look
                        mode, trough_at = -1, i  # for a trough again, from here
                elif ext - v >= t:  # a rise of ≥ T then a fall of ≥ T: a breath, if not too slow …
                    if at - trough_at <= longest:
                        need = FALL_FRACTION * min(ext - trough, typical)
                        if ext - v >= need:
                            found.append((at, i, ext - trough))
                        else:  # … once the fall is enough
                            pending = (at, ext, ext - trough, need)
                    mode, ext, trough_at = -1, v, i
                elif i - at > longest:  # no fall after the peak: not a breath; look for a trough again
                    mode, ext, trough_at = -1, v, i
            elif v < ext:  # falling (or a fresh segment): the trough is the lowest sample …
                ext, trough_at = v, i
            elif v - ext >= t:  # … until the signal rises by T (a pending peak that did not fall enough is dropped)
                mode, trough, ext, at, pending = 1, ext, v, i, None
            elif i - trough_at > longest:  # a trough long ago: only a recent one starts a breath
                ext, trough_at = v, i
        self.mode, self.ext, self.at, self.trough, self.trough_at = mode, ext, at, trough, trough_at
        self.pending = pending
        return found


def _parabola(xs: Sequence[int], ys: Sequence[float]) -> tuple[float, float]:
    """(c2, c1) of the least-squares parabola c2·x² + c1·x + c0 through (xs, ys), at least 3 points:
    ``np.polyfit(xs, ys, 2)[:2]`` from the normal equations (Cramer's rule). polyfit's SVD was 18 %
    of the edge's CPU per sample for these ≤ 15 small integer abscissas (bench/edge_cost.py)."""
    s0 = float(len(xs))
    s1 = s2 = s3 = s4 = t0 = t1 = t2 = 0.0
    mean = sum(ys) / s0  # an offset changes neither c2 nor c1; without it, large counts lose digits
    for x, y0 in zip(xs, ys, strict=True):
        y = y0 - mean
        xx = float(x * x)
        s1 += x
        s2 += xx
        s3 += xx * x
        s4 += xx * xx
        t0 += y
        t1 += x * y
        t2 += xx * y
    m00, m01, m11 = s2 * s0 - s1 * s1, s3 * s0 - s1 * s2, s3 * s1 - s2 * s2
    det = s4 * m00 - s3 * m01 + s2 * m11
    c2 = (t2 * m00 - s3 * (t1 * s0 - s1 * t0) + s2 * (t1 * s1 - s2 * t0)) / det
    c1 = (s4 * (t1 * s0 - t0 * s1) - t2 * m01 + s2 * (s3 * t0 - t1 * s2)) / det
    return c2, c1


def _median(x: FloatArray) -> float:
    """Median of a non-empty array without np.median's overhead (called several times a second)."""
    n = len(x)
    k = n // 2
    part = np.partition(x, (k - 1, k) if n % 2 == 0 else k)
    return float(part[k]) if n % 2 else 0.5 * float(part[k - 1] + part[k])


def _regular_train(train: Sequence[tuple[float, float]], period_ms: float, spread: float, sizes_within: float) -> bool:
    """(time ms, swing) in a row at the breathing's rhythm: each interval ``TRAIN_PERIODS`` × the
    period, the intervals within ``spread`` of each other, the sizes within ``sizes_within`` ×."""
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(train)]
    sizes = [sw for _t, sw in train]
    regular = all(TRAIN_PERIODS[0] * period_ms <= g <= TRAIN_PERIODS[1] * period_ms for g in gaps)
    return regular and max(gaps) - min(gaps) <= spread * max(gaps) and max(sizes) <= sizes_within * min(sizes)
