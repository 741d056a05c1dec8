"""The simulated nap mat (firmware_sim/models/mat.py) and the resp_belt replay (firmware_sim/models/resp_belt.py),
without ptys: exact sentences, signal properties checked with an FFT, determinism, scenario
validation. The edge decoder is used only as an independent reader of the bytes."""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.decoders.nmea import MatFrame, NmeaDecoder
from firmware_sim.devices import SIM_MODELS, StreamingModel
from firmware_sim.io.runner import plan
from firmware_sim.models.mat import MatEvent, MatModel, MatOptions, MatStep
from firmware_sim.models.resp_belt import (
    Recording,
    RecordingError,
    ReplayMat,
    ReplayOptions,
    load_recording,
    recording_path,
)
from firmware_sim.scenario import ScenarioError, load_scenario, parse_scenario
from nurserywatch.kit import DeviceKind
from tests.support.kits import mat_kit
from tests.support.recordings import resp_belt_file

REPO = Path(__file__).resolve().parents[2]
FS = 25


def steps(*items: dict[str, Any]) -> list[MatStep]:
    return [MatStep.model_validate(i) for i in items]


QUIET = MatOptions(noise_counts=0, drift_counts=0, breath_counts=0, heart_counts=0, movement_counts=0)

# ---------------------------------------------------------------- exact sentences

TABLE_STEPS = steps(
    {"at_s": 0, "present": True},
    {"at_s": 10, "gain": 2},
    {"at_s": 20, "present": False},
    {"at_s": 30, "movement": True},
    {"at_s": 31, "movement": False},
)
SENTENCES = [
    # index: what the sentence carries (t = index / 5 s)
    (0, b"$NWMAT,0,25,500,511,542,593,664*62\r\n"),  # lying down: 2 s smoothstep from the tare offset
    (5, b"$NWMAT,5,25,5000,5270,5539,5806,6071*5B\r\n"),  # half way at 1 s
    (25, b"$NWMAT,25,25,9500,9500,9500,9500,9500*61\r\n"),  # offset 500 + weight 9000
    (50, b"$NWMAT,50,25,19000,19000,19000,19000,19000*57\r\n"),  # gain 2 from 10 s, instantly
    (100, b"$NWMAT,100,25,19000,18979,18916,18813,18673*62\r\n"),  # getting up at 20 s
    (160, b"$NWMAT,160,25,1000,1000,1000,1000,1000*5C\r\n"),  # empty; movement without a child: 0 counts
    (65541, b"$NWMAT,5,25,1000,1000,1000,1000,1000*5E\r\n"),  # seq wraps at 65536
]


@pytest.mark.parametrize(("index", "sentence"), SENTENCES, ids=[str(i) for i, _ in SENTENCES])
def test_sentence_table(index: int, sentence: bytes) -> None:
    model = MatModel(TABLE_STEPS, QUIET, seed="t")
    assert model.output(index) == sentence
    frames = NmeaDecoder().feed(sentence)
    assert frames == [MatFrame(index % 65536, 25, tuple(int(v) for v in model.samples(index * 5, 5)))]


def test_negative_samples_and_other_line_sizes() -> None:
    opts = QUIET.model_copy(update={"offset_counts": -2000.0, "samples_per_line": 2, "fs_hz": 50})
    model = MatModel(steps({"at_s": 0, "present": False}), opts)
    assert model.rate_hz == 25.0
    assert model.output(7) == b"$NWMAT,7,50,-2000,-2000*73\r\n"


def test_every_sentence_decodes_with_a_valid_checksum() -> None:
    model = MatModel(steps({"at_s": 0, "present": True, "movement": True}), seed="d")
    data = b"".join(model.output(i) for i in range(200))
    decoder = NmeaDecoder()
    frames = decoder.feed(data)
    assert decoder.rejected == {} and len(frames) == 200
    assert all(isinstance(f, MatFrame) and f.fs_hz == 25 and len(f.samples) == 5 for f in frames)
    samples = [s for f in frames if isinstance(f, MatFrame) for s in f.samples]
    assert samples == model.samples(0, 1000).tolist()
    assert min(samples) < 9500 - 500 and max(samples) > 9500 + 500, "movement swings far around the weight"


# ---------------------------------------------------------------- determinism


def test_output_depends_only_on_the_index_and_seed() -> None:
    a = MatModel(steps({"at_s": 0, "present": True}), seed="x")
    b = MatModel(steps({"at_s": 0, "present": True}), seed="x")
    forward = [a.output(i) for i in range(50)]
    backward = [b.output(i) for i in reversed(range(50))][::-1]
    assert forward == backward
    assert a.output(12345) == b.output(12345)
    other_seed = MatModel(steps({"at_s": 0, "present": True}), seed="y")
    other_option = MatModel(steps({"at_s": 0, "present": True}), MatOptions(seed=1), seed="x")
    assert other_seed.output(30) != forward[30] and other_option.output(30) != forward[30]


# ---------------------------------------------------------------- signal properties


def spectrum_peak_bpm(x: np.ndarray[Any, Any], lo_hz: float, hi_hz: float) -> float:
    x = x - x.mean()
    f = np.fft.rfftfreq(len(x), 1 / FS)
    p = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    band = (f >= lo_hz) & (f <= hi_hz)
    return float(f[band][np.argmax(p[band])] * 60)


def band_rms(x: np.ndarray[Any, Any], lo_hz: float, hi_hz: float) -> float:
    t = np.arange(len(x))
    detrended = x - np.polyval(np.polyfit(t, x, 1), t)  # slow drift would leak into every band
    f = np.fft.rfftfreq(len(x), 1 / FS)
    spec = np.fft.rfft(detrended)
    spec[(f < lo_hz) | (f > hi_hz)] = 0
    return float(np.std(np.fft.irfft(spec, len(x))))


@pytest.mark.parametrize("rate", [20, 30, 45, 60])
def test_breathing_oscillates_at_the_scripted_rate(rate: float) -> None:
    model = MatModel(steps({"at_s": 0, "present": True, "rate_bpm": rate}), seed=f"r{rate}")
    x = model.samples(10 * FS, 120 * FS).astype(float)  # 120 s: 0.5/min FFT resolution
    assert spectrum_peak_bpm(x, 0.2, 1.5) == pytest.approx(rate, abs=1.0)
    # Natural variability: breath lengths (upward zero crossings of the breathing band) vary ...
    f = np.fft.rfftfreq(len(x), 1 / FS)
    spec = np.fft.rfft(x - x.mean())
    spec[(f < 0.5 * rate / 60) | (f > 1.8 * rate / 60)] = 0
    y = np.fft.irfft(spec, len(x))
    ups = np.flatnonzero((y[:-1] < 0) & (y[1:] >= 0)) / FS
    intervals = np.diff(ups)
    assert 0.03 < np.std(intervals) / np.mean(intervals) < 0.3
    # ... around the scripted mean.
    assert 60 / np.mean(intervals) == pytest.approx(rate, rel=0.04)


def test_weight_apnea_heart_movement_and_gain() -> None:
    model = MatModel(
        steps(
            {"at_s": 0, "present": False},
            {"at_s": 20, "present": True, "rate_bpm": 30},
            {"at_s": 80, "apnea": True},
            {"at_s": 140, "apnea": False},
            {"at_s": 160, "movement": True},
            {"at_s": 170, "movement": False},
            {"at_s": 200, "gain": 0.5},
            {"at_s": 240, "present": False},
        ),
        seed="props",
    )

    def part(t0: float, t1: float) -> np.ndarray[Any, Any]:
        return model.samples(int(t0 * FS), int((t1 - t0) * FS)).astype(float)

    empty, breathing, apnea, moving = part(2, 18), part(25, 78), part(85, 138), part(160, 170)
    weight = np.median(breathing) - np.median(empty)
    assert 8000 < weight < 10000, "the DC level rises by the child's weight"
    assert np.median(part(245, 260)) < np.median(empty) + 1000, "and falls back when the mat is empty"
    assert abs(np.median(apnea) - np.median(breathing)) < 1000, "an apnea keeps the weight"
    assert band_rms(apnea, 0.2, 1.0) < 0.1 * band_rms(breathing, 0.2, 1.0), "breathing stops in an apnea"
    assert spectrum_peak_bpm(apnea, 1.5, 3.0) == pytest.approx(120, abs=2), "the heart goes on"
    assert spectrum_peak_bpm(empty, 1.5, 3.0) != pytest.approx(120, abs=2)
    assert np.std(moving) > 5 * np.std(breathing), "movement is much larger than breathing"
    assert np.median(part(205, 235)) == pytest.approx(0.5 * np.median(part(172, 198)), rel=0.05), "gain 0.5"
    assert band_rms(part(205, 235), 0.2, 1.0) == pytest.approx(0.5 * band_rms(breathing, 0.2, 1.0), rel=0.25)
    assert model.truth_rate_bpm(50) == 30 and model.truth_rate_bpm(100) is None and model.truth_rate_bpm(5) is None


def test_slow_drift_and_noise_on_an_empty_mat() -> None:
    model = MatModel(steps({"at_s": 0}), MatOptions(drift_counts=300, noise_counts=5), seed="drift")
    x = model.samples(0, 600 * FS).astype(float)
    minutes = x.reshape(10, -1).mean(axis=1)
    assert np.ptp(minutes) > 100, "the level wanders over minutes"
    assert np.std(np.diff(x)) == pytest.approx(5 * math.sqrt(2), rel=0.1), "white noise of 5 counts"


def test_loop_restarts_the_timeline() -> None:
    model = MatModel(steps({"at_s": 0, "present": False}, {"at_s": 10, "present": True}), QUIET, loop_s=20)
    assert model.samples(15 * FS, 1)[0] == 9500
    assert model.samples(25 * FS, 1)[0] == 500
    assert model.state_at(35).present


# ---------------------------------------------------------------- scenarios


def test_scenario_builds_mats_through_the_registry(tmp_path: Path) -> None:
    kit = mat_kit(tmp_path, "mat-01")
    assert DeviceKind.NAP_MAT in SIM_MODELS
    scenario = parse_scenario(
        {
            "devices": {
                "mat-01": {
                    "timeline": [{"at_s": 0, "present": True, "rate_bpm": 42}, {"at_s": 5, "apnea": True}],
                    "options": {"noise_counts": 2, "samples_per_line": 10},
                }
            }
        }
    )
    (sim,) = plan(kit, scenario)
    model = sim.model
    assert isinstance(model, MatModel) and isinstance(model, StreamingModel)
    assert model.rate_hz == 2.5 and model.options.noise_counts == 2
    assert model.state_at(1).rate_bpm == 42 and model.state_at(6).apnea and model.state_at(6).rate_bpm == 42


BAD_MATS: list[tuple[str, dict[str, Any], str]] = [
    (
        "typo in a step",
        {"timeline": [{"at_s": 0, "presnt": True}]},
        r"devices\.mat-01\.timeline\[0\]\.presnt: unknown key",
    ),
    (
        "rate out of range",
        {"timeline": [{"at_s": 0, "rate_bpm": 400}]},
        r"devices\.mat-01\.timeline\[0\]\.rate_bpm: .*150",
    ),
    (
        "unknown option",
        {"timeline": [{"at_s": 0}], "options": {"noise": 3}},
        r"devices\.mat-01\.options\.noise: unknown key",
    ),
    (
        "rate_hz that contradicts fs",
        {"rate_hz": 10, "timeline": [{"at_s": 0}]},
        r"devices\.mat-01\.rate_hz: a mat writes fs_hz / samples_per_line = 5 sentences/s",
    ),
    (
        "a replay has no scripted rate",
        {"timeline": [{"at_s": 0, "rate_bpm": 30}], "options": {"replay": str(recording_path("12_20231119.csv.gz"))}},
        r"devices\.mat-01\.timeline\[0\]\.rate_bpm: unknown key",
    ),
    (
        "missing recording",
        {"timeline": [{"at_s": 0}], "options": {"replay": "nowhere/none.csv.gz"}},
        r"devices\.mat-01\.options\.replay: .*nowhere/none\.csv\.gz: recording not found",
    ),
]


@pytest.mark.parametrize(("name", "spec", "message"), BAD_MATS, ids=[b[0] for b in BAD_MATS])
def test_bad_mat_scenarios_are_one_clear_error(tmp_path: Path, name: str, spec: dict[str, Any], message: str) -> None:
    resp_belt_file()
    kit = mat_kit(tmp_path, "mat-01")
    scenario = parse_scenario({"devices": {"mat-01": spec}}, source="s.yaml", base_dir=tmp_path)
    with pytest.raises(ScenarioError, match=r"^s\.yaml: " + message):
        plan(kit, scenario)


def test_shipped_mat_demo_scenario(tmp_path: Path) -> None:
    resp_belt_file()
    scenario = load_scenario(REPO / "configs/scenarios/mat_demo.yaml")
    kit = mat_kit(tmp_path, *scenario.devices)
    models = {sim.device.id: sim.model for sim in plan(kit, scenario)}
    assert set(models) == {"mat-01", "mat-02"}
    synthetic, replay = models["mat-01"], models["mat-02"]
    assert isinstance(synthetic, MatModel) and not isinstance(synthetic, ReplayMat)
    assert isinstance(replay, ReplayMat) and replay.time_scale == 2.0
    assert {synthetic.state_at(t).apnea for t in range(0, 120)} == {False, True}
    assert {synthetic.state_at(t).movement for t in range(0, 120)} == {False, True}
    assert {synthetic.state_at(t).present for t in range(0, 120)} == {False, True}


# ---------------------------------------------------------------- resp_belt replay


def test_replay_carries_the_recorded_breathing_at_double_speed(tmp_path: Path) -> None:
    recording = load_recording(resp_belt_file())
    assert recording.duration_s == 7200 and recording.fs_hz == 20
    kit = mat_kit(tmp_path, "mat-01")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "belt.csv.gz").symlink_to(resp_belt_file())
    spec = {"timeline": [{"at_s": 0, "present": True}], "options": {"replay": "data/belt.csv.gz", "start_s": 1800}}
    scenario = parse_scenario({"devices": {"mat-01": spec}}, base_dir=tmp_path)  # relative to the scenario file
    (sim,) = plan(kit, scenario)
    replay = sim.model
    assert isinstance(replay, ReplayMat) and replay.time_scale == 2.0 and replay.recording_time(10) == 1820

    breaths = replay.reference_breaths(5, 95)
    reference = 60 * (len(breaths) - 1) / (breaths[-1] - breaths[0])
    assert 20 <= reference <= 45, "an adult's ~15/min played at ×2"
    x = replay.samples(5 * FS, 90 * FS).astype(float)
    assert spectrum_peak_bpm(x, 0.2, 1.5) == pytest.approx(reference, rel=0.1)
    assert 8000 < np.median(x) < 11000, "the recording rides on the child's weight"
    (again,) = plan(kit, scenario)
    assert isinstance(again, type(sim)) and again.model.output(3) == replay.output(3), "deterministic"  # type: ignore[union-attr]


def test_unusable_recordings_are_clear_errors(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.csv.gz"
    with gzip.open(wrong, "wt") as fh:
        fh.write("ecg\n1\n2\n")
    with pytest.raises(RecordingError, match=r"wrong\.csv\.gz: expected the header 'resp', got 'ecg'"):
        load_recording(wrong)
    plain = tmp_path / "plain.csv.gz"
    plain.write_text("resp\n1\n")
    with pytest.raises(RecordingError, match=r"plain\.csv\.gz: cannot read as gzip CSV"):
        load_recording(plain)
    with pytest.raises(RecordingError, match=r"too short"):
        Recording(np.zeros(100))


def test_replay_leaves_the_belts_own_noise_out() -> None:
    """The belt's sensor noise is not breathing: above 2 Hz of recording time it is filtered out
    before the amplitude is normalised, which amplifies it with shallow breathing. In a shallow
    passage of recording 25 (recording ~3560 s, breaths of ~5 belt counts) a mat with 5 counts of
    noise carried σ ≈ 16 counts above 3 Hz without the filter, ≈ 9 with it (measured)."""
    raw = load_recording(resp_belt_file("25_20231208.csv.gz")).raw

    def sigma_above_3hz(recording: Recording, t0: int) -> float:
        opts = ReplayOptions(replay="belt", noise_counts=5.0, heart_counts=0.0)
        mat = ReplayMat([MatEvent(at_s=0, present=True)], opts, recording, seed="noise")
        x = mat.samples(t0 * FS, (t0 + 40) * FS).astype(float)
        f = np.fft.rfftfreq(len(x), 1.0 / FS)
        power = np.abs(np.fft.rfft(x - np.mean(x))) ** 2
        return float(np.sqrt(np.mean(power[(f >= 3.0) & (f <= 10.0)]) / len(x)))  # white: E|X|² = nσ²

    filtered, unfiltered = Recording(raw), Recording(raw, lowpass_hz=None)
    assert sigma_above_3hz(unfiltered, 1780) > 14.0, "the shallow passage, as it was replayed before"
    assert sigma_above_3hz(filtered, 1780) < 10.0
    assert sigma_above_3hz(filtered, 500) < 6.0, "a normal passage: about the mat's own 5 counts"
    breaths = ReplayMat([MatEvent(at_s=0, present=True)], ReplayOptions(replay="belt"), filtered)
    kept = breaths.reference_breaths(400, 700)
    before = ReplayMat([MatEvent(at_s=0, present=True)], ReplayOptions(replay="belt"), unfiltered)
    assert len(kept) == pytest.approx(len(before.reference_breaths(400, 700)), abs=2), "the breathing is kept"
