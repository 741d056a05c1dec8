"""The battery rule (docs/gateway.md): a device reporting ``battery_pct`` below 15 % → warning, about the
device (not the child). Resolves at ``below_pct + hysteresis_pct`` or more (a new battery), so a
level hovering at 15 % does not flap. Judged on each ``status/{device}`` message, message time."""

from __future__ import annotations

from gateway.config import RuleSet
from gateway.rules.events import RuleEvent, level_event
from gateway.rules.levels import Graded, Level, below
from nurserywatch.contract import DeviceStatus, Severity

RULE = "battery_low"


class BatteryMonitor:
    def __init__(self, device: str, cfg: RuleSet) -> None:
        b = cfg.battery_low
        self.device = device
        self._graded = Graded([Level(Severity.WARNING, *below(b.below_pct, b.hysteresis_pct), 0, 0)])
        self.messages = {
            Severity.WARNING: (f"電池残量が{b.below_pct:g}%未満です（交換してください）",
                               f"Battery below {b.below_pct:g} % — replace it"),
        }  # fmt: skip

    def feed_status(self, status: DeviceStatus) -> list[RuleEvent]:
        if status.battery_pct is None:
            return []
        severity = self._graded.update(status.ts, status.battery_pct)
        return [level_event(RULE, self.device, severity, self._graded.since, status.ts, status.battery_pct,
                            self.messages)]  # fmt: skip

    def restore(self, rule: str, severity: Severity, started_ts: int) -> None:
        if rule == RULE:
            self._graded.force(severity, started_ts)
