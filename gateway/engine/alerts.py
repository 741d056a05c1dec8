"""Alert lifecycle, pure: raise, update, resolve, acknowledge, re-notify, escalate — and the
transitions they produce.

One *active* alert per (subject, rule): a rule that keeps firing updates the alert it already has
instead of opening another one; and a new alert never starts before the previous one of the same
(subject, rule) resolved (its ``started_ts`` is raised to that resolution), so two never overlap.
Resolving (the condition cleared) and acknowledging (staff saw it) are independent; an alert is
*closed* — dropped from the book, its retained MQTT message cleared — only when it is both resolved
and acknowledged. Every change returns ``Transition``s, which the service appends to the audit log
and publishes.

Notification: an active, unacknowledged alert is re-notified every ``renotify`` interval of its
severity (critical: 30 s) — re-published with ``notify_count`` + 1, ``notified_ts`` and
``updated_ts`` — and escalated (``escalated``, ``escalated_ts``) at the N-th re-notification. The
schedule lives in the alert itself, so a restarted gateway continues it. A firing that *raises*
the severity (warning → critical) is a new situation: the acknowledgement is withdrawn (the
audit log keeps it) and notification starts again.

No I/O and no clock: every timestamp comes from the caller (message time or an injected Clock).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

# Re-exported: the engine's callers take alert changes from here (defined apart for the read side).
from gateway.alert_changes import Change, Transition
from gateway.config import NotifyConfig
from gateway.rules import battery, sensor_lost
from gateway.rules.events import Cleared, Firing, RuleEvent
from nurserywatch.contract import Alert, AlertState, Severity
from nurserywatch.kit import Kit

#: Rules about a device rather than its child: a child's mat and clip each get their own alert.
DEVICE_RULES = frozenset({sensor_lost.RULE, battery.RULE})

_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class UnknownAlertError(KeyError):
    """An acknowledgement for an alert id the book does not hold (never existed, or already closed)."""

    def __init__(self, alert_id: str) -> None:
        super().__init__(alert_id)
        self.alert_id = alert_id

    def __str__(self) -> str:
        return f"no open alert with id {self.alert_id!r}"


@dataclass(frozen=True, slots=True)
class Subject:
    """What an alert is about: the child a device watches, else the device itself."""

    device: str | None
    room: str | None
    child: str | None

    @property
    def key(self) -> str:
        key = self.child or self.device or self.room
        if key is None:
            raise ValueError("a subject needs a child, a device or a room")
        return key

    def key_for(self, rule: str) -> str:
        """The alert key of (subject, rule): the device for device rules, else ``key``."""
        if rule in DEVICE_RULES and self.device is not None:
            return self.device
        return self.key

    @classmethod
    def of_device(cls, kit: Kit, device_id: str) -> Subject:
        dev = kit.device(device_id)
        if dev is None:
            return cls(device=device_id, room=None, child=None)
        return cls(device=dev.id, room=dev.room, child=dev.child)

    @classmethod
    def of_alert(cls, alert: Alert) -> Subject:
        return cls(device=alert.device, room=alert.room, child=alert.child)


def alert_id(rule: str, subject_key: str, started_ts: int) -> str:
    """Deterministic id: the rule name (readable in logs and topics) and a short hash of
    (rule, subject, started_ts). A replay of the same history yields the same ids."""
    digest = hashlib.sha256(f"{rule}\x00{subject_key}\x00{started_ts}".encode()).hexdigest()[:16]
    return f"{rule[:40]}-{digest}"


class AlertBook:
    """The open alerts (active, or resolved but not yet acknowledged)."""

    def __init__(self, alerts: Iterable[Alert] = ()) -> None:
        self._by_id: dict[str, Alert] = {}
        self._active: dict[tuple[str, str], str] = {}  # (subject key, rule) -> alert id
        #: rule -> how many of ``_active`` are of it: every tick clears every quiet rule of every
        #: device, and a rule with nothing active answers that without building a key (issue 17).
        self._active_rules: Counter[str] = Counter()
        #: (subject key, rule) -> when its latest alert resolved: a new one never starts before it.
        self._ended: dict[tuple[str, str], int] = {}
        for alert in sorted(alerts, key=lambda a: a.started_ts):
            if alert.retained:  # closed alerts are history, not state
                self._put(alert)
            if alert.resolved_ts is not None:
                self._note_end(alert, alert.resolved_ts)

    # -- queries

    def get(self, alert_id: str) -> Alert | None:
        return self._by_id.get(alert_id)

    def active(self, rule: str, subject: Subject) -> Alert | None:
        aid = self._active.get((subject.key_for(rule), rule))
        return None if aid is None else self._by_id[aid]

    def open_alerts(self) -> list[Alert]:
        """Every alert that must stay visible (and retained on MQTT), oldest first."""
        return sorted(self._by_id.values(), key=lambda a: (a.started_ts, a.id))

    # -- operations

    def apply(self, event: RuleEvent, subject: Subject, now: int | None = None) -> list[Transition]:
        if isinstance(event, Firing):
            return self.fire(event, subject, now)[1]
        return self.resolve(event, subject)

    def fire(self, event: Firing, subject: Subject, now: int | None = None) -> tuple[Alert, list[Transition]]:
        """The rule's condition holds: raise a new alert, or update the active one.

        A firing that changes nothing visible (same severity and messages) is a no-op: the alert,
        including ``updated_ts`` and ``value``, stays as last published. That keeps MQTT traffic
        and the audit log proportional to changes, not to the sample rate; periodic re-notification
        is ``renotify``. ``now`` is the gateway clock (the notification schedule runs on it);
        without it the event's time is used."""
        notified = event.ts if now is None else now
        current = self.active(event.rule, subject)
        if current is None:
            # One alert per (subject, rule) at a time, in time too: a new one cannot have begun
            # before the last one ended (a rule timing it from older input would overlap the two).
            key = (subject.key_for(event.rule), event.rule)
            started = max(event.started_ts, self._ended.get(key, event.started_ts))
            alert = Alert(
                id=alert_id(event.rule, key[0], started),
                rule=event.rule,
                severity=event.severity,
                state=AlertState.ACTIVE,
                device=subject.device,
                room=subject.room,
                child=subject.child,
                started_ts=started,
                updated_ts=event.ts,
                value=event.value,
                message=event.message,
                message_en=event.message_en,
                notified_ts=notified,
            )
            self._put(alert)
            return alert, [Transition(Change.RAISED, alert, event.ts)]
        if (current.severity, current.message, current.message_en) == (
            event.severity,
            event.message,
            event.message_en,
        ):
            return current, []
        fields: dict[str, object] = {
            "severity": event.severity,
            "message": event.message,
            "message_en": event.message_en,
            "value": event.value,
            "updated_ts": max(current.updated_ts, event.ts),
        }
        if _RANK[event.severity] > _RANK[current.severity]:
            # Worse than what staff acknowledged: they must hear about it again.
            fields.update(acknowledged=False, acknowledged_by=None, acknowledged_ts=None, notified_ts=notified)
        updated = current.model_copy(update=fields)
        self._put(updated)
        return updated, [Transition(Change.UPDATED, updated, event.ts)]

    def resolve(self, event: Cleared, subject: Subject) -> list[Transition]:
        """The condition cleared: the active alert (if any) becomes resolved."""
        if not self._active_rules[event.rule]:
            return []
        current = self.active(event.rule, subject)
        if current is None:
            return []
        resolved = current.model_copy(
            update={
                "state": AlertState.RESOLVED,
                "resolved_ts": event.ts,
                "updated_ts": max(current.updated_ts, event.ts),
            }
        )
        del self._active[(subject.key_for(event.rule), event.rule)]
        self._active_rules[event.rule] -= 1
        self._note_end(resolved, event.ts)
        self._settle(resolved)
        return [Transition(Change.RESOLVED, resolved, event.ts)]

    def acknowledge(self, alert_id: str, by: str, ts: int) -> list[Transition]:
        """Staff saw the alert. Acknowledging twice is a no-op (the first who and when stand);
        acknowledging does not resolve: an acknowledged alert stays active while its condition holds."""
        current = self._by_id.get(alert_id)
        if current is None:
            raise UnknownAlertError(alert_id)
        if current.acknowledged:
            return []
        acked = current.model_copy(
            update={
                "acknowledged": True,
                "acknowledged_by": by,
                "acknowledged_ts": ts,
                "updated_ts": max(current.updated_ts, ts),
            }
        )
        self._settle(acked)
        return [Transition(Change.ACKNOWLEDGED, acked, ts)]

    def renotify(self, now: int, policy: NotifyConfig) -> list[Transition]:
        """Re-notify every active, unacknowledged alert whose interval has passed since its last
        notification (one re-notification however long the gap, e.g. after a restart), escalating
        it at the ``escalate_after``-th. Acknowledged and resolved alerts are not re-notified."""
        out = []
        for alert in self.open_alerts():
            if alert.state is not AlertState.ACTIVE or alert.acknowledged:
                continue
            interval = policy.renotify_ms(alert.severity)
            last = alert.notified_ts if alert.notified_ts is not None else alert.updated_ts
            if interval <= 0 or now - last < interval:
                continue
            count = alert.notify_count + 1
            escalate = not alert.escalated and 0 < policy.escalate_after <= count
            fields: dict[str, object] = {
                "notify_count": count,
                "notified_ts": now,
                "updated_ts": max(alert.updated_ts, now),
            }
            if escalate:
                fields.update(escalated=True, escalated_ts=now)
            updated = alert.model_copy(update=fields)
            self._put(updated)
            out.append(Transition(Change.ESCALATED if escalate else Change.RENOTIFIED, updated, now))
        return out

    # -- bookkeeping

    def _put(self, alert: Alert) -> None:
        self._by_id[alert.id] = alert
        if alert.state is AlertState.ACTIVE:
            key = (Subject.of_alert(alert).key_for(alert.rule), alert.rule)
            if key not in self._active:
                self._active_rules[alert.rule] += 1
            self._active[key] = alert.id

    def _note_end(self, alert: Alert, ts: int) -> None:
        key = (Subject.of_alert(alert).key_for(alert.rule), alert.rule)
        self._ended[key] = max(ts, self._ended.get(key, ts))

    def _settle(self, alert: Alert) -> None:
        """Store the new state, or forget the alert once it is resolved and acknowledged."""
        if alert.retained:
            self._put(alert)
        else:
            del self._by_id[alert.id]
