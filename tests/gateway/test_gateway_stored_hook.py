"""The ``on_stored`` hook: storage copies (the InfluxDB writer) get every stored reading, including an
out-of-order one the rules refuse as stale, which ``on_reading`` (rule-judged readings) never sees."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gateway.config import RulesConfig
from gateway.db.reader import StoreReader
from gateway.db.store import Store
from gateway.engine.observers import AcceptedReading, GatewayObserver
from gateway.engine.site import SiteEngine
from gateway.engine.stats import GatewayStats
from nurserywatch.clock import ManualClock
from nurserywatch.contract import Position, PostureReading, reading_topic
from tests.support.clock import T0
from tests.support.gateway_stack import two_clip_kit


@dataclass
class Seen(GatewayObserver):
    stored: list[int] = field(default_factory=list)
    judged: list[int] = field(default_factory=list)

    def on_stored(self, accepted: AcceptedReading) -> None:
        self.stored.append(accepted.reading.seq)

    def on_reading(self, accepted: AcceptedReading) -> None:
        self.judged.append(accepted.reading.seq)


def test_a_stale_reading_is_stored_and_handed_to_storage_observers_but_not_judged(tmp_path: Path) -> None:
    kit = two_clip_kit("stored-hook")
    seen = Seen()
    clock = ManualClock(T0 + 10_000)
    stats = GatewayStats()
    with Store(tmp_path / "gw.sqlite3") as store:
        engine = SiteEngine(kit, store, RulesConfig(), clock, stats, observers=[lambda _ctx: seen])
        topic = reading_topic(kit.site, "clip-01", "posture")
        for seq, ts in ((2, T0 + 2000), (1, T0 + 1000), (2, T0 + 2000)):  # newest, an older replay, a duplicate
            engine.handle(topic, PostureReading(ts=ts, seq=seq, position=Position.SUPINE).to_json())
    assert seen.stored == [2, 1]  # the duplicate is neither stored nor handed on
    assert seen.judged == [2]
    assert stats.rejected["stale"] == 1 and stats.rejected["duplicate"] == 1
    assert StoreReader(tmp_path / "gw.sqlite3").count_readings("clip-01") == 2
