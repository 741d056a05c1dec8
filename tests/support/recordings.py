"""The respiration recordings shipped with firmware_sim, as test input."""

from __future__ import annotations

from pathlib import Path

from firmware_sim.models.resp_belt import (
    recording_path,
)


def resp_belt_file(name: str = "12_20231119.csv.gz") -> Path:
    """A recording shipped in firmware_sim/recordings/resp_belt (the repository holds them)."""
    path = recording_path(name)
    assert path.is_file(), f"recording {path} missing from the repository"
    return path
