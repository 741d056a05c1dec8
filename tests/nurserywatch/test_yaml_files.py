"""The YAML loader under attack and under careless hands: a "billion laughs" file, keys given twice,
numbers too long for Python's int parser, deep nesting, oversized files, tags — each refused in
bounded time and memory with a line per problem; and a kit's problems all listed at once, each by
its device's id and line, two devices on one port among them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nurserywatch.kit import KitError, load_kit
from nurserywatch.yaml_files import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, MAX_PROBLEMS

NW = [sys.executable, "-m", "nurserywatch"]
HEAD = "site: s\nname: n\nrooms: [{id: r, name: r}]\nagents: [{id: pi}, {id: pi2}]\n"


def bomb(depth: int) -> str:
    """The outside tester's kit: ten aliases per level, ``depth`` levels, used in a string field."""
    levels = [f'a0: &a0 "{"lol" * 10}"']
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, depth + 1)]
    return HEAD + "\n".join(levels) + f"\nchildren:\n- {{id: c, room: r, age_band: '0', nickname: *a{depth}}}\n"


# Loads the file in a child process whose address space is capped (the old loader took 1.4 GB and
# 12 s at depth 8 and never finished at 9), timing the load alone and measuring its peak allocation.
_PROBE = """
import json, resource, sys, time, tracemalloc
resource.setrlimit(resource.RLIMIT_AS, (768 << 20, 768 << 20))
from nurserywatch.kit import KitError, load_kit
tracemalloc.start()
t0 = time.perf_counter()
try:
    load_kit(sys.argv[1])
    message = None
except KitError as exc:
    message = str(exc)
print(json.dumps({"s": time.perf_counter() - t0, "peak": tracemalloc.get_traced_memory()[1], "message": message}))
"""


@pytest.mark.parametrize("depth", [8, 9])
def test_billion_laughs_is_refused_at_once_in_little_memory(tmp_path: Path, depth: int) -> None:
    path = tmp_path / "kit.yaml"
    path.write_text(bomb(depth))
    assert path.stat().st_size < 2000
    out = subprocess.run([sys.executable, "-c", _PROBE, str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["s"] < 1.0 and result["peak"] < 8 << 20, result
    message = result["message"]
    assert f"{path}: a0 (line 5): &a0: anchors are not allowed" in message
    assert f"{path}: a1[0] (line 6): *a0: aliases are not allowed; write the value out" in message
    lines = message.splitlines()
    assert len(lines) == MAX_PROBLEMS + 1 and lines[-1].endswith("more problems"), "bounded, not one per alias"
    assert max(map(len, lines)) < 200


def test_billion_laughs_through_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "kit.yaml"
    path.write_text(bomb(9))
    out = subprocess.run([*NW, "kit", "check", "--config", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(out.stderr) < 20_000
    assert all(line.startswith(f"error: {path}: ") for line in out.stderr.splitlines())


def test_a_key_given_twice_names_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "kit.yaml"
    path.write_text(HEAD + "devices: []\nchildren: []\ndevices:\n- {id: d, kind: thermometer}\n")
    with pytest.raises(KitError) as exc:
        load_kit(path)
    assert str(exc.value) == (
        f"{path}: devices (line 7): 'devices' appears twice in the same mapping (first on line 5); "
        "YAML would silently keep only the last"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("9" * 5000, "a 5000-character number: too long (at most 20 digits)"),  # int() raised past 4,300
        ("1" * 21, "a 21-character number: too long (at most 20 digits)"),
        (str(1 << 64), f"{1 << 64}: too large (beyond 64 bits)"),
        ("1." + "9" * 60, "a 62-character number: too long"),
        ("2024-13-45", "'2024-13-45' reads as a date or time but is not a valid one (quote it to mean text)"),
    ],
)
def test_numbers_and_dates_that_cannot_be_settings(tmp_path: Path, value: str, message: str) -> None:
    path = tmp_path / "kit.yaml"
    path.write_text(HEAD + f"retention: {{alerts_days: {value}}}\n")
    with pytest.raises(KitError) as exc:
        load_kit(path)
    assert str(exc.value) == f"{path}: retention.alerts_days (line 5): {message}"


def test_largest_64_bit_numbers_still_reach_the_model(tmp_path: Path) -> None:
    path = tmp_path / "kit.yaml"
    path.write_text(HEAD + f"retention: {{alerts_days: {(1 << 64) - 1}}}\n")
    with pytest.raises(KitError, match=r"retention\.alerts_days \(line 5\): expected a number ≤ 36500"):
        load_kit(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("site: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n", f"(line 1): nested more than {MAX_DEPTH}"),
        (HEAD + "---\nsite: t\n", "(line 5): a second document (---): a settings file holds one"),
        (HEAD + "x: !!python/object:os.system {}\n", "x (line 5): tag:yaml.org,2002:python/object:os.system: only"),
        (HEAD + "storage: !!binary aGk=\n", "storage (line 5): tag:yaml.org,2002:binary: only plain values"),
        (HEAD + "storage:\n  <<: {readings: sqlite}\n", "storage (line 5): <<: merge keys are not allowed"),
        (HEAD + "? [a, b]\n: 1\n", "(top level) (line 5): a key must be a plain value, not a list or mapping"),
    ],
)
def test_what_settings_never_need_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "kit.yaml"
    path.write_text(text)
    with pytest.raises(KitError) as exc:
        load_kit(path)
    assert message in str(exc.value) and str(exc.value).startswith(str(path))


def test_oversized_and_binary_files(tmp_path: Path) -> None:
    path = tmp_path / "kit.yaml"
    path.write_text(HEAD + "#" * MAX_FILE_BYTES + "\n")
    with pytest.raises(KitError, match="larger than 256 KiB; a settings file is far smaller"):
        load_kit(path)
    path.write_text("site: [" + "0," * MAX_NODES + "]\n")  # within the size: the bound on the values
    with pytest.raises(KitError, match=r"\(line 1\): more than 50,000 values"):
        load_kit(path)
    path.write_bytes(b"site: \xff\xfe\n")
    with pytest.raises(KitError, match=r"not UTF-8 text \(invalid start byte at byte 6\)"):
        load_kit(path)


KIT_WITH_THREE_MISTAKES = """\
site: s
name: n
rooms: [{id: r, name: r}]
agents: [{id: pi}]
devices:
- {id: mat-01, kind: nap_mat, room: r, agent: pi, transport: {type: serial, port: /dev/ttyUSB0}}
- {id: mat-02, kind: nap_matt, room: r, agent: pi, transport: {type: serial, port: /dev/ttyUSB1}}
- {id: mat-03, kind: nap_mat, room: r, agent: pi, transport: {type: serial, port: /dev/ttyUSB2}}
- {id: mat-04, kind: nap_mat, room: r, agent: pi, transport: {type: serial, port: /dev/ttyUSB3, baud: -1}}
- id: mat-05
  kind: nap_mat
  room: r
  agent: pi
  transport: {type: serial, port: /dev/ttyUSB4}
  chlid: c1
"""


def test_every_problem_is_listed_with_its_device_and_line(tmp_path: Path) -> None:
    path = tmp_path / "kit.yaml"
    path.write_text(KIT_WITH_THREE_MISTAKES)
    with pytest.raises(KitError) as exc:
        load_kit(path)
    assert str(exc.value).splitlines() == [
        f'{path}: device "mat-02" (line 7): kind: expected one of \'nap_mat\', \'posture_clip\', \'thermometer\', '
        "'air_ble', 'pms5003', 'mhz19b' or 'senseair_s8' (got 'nap_matt')",
        f'{path}: device "mat-04" (line 9): transport.baud: input should be greater than 0 (got -1)',
        f'{path}: device "mat-05" (line 15): chlid: unknown key (check the spelling; see configs/kit.example.yaml)',
    ]


def test_the_cli_prints_one_error_line_per_problem(tmp_path: Path) -> None:
    path = tmp_path / "kit.yaml"
    path.write_text(KIT_WITH_THREE_MISTAKES)
    out = subprocess.run([*NW, "kit", "check", "--config", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = out.stderr.splitlines()
    assert [line.split(" (line")[0] for line in lines] == [
        f'error: {path}: device "{d}"' for d in ("mat-02", "mat-04", "mat-05")
    ]


def test_shared_ports_and_addresses_and_every_reference_problem(tmp_path: Path) -> None:
    (tmp_path / "ttys").mkdir()
    path = tmp_path / "kit.yaml"
    path.write_text(
        HEAD
        + f"""children: [{{id: c1, room: r, age_band: '0'}}]
devices:
- {{id: mat-01, kind: nap_mat, room: r, agent: pi, transport: {{type: serial, port: /dev/ttyUSB0}}}}
- {{id: mat-02, kind: nap_mat, room: r, agent: pi2, transport: {{type: serial, port: /dev/ttyUSB0}}}}
- {{id: mat-03, kind: nap_mat, room: r, agent: pi, transport: {{type: serial, port: /dev/../dev/ttyUSB0}}}}
- {{id: mat-04, kind: nap_mat, room: r, agent: pi, transport: {{type: serial, port: ttys/a}}}}
- {{id: mat-05, kind: nap_mat, room: r, agent: pi, transport: {{type: serial, port: {tmp_path}/ttys/a}}}}
- {{id: t-1, kind: thermometer, room: r, agent: pi, transport: {{type: ble, address: 'aa:bb:cc:dd:ee:ff'}}}}
- {{id: t-2, kind: thermometer, room: r, agent: pi2, transport: {{type: ble, address: 'AA:BB:CC:DD:EE:FF'}}}}
- {{id: t-2, kind: thermometer, room: x, agent: pi, child: c1, transport: {{type: ble, address: 'AA:BB:CC:DD:EE:00'}}}}
"""
    )
    with pytest.raises(KitError) as exc:
        load_kit(path)
    assert [line.removeprefix(f"{path}: ") for line in str(exc.value).splitlines()] == [
        "device \"mat-03\" (line 9): transport.port: serial port '/dev/../dev/ttyUSB0' of agent 'pi' is already "
        "device 'mat-01''s; one device per port (see line 7)",
        f"device \"mat-05\" (line 11): transport.port: serial port '{tmp_path}/ttys/a' of agent 'pi' is already "
        "device 'mat-04''s; one device per port (see line 10)",
        "device \"t-2\" (line 13): transport.address: Bluetooth address AA:BB:CC:DD:EE:FF is already device "
        "'t-1''s; one device per address (see line 12)",
        "device \"t-2\" (line 14): id: 't-2' is used twice; ids must be unique (see line 13)",
        "device \"t-2\" (line 14): room: 'x' is not a room id defined in this kit (known: r)",
    ]


def test_time_zones_that_made_zoneinfo_raise_other_errors(tmp_path: Path) -> None:
    path = tmp_path / "kit.yaml"
    for zone in ("Asia", "x" * 300, "../etc/passwd"):  # IsADirectoryError, OSError, ValueError
        path.write_text(HEAD + f"timezone: '{zone}'\n")
        with pytest.raises(KitError, match=r"timezone \(line 5\): '.*' is not an IANA time zone"):
            load_kit(path)
