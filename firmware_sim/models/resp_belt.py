"""A mat that replays a real respiration recording instead of a synthetic breath.

The recordings in ``firmware_sim/recordings/resp_belt/*.csv.gz`` (gzip CSV, header ``resp``, one
integer per line, 20 Hz chest belt of sleeping adults; source and CC BY 4.0 licence in the README
there) carry what a sine wave lacks: irregular breaths, sighs, pauses, position changes, belt
artefacts. This model takes the belt's
breathing and puts it through the same mat as ``firmware_sim/models/mat.py``: tare offset, drift, the
child's weight (``present``), cardiac component, movement bursts, gain changes and noise.

**Time scale.** Adults breathe ~13–20/min, infants 20–60/min. With ``time_scale: 2`` (the default)
one second of mat time plays two seconds of recording — the 20 Hz belt is treated as if it were
40 Hz — so an adult's 15/min becomes an infant-like 30/min. Everything reported from a replay is
at that scale. The recording is then resampled (linear interpolation) to the mat's fs, and loops
when it runs out.

**Mat-like breathing.** The belt's own sensor noise (a few counts, white up to 10 Hz) is low-passed
away above 2 Hz (recording time: an adult's breath, ≤ 0.7 Hz, keeps its first harmonics), its level
and drift are removed (10 s moving average, in recording time), and its amplitude, which wanders
tenfold as the belt shifts, is normalised by a slow envelope (median of |signal| per 30 s block,
interpolated), then scaled to ``breath_counts``. ``envelope_s`` sets that block for what reaches the
mat (default 30 recording-seconds); ``envelope_s: null`` does not normalise at all — one scale for the
whole recording, its median breath at ``breath_counts`` — so shallow passages stay shallow, as on a
mat, which does not normalise. The reference breaths are always found on the 30 s normalisation
(the truth of where a breath was does not depend on how the mat is degraded). Short belt artefacts
stay large relative to breathing, like movement on a mat. Without the low-pass the normalisation
amplified the belt's noise with shallow breathing, up to tenfold: a mat of 5 counts' noise carried
~20 in those passages — the mat's noise is the mat's own (``noise_counts``). The belt's noise
*inside* the breathing band stays (the references see it too).

Scenario use (``replay`` is relative to the scenario file's folder, or absolute; a path that does not
resolve falls back to the recording of that file name shipped in ``firmware_sim/recordings/resp_belt``)::

    mat-01:
      options: {replay: ../../firmware_sim/recordings/resp_belt/12_20231119.csv.gz, time_scale: 2.0, start_s: 1800}
      timeline:
        - {at_s: 0, present: true}
        - {at_s: 300, movement: true}
        - {at_s: 304, movement: false}

Steps take ``present``, ``apnea`` (the replayed breathing is silenced), ``movement`` and ``gain``;
there is no ``rate_bpm`` — the recording sets the rate. ``reference_breaths`` gives the breath
times found on the clean belt, a reference for whoever judges a rate computed from the mat.
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from firmware_sim.models.mat import FloatArray, MatEvent, MatModel, MatOptions, mat_options
from firmware_sim.scenario import DeviceScenario, ScenarioError, SimContext, validate_steps

RECORDING_FS_HZ = 20.0
HEADER = "resp"
#: Detrending and amplitude envelope, in recording seconds.
DETREND_S = 10.0
ENVELOPE_BLOCK_S = 30.0
#: The belt's sensor noise above this (recording Hz, soft edge of ±0.25 Hz) is not breathing.
BELT_LOWPASS_HZ = 2.0
BELT_LOWPASS_EDGE_HZ = 0.5
#: Reference breaths: adults breathe at most ~40/min, so breaths are ≥ 1.5 recording-seconds apart.
MIN_BREATH_GAP_S = 1.5
#: Second reference: smallest prominence (normalised belt, a typical breath is about ±1) and how
#: far either side it is looked for.
MIN_PROMINENCE = 0.4
PROMINENCE_WINDOW_S = 8.0


class ReplayOptions(MatOptions):
    """Mat options plus where the breathing comes from."""

    replay: Annotated[str, Field(min_length=1)]
    #: Recording seconds played per mat second (2.0: the 20 Hz belt is treated as 40 Hz).
    time_scale: Annotated[float, Field(gt=0, le=10)] = 2.0
    #: Where in the recording to start, in recording seconds.
    start_s: Annotated[float, Field(ge=0)] = 0.0
    #: Amplitude normalisation block of the breathing that reaches the mat, recording seconds;
    #: None: none (one scale for the whole recording).
    envelope_s: Annotated[float, Field(ge=ENVELOPE_BLOCK_S / 10, le=86_400)] | None = ENVELOPE_BLOCK_S


class RecordingError(Exception):
    """A recording that cannot be replayed; ``str()`` names the file and the problem."""


class Recording:
    """A belt recording, detrended and amplitude-normalised (about ±1 per breath)."""

    def __init__(
        self,
        raw: NDArray[np.float64],
        fs_hz: float = RECORDING_FS_HZ,
        name: str = "",
        lowpass_hz: float | None = BELT_LOWPASS_HZ,
    ) -> None:
        if len(raw) < int(2 * ENVELOPE_BLOCK_S * fs_hz):
            raise RecordingError(f"{name}: {len(raw)} samples is too short to replay (≥ {2 * ENVELOPE_BLOCK_S} s)")
        self.fs_hz, self.name, self.raw = fs_hz, name, raw
        self.duration_s = len(raw) / fs_hz
        belt = raw if lowpass_hz is None else _low_pass(raw, fs_hz, lowpass_hz)
        self._detrended = belt - _moving_average(belt, int(DETREND_S * fs_hz))
        self._normalised: dict[float | None, FloatArray] = {}
        self.breathing: FloatArray = self.normalised(ENVELOPE_BLOCK_S)

    def normalised(self, envelope_s: float | None) -> FloatArray:
        """The detrended belt scaled to about ±1 a breath by the median of |signal| per
        ``envelope_s`` block (interpolated), or by one median over the whole recording (None)."""
        cached = self._normalised.get(envelope_s)
        if cached is not None:
            return cached
        hp = self._detrended
        if envelope_s is None:
            envelope = np.full(len(hp), max(float(np.median(np.abs(hp))), 1e-9))
        else:
            block = min(int(envelope_s * self.fs_hz), len(hp))
            n_blocks = len(hp) // block
            level = np.median(np.abs(hp[: n_blocks * block]).reshape(n_blocks, block), axis=1)
            level = np.maximum(level, max(float(np.median(level)) * 0.05, 1e-9))  # a flat block must not blow up
            centres = (np.arange(n_blocks) + 0.5) * block
            envelope = np.interp(np.arange(len(hp)), centres, level)
        # For a sine the median of |x| is sin(π/4) ≈ 0.707 of its amplitude: this scales breaths to about ±1.
        out: FloatArray = hp / (envelope / 0.707)
        self._normalised[envelope_s] = out
        return out

    def at(self, t_rec: FloatArray, envelope_s: float | None = ENVELOPE_BLOCK_S) -> FloatArray:
        """The normalised breathing (``normalised(envelope_s)``) at recording times (seconds,
        looping), linearly interpolated."""
        x = self.normalised(envelope_s)
        pos = (t_rec * self.fs_hz) % len(x)
        out: FloatArray = np.interp(pos, np.arange(len(x)), x, period=len(x))
        return out

    def breath_times(self, t0_rec: float, t1_rec: float) -> list[float]:
        """Breath peaks (recording seconds) on the clean belt between t0 and t1, no looping."""
        fs = self.fs_hz
        lo, hi = max(0, int(t0_rec * fs)), min(len(self.breathing), int(t1_rec * fs))
        smooth = _moving_average(self.breathing, int(0.5 * fs))[lo:hi]
        gap = int(MIN_BREATH_GAP_S * fs)
        peaks: list[int] = []
        maxima = np.flatnonzero((smooth[1:-1] > smooth[:-2]) & (smooth[1:-1] >= smooth[2:]) & (smooth[1:-1] > 0.3))
        for i in (int(m) + 1 for m in maxima):
            if peaks and i - peaks[-1] < gap:
                if smooth[i] > smooth[peaks[-1]]:
                    peaks[-1] = i  # the higher of two close maxima is the breath
                continue
            peaks.append(i)
        return [(lo + i + _vertex(smooth, i)) / fs for i in peaks]

    def prominent_breath_times(self, t0_rec: float, t1_rec: float) -> list[float]:
        """A second, independent reference (recording seconds between t0 and t1): maxima of the
        clean belt (0.5 s moving average) whose *prominence* — height above the higher of the two
        lowest points reached on either side before a higher sample, within 8 s — is at least 0.4
        (a fifth of a typical breath's peak-to-peak), at least 1.5 s apart (the higher one wins).
        Unlike ``breath_times`` it needs no absolute level, so it also counts small breaths riding
        on a baseline shift; the two references disagree most on restless stretches."""
        peaks = self._prominent_peaks
        return [float(t) for t in peaks[(peaks >= t0_rec) & (peaks <= t1_rec)]]

    @functools.cached_property
    def smoothed(self) -> FloatArray:
        """The normalised breathing, 0.5 s centred moving average: what both references look at."""
        return _moving_average(self.breathing, int(0.5 * self.fs_hz))

    @functools.cached_property
    def _prominent_peaks(self) -> FloatArray:
        """Every prominent breath of the recording (seconds), found once over the whole of it."""
        fs = self.fs_hz
        s = _moving_average(self.breathing, int(0.5 * fs))
        maxima = np.flatnonzero((s[1:-1] > s[:-2]) & (s[1:-1] >= s[2:])) + 1
        wlen = int(PROMINENCE_WINDOW_S * fs)
        kept = []
        for p in maxima:
            v = s[p]
            left = s[max(0, p - wlen) : p][::-1]
            higher = np.flatnonzero(left > v)
            left_base = left[: higher[0]].min() if len(higher) else left.min(initial=v)
            right = s[p + 1 : p + 1 + wlen]
            higher = np.flatnonzero(right > v)
            right_base = right[: higher[0]].min() if len(higher) else right.min(initial=v)
            if v - max(left_base, right_base) >= MIN_PROMINENCE:
                kept.append(int(p))
        # Closer than MIN_BREATH_GAP_S: the higher breath wins (highest first, as scipy's find_peaks).
        gap = int(MIN_BREATH_GAP_S * fs)
        taken = np.zeros(len(s), dtype=bool)
        chosen = []
        for k in sorted(kept, key=lambda i: -s[i]):
            if not taken[max(0, k - gap + 1) : k + gap].any():
                chosen.append(k)
                taken[k] = True
        return np.array([k + _vertex(s, k) for k in sorted(chosen)], dtype=np.float64) / fs


@functools.lru_cache(maxsize=8)
def load_recording(path: Path) -> Recording:
    """Read a ``resp`` gzip CSV (cached: many mats may replay one file)."""
    try:
        with gzip.open(path, "rt", encoding="ascii") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise RecordingError(f"{path}: recording not found") from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise RecordingError(f"{path}: cannot read as gzip CSV: {exc}") from None
    header, _, body = text.partition("\n")
    if header.strip() != HEADER:
        raise RecordingError(f"{path}: expected the header {HEADER!r}, got {header.strip()[:40]!r}")
    try:
        raw = np.array(body.split(), dtype=np.float64)
    except ValueError as exc:
        raise RecordingError(f"{path}: not one number per line: {exc}") from None
    return Recording(raw, name=str(path))


#: The recordings shipped with the package (package data, so an installed copy has them too).
RECORDINGS_DIR = Path(__file__).resolve().parents[1] / "recordings" / "resp_belt"


def recording_path(name: str) -> Path:
    """The shipped recording ``name`` (e.g. ``12_20231119.csv.gz``)."""
    return RECORDINGS_DIR / name


def resolve_replay(replay: str, base_dir: Path) -> Path:
    """``replay`` relative to ``base_dir`` (the scenario's folder); if nothing is there, the shipped
    recording of that file name, so a scenario kept elsewhere can name just the file."""
    p = Path(replay)
    resolved = (p if p.is_absolute() else base_dir / p).resolve()
    if resolved.exists():
        return resolved
    fallback = recording_path(p.name)
    return fallback if fallback.exists() else resolved  # the path as written names the problem


class ReplayMat(MatModel):
    """A mat whose breathing is a real recording (see the module docstring)."""

    def __init__(
        self,
        steps: Sequence[MatEvent],
        options: ReplayOptions,
        recording: Recording,
        *,
        seed: str = "",
        loop_s: float | None = None,
    ) -> None:
        super().__init__(steps, options, seed=seed, loop_s=loop_s)
        self.recording = recording
        self.time_scale = options.time_scale
        self.start_s = options.start_s
        self.envelope_s = options.envelope_s

    def recording_time(self, t_s: float) -> float:
        """Recording seconds played at mat time ``t_s`` (before looping)."""
        return self.start_s + t_s * self.time_scale

    def reference_breaths(self, t0_s: float, t1_s: float, method: str = "peaks") -> list[float]:
        """Mat times of the breaths the clean belt shows between mat times t0 and t1 (``method``
        "peaks": ``Recording.breath_times``; "prominence": ``Recording.prominent_breath_times``),
        leaving out those the timeline keeps from the mat (empty mat, apnea: envelope < 0.5)."""
        r0, r1 = self.recording_time(t0_s), self.recording_time(t1_s)
        if method == "peaks":
            rec = self.recording.breath_times(r0, r1)
        elif method == "prominence":
            rec = self.recording.prominent_breath_times(r0, r1)
        else:
            raise ValueError(f"unknown reference method {method!r}")
        times = np.array([(r - self.start_s) / self.time_scale for r in rec])
        if not len(times):
            return []
        return [float(t) for t in times[self.breathing_envelope(times) >= 0.5]]

    def _respiration(self, t: FloatArray, seg: NDArray[np.intp]) -> FloatArray:
        out: FloatArray = self.breath_counts * self.recording.at(self.start_s + t * self.time_scale, self.envelope_s)
        return out


def make_replay_mat(spec: DeviceScenario, ctx: SimContext) -> ReplayMat:
    options = mat_options(spec, ReplayOptions, ctx)
    path = resolve_replay(options.replay, ctx.base_dir or Path.cwd())
    try:
        recording = load_recording(path)
    except RecordingError as exc:
        raise ScenarioError(f"{ctx.where}.options.replay: {exc}") from None
    return ReplayMat(validate_steps(spec, MatEvent, ctx), options, recording, seed=ctx.seed, loop_s=ctx.loop_s)


def _vertex(x: FloatArray, i: int) -> float:
    """Sub-sample offset of the maximum at ``x[i]``: the vertex of the parabola through x[i-1..i+1]
    (0 at the ends). A reference breath is placed to a fraction of a sample, not on the 50 ms grid
    of the belt (25 ms of mat time at ``time_scale: 2``) — the apnea timing is judged to 0.1 s."""
    if i <= 0 or i >= len(x) - 1:
        return 0.0
    a, b, c = float(x[i - 1]), float(x[i]), float(x[i + 1])
    denom = a - 2.0 * b + c
    return min(max(0.5 * (a - c) / denom, -0.5), 0.5) if denom < 0 else 0.0


def _low_pass(x: FloatArray, fs_hz: float, cutoff_hz: float) -> FloatArray:
    """``x`` without what lies above ``cutoff_hz`` (one FFT of the whole recording, a sin² edge of
    ``BELT_LOWPASS_EDGE_HZ``; circular, as the replay loops)."""
    f = np.fft.rfftfreq(len(x), 1.0 / fs_hz)
    keep = np.clip((cutoff_hz + BELT_LOWPASS_EDGE_HZ / 2.0 - f) / BELT_LOWPASS_EDGE_HZ, 0.0, 1.0)
    mean = float(np.mean(x))
    out: FloatArray = np.fft.irfft(np.fft.rfft(x - mean) * np.sin(0.5 * np.pi * keep) ** 2, len(x)) + mean
    return out


def _moving_average(x: FloatArray, n: int) -> FloatArray:
    """Centred moving average over ``n`` samples, made odd (an even window is centred half a sample
    early, which would place every reference breath half a sample late); edges use the samples
    available."""
    n = max(1, n) | 1
    c = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(len(x))
    lo = np.clip(i - n // 2, 0, len(x))
    hi = np.clip(i - n // 2 + n, 0, len(x))
    out: FloatArray = (c[hi] - c[lo]) / (hi - lo)
    return out
