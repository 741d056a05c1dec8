"""What a rule reports: its condition holds (Firing) or no longer holds (Cleared) for a device.

Rules report the *level* of their condition on every relevant sample; the AlertBook does the edge
detection (raise once, then no-op while unchanged). That keeps rules free of alert bookkeeping and
lets a restarted gateway (empty rule state, restored alerts) resolve an alert on the first sample
that clears it.
"""

from __future__ import annotations

from dataclasses import dataclass

from nurserywatch.contract import Severity


@dataclass(frozen=True, slots=True)
class Firing:
    rule: str
    severity: Severity
    device: str
    #: When the condition began (message time, unix ms); part of the alert id.
    started_ts: int
    #: The message time of the sample that was judged.
    ts: int
    value: float | str | None
    message: str
    message_en: str


@dataclass(frozen=True, slots=True)
class Cleared:
    rule: str
    device: str
    ts: int


RuleEvent = Firing | Cleared

#: Japanese and English message of an alert, per severity of a rule.
Messages = dict[Severity, tuple[str, str]]


def level_event(
    rule: str,
    device: str,
    severity: Severity | None,
    started_ts: int | None,
    ts: int,
    value: float | str | None,
    messages: Messages,
) -> RuleEvent:
    """Firing at ``severity`` (started at ``started_ts``), or Cleared when the severity is None."""
    if severity is None or started_ts is None:
        return Cleared(rule, device, ts)
    ja, en = messages[severity]
    return Firing(rule, severity, device, started_ts, ts, value, ja, en)


class StaleReading(Exception):
    """A sample older than the newest one already judged for the same device (and stream)."""

    reason = "stale"

    def __init__(self, device: str, ts: int, latest_ts: int) -> None:
        super().__init__(f"{device}: sample at {ts} is older than the latest judged one at {latest_ts}")
        self.device = device
        self.ts = ts
        self.latest_ts = latest_ts
