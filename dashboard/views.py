"""The rooms view: the kit's rooms and children joined with the live state. Pure; ``now_ms`` is
passed in so ages are computed from the injected clock."""

from __future__ import annotations

from pydantic import BaseModel

from dashboard.live_state import LiveState
from nurserywatch.contract import Position
from nurserywatch.kit import AgeBand, DeviceKind


class PostureView(BaseModel):
    device: str
    position: Position
    ts: int
    age_s: float


class DeviceView(BaseModel):
    id: str
    kind: DeviceKind
    online: bool | None
    battery_pct: float | None
    status_ts: int | None


class ChildView(BaseModel):
    id: str
    #: From the kit only; the dashboard knows no other name.
    nickname: str | None
    age_band: AgeBand
    posture: PostureView | None
    devices: list[DeviceView]
    active_alerts: list[str]


class RoomView(BaseModel):
    id: str
    name: str
    children: list[ChildView]


def rooms_view(state: LiveState, now_ms: int) -> list[RoomView]:
    kit = state.kit
    active_by_child: dict[str, list[str]] = {}
    for alert in state.alerts_list("active"):
        if alert.child is not None:
            active_by_child.setdefault(alert.child, []).append(alert.id)
    rooms = []
    for room in kit.rooms:
        children = []
        for child in (c for c in kit.children if c.room == room.id):
            devices = [d for d in kit.devices if d.child == child.id]
            # The newest posture from any of the child's devices (normally their one clip).
            postures = [
                PostureView(device=d.id, position=r.position, ts=r.ts, age_s=max(0, now_ms - r.ts) / 1000)
                for d in devices
                if (r := state.postures.get(d.id)) is not None
            ]
            children.append(
                ChildView(
                    id=child.id,
                    nickname=child.nickname,
                    age_band=child.age_band,
                    posture=max(postures, key=lambda p: p.ts, default=None),
                    devices=[_device_view(state, d.id, d.kind) for d in devices],
                    active_alerts=active_by_child.get(child.id, []),
                )
            )
        rooms.append(RoomView(id=room.id, name=room.name, children=children))
    return rooms


def _device_view(state: LiveState, device: str, kind: DeviceKind) -> DeviceView:
    status = state.device_status.get(device)
    return DeviceView(
        id=device,
        kind=kind,
        online=status.online if status else None,
        battery_pct=status.battery_pct if status else None,
        status_ts=status.ts if status else None,
    )
