"""The rooms view: the kit's rooms and children joined with the live state (pure; ``now_ms`` is
passed in so ages are computed from the injected clock), and the staff room page's context."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import BaseModel

from dashboard.i18n import Lang, catalogue
from dashboard.live.link import LiveLink
from dashboard.live.state import LiveState
from dashboard.pages import page_context
from nurserywatch.contract import AssignmentSource, Position, SessionState
from nurserywatch.kit import CHILD_DEVICES, AgeBand, DeviceKind


class PostureView(BaseModel):
    device: str
    position: Position
    ts: int
    age_s: float


class BreathingView(BaseModel):
    device: str
    rate_bpm: float | None
    present: bool | None
    ts: int
    age_s: float


class DeviceView(BaseModel):
    id: str
    kind: DeviceKind
    online: bool | None
    battery_pct: float | None
    status_ts: int | None


class AssignableView(BaseModel):
    """A device of the room that watches a child, with the child it watches today."""

    id: str
    kind: DeviceKind
    child: str | None
    #: ``kit``: the kit file's binding; ``staff``: assigned for today; None: the gateway has not said yet.
    source: AssignmentSource | None
    by: str | None


class ChildView(BaseModel):
    id: str
    #: From the kit only; the dashboard knows no other name.
    nickname: str | None
    age_band: AgeBand
    posture: PostureView | None
    breathing: BreathingView | None = None
    devices: list[DeviceView]
    active_alerts: list[str]


class RoomView(BaseModel):
    id: str
    name: str
    children: list[ChildView]
    #: The room's nap session as the gateway retains it; None until it has said.
    session: SessionState | None = None
    assignable: list[AssignableView] = []


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
            devices = [d for d in kit.devices if state.child_of(d.id) == child.id]
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
                    breathing=max(
                        (
                            BreathingView(device=d.id, rate_bpm=b.rate_bpm, present=b.present, ts=b.ts,
                                          age_s=max(0, now_ms - b.ts) / 1000)
                            for d in devices
                            if (b := state.breathing.get(d.id)) is not None
                        ),
                        key=lambda b: b.ts,
                        default=None,
                    ),  # fmt: skip
                    devices=[_device_view(state, d.id, d.kind) for d in devices],
                    active_alerts=active_by_child.get(child.id, []),
                )
            )
        assignable = [
            AssignableView(
                id=d.id,
                kind=d.kind,
                child=state.child_of(d.id),
                source=a.source if (a := state.assignments.get(d.id)) is not None else None,
                by=a.by if a is not None else None,
            )
            for d in kit.devices
            if d.room == room.id and d.kind in CHILD_DEVICES
        ]
        rooms.append(
            RoomView(
                id=room.id, name=room.name, children=children, session=state.sessions.get(room.id),
                assignable=assignable,
            )
        )  # fmt: skip
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


# ---------------------------------------------------------------- the room page (GET /)

#: The page calls monitoring lost after this long without the live feed or the gateway's heartbeat.
WATCHDOG_S = 5
#: A reading older than this shows as "no data" (the sensor-lost rule fires at 10 s, docs/gateway.md).
STALE_S = 10
#: Battery below this shows as a warning (the battery-low rule's default).
BATTERY_LOW_PCT = 15
ALL_ROOMS = "all"


def room_page_context(request: Request, link: LiveLink, lang: Lang, room: str | None) -> dict[str, Any]:
    """The staff room view's template context: one room (``?room=id``; a tablet) or every room
    (``?room=all`` or none; a wide screen), and the boot data of static/app.js."""
    kit = link.state.kit
    rooms = rooms_view(link.state, link.clock.now_ms())
    selected = room if room is not None and kit.room(room) is not None else ALL_ROOMS
    shown = rooms if selected == ALL_ROOMS else [r for r in rooms if r.id == selected]
    boot: dict[str, Any] = {
        "lang": lang,
        "t": catalogue(lang),
        "rooms": {r.id: r.name for r in kit.rooms},
        "children": {c.id: c.nickname for c in kit.children},
        "child_room": {c.id: c.room for c in kit.children},
        "devices": {d.id: {"kind": d.kind.value, "room": d.room, "child": d.child} for d in kit.devices},
        "shown_rooms": [r.id for r in shown],
        "watchdog_s": WATCHDOG_S,
        "stale_s": STALE_S,
        "battery_low_pct": BATTERY_LOW_PCT,
    }
    selector = [{"id": ALL_ROOMS, "name": catalogue(lang)["staff.all_rooms"], "current": selected == ALL_ROOMS}]
    selector += [{"id": r.id, "name": r.name, "current": r.id == selected} for r in kit.rooms]
    return page_context(request, kit, lang, "nav.room", rooms=shown, boot=boot, room_selector=selector)
