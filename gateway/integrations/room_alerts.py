"""A room's open alerts summed up (``RoomAlerts``, retained on ``room_alerts/{room}``), from the retained
``alert/{id}`` messages the gateway publishes. Pure: alerts in, summaries that changed out; the bridge
(gateway/integrations/home_assistant_bridge.py) publishes them. Home Assistant shows the summary as
the room's ``problem`` binary sensor: one state topic per entity, so it cannot add up alerts itself."""

from __future__ import annotations

from dataclasses import dataclass

from nurserywatch.contract import Alert, AlertState, RoomAlerts, Severity
from nurserywatch.kit import Kit

_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


@dataclass(frozen=True, slots=True)
class _Key:
    """What a summary says; ``updated_ts`` changes only when this does."""

    problem: bool
    active: int
    unacknowledged: int
    severity: Severity | None


class RoomAlertBook:
    """The site's open alerts by id, and the last summary handed out per kit room."""

    def __init__(self, kit: Kit) -> None:
        self._kit = kit
        self._alerts: dict[str, tuple[str, Alert]] = {}  # alert id → (room, alert)
        self._sent: dict[str, tuple[_Key, RoomAlerts]] = {}

    def room_of(self, alert: Alert) -> str | None:
        if alert.room is not None:
            return alert.room
        device = self._kit.device(alert.device) if alert.device is not None else None
        return device.room if device is not None else None

    def apply(self, alert_id: str, alert: Alert | None) -> str | None:
        """Take ``alert/{alert_id}``'s new state (None: the retained alert was cleared, it is closed).
        Returns why it was not taken (a counter key), or None."""
        if alert is None:
            self._alerts.pop(alert_id, None)
            return None
        room = self.room_of(alert)
        if room is None:
            self._alerts.pop(alert_id, None)
            return "unknown_device" if alert.device is not None else "no_room"
        if self._kit.room(room) is None:
            self._alerts.pop(alert_id, None)
            return "unknown_room"
        if not alert.retained:  # resolved and acknowledged: closed
            self._alerts.pop(alert_id, None)
        else:
            self._alerts[alert_id] = (room, alert)
        return None

    def _key(self, room: str) -> _Key:
        alerts = [a for r, a in self._alerts.values() if r == room]
        active = [a for a in alerts if a.state is AlertState.ACTIVE]
        severity = max((a.severity for a in active), key=_RANK.__getitem__, default=None)
        unacknowledged = sum(1 for a in alerts if not a.acknowledged)
        return _Key(bool(active), len(active), unacknowledged, severity)

    def changes(self, now_ms: int) -> list[RoomAlerts]:
        """The summaries that differ from the ones last handed out (all rooms the first time), in kit order."""
        out = []
        for room in self._kit.rooms:
            key = self._key(room.id)
            sent = self._sent.get(room.id)
            if sent is None or sent[0] != key:
                summary = RoomAlerts(
                    room=room.id, problem=key.problem, active=key.active, unacknowledged=key.unacknowledged,
                    severity=key.severity, updated_ts=now_ms,
                )
                self._sent[room.id] = (key, summary)
                out.append(summary)
        return out

    def handed_out(self) -> list[RoomAlerts]:
        """The summaries last handed out by ``changes``, in kit order (to publish them again)."""
        return [self._sent[room.id][1] for room in self._kit.rooms if room.id in self._sent]
