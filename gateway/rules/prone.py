"""The prone rule (docs/gateway.md): a child lying prone for ``min_duration_s`` or more → critical alert.

Pure, on message time. Per device it remembers the latest sample time and when the current prone
run began. Decisions:

* ``started_ts`` of the alert is the time of the *first prone sample* of the run — the moment the
  child was last seen turning prone, which is what staff and the audit log need.
* The alert fires on the first sample with ``ts - started_ts >= min_duration`` (exactly 30.0 s
  fires, 29.9 s does not). With ``min_duration_s: 0`` the first prone sample fires.
* ``unknown`` neither starts nor ends a prone run: a clip that cannot tell must not silence an
  alert (prefer the visible alert), and must not invent one either.
* Any other known position (supine, left, right, upright) ends the run and clears the alert.
* Acknowledging does not clear it: a prone alert stays active until the child is turned.
* A sample older than the latest one seen for the device raises ``StaleReading`` and changes
  nothing, so a late or reordered delivery cannot reopen or close a run. Equal times are accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import ProneConfig
from gateway.rules.events import Cleared, Firing, RuleEvent, StaleReading
from nurserywatch.contract import Position, Severity

RULE = "prone"

__all__ = ["RULE", "PostureSample", "ProneRule", "StaleReading"]


@dataclass(frozen=True, slots=True)
class PostureSample:
    device: str
    position: Position
    ts: int


def _seconds(value: float) -> str:
    return f"{value:g}"


class ProneRule:
    def __init__(self, config: ProneConfig | None = None) -> None:
        cfg = config or ProneConfig()
        self.min_duration_ms = round(cfg.min_duration_s * 1000)
        if self.min_duration_ms > 0:
            s = _seconds(cfg.min_duration_s)
            self.message = f"うつぶせ寝が{s}秒以上続いています"
            self.message_en = f"Prone for {s} s or more"
        else:
            self.message = "うつぶせ寝になっています"
            self.message_en = "Lying prone"
        self._latest: dict[str, int] = {}
        self._prone_since: dict[str, int] = {}

    def feed(self, sample: PostureSample) -> list[RuleEvent]:
        latest = self._latest.get(sample.device)
        if latest is not None and sample.ts < latest:
            raise StaleReading(sample.device, sample.ts, latest)
        self._latest[sample.device] = sample.ts

        if sample.position is Position.UNKNOWN:
            return []
        if sample.position is not Position.PRONE:
            self._prone_since.pop(sample.device, None)
            return [Cleared(RULE, sample.device, sample.ts)]

        since = self._prone_since.setdefault(sample.device, sample.ts)
        return self._judge(sample.device, since, sample.ts)

    def tick(self, device: str, ts: int) -> list[RuleEvent]:
        """Judge the current prone run (if any) at ``ts`` without a new sample."""
        since = self._prone_since.get(device)
        if since is None or ts < self._latest.get(device, ts):
            return []
        return self._judge(device, since, ts)

    def _judge(self, device: str, since: int, ts: int) -> list[RuleEvent]:
        elapsed = ts - since
        if elapsed < self.min_duration_ms:
            return []
        return [
            Firing(
                rule=RULE,
                severity=Severity.CRITICAL,
                device=device,
                started_ts=since,
                ts=ts,
                value=elapsed / 1000,
                message=self.message,
                message_en=self.message_en,
            )
        ]
