"""The Home Assistant bridge on a real Mosquitto (gateway/integrations/home_assistant_bridge.py): a client
playing Home Assistant subscribes to the discovery prefix and sees every config retained, a stale one
removed and another site's left alone; its birth message brings every config again; each room's
alert summary follows the retained alerts; bad input is counted, and the bridge keeps going."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import yaml

from gateway.integrations.home_assistant import discovery_configs
from gateway.integrations.home_assistant_bridge import BridgeStats, run_home_assistant_bridge
from nurserywatch import __version__
from nurserywatch.clock import ManualClock
from nurserywatch.contract import (
    Alert,
    AlertState,
    RoomAlerts,
    Severity,
    TopicKind,
    alert_topic,
    bridge_topic,
    room_alerts_topic,
    subscription,
)
from nurserywatch.kit import Kit
from nurserywatch.mqtt import BrokerURL
from tests.support.gateway_stack import client, retained
from tests.support.kits import make_kit
from tests.support.tasks import running
from tests.support.waiting import wait_for, wait_until

T = 1_767_225_600_000
NW = [sys.executable, "-m", "nurserywatch"]


def bridge_kit(site: str, prefix: str) -> Kit:
    base = make_kit(site, rooms={"hiyoko": "ひよこ組", "risu": "りす組"},
                    devices={"clip-01": "c001", "co2-01": {"kind": "mhz19b"},
                             "air-02": {"kind": "air_ble", "room": "risu"}})  # fmt: skip
    ha = {"enabled": True, "discovery_prefix": prefix, "birth_topic": f"{prefix}/status"}
    return Kit.model_validate({**base.model_dump(), "home_assistant": ha})


def alert(aid: str, *, state: str = "active", acknowledged: bool = False, device: str = "clip-01") -> bytes:
    return Alert(id=aid, rule="prone", severity=Severity.CRITICAL, state=AlertState(state),
                 acknowledged=acknowledged, device=device, room=None, started_ts=T, updated_ts=T, message="m",
                 message_en="m").to_json()  # fmt: skip


class Listener:
    """Every message a client receives, in order, as (topic, payload, retain)."""

    def __init__(self, c: aiomqtt.Client) -> None:
        self.c = c
        self.got: list[tuple[str, bytes, bool]] = []

    async def run(self) -> None:
        async for m in self.c.messages:
            assert isinstance(m.payload, bytes | bytearray)
            self.got.append((m.topic.value, bytes(m.payload), m.retain))

    def on(self, topic: str) -> list[bytes]:
        return [p for t, p, _ in self.got if t == topic]


def room(payload: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(payload)
    RoomAlerts.model_validate(data)
    return {k: data[k] for k in ("problem", "active", "unacknowledged", "severity")}


async def test_configs_retained_stale_removed_birth_answered_rooms_followed(mosquitto: BrokerURL) -> None:
    uid = uuid.uuid4().hex[:8]
    site, prefix = f"ha{uid}", f"ha-{uid}"
    kit = bridge_kit(site, prefix)
    configs = discovery_configs(kit, "9.9.9")
    node = f"nurserywatch_{site}"
    stale = f"{prefix}/sensor/{node}/gone-01_co2/config"  # a device since taken out of the kit
    other_site = f"{prefix}/sensor/nurserywatch_elsewhere/co2-09_co2/config"
    hiyoko, risu = room_alerts_topic(site, "hiyoko"), room_alerts_topic(site, "risu")
    async with client(mosquitto) as gw:  # what the gateway (and a stranger) left retained
        for topic, payload in [(stale, b'{"name": "old"}'), (other_site, b'{"name": "not ours"}'),
                               (alert_topic(site, "a1"), alert("a1")), (alert_topic(site, "x1"), b"{not json"),
                               (alert_topic(site, "x2"), alert("x2", device="ghost-01"))]:  # fmt: skip
            await gw.publish(topic, payload, qos=1, retain=True)
    stats = BridgeStats()
    async with client(mosquitto) as ha:
        await ha.subscribe([(f"{prefix}/#", 1), (subscription(site, TopicKind.ROOM_ALERTS), 1),
                            (subscription(site, TopicKind.BRIDGE), 1)])
        listener = Listener(ha)
        async with running(listener.run()), running(run_home_assistant_bridge(kit, mosquitto, ManualClock(T), "9.9.9",
                                                                              stats=stats)):  # fmt: skip
            await wait_until(lambda: all(listener.on(c.topic) for c in configs) and bool(listener.on(risu)),
                             "every config and both rooms", timeout_s=10)  # fmt: skip
            for c in configs:
                assert listener.on(c.topic) == [c.to_json()]
            assert listener.on(stale) == [b'{"name": "old"}', b""]  # seen as HA would, then removed
            assert listener.on(other_site) == [b'{"name": "not ours"}']  # another site's: left alone
            assert [room(p) for p in listener.on(hiyoko)] == [
                {"problem": True, "active": 1, "unacknowledged": 1, "severity": "critical"}]  # fmt: skip
            assert [room(p) for p in listener.on(risu)] == [
                {"problem": False, "active": 0, "unacknowledged": 0, "severity": None}]  # fmt: skip
            assert json.loads(listener.on(bridge_topic(site, "home_assistant"))[-1])["online"] is True
            assert stats.rejected == {"bad_json": 1, "unknown_device": 1}
            assert (stats.configs_published, stats.configs_removed) == (len(configs), 1)

            # Home Assistant (re)starts: its birth message brings every config and room again.
            await ha.publish(kit.home_assistant.birth_topic, b"online", qos=1)
            await wait_until(lambda: all(len(listener.on(c.topic)) == 2 for c in configs)
                             and len(listener.on(risu)) == 2, "every config again", timeout_s=10)  # fmt: skip
            assert stats.births == 1 and stats.configs_published == 2 * len(configs)
            await ha.publish(kit.home_assistant.birth_topic, b"offline", qos=1)
            await ha.publish(kit.home_assistant.birth_topic, b"\xffgarbage", qos=1)
            await wait_until(lambda: stats.rejected["bad_birth"] == 1 and stats.offline == 1, "the bad birth counted")

            # The alert is resolved and acknowledged: the gateway publishes it, then clears it.
            async with client(mosquitto) as gw:
                await gw.publish(alert_topic(site, "a1"), alert("a1", state="resolved", acknowledged=True), qos=1,
                                 retain=True)  # fmt: skip
                await gw.publish(alert_topic(site, "a1"), b"", qos=1, retain=True)
            await wait_until(lambda: len(listener.on(hiyoko)) == 3, "the room's summary to change")
            assert room(listener.on(hiyoko)[-1]) == {"problem": False, "active": 0, "unacknowledged": 0,
                                                     "severity": None}  # fmt: skip
            assert len(listener.on(hiyoko)) == 3  # the empty alert changed nothing more
            await asyncio.sleep(0.1)
            assert stats.sessions == 1  # bad input did not cost a reconnect
    kept = await retained(mosquitto, f"{prefix}/#")
    assert kept == {**{c.topic: c.to_json() for c in configs}, other_site: b'{"name": "not ours"}'}


def test_the_command_runs_it_and_a_killed_bridge_leaves_its_last_will(mosquitto: BrokerURL, tmp_path: Path) -> None:
    """``nurserywatch home-assistant``: configs retained; killed (no DISCONNECT), the broker publishes its
    last will, so Home Assistant shows the rooms' alerts unavailable instead of a stale state."""
    uid = uuid.uuid4().hex[:8]
    site, prefix = f"ha{uid}", f"ha-{uid}"
    kit = bridge_kit(site, prefix)
    kit_file = tmp_path / "kit.yaml"
    kit_file.write_text(yaml.safe_dump(kit.model_dump(mode="json"), allow_unicode=True))
    configs = discovery_configs(kit, __version__)
    status = bridge_topic(site, "home_assistant")
    proc = subprocess.Popen([*NW, "home-assistant", "--config", str(kit_file), "--broker", str(mosquitto)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_for(lambda: len(asyncio.run(retained(mosquitto, f"{prefix}/#"))) == len(configs), "the configs", 20)
        assert json.loads(asyncio.run(retained(mosquitto, status))[status])["online"] is True
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=10)
    will = b'{"ts":null,"online":false,"version":null}'
    wait_for(lambda: asyncio.run(retained(mosquitto, status)).get(status) == will, "the last will", 10)
    assert b"Traceback" not in err, err.decode()


def test_the_command_refuses_a_kit_that_does_not_enable_it(tmp_path: Path) -> None:
    kit_file = tmp_path / "kit.yaml"
    kit_file.write_text(yaml.safe_dump(make_kit("off").model_dump(mode="json"), allow_unicode=True))
    done = subprocess.run([*NW, "home-assistant", "--config", str(kit_file)], capture_output=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.decode().startswith(f"error: {kit_file}: home_assistant.enabled is not true"), done.stderr
