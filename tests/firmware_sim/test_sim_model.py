"""firmware_sim without ptys: scenario validation, the clip model and fault injection.
The edge decoder is used only as an independent reader of the bytes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from edge.decoders.nmea import ImuSample, NmeaDecoder
from edge.dsp.posture import classify_posture
from firmware_sim.io.runner import FaultInjector, plan
from firmware_sim.models.clip import PostureClip, SimPosture
from firmware_sim.scenario import Faults, ScenarioError, load_scenario, parse_scenario
from nurserywatch.contract import Position
from nurserywatch.kit import load_kit

REPO = Path(__file__).resolve().parents[2]


def _decode(data: bytes) -> list[ImuSample]:
    return [f for f in NmeaDecoder().feed(data) if isinstance(f, ImuSample)]


@pytest.mark.parametrize(
    ("scenario", "kit_file", "devices"),
    [
        ("demo.yaml", "kit.demo.yaml", ["clip-01", "clip-02", "mat-01", "mat-02", "co2-01", "pm-01"]),
        ("prone_once.yaml", "kit.demo.yaml", ["clip-01"]),
        ("air_serial.yaml", "kit.example.yaml", ["pm-01", "co2-01", "co2-02"]),
        ("mat_demo.yaml", "kit.example.yaml", ["mat-01", "mat-02"]),
    ],
)
def test_shipped_scenarios_fit_their_kits(scenario: str, kit_file: str, devices: list[str]) -> None:
    kit = load_kit(REPO / "configs" / kit_file)
    loaded = load_scenario(REPO / "configs/scenarios" / scenario)
    assert [s.device.id for s in plan(kit, loaded)] == devices


def test_demo_and_test_scenarios_script_the_prone_runs_the_tests_expect() -> None:
    demo = load_scenario(REPO / "configs/scenarios/demo.yaml")
    assert demo.loop_s == 180
    assert [(s.at_s, s.posture) for s in demo.devices["clip-01"].timeline] == [
        (0, SimPosture.SUPINE),
        (5, SimPosture.PRONE),
        (60, SimPosture.SUPINE),
    ]
    assert SimPosture.PRONE not in {s.posture for s in demo.devices["clip-02"].timeline}
    once = load_scenario(REPO / "configs/scenarios/prone_once.yaml")
    assert once.loop_s is None
    assert [(s.at_s, s.posture) for s in once.devices["clip-01"].timeline] == [
        (0, SimPosture.SUPINE),
        (3, SimPosture.PRONE),
        (40, SimPosture.SUPINE),
    ]


def _clip(timeline: list[dict[str, object]], **extra: object) -> dict[str, object]:
    return {"devices": {"clip-01": {"rate_hz": 10, "timeline": timeline}}, **extra}


OK = [{"at_s": 0, "posture": "supine"}, {"at_s": 5, "posture": "prone"}]

BAD: list[tuple[str, object, str]] = [
    ("not a mapping", ["a"], "f.yaml: expected a mapping with keys devices, loop_s, seed, faults"),
    ("no devices", {}, "f.yaml: devices: required key is missing"),
    ("typo", _clip(OK, loops=3), "f.yaml: loops: unknown key (check the spelling; see configs/scenarios/demo.yaml)"),
    (
        "typo in step",
        _clip([{"at_s": 0, "postur": "supine"}]),
        "f.yaml: devices.clip-01.timeline[0].posture: required key is missing",
    ),
    (
        "bad posture",
        _clip([{"at_s": 0, "posture": "sideways"}]),
        "f.yaml: devices.clip-01.timeline[0].posture: expected one of 'supine', 'prone', 'left', 'right', "
        "'upright' or 'moving' (got 'sideways')",
    ),
    (
        "late start",
        _clip([{"at_s": 1, "posture": "supine"}]),
        "f.yaml: devices.clip-01.timeline[0].at_s: the first step must be at 0 s",
    ),
    (
        "out of order",
        _clip([*OK, {"at_s": 4, "posture": "left"}]),
        "f.yaml: devices.clip-01.timeline[2].at_s: 4.0 must be later than the step before (5.0)",
    ),
    (
        "loop too short",
        _clip(OK, loop_s=5),
        "f.yaml: loop_s: 5.0 s restarts before devices.clip-01 reaches its step at 5.0 s",
    ),
    (
        "bad device id",
        {"devices": {"Clip 1": {"timeline": OK}}},
        "f.yaml: devices.Clip 1: expected an id of 1–64 characters from a-z 0-9 _ - (got 'Clip 1')",
    ),
    (
        "negative rate",
        {"devices": {"clip-01": {"rate_hz": -1, "timeline": OK}}},
        "f.yaml: devices.clip-01.rate_hz: input should be greater than 0 (got -1)",
    ),
    (
        "negative fault",
        _clip(OK, faults={"garbage_every": -2}),
        "f.yaml: faults.garbage_every: expected a number ≥ 0 (got -2)",
    ),
]


@pytest.mark.parametrize(("data", "message"), [(d, m) for _, d, m in BAD], ids=[i for i, _, _ in BAD])
def test_scenario_errors_name_file_and_field(data: object, message: str) -> None:
    # Kind-specific steps are checked when the scenario meets the kit (plan), the rest on load.
    kit = load_kit(REPO / "configs/kit.example.yaml")
    with pytest.raises(ScenarioError) as info:
        plan(kit, parse_scenario(data, source="f.yaml"))
    assert str(info.value).startswith(message)


def test_load_scenario_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"nope.yaml: file not found"):
        load_scenario(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("devices: [\n")
    with pytest.raises(ScenarioError, match=r"broken.yaml \(line 2, column 1\): not valid YAML"):
        load_scenario(broken)


def test_scenario_must_match_the_kit() -> None:
    kit = load_kit(REPO / "configs/kit.example.yaml")
    with pytest.raises(ScenarioError, match=r"devices.clip-09: not a device of kit 'himawari' \(known: clip-01, "):
        plan(kit, parse_scenario(_clip(OK) | {"devices": {"clip-09": {"timeline": OK}}}))


def test_clip_follows_the_timeline_with_its_own_axes() -> None:
    timeline = [
        (0.0, SimPosture.SUPINE),
        (1.0, SimPosture.PRONE),
        (2.0, SimPosture.LEFT),
        (3.0, SimPosture.RIGHT),
        (4.0, SimPosture.UPRIGHT),
        (5.0, SimPosture.MOVING),
    ]
    clip = PostureClip(timeline, rate_hz=10, loop_s=6.0, seed=1)
    samples = _decode(b"".join(clip.sentence(i) for i in range(120)))  # two loops
    assert [s.seq for s in samples] == list(range(120))
    positions = [classify_posture(s.ax_mg, s.ay_mg, s.az_mg) for s in samples]
    expected = [Position.SUPINE, Position.PRONE, Position.LEFT, Position.RIGHT, Position.UPRIGHT, Position.UNKNOWN]
    assert positions == [p for p in expected for _ in range(10)] * 2


def test_clip_noise_is_small_and_seeded() -> None:
    a = PostureClip([(0, SimPosture.SUPINE)], rate_hz=10, seed="x")
    b = PostureClip([(0, SimPosture.SUPINE)], rate_hz=10, seed="x")
    sa = [a.sentence(i) for i in range(200)]
    assert sa == [b.sentence(i) for i in range(200)]
    zs = [s.az_mg for s in _decode(b"".join(sa))]
    assert len(set(zs)) > 20 and all(900 < z < 1100 for z in zs)


def test_seq_wraps_at_65536() -> None:
    clip = PostureClip([(0, SimPosture.SUPINE)], rate_hz=100)
    assert [s.seq for s in _decode(clip.sentence(65535) + clip.sentence(65536))] == [65535, 0]


def test_fault_injection_is_counted_by_the_decoder() -> None:
    clip = PostureClip([(0, SimPosture.SUPINE)], rate_hz=10)
    faults = FaultInjector(Faults(bad_checksum_every=5, garbage_every=7), seed="t")
    decoder = NmeaDecoder()
    frames = decoder.feed(b"".join(faults.apply(i, clip.sentence(i)) for i in range(70)))
    assert [f.seq for f in frames if isinstance(f, ImuSample)] == [i for i in range(70) if (i + 1) % 5]
    assert faults.bad_checksums == 14 and faults.garbage_chunks == 10
    assert decoder.rejected == Counter({"bad_checksum": 14, "garbage": 10})
