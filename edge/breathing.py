"""Breathing features from a nap mat's samples, once per second (first version). Pure numpy.

    analyzer = BreathingAnalyzer(fs_hz=25)
    analyzer.add(t0_ms, samples)          # consecutive samples, the first at t0_ms (any chunking)
    features = analyzer.features()        # once per second: BreathingFeatures (frozen)

Method, every second, on the samples of the last ``window_s`` (20 s):

- **motion** (0..1): RMS of the second difference over the last second — a measure of jerk that
  breathing (≤ 1.5 Hz) barely touches and movement fills — relative to a floor that follows the
  quietest recent seconds (drops at once, rises 2 %/s). 2× the floor → 0, 20× → 1. A second with
  motion ≥ 0.3 is a *motion second*: it restarts the rate window, so a movement burst is reported as
  motion and never turned into a rate. A gain step shows as a one-second motion blip; a jump of the
  1 s level by more than half ``weight_min_counts`` restarts the rate window too.
- **rate_bpm**: over the clean part of the window (after the last motion second or level jump,
  ≥ ``min_window_s`` = 8 s, else null): linear detrend, FFT band-pass 0.2–1.5 Hz (12–90/min, soft
  edges), autocorrelation from the same spectrum; the breathing period is the first autocorrelation
  peak reaching 60 % of the highest one between 0.67 s and half the window (parabolic interpolation).
- **quality** (0..1): the normalised autocorrelation at that period (1 = perfectly periodic);
  0 when there is no rate.
- **last_breath_ts**: breaths are the maxima of the band-passed signal above 35 % of the reference
  breath amplitude (learnt while a rate is reported, falling by at most 10 %/s, and fading by
  1 %/s without a rhythm, so an apnea does not pull the bar down into the noise), at least half a
  period apart. A maximum is accepted once it is 0.6 s inside the window (filter edge), so breaths
  are reported ~1 s late but with their own time. The rate is reported only while the last breath
  is recent (≤ 2.5 periods + 1.6 s): in an apnea the rate turns null and ``last_breath_ts`` stops
  advancing.
- **amplitude**: peak-to-peak of the band-passed signal over the last 6 s (2·median|y|/0.707), in
  ADC counts; it falls to the noise level in an apnea.
- **present**: from the weight level (median of the last second), with hysteresis. Empty mat:
  the empty level follows slow drift (30 s time constant); a rise of ≥ ``weight_min_counts`` held
  for 2 quiet seconds → present. Occupied: the occupied level follows drift and gain changes; a drop
  of ≥ max(``weight_min_counts``, 70 % of the weight) held for 2 quiet seconds with no breathing
  rhythm → empty. A clear breathing rhythm (quality ≥ 0.5) on its own also means present: after an
  edge restart during a nap there is no empty level to compare with. Until it knows (first 10 s
  after the first sample) ``present`` is null.

Limits (issue 4 owns accuracy): one respiratory source per mat; rates outside 12–90/min are not
measured; the rate lags changes by up to half the window; a rate needs 8 s of movement-free data;
``weight_min_counts`` (1000, i.e. ~1 kg at the nominal 1 count ≈ 1 g) assumes the mat's published
scale and a gain within about ×0.5…×2; a child who is already on the mat when the edge starts and
is in apnea is reported ``present: null`` then ``false`` (no weight step, no rhythm seen); a drop
in gain of more than 70 % while occupied looks like the child leaving. Gaps of lost data up to 2 s
are bridged by holding the last value; longer gaps restart the windows (not the presence state).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class BreathingConfig:
    window_s: float = 20.0
    min_window_s: float = 8.0
    band_hz: tuple[float, float] = (0.2, 1.5)
    #: Smallest weight step that means a child lay down (counts at the mat's nominal gain).
    weight_min_counts: float = 1000.0
    #: Gaps of lost samples up to this long are bridged; longer ones restart the windows.
    max_gap_s: float = 2.0
    startup_s: float = 10.0


# Tuning constants (see the module docstring).
MOTION_FLAG = 0.3
FLOOR_RISE = 1.02
LEVEL_ALPHA = 1.0 / 30.0
OFF_FRACTION = 0.7
RHYTHM_QUALITY = 0.5
MIN_QUALITY = 0.35
#: The period is the first autocorrelation peak at least this fraction of the highest: irregular
#: breathing often correlates better over two breaths than over one (halved rates on real belts).
NEAR_BEST = 0.6
PEAK_FRACTION = 0.35
AMP_REF_DECAY = 0.99
AMP_REF_FALL = 0.9
PEAK_EDGE_S = 0.6
AMPLITUDE_S = 6.0
SINE_MEDIAN = 0.707  # median |sin| as a fraction of the amplitude
BAND_EDGE_HZ = 0.1


@dataclass(frozen=True, slots=True)
class BreathingFeatures:
    t_ms: int  # time of the newest sample analysed
    rate_bpm: float | None
    amplitude: float | None
    motion: float
    present: bool | None
    quality: float
    last_breath_ms: int | None


class BreathingAnalyzer:
    """Incremental breathing features for one mat (see the module docstring)."""

    def __init__(self, fs_hz: float, config: BreathingConfig | None = None) -> None:
        if fs_hz <= 0:
            raise ValueError(f"fs_hz must be positive, got {fs_hz}")
        self.fs = float(fs_hz)
        self.config = cfg = config or BreathingConfig()
        self._win = max(int(round(cfg.window_s * self.fs)), 4)
        self._buf = np.zeros(2 * self._win + int(self.fs * cfg.max_gap_s) + 64)
        self._n = 0  # samples in _buf
        self._total = 0  # samples appended since the start (gap fill included)
        self._t_last_ms: float | None = None  # time of the newest sample
        self._t_first_ms: float | None = None
        self._clean_from = 0  # absolute index where the rate window may start
        self.restarts = 0  # gaps too long to bridge, or time going backwards
        # Motion, presence and breath state.
        self._floor: float | None = None
        self._level_prev: float | None = None
        self._present: bool | None = None
        self._empty_level: float | None = None
        self._occupied_level: float | None = None
        self._streak = 0  # consecutive seconds voting for a presence change
        self._amp_ref: float | None = None
        self._last_breath_ms: float | None = None
        self._masks: dict[int, FloatArray] = {}

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
        self._clean_from = self._total
        self._level_prev = None

    # -- once per second

    def features(self) -> BreathingFeatures | None:
        """Features of the data so far; None before the first sample."""
        if self._t_last_ms is None or self._n == 0:
            return None
        fs, cfg = self.fs, self.config
        now = self._t_last_ms
        x = self._buf[max(0, self._n - self._win) : self._n]
        second = int(round(fs))
        motion = self._motion(x[-second - 1 :])
        level = float(np.median(x[-second:]))
        moving = motion >= MOTION_FLAG
        jumped = self._level_prev is not None and abs(level - self._level_prev) > cfg.weight_min_counts / 2
        self._level_prev = level
        if moving or jumped:
            self._clean_from = self._total

        start = max(len(x) - (self._total - self._clean_from), 0)
        clean = x[start:]
        rate, quality, amplitude = None, 0.0, None
        if len(clean) >= 4 * fs:
            y, acf = self._bandpass(clean)
            amplitude = 2.0 * float(np.median(np.abs(y[-int(AMPLITUDE_S * fs) :]))) / SINE_MEDIAN
            period = None
            if len(clean) >= cfg.min_window_s * fs:
                period, quality = self._period(acf, len(clean))
            rhythmic = period is not None and quality >= RHYTHM_QUALITY
            breath_amp = float(np.median(np.abs(y))) / SINE_MEDIAN
            if self._amp_ref is None and rhythmic:
                self._amp_ref = breath_amp  # first rhythm: now breaths can be told from noise
            self._find_breaths(y, now, period)
            if period is not None and quality >= MIN_QUALITY and self._breath_recent(now, period):
                rate = 60.0 * fs / period
            if rate is not None and rhythmic and self._amp_ref is not None:
                # Falls at most 10 %/s: the window's tail going flat (apnea) must not pull the bar down.
                self._amp_ref = max(breath_amp, AMP_REF_FALL * self._amp_ref)
            else:
                self._fade_amp_ref()
        else:
            self._fade_amp_ref()
        if rate is None:
            quality = 0.0
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

    def _motion(self, x: FloatArray) -> float:
        if len(x) < 3:
            return 0.0
        rms = max(float(np.sqrt(np.mean(np.square(np.diff(x, 2))))), 0.5)
        self._floor = rms if self._floor is None else min(rms, self._floor * FLOOR_RISE)
        return min(max(math.log10(rms / (2.0 * self._floor)), 0.0), 1.0)

    def _mask(self, nfft: int) -> FloatArray:
        mask = self._masks.get(nfft)
        if mask is None:
            lo, hi = self.config.band_hz
            f = np.fft.rfftfreq(nfft, 1.0 / self.fs)
            rise = np.clip((f - (lo - BAND_EDGE_HZ)) / BAND_EDGE_HZ, 0.0, 1.0)
            fall = np.clip(((hi + BAND_EDGE_HZ) - f) / BAND_EDGE_HZ, 0.0, 1.0)
            mask = np.sin(0.5 * np.pi * rise) ** 2 * np.sin(0.5 * np.pi * fall) ** 2
            self._masks[nfft] = mask
        return mask

    def _bandpass(self, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Band-passed signal and its (biased) autocorrelation, both from one FFT."""
        n = len(x)
        t = np.arange(n) - (n - 1) / 2.0
        slope = float(np.dot(t, x)) / float(np.dot(t, t))
        d = x - x.mean() - slope * t
        nfft = 1 << (2 * n - 1).bit_length()  # zero padding: linear, not circular
        spec = np.fft.rfft(d, nfft) * self._mask(nfft)
        y = np.fft.irfft(spec, nfft)[:n]
        acf = np.fft.irfft(np.abs(spec) ** 2, nfft)[:n]
        return y, acf

    def _period(self, acf: FloatArray, n: int) -> tuple[float | None, float]:
        """Breathing period in samples and its normalised autocorrelation."""
        lo, hi = self.config.band_hz
        k_min = max(int(self.fs / hi), 2)
        k_max = min(int(self.fs / lo) + 1, n // 2)
        if acf[0] <= 0 or k_max <= k_min + 1:
            return None, 0.0
        k = np.arange(k_min, k_max)
        r = acf[k_min:k_max] / acf[0] * n / (n - k)  # unbiased: each lag has fewer products
        peaks = np.flatnonzero((r[1:-1] > r[:-2]) & (r[1:-1] >= r[2:])) + 1
        if not len(peaks):
            return None, 0.0
        best = float(r[peaks].max())
        if best <= 0:
            return None, 0.0
        i = int(peaks[np.argmax(r[peaks] >= NEAR_BEST * best)])  # the first near-best peak: not a multiple
        a, b, c = r[i - 1], r[i], r[i + 1]
        denom = a - 2 * b + c
        shift = 0.5 * (a - c) / denom if denom < 0 else 0.0
        return float(k_min + i + shift), float(b)

    def _fade_amp_ref(self) -> None:
        if self._amp_ref is not None:
            self._amp_ref *= AMP_REF_DECAY

    def _find_breaths(self, y: FloatArray, now: float, period: float | None) -> None:
        if self._amp_ref is None:
            return
        fs = self.fs
        edge = int(PEAK_EDGE_S * fs)
        inner = y[edge : len(y) - edge]
        if len(inner) < 3:
            return
        cand = np.flatnonzero(
            (inner[1:-1] > inner[:-2]) & (inner[1:-1] >= inner[2:]) & (inner[1:-1] > PEAK_FRACTION * self._amp_ref)
        )
        if not len(cand):
            return
        # Newest first; a higher maximum within half a period replaces a lower one.
        gap = 0.5 * period if period is not None else 0.4 * fs
        newest = int(cand[-1])
        for c in cand[::-1]:
            if newest - int(c) >= gap:
                break
            if inner[int(c) + 1] > inner[newest + 1]:
                newest = int(c)
        t_ms = now - (len(y) - 1 - (edge + newest + 1)) * 1000.0 / fs
        if self._last_breath_ms is None or t_ms > self._last_breath_ms:
            self._last_breath_ms = t_ms

    def _breath_recent(self, now: float, period: float) -> bool:
        if self._last_breath_ms is None:
            return False
        allowed = 2.5 * period * 1000.0 / self.fs + 1000.0 + PEAK_EDGE_S * 1000.0
        return now - self._last_breath_ms <= allowed

    def _presence(self, level: float, now: float, moving: bool, *, rhythm: bool) -> bool | None:
        cfg = self.config
        if moving:  # levels are meaningless while the child moves
            self._streak = 0
            return self._present
        if self._present is not True:
            if self._empty_level is None:
                self._empty_level = level
            rise = level - self._empty_level
            if rise >= cfg.weight_min_counts or rhythm:
                self._streak += 1
                if self._streak >= 2:
                    self._set_present(True, level, stepped=rise >= cfg.weight_min_counts)
            else:
                self._streak = 0
                self._empty_level += (level - self._empty_level) * LEVEL_ALPHA
                assert self._t_first_ms is not None
                if self._present is None and now - self._t_first_ms >= cfg.startup_s * 1000.0:
                    self._present = False
            return self._present
        assert self._occupied_level is not None
        threshold = cfg.weight_min_counts
        if self._empty_level is not None:
            threshold = max(threshold, OFF_FRACTION * (self._occupied_level - self._empty_level))
        if self._occupied_level - level >= threshold and not rhythm:
            self._streak += 1
            if self._streak >= 2:
                self._set_present(False, level, stepped=True)
        else:
            self._streak = 0
            self._occupied_level += (level - self._occupied_level) * LEVEL_ALPHA
        return self._present

    def _set_present(self, present: bool, level: float, *, stepped: bool) -> None:
        self._present = present
        self._streak = 0
        if stepped:
            self._clean_from = self._total  # the level step would spoil the rate window
        if present:
            self._occupied_level = level
            if not stepped:
                self._empty_level = None  # we came in on an occupied mat: its empty level is unknown
        else:
            self._empty_level = level
            self._occupied_level = None
