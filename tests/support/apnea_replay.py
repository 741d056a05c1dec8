"""Edge breathing features through the gateway's RulesEngine: when would an apnea alert be raised?"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edge.dsp.breathing import BreathingAnalyzer, BreathingFeatures
from gateway.alert_changes import Change, Transition
from gateway.config import NotifyConfig, RulesConfig
from gateway.engine.rules_engine import RulesEngine
from nurserywatch.contract import BreathingReading, Stream
from nurserywatch.kit import Kit
from tests.support.clock import T0


def apnea_alerts(kit: Kit, features: Sequence[BreathingFeatures], device: str = "mat",
                 rule: str | None = None) -> list[float]:  # fmt: skip
    """Seconds after T0 at which the engine raised an alert (of ``rule``; None: any), readings at their
    own time and the engine's timer between them; no re-notification."""
    rules = RulesConfig(notify=NotifyConfig(critical_renotify_s=0, warning_renotify_s=0, info_renotify_s=0))
    engine = RulesEngine(kit, rules, T0)
    raised: list[float] = []

    def note(at_ms: int, transitions: Sequence[Transition]) -> None:
        raised.extend((at_ms - T0) / 1000 for tr in transitions
                      if tr.change is Change.RAISED and (rule is None or tr.alert.rule == rule))  # fmt: skip

    tick = T0 + rules.tick_ms
    for f in features:
        while tick < f.t_ms:
            note(tick, engine.tick(tick).transitions)
            tick += rules.tick_ms
        reading = BreathingReading(
            ts=f.t_ms, seq=0, rate_bpm=f.rate_bpm, amplitude=f.amplitude, motion=f.motion, present=f.present,
            quality=f.quality, last_breath_ts=f.last_breath_ms,
        )  # fmt: skip
        note(f.t_ms, engine.reading(device, Stream.BREATHING, reading, f.t_ms).transitions)
    return raised


def feed_seconds(analyzer: BreathingAnalyzer, samples: Any, seconds: int) -> list[BreathingFeatures]:
    """Raw samples fed a second at a time from T0 (``analyzer.fs`` per second), with the features
    after each second."""
    fs = int(analyzer.fs)
    features = []
    for sec in range(seconds):
        analyzer.add(T0 + sec * 1000, samples[sec * fs : (sec + 1) * fs])
        f = analyzer.features()
        assert f is not None
        features.append(f)
    return features
