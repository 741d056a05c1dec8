"""Kit files: the example loads; every kind of mistake gives one message naming file, field and
what was expected — through the library and through the CLI (exit code 2, no traceback)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nurserywatch.kit import DeviceKind, KitError, load_kit

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "kit.example.yaml"
NW = [sys.executable, "-m", "nurserywatch"]


def test_example_kit_loads() -> None:
    kit = load_kit(EXAMPLE)
    assert kit.site == "himawari"
    clip = kit.device("clip-01")
    assert clip is not None and clip.kind is DeviceKind.POSTURE_CLIP and clip.child == "c001"
    hiyoko = ["clip-01", "clip-02", "mat-01", "mat-02", "co2-01", "pm-01"]
    assert [d.id for d in kit.devices_of_agent("pi-hiyoko")] == hiyoko
    air = kit.device("air-risu")
    assert air is not None and air.transport.type == "ble" and air.transport.bindkey is not None


def test_relative_ports_resolve_against_the_kit_folder(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["devices"][0]["transport"]["port"] = "ttys/clip"
    (tmp_path / "kit.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    kit = load_kit(tmp_path / "kit.yaml")
    assert kit.resolve_port("ttys/clip") == str(tmp_path / "ttys" / "clip")
    assert kit.resolve_port("/dev/ttyUSB0") == "/dev/ttyUSB0"


def _mutate(path: str, value: object) -> dict[str, object]:
    data: dict[str, object] = yaml.safe_load(EXAMPLE.read_text())
    node: object = data
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]  # type: ignore[index]
    last = keys[-1]
    if value is _DELETE:
        del node[last]  # type: ignore[attr-defined]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value  # type: ignore[index]
    return data


_DELETE = object()

CASES = [  # an item by its id and line, then the field within it
    ("devices.0.kidn", "posture_clip", 'device "clip-01" (line 25): kidn: unknown key'),
    ("devices.0.kind", "nap-matt", 'device "clip-01" (line 25): kind: expected one of'),
    ("devices.0.transport.port", 5, 'device "clip-01" (line 29): transport.port: input should be a valid string'),
    ("devices.0.transport.type", "usb", 'device "clip-01" (line 27): transport: expected one of \'serial\', \'ble\''),
    ("devices.0.transport.baud", -9600, 'device "clip-01" (line 28): transport.baud: input should be greater than 0'),
    ("devices.0.room", "panda", 'device "clip-01" (line 26): room: \'panda\' is not a room id defined in this kit'),
    ("devices.0.child", "c999", 'device "clip-01" (line 23): child: \'c999\' is not a child id defined in this kit'),
    ("devices.1.child", "c001",
     'device "clip-02" (line 32): child: child \'c001\' already has a posture_clip (\'clip-01\') (see line 22)'),
    ("devices.9.transport.bindkey", "abc", 'device "air-risu" (line 98): transport.bindkey: expected a string'),
    ("devices.1.id", "clip-01", 'device "clip-01" (line 33): id: \'clip-01\' is used twice; ids must be unique (see'),
    ("children.0.age_band", 2, 'child "c001" (line 9): age_band: expected one of'),
    ("children.0.id", "Haruto", "child 'Haruto' (line 10): id: expected an id of 1–64 characters"),
    ("site", _DELETE, "site (line 1): required key is missing"),
    ("rooms", [], "rooms (line 101): list should have at least 1 item"),
]


@pytest.mark.parametrize(("path", "value", "message"), CASES)
def test_bad_kits_name_file_and_field(tmp_path: Path, path: str, value: object, message: str) -> None:
    kit_file = tmp_path / "kit.yaml"
    kit_file.write_text(yaml.safe_dump(_mutate(path, value), allow_unicode=True))
    with pytest.raises(KitError) as exc:
        load_kit(kit_file)
    text = str(exc.value)
    assert text.startswith(f"{kit_file}: ")
    assert message.lower() in text.lower(), text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("site: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        ("", "expected a mapping"),
    ],
)
def test_unparseable_kits(tmp_path: Path, content: str, message: str) -> None:
    kit_file = tmp_path / "kit.yaml"
    kit_file.write_text(content)
    with pytest.raises(KitError, match=message):
        load_kit(kit_file)


def test_missing_kit_file(tmp_path: Path) -> None:
    with pytest.raises(KitError, match="file not found"):
        load_kit(tmp_path / "nope.yaml")


def test_cli_kit_check_ok() -> None:
    out = subprocess.run([*NW, "kit", "check", "--config", str(EXAMPLE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout and "10 devices (6 bound to children)" in out.stdout


def test_cli_bad_kit_exits_2_without_traceback(tmp_path: Path) -> None:
    kit_file = tmp_path / "kit.yaml"
    kit_file.write_text(yaml.safe_dump(_mutate("devices.0.kind", "nap-matt"), allow_unicode=True))
    for cmd in (["kit", "check"], ["gateway"], ["edge"], ["sim"], ["dashboard"]):
        out = subprocess.run([*NW, *cmd, "--config", str(kit_file)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, (cmd, out.stderr)
        assert "Traceback" not in out.stderr
        assert f'error: {kit_file}: device "clip-01" (line 25): kind: expected one of' in out.stderr


@pytest.mark.parametrize("cmd", ["demo", "sim", "edge", "gateway", "dashboard", "kit"])
def test_every_command_has_help(cmd: str) -> None:
    out = subprocess.run([*NW, cmd, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--config" in out.stdout or "check" in out.stdout
    assert len(out.stdout.split()) > 20


def _with_air_sensor(transport: dict[str, object]) -> dict[str, object]:
    data: dict[str, object] = yaml.safe_load(EXAMPLE.read_text())
    devices = data["devices"]
    assert isinstance(devices, list)
    devices.append({"id": "co2-9", "kind": "mhz19b", "room": "hiyoko", "agent": "pi-hiyoko", "transport": transport})
    return data


def test_serial_speed_defaults_by_kind_and_fixed_speeds_are_checked(tmp_path: Path) -> None:
    kit_file = tmp_path / "kit.yaml"
    kit_file.write_text(yaml.safe_dump(_with_air_sensor({"type": "serial", "port": "/dev/ttyAMA5"})))
    kit = load_kit(kit_file)
    co2, clip = kit.device("co2-9"), kit.device("clip-01")
    assert co2 is not None and co2.transport.type == "serial" and co2.transport.baud == 9600
    assert clip is not None and clip.transport.type == "serial" and clip.transport.baud == 115200
    kit_file.write_text(yaml.safe_dump(_with_air_sensor({"type": "serial", "port": "/dev/ttyAMA5", "baud": 115200})))
    with pytest.raises(KitError, match=r'device "co2-9" \(line \d+\): transport\.baud: a mhz19b talks at 9600 baud'):
        load_kit(kit_file)


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ({"kind": "thermometer", "transport": {"type": "serial", "port": "/dev/ttyUSB5"}},
         "transport.type: a thermometer connects over ble, not serial"),
        ({"kind": "pms5003", "transport": {"type": "ble", "address": "AA:BB:CC:DD:EE:FF"}},
         "transport.type: a pms5003 connects over serial, not ble"),
        ({"kind": "posture_clip", "transport": {"type": "ble", "address": "AA:BB:CC:DD:EE:FF", "bindkey": "0" * 32}},
         "transport.bindkey: only BTHome air sensors (air_ble) use one, not a posture_clip"),
        ({"kind": "posture_clip", "counts_per_kg": 100, "transport": {"type": "ble", "address": "AA:BB:CC:DD:EE:FF"}},
         "counts_per_kg: only a nap_mat has a weight scale, not a posture_clip"),
        ({"kind": "nap_mat", "counts_per_kg": 0, "transport": {"type": "serial", "port": "/dev/ttyUSB5"}},
         "counts_per_kg: input should be greater than 0 (got 0)"),
    ],
)
def test_kinds_and_transports_must_fit(tmp_path: Path, device: dict[str, object], message: str) -> None:
    data: dict[str, object] = yaml.safe_load(EXAMPLE.read_text())
    devices = data["devices"]
    assert isinstance(devices, list)
    devices.append({"id": "dev-x", "room": "hiyoko", "agent": "pi-hiyoko", **device})
    kit_file = tmp_path / "kit.yaml"
    kit_file.write_text(yaml.safe_dump(data, allow_unicode=True))
    with pytest.raises(KitError) as exc:
        load_kit(kit_file)
    assert re.search(rf'device "dev-x" \(line \d+\): {re.escape(message)}', str(exc.value)), str(exc.value)


def test_cli_rules_naming_a_room_the_kit_lacks_exit_2(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rooms:\n  panda: {prone: {min_duration_s: 10}}\n")
    kit = EXAMPLE.parent / "kit.demo.yaml"
    out = subprocess.run(
        [*NW, "gateway", "--config", str(kit), "--rules", str(rules), "--db", str(tmp_path / "gw.db")],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{rules}: rooms.panda: not a room of kit 'himawari' (rooms: hiyoko)" in out.stderr


def test_lookups_by_id_follow_a_copy_with_other_devices() -> None:
    """Kit.device/child/room/agent answer from an index built once per list (every reading asks); a
    copy with another device list must not answer from the original's index."""
    from tests.support.kits import make_kit

    kit = make_kit("idx", devices={"clip-01": "c001", "mat-1": {"kind": "nap_mat", "child": "c001"}})
    assert kit.device("mat-1") is kit.devices[1] and kit.device("nope") is None
    assert kit.child("c001") is kit.children[0] and kit.room(kit.rooms[0].id) is kit.rooms[0]
    assert kit.agent(kit.agents[0].id) is kit.agents[0] and kit.agent("nope") is None
    fewer = kit.model_copy(update={"devices": kit.devices[:1]})
    assert fewer.device("mat-1") is None and fewer.device("clip-01") is kit.devices[0]
    assert kit.device("mat-1") is kit.devices[1]
