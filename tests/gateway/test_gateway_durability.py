"""A gateway killed with SIGKILL while it drains a large backlog loses no reading (issue 7).

The gateway acknowledges a QoS 1 reading to the broker only once the reading is committed to its
SQLite (paho's manual acknowledgement, gateway/service/mqtt.py). Before, paho acknowledged a reading as
soon as it read it: Mosquitto then delivered a whole backlog into the client's in-memory queue at
once, and a kill -9 lost every reading still in that queue. Real processes: a dedicated Mosquitto
(``max_queued_messages 0``, so the broker itself drops nothing while the gateway is away),
``nurserywatch gateway`` started, stopped, started again, killed in the middle of the drain and
restarted. The publisher's own list of what it sent is the ground truth. ~10 s.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import httpx
import pytest
import yaml

from nurserywatch.contract import BreathingReading, Stream, reading_topic
from nurserywatch.ports import free_port
from tests.support.mosquitto import MosquittoProcess
from tests.support.processes import print_logs, spawn, stop
from tests.support.waiting import wait_for

SITE = "durable"
MATS = [f"mat-{i:02d}" for i in range(20)]
#: Readings in the backlog: ~2 s of the gateway's work, far more than the broker's in-flight window.
READINGS = 12_000


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[int]:
    broker = MosquittoProcess(tmp_path / "mosquitto", persistence=False, max_queued_messages=0,
                              log_types=("error", "warning"), options=["max_queued_bytes 0"])  # fmt: skip
    broker.start()
    try:
        yield broker.port
    finally:
        broker.stop()


def _kit(path: Path) -> Path:
    room, agent = "room-a", "pi-a"
    kit = {
        "site": SITE,
        "name": "durability",
        "rooms": [{"id": room, "name": room}],
        "agents": [{"id": agent}],
        "devices": [
            {"id": m, "kind": "nap_mat", "room": room, "agent": agent, "child": f"c{i:02d}",
             "transport": {"type": "serial", "port": f"/dev/nw/{m}"}}
            for i, m in enumerate(MATS)
        ],
        "children": [{"id": f"c{i:02d}", "age_band": "1-2", "room": room} for i in range(len(MATS))],
    }  # fmt: skip
    path.write_text(yaml.safe_dump(kit, sort_keys=False))
    return path


def _stream() -> list[tuple[str, int, bytes]]:
    """(topic, seq, payload): one breathing reading per mat per second, ending a few seconds ago."""
    per_mat = READINGS // len(MATS)
    t0 = int(time.time() * 1000) - (per_mat + 5) * 1000
    out = []
    for k in range(per_mat):
        ts = t0 + k * 1000
        for m in MATS:
            r = BreathingReading(ts=ts, seq=k, rate_bpm=30.0, amplitude=60.0, motion=0.02, present=True,
                                 quality=0.9, last_breath_ts=ts - 800)  # fmt: skip
            out.append((reading_topic(SITE, m, Stream.BREATHING), k, r.to_json()))
    return out


async def _publish(port: int, messages: list[tuple[str, int, bytes]]) -> None:
    quiet = logging.getLogger("tests.durability.mqtt")  # not a warning per publish waiting for the window
    quiet.setLevel(logging.ERROR)
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier="durability-pub", max_inflight_messages=100, logger=quiet
    ) as c:
        for j in range(0, len(messages), 100):  # in order: gather starts them in order, paho sends in order
            await asyncio.gather(*(c.publish(t, p, qos=1) for t, _seq, p in messages[j : j + 100]))


def _stored(db: Path) -> list[tuple[str, int]]:
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        conn.execute("PRAGMA busy_timeout=5000")
        return [(d, s) for d, s in conn.execute("SELECT device, seq FROM readings")]


def _subscribed(metrics_url: str) -> bool:
    try:
        text = httpx.get(metrics_url, timeout=1).text
    except httpx.HTTPError:
        return False
    return any(line.startswith("nurserywatch_gateway_mqtt_sessions_total ") and float(line.split()[1]) >= 1
               for line in text.splitlines())  # fmt: skip


def test_kill_9_while_draining_a_backlog_loses_no_reading(broker: int, tmp_path: Path) -> None:
    kit, db, mport = _kit(tmp_path / "kit.yaml"), tmp_path / "gw.sqlite3", free_port()
    args = ["gateway", "--config", str(kit), "--broker", f"mqtt://127.0.0.1:{broker}", "--db", str(db),
            "--metrics-port", str(mport), "--log-level", "warning"]  # fmt: skip
    url = f"http://127.0.0.1:{mport}/metrics"
    logs: dict[str, Path] = {}
    sent = _stream()
    proc = None
    try:
        # 1: the gateway's persistent session exists; 2: the backlog is queued for it while it is away
        proc, logs["gateway-1"] = spawn("gateway-1", args, tmp_path)
        wait_for(lambda: _subscribed(url), "the first gateway to subscribe", 20)
        stop(proc)
        asyncio.run(_publish(broker, sent))
        # 3: it comes back and is killed in the middle of draining the backlog
        proc, logs["gateway-2"] = spawn("gateway-2", args, tmp_path)
        wait_for(lambda: len(_stored(db)) >= READINGS // 4, "a quarter of the backlog stored", 20)
        stop(proc, signal.SIGKILL)
        at_kill = len(_stored(db))
        assert at_kill < READINGS, "the gateway was not killed in the middle of the drain"
        # 4: restarted, it gets from the broker whatever it had not acknowledged
        proc, logs["gateway-3"] = spawn("gateway-3", args, tmp_path)
        try:
            wait_for(lambda: len(_stored(db)) >= READINGS, "every reading stored", 30)
        except TimeoutError:
            pass  # the assertions below say what is missing
        time.sleep(0.3)  # anything more (a duplicate row would be refused by UNIQUE, but look anyway)
        stored = _stored(db)
    except BaseException:
        print_logs(logs)
        raise
    finally:
        if proc is not None:
            stop(proc)
    want = {(t.split("/")[-2], seq) for t, seq, _p in sent}  # …/reading/{device}/{stream}
    assert len(stored) == len(set(stored)), "a reading is stored twice"
    missing = want - set(stored)
    print(f"{len(sent)} readings sent; {at_kill} stored when the gateway was killed; {len(stored)} stored in the end")
    assert not missing, f"{len(missing)} of {len(sent)} readings lost by the kill -9 ({at_kill} stored at the kill)"
    assert set(stored) == want


def test_provisioned_broker_keeps_an_hour_of_the_kits_readings_for_the_gateway(tmp_path: Path) -> None:
    """Mosquitto's default queue (1000 messages) would drop readings after ~8 s of a large nursery's
    gateway outage; kit provision sizes it from the kit (docs/deploy.md)."""
    from nurserywatch.cli.provision import BrokerOptions, broker_queue_limits, message_rate, mosquitto_conf
    from nurserywatch.kit import load_kit

    kit = load_kit(_kit(tmp_path / "kit.yaml"))
    assert message_rate(kit) == 2 * len(MATS)  # a mat publishes breathing and waveform readings
    queued, inflight = broker_queue_limits(kit, outage_min=60)
    assert queued >= message_rate(kit) * 3600 and queued % 1000 == 0
    assert inflight == 40
    conf = mosquitto_conf(kit, BrokerOptions(files_dir="/etc/mosquitto/nurserywatch"))
    assert f"\nmax_queued_messages {queued}\n" in conf and f"\nmax_inflight_messages {inflight}\n" in conf
    assert broker_queue_limits(kit.model_copy(update={"devices": kit.devices[:1]}))[0] == 1000 * 8  # 2/s × 3600
