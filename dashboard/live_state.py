"""What the dashboard knows right now, rebuilt from MQTT messages. Pure: topic and payload bytes in,
change events out; no I/O, no clock.

Mirrors (DESIGN.md §5):
- ``alert/+`` (retained): the current alert list. An empty retained payload clears the topic, so the
  alert has left the list; a resolved *and* acknowledged alert has left it too.
- ``reading/+/posture``: the latest posture per device.
- ``status/+`` and ``edge/+`` (retained): device and edge-agent status.

Every payload is validated with the contract; anything that does not fit is counted by reason in
``rejected`` and logged in one line, and the state stays as it was.
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
    ContractError,
    DeviceStatus,
    EdgeStatus,
    PostureReading,
    Stream,
    TopicKind,
    decode,
    parse_reading,
    parse_topic,
)
from nurserywatch.kit import Kit

log = logging.getLogger(__name__)

AlertFilter = Literal["active", "resolved", "all"]


class EventKind(StrEnum):
    """The ``event:`` names of the SSE stream (docs/dashboard.md)."""

    SNAPSHOT = "snapshot"
    ALERT = "alert"
    ALERT_REMOVED = "alert_removed"
    POSTURE = "posture"
    DEVICE_STATUS = "device_status"
    EDGE_STATUS = "edge_status"
    CONNECTION = "connection"


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
        #: reason -> number of messages rejected for it, since start.
        self.rejected: Counter[str] = Counter()
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

    def apply(self, topic: str, payload: bytes) -> list[Event]:
        """Fold one MQTT message into the state; returns what changed (often nothing)."""
        try:
            return self._apply(topic, payload)
        except ContractError as exc:
            self._reject(exc.reason, topic, exc.detail)
            return []

    def _apply(self, topic: str, payload: bytes) -> list[Event]:
        t = parse_topic(topic)
        if t.site != self.site:
            raise ContractError("wrong_site", f"site {t.site!r}, this dashboard shows {self.site!r}")
        if t.kind is TopicKind.ALERT and t.alert_id is not None:
            return self._apply_alert(t.alert_id, payload)
        if t.kind is TopicKind.READING and t.device is not None and t.stream is Stream.POSTURE:
            reading = parse_reading(Stream.POSTURE, payload)
            assert isinstance(reading, PostureReading)
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
            "child": d.child if d is not None else None,
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
            },
        )
