"""The systemd units in configs/: valid for systemd (systemd-analyze verify), and every option they
pass exists on the subcommand they run."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "configs").glob("nurserywatch-*.service"))
INSTALLED = "/opt/nurserywatch/bin/nurserywatch"


def directives(unit: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def test_there_is_a_unit_per_long_running_part() -> None:
    assert [u.name for u in UNITS] == [
        "nurserywatch-dashboard.service",
        "nurserywatch-edge.service",
        "nurserywatch-gateway.service",
    ]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_accepts_the_unit(unit: Path, tmp_path: Path) -> None:
    nurserywatch = Path(sys.executable).with_name("nurserywatch")
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace(INSTALLED, str(nurserywatch)))
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze (package systemd) is needed to check the units"
    result = subprocess.run([analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True)
    assert result.stdout + result.stderr == ""


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_the_command_line_matches_the_cli(unit: Path) -> None:
    exec_start = directives(unit)["ExecStart"].split()
    assert exec_start[0] == INSTALLED
    subcommand = exec_start[1]
    options = [t for t in exec_start[2:] if t.startswith("--")]
    help_text = subprocess.run(
        [sys.executable, "-m", "nurserywatch", subcommand, "--help"], capture_output=True, text=True, check=True
    ).stdout
    for option in options:
        assert re.search(rf"{option}\b", help_text), f"{unit.name}: {subcommand} has no {option}"


def test_edge_unit_runs_without_network_or_time_sync_and_can_read_devices() -> None:
    d = directives(ROOT / "configs" / "nurserywatch-edge.service")
    assert "time-sync" not in d.get("After", "") and "network-online" not in d.get("After", "")
    assert d["Restart"] == "always" and d["StartLimitIntervalSec"] == "0"
    assert d["User"] == "nurserywatch" and set(d["SupplementaryGroups"].split()) == {"dialout", "bluetooth"}
    assert d["StateDirectory"] == "nurserywatch", "a writable place for the spool"
    assert "PrivateDevices" not in d, "serial ports must stay visible"
