"""The room air rules (docs/gateway.md), one ``AirMonitor`` per air sensor (it has a room, no child).

* co2: ≥ 1000 ppm for 5 min → warning, ≥ 1500 ppm for 60 s → critical; critical eases to warning
  below 1400 ppm held 60 s; resolves below 900 ppm held 60 s.
* temperature: outside 18–28 °C for 10 min → warning; resolves inside 18.5–27.5 °C held 5 min.
* humidity: outside 40–70 % for 30 min → info; resolves inside 42–68 % held 10 min.
* pm25: 1-hour mean > 35 µg/m³ → warning, > 70 → critical; eases / resolves at or below 65 / 30.

(defaults; every number is in configs/rules.yaml; which side and whether the value itself counts:
``RuleSet.thresholds``, the one table the dashboard draws too). Pure, on message time: ``feed`` takes a reading,
``tick`` judges again at a later device time so a duration completes on time between slow readings.
A reading without a field says nothing about it (a PMS5003 reports no CO2). The PM2.5 mean is the
plain mean of the readings of the last ``window_s`` and is judged only once they span
``min_coverage_s``, so the first minutes after a start give no verdict.
"""

from __future__ import annotations

from collections import deque

from gateway.config import RuleSet
from gateway.rules.events import Messages, RuleEvent, level_event
from gateway.rules.levels import Graded, levels, seconds_ms
from nurserywatch.contract import AirReading, Severity

CO2 = "co2"
TEMPERATURE = "temperature"
HUMIDITY = "humidity"
PM25 = "pm25"
RULES = (CO2, TEMPERATURE, HUMIDITY, PM25)


class RollingMean:
    """Mean of the samples in the last ``window_ms``; None until they span ``min_coverage_ms``."""

    def __init__(self, window_ms: int, min_coverage_ms: int) -> None:
        self.window_ms = window_ms
        self.min_coverage_ms = min_coverage_ms
        self._samples: deque[tuple[int, float]] = deque()
        self._sum = 0.0

    def add(self, ts: int, value: float) -> None:
        self._samples.append((ts, value))
        self._sum += value

    def mean(self, ts: int) -> float | None:
        while self._samples and self._samples[0][0] <= ts - self.window_ms:
            self._sum -= self._samples.popleft()[1]
        if not self._samples:
            self._sum = 0.0  # no float residue carried into the next window
            return None
        if ts - self._samples[0][0] < self.min_coverage_ms:
            return None
        return self._sum / len(self._samples)


class AirMonitor:
    def __init__(self, device: str, cfg: RuleSet) -> None:
        self.device = device
        c, t, h, p = cfg.co2, cfg.temperature, cfg.humidity, cfg.pm25
        self._graded: dict[str, Graded] = {
            CO2: Graded(levels(cfg.thresholds(CO2), lambda sev: seconds_ms(
                c.critical_min_duration_s if sev is Severity.CRITICAL else c.warning_min_duration_s),
                seconds_ms(c.clear_after_s))),
            TEMPERATURE: Graded(levels(cfg.thresholds(TEMPERATURE), lambda _sev: seconds_ms(t.min_duration_s),
                                       seconds_ms(t.clear_after_s))),
            HUMIDITY: Graded(levels(cfg.thresholds(HUMIDITY), lambda _sev: seconds_ms(h.min_duration_s),
                                    seconds_ms(h.clear_after_s))),
            PM25: Graded(levels(cfg.thresholds(PM25), lambda _sev: seconds_ms(p.min_duration_s),
                                seconds_ms(p.clear_after_s))),
        }  # fmt: skip
        self.messages: dict[str, Messages] = {
            CO2: {
                Severity.WARNING: (f"CO2濃度が{c.warning_ppm:g}ppm以上です（換気してください）",
                                   f"CO2 at or above {c.warning_ppm:g} ppm — ventilate the room"),
                Severity.CRITICAL: (f"CO2濃度が{c.critical_ppm:g}ppm以上です（すぐに換気してください）",
                                    f"CO2 at or above {c.critical_ppm:g} ppm — ventilate now"),
            },
            TEMPERATURE: {Severity.WARNING: (f"室温が{t.low_c:g}〜{t.high_c:g}℃の範囲外です",
                                             f"Room temperature outside {t.low_c:g}–{t.high_c:g} °C")},
            HUMIDITY: {Severity.INFO: (f"湿度が{h.low_pct:g}〜{h.high_pct:g}%の範囲外です",
                                       f"Humidity outside {h.low_pct:g}–{h.high_pct:g} %")},
            PM25: {
                Severity.WARNING: (f"PM2.5の1時間平均が{p.warning_ugm3:g}µg/m³を超えています",
                                   f"PM2.5 1-hour mean above {p.warning_ugm3:g} µg/m³"),
                Severity.CRITICAL: (f"PM2.5の1時間平均が{p.critical_ugm3:g}µg/m³を超えています（外遊び・換気に注意）",
                                    f"PM2.5 1-hour mean above {p.critical_ugm3:g} µg/m³"),
            },
        }  # fmt: skip
        self._pm25 = RollingMean(seconds_ms(p.window_s), seconds_ms(p.min_coverage_s))
        self._latest: dict[str, float | None] = dict.fromkeys(RULES)

    def feed(self, r: AirReading) -> list[RuleEvent]:
        for rule, value in ((CO2, r.co2_ppm), (TEMPERATURE, r.temp_c), (HUMIDITY, r.rh_pct)):
            if value is not None:
                self._latest[rule] = value
        if r.pm25_ugm3 is not None:
            self._pm25.add(r.ts, r.pm25_ugm3)
        return self.tick(r.ts)

    def tick(self, ts: int) -> list[RuleEvent]:
        self._latest[PM25] = self._pm25.mean(ts)
        events: list[RuleEvent] = []
        for rule, graded in self._graded.items():
            value = self._latest[rule]
            severity = graded.update(ts, value)
            shown = None if value is None else round(value, 1)
            events.append(level_event(rule, self.device, severity, graded.since, ts, shown, self.messages[rule]))
        return events

    def restore(self, rule: str, severity: Severity, started_ts: int) -> None:
        if rule in self._graded:
            self._graded[rule].force(severity, started_ts)
