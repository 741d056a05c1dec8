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
