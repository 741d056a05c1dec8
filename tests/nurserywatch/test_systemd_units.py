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
        "nurserywatch-home-assistant.service",
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


def all_values(unit: Path, key: str) -> list[str]:
    return [line.partition("=")[2] for line in unit.read_text().splitlines() if line.startswith(f"{key}=")]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_units_tell_systemd_they_are_ready_and_alive(unit: Path) -> None:
    """Type=notify with a watchdog (pinged from each part's main loop: tests/nurserywatch/
    test_systemd_notify.py), and an explicit descriptor limit."""
    d = directives(unit)
    assert d["Type"] == "notify" and int(d["WatchdogSec"]) >= 10
    assert d.get("NotifyAccess", "main") == "main", "the notifications come from the main process"
    assert int(d["LimitNOFILE"]) >= 4096


def test_dashboard_descriptor_limit_covers_its_connection_cap() -> None:
    """The dashboard caps its connections at its descriptor limit less a reserve (dashboard/http_server.py):
    the unit's limit must leave the full cap, far above the 1,100 idle connections of issue 13."""
    from dashboard.http_server import ServerLimits

    limits = ServerLimits()
    nofile = int(directives(ROOT / "configs" / "nurserywatch-dashboard.service")["LimitNOFILE"])
    assert nofile - limits.reserve_fds >= limits.max_connections


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_the_broker_url_stays_off_the_command_line(unit: Path) -> None:
    """The broker URL (with its password, or its credentials file) comes from the part's own root-only
    environment file as NURSERYWATCH_BROKER, which the command reads itself; never through ExecStart."""
    part = unit.name.removeprefix("nurserywatch-").removesuffix(".service")
    exec_start = directives(unit)["ExecStart"]
    assert "--broker" not in exec_start and "BROKER" not in exec_start and "://" not in exec_start
    assert f"/etc/nurserywatch/{part}.env" in all_values(unit, "EnvironmentFile")
    help_text = subprocess.run(
        [sys.executable, "-m", "nurserywatch", part, "--help"], capture_output=True, text=True, check=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    ).stdout
    assert "NURSERYWATCH_BROKER" in help_text
