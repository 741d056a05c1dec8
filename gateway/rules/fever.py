"""The fever rule (docs/gateway.md): body temperature ≥ 37.5 °C warning, ≥ 38.0 °C critical — one alert
whose severity follows the temperature, never two alerts.

One ``FeverMonitor`` per thermometer, pure, on message time. Each level needs its temperature for
``min_duration_s`` (0: the first measurement); critical eases to warning below
``critical_c − hysteresis_c`` and the alert resolves below ``warning_c − hysteresis_c`` (37.3 °C by
default). A measurement stands until the next one (thermometers report rarely); ``tick`` only
advances durations when ``min_duration_s`` is set.
"""

from __future__ import annotations

from gateway.config import RuleSet
from gateway.rules.events import RuleEvent, level_event
from gateway.rules.levels import Graded, levels, seconds_ms
from nurserywatch.contract import BodyTempReading, Severity

RULE = "fever"


class FeverMonitor:
    def __init__(self, device: str, cfg: RuleSet) -> None:
        f = cfg.fever
        on = seconds_ms(f.min_duration_s)
        self.device = device
        self._graded = Graded(levels(cfg.thresholds("body_temp"), lambda _sev: on, 0))
        self.messages = {
            Severity.WARNING: (f"体温が{f.warning_c:.1f}℃以上です", f"Body temperature {f.warning_c:.1f} °C or higher"),
            Severity.CRITICAL: (f"体温が{f.critical_c:.1f}℃以上です（高熱）",
                                f"Body temperature {f.critical_c:.1f} °C or higher (high fever)"),
        }  # fmt: skip
        self._celsius: float | None = None

    def feed(self, r: BodyTempReading) -> list[RuleEvent]:
        self._celsius = r.celsius
        return self.tick(r.ts)

    def tick(self, ts: int) -> list[RuleEvent]:
        severity = self._graded.update(ts, self._celsius)
        return [level_event(RULE, self.device, severity, self._graded.since, ts, self._celsius, self.messages)]

    def restore(self, rule: str, severity: Severity, started_ts: int) -> None:
        if rule == RULE:
            self._graded.force(severity, started_ts)
