"""The tests' one kit factory: a Kit from a few keyword options, and the same written as a kit file.

``make_kit()`` alone is the smallest useful site: one room (hiyoko), one agent (pi-1), one child
(c001, age band 0) watched by one posture clip (clip-01). Every option widens it:

- ``rooms``: room id -> name;
- ``agents``: agent ids;
- ``children``: child id -> its age band, or -> its fields (age_band, room, nickname);
- ``devices``: device id -> the child a posture clip watches (None: a spare clip), or -> the
  device's fields (kind, child, room, agent, transport).

Children and devices are in the first room, devices on the first agent, and a device without a
transport gets one that fits its kind (BLE for thermometers and BLE air sensors, serial otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from nurserywatch.kit import Kit, load_kit

ROOM = "hiyoko"
ONE_ROOM: Mapping[str, str] = MappingProxyType({ROOM: "ひよこ組"})
ONE_CHILD: Mapping[str, str | Mapping[str, Any]] = MappingProxyType({"c001": "0"})
ONE_CLIP: Mapping[str, str | Mapping[str, Any] | None] = MappingProxyType({"clip-01": "c001"})
BLE_KINDS = ("thermometer", "air_ble")


def make_kit(
    site: str = "test",
    *,
    name: str = "テスト保育園",
    rooms: Mapping[str, str] = ONE_ROOM,
    agents: Sequence[str] = ("pi-1",),
    children: Mapping[str, str | Mapping[str, Any]] = ONE_CHILD,
    devices: Mapping[str, str | Mapping[str, Any] | None] = ONE_CLIP,
) -> Kit:
    first_room = next(iter(rooms))
    return Kit.model_validate(
        {
            "site": site,
            "name": name,
            "rooms": [{"id": r, "name": n} for r, n in rooms.items()],
            "agents": [{"id": a} for a in agents],
            "children": [
                {"id": c, "room": first_room, **({"age_band": spec} if isinstance(spec, str) else spec)}
                for c, spec in children.items()
            ],
            "devices": [_device(i, d, spec, first_room, agents[0]) for i, (d, spec) in enumerate(devices.items())],
        }
    )


def _device(index: int, device: str, spec: str | Mapping[str, Any] | None, room: str, agent: str) -> dict[str, Any]:
    fields: dict[str, Any] = {"kind": "posture_clip", "room": room, "agent": agent}
    fields |= {"child": spec} if isinstance(spec, str) else dict(spec or {})
    if "transport" not in fields:
        fields["transport"] = (
            {"type": "ble", "address": f"AA:BB:CC:DD:EE:{index:02X}"}
            if fields["kind"] in BLE_KINDS
            else {"type": "serial", "port": f"/dev/ttyT{index}"}
        )
    return {"id": device, **fields}


def write_kit(
    tmp_path: Path,
    site: str = "testsite",
    devices: Sequence[str] = ("clip-01",),
    *,
    kind: str = "posture_clip",
    name: str = "test nursery",
    agent_extra: str = "",
) -> Kit:
    """A kit file in ``tmp_path`` with serial ``devices`` of one ``kind`` on ports under
    ``tmp_path/ports`` (relative paths, resolved against the file by ``load_kit``), loaded back.
    ``agent_extra``: more YAML fields of the agent pi-1 (e.g. its spool)."""
    lines = [
        f"site: {site}",
        f"name: {name}",
        "rooms: [{id: room1, name: Room 1}]",
        f"agents: [{{id: pi-1{', ' + agent_extra if agent_extra else ''}}}]",
        "devices:",
        *(
            f"  - {{id: {d}, kind: {kind}, room: room1, agent: pi-1, transport: {{type: serial, port: ports/{d}}}}}"
            for d in devices
        ),
    ]
    path = tmp_path / "kit.yaml"
    path.write_text("\n".join(lines) + "\n")
    return load_kit(path)


def mat_kit(tmp_path: Path, *mats: str, site: str = "testsite") -> Kit:
    """``write_kit`` with serial nap mats."""
    return write_kit(tmp_path, site, mats, kind="nap_mat")
