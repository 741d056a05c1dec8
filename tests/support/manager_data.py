"""The manager pages' test site (``mgr``) and data: a kit file, three days of CO2 readings and the numpy
reference for their trend buckets, and a signed-in user by dependency override."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI

from dashboard.auth.deps import require_admin, require_manager
from dashboard.auth.models import AuthPolicy, Role, User
from gateway.config import RulesConfig
from gateway.db.store import Store
from nurserywatch.contract import (
    AirReading,
    Alert,
    AlertState,
    Severity,
    Stream,
)
from nurserywatch.kit import Kit

# 2026-01-01 00:00 JST = 2025-12-31 15:00 UTC; "now" is two days later, 12:00 JST.
DAY = 24 * 3600_000


JST_MIDNIGHT = 1_767_193_200_000


NOW = JST_MIDNIGHT + 2 * DAY + 12 * 3600_000


KIT_YAML = """\
site: mgr
name: ひまわり保育園
rooms:
  - {id: hiyoko, name: ひよこ組}
  - {id: risu, name: りす組}
agents:
  - {id: pi-1}
  - {id: pi-2}
devices:
  - {id: clip-01, kind: posture_clip, room: hiyoko, agent: pi-1, child: c001,
     transport: {type: serial, port: /dev/ttyUSB0}}
  - {id: co2-01, kind: mhz19b, room: hiyoko, agent: pi-1, transport: {type: serial, port: /dev/ttyAMA0}}
  - {id: co2-02, kind: mhz19b, room: hiyoko, agent: pi-1, transport: {type: serial, port: /dev/ttyAMA1}}
  - {id: co2-03, kind: mhz19b, room: risu, agent: pi-2, transport: {type: serial, port: /dev/ttyAMA0}}
  - {id: pm-01, kind: pms5003, room: hiyoko, agent: pi-1, transport: {type: serial, port: /dev/ttyAMA2}}
children:
  - {id: c001, nickname: はると, age_band: "0", room: hiyoko}
"""


#: Cheap password hashing: no test here signs in (the role dependencies are overridden).
FAST_AUTH = AuthPolicy(argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1)


RULES = RulesConfig.model_validate({"rooms": {"hiyoko": {"co2": {"warning_ppm": 800, "critical_ppm": 1200}}}})


def load_test_kit(tmp_path: Path) -> tuple[Kit, Path]:
    from nurserywatch.kit import load_kit

    path = tmp_path / "kit.yaml"
    path.write_text(KIT_YAML)
    return load_kit(path), path


def co2_readings(seed: int = 7) -> list[tuple[str, int, float]]:
    """Three days of CO2 every 97 s per sensor (not a bucket divisor: buckets get uneven counts)."""
    rng = np.random.default_rng(seed)
    out = []
    for device in ("co2-01", "co2-02", "co2-03"):
        for i, ts in enumerate(range(NOW - 3 * DAY, NOW + 1, 97_000)):
            out.append((device, ts, round(float(600 + 400 * np.sin(i / 50) + rng.normal(0, 60)), 1)))
    return out


def store_co2(db: Path, readings: list[tuple[str, int, float]]) -> None:
    with Store(db) as store:
        for seq, (device, ts, value) in enumerate(readings):
            store.add_reading(device, Stream.AIR, AirReading(ts=ts, seq=seq, co2_ppm=value), ts)


def alert(alert_id: str, started: int, **changes: Any) -> Alert:
    fields: dict[str, Any] = {
        "id": alert_id, "rule": "prone", "severity": Severity.CRITICAL, "state": AlertState.RESOLVED,
        "device": "clip-01", "room": "hiyoko", "child": "c001", "started_ts": started, "updated_ts": started + 60_000,
        "resolved_ts": started + 60_000, "message": "うつぶせ寝", "message_en": "Face down",
    }  # fmt: skip
    fields.update(changes)
    return Alert.model_validate(fields)


def as_user(app: FastAPI, role: Role) -> None:
    user = User("someone", role, "")
    app.dependency_overrides[require_manager] = lambda: user
    app.dependency_overrides[require_admin] = lambda: user


def numpy_buckets(readings: list[tuple[str, int, float]], devices: set[str], start: int, end: int, bucket: int
                  ) -> list[tuple[int, float, float, float]]:  # fmt: skip
    ts = np.array([t for d, t, _ in readings if d in devices and start <= t < end], dtype=np.int64)
    v = np.array([x for d, t, x in readings if d in devices and start <= t < end])
    keys = ts // bucket * bucket
    return [(int(k), float(v[keys == k].mean()), float(v[keys == k].min()), float(v[keys == k].max()))
            for k in np.unique(keys)]  # fmt: skip
