"""What the dashboard knows right now, rebuilt from MQTT messages. Pure: topic and payload bytes in,
change events out; no I/O, no clock.

Mirrors (docs/contract.md):
- ``alert/+`` (retained): the current alert list. An empty retained payload clears the topic, so the
  alert has left the list; a resolved *and* acknowledged alert has left it too.
- ``reading/+/posture``: the latest posture per device.
- ``status/+`` and ``edge/+`` (retained): device and edge-agent status.
- ``reading/+/breathing``: the latest breathing reading per mat; a change event at most about once a
  second per mat (by message time), or at once when presence or "rate known" changes.
- ``gateway`` (retained heartbeat): the gateway's status, and when the last *live* heartbeat came
  (``received_ms``, passed in: a retained copy is old news and proves nothing).
- ``session/+`` and ``assignment/+`` (retained): each room's nap session, each device's child today.

Every payload is validated with the contract; anything that does not fit is counted by reason in
``rejected`` and logged in one line, and the state stays as it was. An empty payload on a
retained-state topic (``contract.is_cleared``: MQTT deleting the retained message) is counted in
``cleared``, not rejected: an alert leaves the list; any other state stays as last known.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from nurserywatch.contract import (
    Alert,
    AlertState,
    BreathingReading,
    ContractError,
    DeviceAssignment,
    DeviceStatus,
    EdgeStatus,
    GatewayStatus,
    PostureReading,
    SessionState,
    Stream,
    TopicKind,
    decode,
    is_cleared,
    parse_reading,
    parse_topic,
    time_ahead,
)
from nurserywatch.kit import Kit

log = logging.getLogger(__name__)

AlertFilter = Literal["active", "resolved", "all"]
#: At most one breathing event per mat per this much message time (the page shows a rate, not a wave).
BREATHING_EVENT_MS = 1000


class EventKind(StrEnum):
    """The ``event:`` names of the SSE stream (docs/dashboard.md)."""

    SNAPSHOT = "snapshot"
    ALERT = "alert"
    ALERT_REMOVED = "alert_removed"
    POSTURE = "posture"
    DEVICE_STATUS = "device_status"
    EDGE_STATUS = "edge_status"
    CONNECTION = "connection"
    BREATHING = "breathing"
    GATEWAY = "gateway"
    SESSION = "session"
    ASSIGNMENT = "assignment"
    #: Every second from the server (dashboard/live/sse.py): server time, broker link, gateway heartbeat age.
    TICK = "tick"


@dataclass(frozen=True, slots=True)
class Event:
    """One change, sent to every live client. ``data`` is JSON-ready."""

    kind: EventKind
    data: dict[str, Any]


class LiveState:
    def __init__(self, kit: Kit) -> None:
        self.kit = kit
        self.site = kit.site
        self.mqtt_connected = False
        self.alerts: dict[str, Alert] = {}
        self.postures: dict[str, PostureReading] = {}
        self.device_status: dict[str, DeviceStatus] = {}
        self.edge_status: dict[str, EdgeStatus] = {}
        self.breathing: dict[str, BreathingReading] = {}
        self._breathing_sent: dict[str, tuple[int, bool | None, bool]] = {}
        self.gateway: GatewayStatus | None = None
        #: Dashboard clock when the last live (not retained) heartbeat arrived; None: none yet.
        self.gateway_seen_ms: int | None = None
        self.sessions: dict[str, SessionState] = {}
        self.assignments: dict[str, DeviceAssignment] = {}
        #: reason -> number of messages rejected for it, since start.
        self.rejected: Counter[str] = Counter()
        #: topic kind -> retained messages deleted (empty payloads), since start: not rejections.
        self.cleared: Counter[str] = Counter()
        # Alerts held from before a reconnect that the broker has not re-sent yet (see begin_resync).
        self._unconfirmed: set[str] = set()

    # ------------------------------------------------------------ input

    def set_connected(self, connected: bool) -> list[Event]:
        if connected == self.mqtt_connected:
            return []
        self.mqtt_connected = connected
        return [Event(EventKind.CONNECTION, {"mqtt_connected": connected})]

    def begin_resync(self) -> None:
        """Call on (re)subscribing. An alert cleared while we were away sends nothing back (its
        retained message is simply gone), so every alert we hold must be confirmed by a message
        before :meth:`end_resync`, or it is dropped. Until then it stays on screen: showing a stale
        alert for a moment is safer than hiding a real one."""
        self._unconfirmed = set(self.alerts)

    def end_resync(self) -> list[Event]:
        """Drop the alerts the broker did not re-send since :meth:`begin_resync`."""
        gone, self._unconfirmed = self._unconfirmed, set()
        events = [e for alert_id in sorted(gone) for e in self._remove_alert(alert_id)]
        if events:
            log.info("%d alert(s) no longer on the broker after reconnecting; removed", len(events))
        return events

    def apply(self, topic: str, payload: bytes, received_ms: int | None = None, retained: bool = False) -> list[Event]:
        """Fold one MQTT message into the state; returns what changed (often nothing). ``received_ms``
        (dashboard clock) and ``retained`` matter for the gateway heartbeat only."""
        try:
            return self._apply(topic, payload, received_ms, retained)
        except ContractError as exc:
            self._reject(exc.reason, topic, exc.detail)
            return []

    def _apply(self, topic: str, payload: bytes, received_ms: int | None = None, retained: bool = False) -> list[Event]:
        t = parse_topic(topic)
        if t.site != self.site:
            raise ContractError("wrong_site", f"site {t.site!r}, this dashboard shows {self.site!r}")
        if is_cleared(t.kind, payload):
            self.cleared[t.kind.value] += 1
            if t.kind is TopicKind.ALERT and t.alert_id is not None:
                return self._apply_alert(t.alert_id, payload)
            return []  # the last known state stands (as in the gateway): nothing to judge
        if t.kind is TopicKind.READING and t.device is not None and t.stream is Stream.BREATHING:
            reading = parse_reading(Stream.BREATHING, payload)
            assert isinstance(reading, BreathingReading)
            _check_not_ahead(reading, received_ms)
            return self._apply_breathing(t.device, reading)
        if t.kind is TopicKind.GATEWAY:
            return self._apply_gateway(decode(GatewayStatus, payload), received_ms, retained)
        if t.kind is TopicKind.SESSION and t.room is not None:
            return self._apply_session(t.room, decode(SessionState, payload))
        if t.kind is TopicKind.ASSIGNMENT and t.device is not None:
            return self._apply_assignment(t.device, decode(DeviceAssignment, payload))
        if t.kind is TopicKind.ALERT and t.alert_id is not None:
            return self._apply_alert(t.alert_id, payload)
        if t.kind is TopicKind.READING and t.device is not None and t.stream is Stream.POSTURE:
            reading = parse_reading(Stream.POSTURE, payload)
            assert isinstance(reading, PostureReading)
            _check_not_ahead(reading, received_ms)
            return self._apply_posture(t.device, reading)
        if t.kind is TopicKind.STATUS and t.device is not None:
            return self._apply_device_status(t.device, decode(DeviceStatus, payload))
        if t.kind is TopicKind.EDGE and t.agent is not None:
            return self._apply_edge_status(t.agent, decode(EdgeStatus, payload))
        raise ContractError("unexpected_topic", f"the dashboard does not follow {topic!r}")

    def _apply_alert(self, alert_id: str, payload: bytes) -> list[Event]:
        self._unconfirmed.discard(alert_id)
        if not payload:  # retained message cleared: the alert has left the list
            return self._remove_alert(alert_id)
        alert = decode(Alert, payload)
        if alert.id != alert_id:
            raise ContractError("id_mismatch", f"payload id {alert.id!r} on the topic of {alert_id!r}")
        old = self.alerts.get(alert_id)
        if old is not None and alert.updated_ts < old.updated_ts:
            # A late redelivery must not undo a newer state (e.g. bring back "unacknowledged").
            return []
        if alert.state is AlertState.RESOLVED and alert.acknowledged:
            return self._remove_alert(alert_id, final=alert)
        if alert == old:
            return []
        self.alerts[alert_id] = alert
        return [Event(EventKind.ALERT, alert.model_dump(mode="json"))]

    def _remove_alert(self, alert_id: str, final: Alert | None = None) -> list[Event]:
        """``final`` is the alert's last version when known (resolved and acknowledged), so live
        clients see how it ended; None when its retained message was simply cleared."""
        if self.alerts.pop(alert_id, None) is None:
            return []
        return [
            Event(
                EventKind.ALERT_REMOVED,
                {"id": alert_id, "alert": final.model_dump(mode="json") if final is not None else None},
            )
        ]

    def _apply_posture(self, device: str, reading: PostureReading) -> list[Event]:
        self._check_device(device)
        old = self.postures.get(device)
        if old is not None and reading.ts < old.ts:
            return []  # store-and-forward replay of the past: the live view keeps the newest
        self.postures[device] = reading
        return [Event(EventKind.POSTURE, self.posture_data(device, reading))]

    def _apply_device_status(self, device: str, status: DeviceStatus) -> list[Event]:
        self._check_device(device)
        self.device_status[device] = status
        return [Event(EventKind.DEVICE_STATUS, self.device_status_data(device, status))]

    def _apply_edge_status(self, agent: str, status: EdgeStatus) -> list[Event]:
        if agent not in {a.id for a in self.kit.agents}:
            raise ContractError("unknown_agent", f"agent {agent!r} is not in the kit of {self.site!r}")
        self.edge_status[agent] = status
        return [Event(EventKind.EDGE_STATUS, self.edge_status_data(agent, status))]

    def _apply_breathing(self, device: str, reading: BreathingReading) -> list[Event]:
        self._check_device(device)
        old = self.breathing.get(device)
        if old is not None and reading.ts < old.ts:
            return []
        self.breathing[device] = reading
        sent = self._breathing_sent.get(device)
        known = reading.rate_bpm is not None
        if sent is not None and reading.ts - sent[0] < BREATHING_EVENT_MS and (reading.present, known) == sent[1:]:
            return []  # throttled: the next one within a second carries the news
        self._breathing_sent[device] = (reading.ts, reading.present, known)
        return [Event(EventKind.BREATHING, self.breathing_data(device, reading))]

    def _apply_gateway(self, status: GatewayStatus, received_ms: int | None, retained: bool) -> list[Event]:
        old = self.gateway
        self.gateway = status
        if not status.online:
            self.gateway_seen_ms = None
        elif not retained and received_ms is not None:
            self.gateway_seen_ms = received_ms
        if old is not None and old.online == status.online:
            return []
        return [Event(EventKind.GATEWAY, {"online": status.online})]

    def _apply_session(self, room: str, state: SessionState) -> list[Event]:
        if self.kit.room(room) is None or state.room != room:
            raise ContractError("unknown_room", f"room {room!r} is not in the kit of {self.site!r}, or the payload's")
        old = self.sessions.get(room)
        if old is not None and state.updated_ts < old.updated_ts:
            return []
        self.sessions[room] = state
        return [Event(EventKind.SESSION, state.model_dump(mode="json"))]

    def _apply_assignment(self, device: str, state: DeviceAssignment) -> list[Event]:
        self._check_device(device)
        if state.device != device:
            raise ContractError("id_mismatch", f"payload device {state.device!r} on the topic of {device!r}")
        self.assignments[device] = state
        return [Event(EventKind.ASSIGNMENT, state.model_dump(mode="json"))]

    def child_of(self, device: str) -> str | None:
        """The child the device watches today: the gateway's assignment, else the kit's binding."""
        assigned = self.assignments.get(device)
        if assigned is not None:
            return assigned.child
        d = self.kit.device(device)
        return d.child if d is not None else None

    def gateway_age_ms(self, now_ms: int) -> int | None:
        return None if self.gateway_seen_ms is None else max(0, now_ms - self.gateway_seen_ms)

    def tick_data(self, now_ms: int) -> dict[str, Any]:
        """The once-a-second liveness record of the live stream (``tick``)."""
        return {
            "server_ms": now_ms,
            "mqtt_connected": self.mqtt_connected,
            "gateway_online": None if self.gateway is None else self.gateway.online,
            "gateway_age_ms": self.gateway_age_ms(now_ms),
        }

    def breathing_data(self, device: str, reading: BreathingReading) -> dict[str, Any]:
        d = self.kit.device(device)
        return {
            "device": device,
            "child": self.child_of(device),
            "room": d.room if d is not None else None,
            "rate_bpm": reading.rate_bpm,
            "present": reading.present,
            "quality": reading.quality,
            "ts": reading.ts,
        }

    def _check_device(self, device: str) -> None:
        if self.kit.device(device) is None:
            raise ContractError("unknown_device", f"device {device!r} is not in the kit of {self.site!r}")

    def _reject(self, reason: str, topic: str, detail: str) -> None:
        self.rejected[reason] += 1
        log.warning("ignored MQTT message on %s: %s: %s (%d so far)", topic, reason, detail, self.rejected[reason])

    # ------------------------------------------------------------ output

    def alerts_list(self, which: AlertFilter = "all") -> list[Alert]:
        """Current alerts, oldest first."""
        alerts = sorted(self.alerts.values(), key=lambda a: (a.started_ts, a.id))
        if which == "all":
            return alerts
        return [a for a in alerts if a.state.value == which]

    def posture_data(self, device: str, reading: PostureReading) -> dict[str, Any]:
        d = self.kit.device(device)
        return {
            "device": device,
            "child": self.child_of(device),
            "room": d.room if d is not None else None,
            "position": reading.position.value,
            "ts": reading.ts,
        }

    @staticmethod
    def device_status_data(device: str, status: DeviceStatus) -> dict[str, Any]:
        return {"device": device, **status.model_dump(mode="json")}

    @staticmethod
    def edge_status_data(agent: str, status: EdgeStatus) -> dict[str, Any]:
        return {"agent": agent, **status.model_dump(mode="json")}

    def snapshot(self, server_ms: int) -> Event:
        """Everything a newly connected client needs, as lists of the same records the change
        events carry, so the page applies both with the same code."""
        return Event(
            EventKind.SNAPSHOT,
            {
                "server_ms": server_ms,
                "mqtt_connected": self.mqtt_connected,
                "alerts": [a.model_dump(mode="json") for a in self.alerts_list()],
                "postures": [self.posture_data(d, r) for d, r in self.postures.items()],
                "devices": [self.device_status_data(d, s) for d, s in self.device_status.items()],
                "agents": [self.edge_status_data(a, s) for a, s in self.edge_status.items()],
                "breathing": [self.breathing_data(d, r) for d, r in self.breathing.items()],
                "sessions": [s.model_dump(mode="json") for s in self.sessions.values()],
                "assignments": [a.model_dump(mode="json") for a in self.assignments.values()],
                **{k: v for k, v in self.tick_data(server_ms).items() if k != "server_ms"},
            },
        )


def _check_not_ahead(reading: BreathingReading | PostureReading, received_ms: int | None) -> None:
    """A reading from the future would freeze the live view: the newest-ts-wins rule above would
    drop every real one after it."""
    ahead = None if received_ms is None else time_ahead(reading, received_ms)
    if ahead is not None:
        raise ContractError("future", ahead)
