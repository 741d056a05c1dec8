"""DESIGN.md §3 dependency rules for edge and firmware_sim, checked on the source (ast)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IO_LIBS = {"serial", "aiomqtt", "paho", "bleak", "httpx", "sqlite3", "socket", "asyncio"}
PURE = [
    "edge/nmea.py",
    "edge/posture.py",
    "edge/clip_channel.py",
    "edge/reject_log.py",
    "edge/clock_sanity.py",
    "firmware_sim/nmea.py",
    "firmware_sim/clip.py",
]


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", sorted((ROOT / "firmware_sim").glob("*.py")), ids=lambda p: p.name)
def test_firmware_sim_writes_bytes_on_its_own(path: Path) -> None:
    assert not imported_roots(path) & {"edge", "gateway", "dashboard"}


@pytest.mark.parametrize("path", sorted((ROOT / "edge").glob("*.py")), ids=lambda p: p.name)
def test_edge_runs_alone_on_a_pi(path: Path) -> None:
    assert not imported_roots(path) & {"gateway", "dashboard", "firmware_sim"}


@pytest.mark.parametrize("name", PURE)
def test_decoders_and_models_are_sans_io(name: str) -> None:
    assert not imported_roots(ROOT / name) & (IO_LIBS | {"time"}), "pure: no I/O library, no wall clock"
