"""Staff commands from the room view: start / stop a room's nap session, and put a child on a mat
(or clip) for today. Both become contract commands on MQTT (``command/session``, ``command/assign``);
the gateway decides and its answer comes back retained (``session/{room}``, ``assignment/{device}``)
and live on the page. The dashboard checks what it can know first (the kit, the alerts it holds), so
staff get a clear refusal instead of a command the gateway would only count and drop.

``by`` is the signed-in user's name (a body's ``by`` is accepted for old pages and ignored)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from dashboard.auth.deps import StaffDep, audit
from dashboard.deps import ApiError, LinkDep
from dashboard.live.link import CommandNotSent
from nurserywatch.contract import AlertState, AssignCommand, Ident, SessionAction, SessionCommand
from nurserywatch.kit import CHILD_DEVICES

router = APIRouter()

StaffName = Annotated[str, Field(min_length=1, max_length=128)]


class SessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    action: SessionAction
    by: StaffName = "staff"


class AssignRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    device: Ident
    #: null: the device watches nobody today.
    child: Ident | None
    by: StaffName = "staff"


class CommandSent(BaseModel):
    status: str = "sent"


@router.post("/api/rooms/{room}/session", status_code=202)
async def session_command(
    request: Request, room: str, body: SessionRequest, link: LinkDep, user: StaffDep
) -> CommandSent:
    if link.state.kit.room(room) is None:
        raise ApiError(404, "unknown_room", f"room {room!r} is not in the kit")
    try:
        # The signed-in user's name, never the body's `by` (kept for old pages, ignored).
        command_id = await link.session_command(SessionCommand(room=room, action=body.action, by=user.shown_name))
    except CommandNotSent as exc:
        raise ApiError(503, exc.code, str(exc)) from None
    audit(request, user, f"session.{body.action}", room, f"command {command_id}")
    return CommandSent()


@router.post("/api/assignments", status_code=202)
async def assign(request: Request, body: AssignRequest, link: LinkDep, user: StaffDep) -> CommandSent:
    state = link.state
    kit = state.kit
    device = kit.device(body.device)
    if device is None:
        raise ApiError(404, "unknown_device", f"device {body.device!r} is not in the kit")
    if device.kind not in CHILD_DEVICES:
        raise ApiError(422, "not_assignable", f"a {device.kind.value} watches a room, not a child")
    touched = {device.id}
    if body.child is not None:
        child = kit.child(body.child)
        if child is None:
            raise ApiError(404, "unknown_child", f"child {body.child!r} is not in the kit")
        if child.room != device.room:
            raise ApiError(422, "wrong_room", f"child {body.child!r} is in another room than {device.id!r}")
        # The child moves: the device of the same kind it is on now is touched too.
        touched |= {
            d.id for d in kit.devices if d.kind is device.kind and state.child_of(d.id) == body.child
        }
    busy = sorted(
        a.device for a in state.alerts.values() if a.device in touched and a.state is AlertState.ACTIVE
    )
    if busy:
        raise ApiError(409, "device_alerting", f"{', '.join(busy)}: an alert is active; it must end first")
    try:
        command_id = await link.assign_command(AssignCommand(device=device.id, child=body.child, by=user.shown_name))
    except CommandNotSent as exc:
        raise ApiError(503, exc.code, str(exc)) from None
    audit(request, user, "assignment", device.id, f"child={body.child or '-'} command {command_id}")
    return CommandSent()
