"""What changed about an alert: ``Change`` and ``Transition``, the record the engine emits
(gateway/engine/alerts.py), the writer appends to the audit log (gateway/db/store.py) and the
read side returns (gateway/db/reader.py). A module of its own so reading the audit log does not
load the engine (the dashboard's read interface, gateway/read.py)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from nurserywatch.contract import Alert


class Change(StrEnum):
    RAISED = "raised"
    UPDATED = "updated"
    RESOLVED = "resolved"
    ACKNOWLEDGED = "acknowledged"
    #: Re-published while active and unacknowledged (``notify_count`` went up).
    RENOTIFIED = "renotified"
    #: A re-notification that also escalated the alert.
    ESCALATED = "escalated"


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of one alert: the alert as it is *after* the change, and what changed."""

    change: Change
    alert: Alert
    ts: int

    @property
    def closes(self) -> bool:
        """The alert is now resolved and acknowledged: publish it once more, then clear it."""
        return not self.alert.retained
