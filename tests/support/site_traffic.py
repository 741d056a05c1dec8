"""A light site traffic generator: what a nursery site publishes toward the centre (the fleet tier,
docs/fleet.md) without the full simulator — for tests/fleet/ and bench/fleet.py.

Per site: ``devices`` devices in rooms of ten (one air sensor per room, the rest nap mats and posture
clips, a mat and a clip per child), one edge agent, the gateway. Over MQTT, QoS 1, the contract's
topics and models (nurserywatch/contract.py):

* readings — breathing (mats) and posture (clips) every ``reading_ms``, air every ``air_ms``; each
  room's CO2 swings on a slow wave that crosses 1000 ppm on some rooms (and raises a ``co2`` warning
  there, resolved below 900 ppm — the gateway's hysteresis);
* device statuses (battery slowly draining, the device's room) at start and every ``status_ms``, the
  edge status at start, retained;
* the gateway heartbeat every ``heartbeat_ms``, retained;
* alerts: now and then a child lies prone (the clip says so) and a critical ``prone`` alert is raised,
  resolved when the child turns back and acknowledged by staff (before or after the resolve); ids as
  the gateway makes them (gateway/engine/alerts.py ``alert_id``), children by pseudonymous id only;
  retained while open, the final state not retained and then cleared, as the gateway does;
* the records' signed day head, retained: at start (the day before) and at every local midnight,
  signed with the site's Ed25519 key (gateway/records/signing.py; ``public_key(site)`` checks it).

Deterministic: everything follows from ``seed`` and ``start_ms`` — each message's times are its
scheduled time, never the wall clock, and ``due(now_ms)`` gives the same messages in the same order
however it is called. ``publish`` drives one MQTT connection per site (``broker_for(site)``: each site
its own credentials) and records every message it published and whether the broker acknowledged it
(PUBACK): ``Audit``, against which a subscriber's — or the centre's — copy is checked for "0 lost".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import heapq
import itertools
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiomqtt
import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.engine.alerts import alert_id
from gateway.records.signing import DayHead, SignedHead, local_day, sign
from nurserywatch.clock import Clock, ManualClock, SystemClock
from nurserywatch.contract import (
    AirReading,
    Alert,
    AlertState,
    BreathingReading,
    DeviceStatus,
    EdgeStatus,
    GatewayStatus,
    Position,
    PostureReading,
    RecordsHead,
    Severity,
    Stream,
    TopicKind,
    _Payload,
    alert_topic,
    decode,
    edge_topic,
    gateway_topic,
    is_cleared,
    parse_reading,
    parse_topic,
    reading_topic,
    records_head_topic,
    status_topic,
)
from nurserywatch.keys import key_id, write_public_key
from nurserywatch.mqtt import FAILOVER_CONNECT_TIMEOUT_S, Brokers, BrokerURL, broker_list

#: paho's window of unacknowledged QoS 1 publishes per connection (its default is 20).
INFLIGHT = 200
#: How long a PUBACK may take before the site's connection is given up for its next broker.
PUBLISH_TIMEOUT_S = 5.0
CO2_WARNING_PPM = 1000.0
CO2_RESOLVED_PPM = 900.0  # the gateway's default hysteresis (gateway/config.py Co2Config)


@dataclass(frozen=True, slots=True)
class TrafficConfig:
    sites: int = 3
    #: Devices per site (rooms of ten: one air sensor, then a mat and a clip per child).
    devices: int = 10
    seed: int = 0
    #: Site ids ``{prefix}{i:04d}``.
    prefix: str = "site"
    timezone: str = "Asia/Tokyo"
    reading_ms: int = 1_000
    air_ms: int = 10_000
    status_ms: int = 60_000
    heartbeat_ms: int = 1_000
    #: Mean time between two prone incidents at a site (exponential); 0: none.
    incident_mean_ms: int = 600_000
    #: One period of a room's CO2 wave (its amplitude decides whether it crosses 1000 ppm).
    co2_period_ms: int = 2_400_000
    #: Scales an alert's lifecycle (prone raised 5 s after the child turned, turned back after 20–90 s,
    #: acknowledged 2–60 s after the raise; co2 acknowledged after 10 s – 5 min): < 1 for short tests.
    lifecycle_scale: float = 1.0

    def span(self, rng: random.Random, low_ms: int, high_ms: int) -> int:
        """A lifecycle delay, scaled (at least 1 ms: a change never shares its cause's instant)."""
        return max(1, round(rng.randrange(low_ms, high_ms + 1) * self.lifecycle_scale))

    def site_ids(self) -> list[str]:
        return [f"{self.prefix}{i:04d}" for i in range(self.sites)]


@dataclass(frozen=True, slots=True)
class Message:
    site: str
    topic: str
    payload: bytes
    retain: bool
    #: When the site published it (scheduled time, unix ms).
    ts: int


def message_key(topic: str, payload: bytes) -> tuple[str, bytes]:
    """How a message is matched between the publisher and a receiver (its payload digest: the
    records of a long run stay small). Every message the generator makes is unique by it."""
    return topic, hashlib.blake2b(payload, digest_size=12).digest()


@dataclass(slots=True)
class Sent:
    """One message published: ``acked`` once the broker's PUBACK came; ``acked_s`` its stopwatch time."""

    site: str
    topic: str
    digest: bytes
    retain: bool
    ts: int
    acked: bool = False
    acked_s: float | None = None

    @property
    def key(self) -> tuple[str, bytes]:
        return self.topic, self.digest


@dataclass(repr=False)
class Audit:
    """Everything ``publish`` sent, in order, and what the brokers acknowledged."""

    sent: list[Sent] = field(default_factory=list)
    #: Messages never acknowledged by the end (``not_acknowledged``): not owed by the centre.
    errors: Counter[str] = field(default_factory=Counter)
    #: Connections made per site (one at start, one more per failover) and failovers in all.
    connects: Counter[str] = field(default_factory=Counter)
    failovers: int = 0
    started_s: float = 0.0
    finished_s: float = 0.0

    def __repr__(self) -> str:  # a summary: asyncio's task reprs would print every message
        return f"Audit(sent={len(self.sent)}, acked={len(self.acked)}, errors={dict(self.errors)})"

    @property
    def acked(self) -> list[Sent]:
        return [s for s in self.sent if s.acked]

    def acked_keys(self) -> Counter[tuple[str, bytes]]:
        return Counter(s.key for s in self.sent if s.acked)

    def missing_from(self, received: Iterable[tuple[str, bytes]]) -> list[Sent]:
        """Acknowledged messages a receiver did not get (``received``: ``message_key`` of each)."""
        got = Counter(received)
        out = []
        for s in self.sent:
            if s.acked:
                if got[s.key] > 0:
                    got[s.key] -= 1
                else:
                    out.append(s)
        return out

    def rate(self) -> float:
        """Acknowledged messages per second of wall time."""
        return len(self.acked) / max(self.finished_s - self.started_s, 1e-9)

    def by_kind(self) -> Counter[str]:
        return Counter(parse_topic(s.topic).kind.value for s in self.sent if s.acked)


# ------------------------------------------------------------------ the site's state and schedule


_Event = Callable[[int], list[Message]]


@dataclass(slots=True)
class _Device:
    id: str
    stream: Stream
    room: str
    child: str | None
    rng: random.Random
    seq: int = 0
    battery: float = 100.0
    position: Position = Position.SUPINE
    #: CO2 wave: mean, amplitude, phase (air sensors only).
    wave: tuple[float, float, float] = (0.0, 0.0, 0.0)
    #: The id of the room's co2 alert while it is active.
    co2_alert: str | None = None


class _Site:
    """One site's devices, keys and open alerts; its events go into the shared schedule."""

    def __init__(self, site: str, cfg: TrafficConfig, schedule: Callable[[int, _Event], None]) -> None:
        self.id = site
        self.schedule = schedule
        #: Alerts raised and not yet closed (resolved and acknowledged), by id.
        self.open: dict[str, Alert] = {}
        self.cfg = cfg
        self.tz = ZoneInfo(cfg.timezone)
        self.rng = random.Random(f"{cfg.seed}/{site}")
        secret = hashlib.sha256(f"nurserywatch site traffic {cfg.seed}/{site}".encode()).digest()
        self.key = Ed25519PrivateKey.from_private_bytes(secret)
        self.key_id = key_id(self.key.public_key())
        self.agent = "pi-1"
        self.devices: list[_Device] = []
        for i in range(cfg.devices):
            room = f"room-{i // 10 + 1}"
            slot, drng = i % 10, random.Random(f"{cfg.seed}/{site}/{i}")
            if slot == 0:
                d = _Device(f"air-{i // 10 + 1:02d}", Stream.AIR, room, None, drng)
                # Some rooms stay well below 1000 ppm, some cross it at the top of each wave.
                d.wave = (drng.uniform(650, 800), drng.uniform(150, 450), drng.uniform(0, 2 * math.pi))
            else:
                child = f"c{(i // 10) * 5 + (slot + 1) // 2:03d}"
                stream = Stream.BREATHING if slot % 2 else Stream.POSTURE
                d = _Device(f"{'mat' if stream is Stream.BREATHING else 'clip'}-{i:03d}", stream, room, child, drng)
            d.battery = drng.uniform(40, 100)
            self.devices.append(d)
        self.clips = [d for d in self.devices if d.stream is Stream.POSTURE]
        self.head_seq = self.rng.randrange(100, 5000)

    def message(self, topic: str, payload: bytes, ts: int, retain: bool = False) -> Message:
        return Message(self.id, topic, payload, retain, ts)

    def reading(self, d: _Device, ts: int) -> list[Message]:
        """The device's next reading (and, for an air sensor, the co2 alert it changes)."""
        d.seq += 1
        r = d.rng
        payload: _Payload
        alerts: list[Message] = []
        if d.stream is Stream.BREATHING:
            payload = BreathingReading(
                ts=ts, seq=d.seq, rate_bpm=round(r.gauss(28, 3), 1), amplitude=round(r.uniform(40, 80), 1),
                motion=round(r.uniform(0, 0.1), 3), present=True, quality=round(r.uniform(0.7, 1), 2),
                last_breath_ts=ts - r.randrange(200, 2500),
            )  # fmt: skip
        elif d.stream is Stream.POSTURE:
            if d.position is not Position.PRONE and r.random() < 0.01:  # children turn in their sleep
                d.position = r.choice([Position.SUPINE, Position.SUPINE, Position.LEFT, Position.RIGHT])
            payload = PostureReading(ts=ts, seq=d.seq, position=d.position, accel_mg=(0, 0, -1000))
        else:
            mean, amp, phase = d.wave
            co2 = round(max(mean + amp * math.sin(2 * math.pi * ts / self.cfg.co2_period_ms + phase)
                            + r.gauss(0, 10), 400.0), 1)  # fmt: skip
            payload = AirReading(ts=ts, seq=d.seq, co2_ppm=co2, temp_c=round(r.gauss(23, 0.5), 1),
                                 rh_pct=round(r.gauss(45, 3), 1), pm25_ugm3=round(r.uniform(3, 15), 1))  # fmt: skip
            alerts = self.co2_alert(d, co2, ts)
        return [self.message(reading_topic(self.id, d.id, d.stream), payload.to_json(), ts), *alerts]

    def co2_alert(self, d: _Device, co2: float, ts: int) -> list[Message]:
        """The gateway's co2 warning for the room: raised at 1000 ppm, resolved below 900 (its
        hysteresis); staff acknowledge it 10 s – 5 min after it was raised."""
        if d.co2_alert is None and co2 >= CO2_WARNING_PPM:
            a = self.raise_alert("co2", Severity.WARNING, d, ts, value=co2,
                                 message="CO2が1000ppmを超えています。換気してください",
                                 message_en="CO2 above 1000 ppm: ventilate the room")  # fmt: skip
            d.co2_alert = a.id
            self.schedule(
                ts + self.cfg.span(d.rng, 10_000, 300_000), functools.partial(self.change, a.id, by="hoikushi-2")
            )
            return [self.alert_message(a)]
        if d.co2_alert is not None and co2 < CO2_RESOLVED_PPM:
            aid, d.co2_alert = d.co2_alert, None
            return self.change(aid, ts, resolved=True)
        return []

    def raise_alert(self, rule: str, severity: Severity, d: _Device, ts: int, *, value: float | str | None,
                    message: str, message_en: str) -> Alert:  # fmt: skip
        key = d.child if rule == "prone" and d.child is not None else d.id
        a = Alert(id=alert_id(rule, key, ts), rule=rule, severity=severity, state=AlertState.ACTIVE, device=d.id,
                  room=d.room, child=d.child, started_ts=ts, updated_ts=ts, value=value, message=message,
                  message_en=message_en, notified_ts=ts)  # fmt: skip
        self.open[a.id] = a
        return a

    def change(self, aid: str, ts: int, *, resolved: bool = False, by: str | None = None) -> list[Message]:
        """Resolve (``resolved``) or acknowledge (``by``) an open alert; closed once both happened."""
        a = self.open[aid]
        if resolved:
            a = a.model_copy(update={"state": AlertState.RESOLVED, "resolved_ts": ts, "updated_ts": ts})
        if by is not None:
            a = a.model_copy(update={"acknowledged": True, "acknowledged_by": by, "acknowledged_ts": ts,
                                     "updated_ts": ts})  # fmt: skip
        if a.retained:
            self.open[aid] = a
        else:
            del self.open[aid]
        return self.alert_messages(a)

    def alert_message(self, a: Alert) -> Message:
        return self.message(alert_topic(self.id, a.id), a.to_json(), a.updated_ts, retain=a.retained)

    def alert_messages(self, a: Alert) -> list[Message]:
        """An alert change as the gateway publishes it: retained while open; the final state not
        retained, then the retained message cleared (an empty retained payload)."""
        out = [self.alert_message(a)]
        if not a.retained:
            out.append(self.message(out[0].topic, b"", a.updated_ts, retain=True))
        return out

    def head(self, ts: int) -> Message:
        """The records' signed head of the local day before ``ts``: the chain grew since the last."""
        self.head_seq += self.rng.randrange(50, 400)
        day = local_day(ts, self.tz) - timedelta(days=1)
        chain = hashlib.sha256(f"{self.cfg.seed}/{self.id}/{self.head_seq}".encode()).hexdigest()
        head = DayHead(self.id, day.isoformat(), self.cfg.timezone, self.head_seq, chain, ts, self.key_id)
        signed = sign(self.key, head)
        return self.message(records_head_topic(self.id), signed.to_contract().to_json(), ts, retain=True)


class SiteTraffic:
    """The schedule of every site's messages from ``start_ms`` on; ``due(now_ms)`` takes what is due."""

    def __init__(self, config: TrafficConfig, start_ms: int) -> None:
        self.config = config
        self.start_ms = start_ms
        self.now_ms = start_ms
        self._heap: list[tuple[int, int, _Event]] = []
        self._order = itertools.count()  # ties broken by scheduling order: deterministic too
        self.sites = {s: _Site(s, config, self._at) for s in config.site_ids()}
        for site in self.sites.values():
            self._start(site)

    def public_key(self, site: str) -> Ed25519PublicKey:
        return self.sites[site].key.public_key()

    def write_public_keys(self, folder: Path) -> dict[str, Path]:
        """Each site's records public key as ``{site}.pub`` (what the centre is configured with)."""
        out = {}
        for site in self.sites.values():
            out[site.id] = folder / f"{site.id}.pub"
            write_public_key(out[site.id], site.key.public_key())
        return out

    def rooms(self, site: str) -> dict[str, str]:
        """Device → room of a site (what its kit says; each ``DeviceStatus`` carries it, as the edge's do)."""
        return {d.id: d.room for d in self.sites[site].devices}

    def due(self, now_ms: int) -> list[Message]:
        """Every message scheduled up to ``now_ms`` not yet taken, in time order."""
        out: list[Message] = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            ts, _, event = heapq.heappop(heap)
            out += event(ts)
        self.now_ms = max(self.now_ms, now_ms)
        return out

    def next_ms(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def _at(self, ts: int, event: _Event) -> None:
        heapq.heappush(self._heap, (ts, next(self._order), event))

    def _every(self, first: int, period: int, make: Callable[[int], list[Message]]) -> None:
        def fire(ts: int) -> list[Message]:
            self._at(ts + period, fire)
            return make(ts)

        self._at(first, fire)

    def _start(self, s: _Site) -> None:
        cfg, t0, rng = self.config, self.start_ms, s.rng
        edge = EdgeStatus(ts=t0, online=True, version="traffic", devices=[d.id for d in s.devices], clock_ok=True)
        self._at(t0, lambda ts: [s.message(edge_topic(s.id, s.agent), edge.to_json(), ts, retain=True), s.head(ts)])
        self._every(t0 + rng.randrange(cfg.heartbeat_ms), cfg.heartbeat_ms, lambda ts: [s.message(
            gateway_topic(s.id), GatewayStatus(ts=ts, online=True, heartbeat_s=cfg.heartbeat_ms / 1000).to_json(), ts,
            retain=True)])  # fmt: skip
        for d in s.devices:
            period = cfg.air_ms if d.stream is Stream.AIR else cfg.reading_ms
            self._every(t0 + d.rng.randrange(period), period, functools.partial(s.reading, d))
            self._every(t0, cfg.status_ms, self._status_event(s, d))
        self._at(self._next_midnight(s, t0), self._midnight_event(s))
        if cfg.incident_mean_ms > 0 and s.clips:
            self._at(t0 + round(rng.expovariate(1 / cfg.incident_mean_ms)), self._incident_event(s))

    @staticmethod
    def _status_event(s: _Site, d: _Device) -> _Event:
        def fire(ts: int) -> list[Message]:
            d.battery = max(5.0, d.battery - d.rng.uniform(0, 0.2))
            status = DeviceStatus(ts=ts, online=True, battery_pct=round(d.battery, 1),
                                  rssi_dbm=d.rng.randrange(-80, -40), room=d.room)  # fmt: skip
            return [s.message(status_topic(s.id, d.id), status.to_json(), ts, retain=True)]

        return fire

    def _next_midnight(self, s: _Site, ts: int) -> int:
        day = local_day(ts, s.tz) + timedelta(days=1)
        return int(datetime.combine(day, dtime(), s.tz).timestamp() * 1000) + 1_000

    def _midnight_event(self, s: _Site) -> _Event:
        def fire(ts: int) -> list[Message]:
            self._at(self._next_midnight(s, ts), fire)
            return [s.head(ts)]

        return fire

    def _incident_event(self, s: _Site) -> _Event:
        """A child turns prone; after 5 s the gateway raises ``prone``; the child is turned back after
        20–90 s (resolved); staff acknowledge it within a minute, before or after the resolve."""

        def fire(ts: int) -> list[Message]:
            cfg, rng = self.config, s.rng
            self._at(ts + round(rng.expovariate(1 / cfg.incident_mean_ms)) + 1, fire)
            clip = rng.choice(s.clips)
            if clip.position is Position.PRONE:
                return []  # an incident of that child is still running
            clip.position = Position.PRONE
            raised = ts + cfg.span(rng, 5_000, 5_000)
            back, ack_ts = raised + cfg.span(rng, 15_000, 85_000), raised + cfg.span(rng, 2_000, 60_000)

            def raise_(t: int) -> list[Message]:
                a = s.raise_alert("prone", Severity.CRITICAL, clip, t, value=Position.PRONE.value,
                                  message="うつぶせ寝を検知しました", message_en="Prone sleeping detected")  # fmt: skip
                self._at(back, functools.partial(turn_back, a.id))
                self._at(ack_ts, functools.partial(s.change, a.id, by="hoikushi-1"))
                return [s.alert_message(a)]

            def turn_back(aid: str, t: int) -> list[Message]:
                clip.position = Position.SUPINE
                return s.change(aid, t, resolved=True)

            self._at(raised, raise_)
            return []

        return fire


# ------------------------------------------------------------------ publishing


_MODELS: dict[TopicKind, type[_Payload]] = {
    TopicKind.STATUS: DeviceStatus,
    TopicKind.EDGE: EdgeStatus,
    TopicKind.ALERT: Alert,
    TopicKind.GATEWAY: GatewayStatus,
    TopicKind.RECORDS_HEAD: RecordsHead,
}


def decode_message(topic: str, payload: bytes) -> _Payload | None:
    """A message's payload as its contract model (None: a cleared retained message); raises
    ContractError like any receiver would refuse it."""
    t = parse_topic(topic)
    if is_cleared(t.kind, payload):
        return None
    if t.kind is TopicKind.READING:
        assert t.stream is not None
        return parse_reading(t.stream, payload)
    return decode(_MODELS[t.kind], payload)


def signed_head(payload: bytes) -> SignedHead:
    return SignedHead.from_contract(decode(RecordsHead, payload))


class _Connection:
    """One site's MQTT connection, across failovers: publishes through paho directly (no coroutine
    per message: several times cheaper than ``aiomqtt.Client.publish``), marks each ``Sent``
    acknowledged from paho's PUBACK callback (aiomqtt's own still follows), and when the connection
    is lost or a PUBACK does not come, connects to the next of the site's brokers and sends again
    what was not acknowledged (at least once: a receiver may get such a message twice)."""

    def __init__(self, site: str, brokers: Brokers, audit: Audit) -> None:
        self.site, self.brokers, self.audit = site, broker_list(brokers), audit
        self.turn = 0
        self.client: aiomqtt.Client | None = None
        self.lost = True
        #: In flight on the current connection, by mid (each connection counts mids from 1 again).
        self.waiting: dict[int, tuple[Message, Sent]] = {}
        #: To send on the next connection, in order.
        self.queue: list[tuple[Message, Sent]] = []
        self.wake = asyncio.Event()
        #: Stopwatch of the last PUBACK (or of the last flush): a connection silent for
        #: PUBLISH_TIMEOUT_S while messages are owed is given up.
        self.progress_s = 0.0

    async def connect(self) -> bool:
        """Connect to the first broker that accepts, from the one after the last; False: none did."""
        await self.close()
        unacknowledged, self.waiting = self.waiting, {}
        self.queue[:0] = unacknowledged.values()  # in the order they were sent
        unacknowledged.clear()
        for _ in self.brokers:
            url = self.brokers[self.turn % len(self.brokers)]
            client = url.client(f"traffic-{self.site}", keepalive=30, clean_session=True)
            if len(self.brokers) > 1:
                client.timeout = FAILOVER_CONNECT_TIMEOUT_S
            waiting: dict[int, tuple[Message, Sent]] = {}
            self._hook(client, waiting)
            try:
                await client.__aenter__()
            except aiomqtt.MqttError:
                self.turn += 1
                continue
            self.client, self.waiting, self.lost = client, waiting, False
            self.audit.failovers += self.audit.connects[self.site] > 0
            self.audit.connects[self.site] += 1
            return True
        return False

    def _hook(self, client: aiomqtt.Client, waiting: dict[int, tuple[Message, Sent]]) -> None:
        paho = client._client  # aiomqtt 2.x exposes neither the in-flight window nor the mids
        paho.max_inflight_messages_set(INFLIGHT)
        paho.disable_logger()  # a DEBUG line per packet, formatted or not: a tenth of the CPU
        on_publish, on_disconnect = paho.on_publish, paho.on_disconnect

        def published(*args: Any) -> None:  # (client, userdata, mid, reason code, properties)
            done = waiting.pop(args[2], None)
            if done is not None:
                done[1].acked, done[1].acked_s = True, time.perf_counter()
                self.progress_s = done[1].acked_s
            if not waiting:
                self.wake.set()
            if on_publish is not None:
                on_publish(*args)

        def disconnected(*args: Any) -> None:
            if waiting is self.waiting:
                self.lost = True
                self.wake.set()
            if on_disconnect is not None:
                on_disconnect(*args)

        paho.on_publish, paho.on_disconnect = published, disconnected

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):  # a lost connection may fail to close: it is gone
                await client.__aexit__(None, None, None)
            lost = client._disconnected  # read, or asyncio logs "Future exception was never retrieved"
            if lost.done() and not lost.cancelled():
                lost.exception()

    def flush(self) -> None:
        """Hand the queue to paho (it keeps ``INFLIGHT`` in flight and the rest until PUBACKs come)."""
        assert self.client is not None
        paho = self.client._client
        queue, self.queue = self.queue, []
        self.progress_s = time.perf_counter()
        for n, (m, rec) in enumerate(queue):
            info = paho.publish(m.topic, m.payload, qos=1, retain=m.retain)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                self.lost = True
                self.queue = queue[n:]
                return
            if info.is_published():
                rec.acked, rec.acked_s = True, time.perf_counter()
            else:
                self.waiting[info.mid] = (m, rec)

    async def settle(self, deadline_s: float) -> bool:
        """Send what is queued and wait until all of it is acknowledged (True), failing over to the
        next broker on the way; False at ``deadline_s`` (stopwatch) with some still owed."""
        while True:
            if (self.lost or self.client is None) and not await self.connect():
                if time.perf_counter() >= deadline_s:
                    return False
                await asyncio.sleep(0.2)
                continue
            self.flush()
            while self.waiting and not self.lost:
                self.wake.clear()
                left = min(self.progress_s + PUBLISH_TIMEOUT_S, deadline_s) - time.perf_counter()
                try:
                    await asyncio.wait_for(self.wake.wait(), max(left, 0.001))
                except TimeoutError:
                    now = time.perf_counter()
                    if now >= deadline_s:
                        return False
                    if now - self.progress_s >= PUBLISH_TIMEOUT_S:
                        self.lost = True  # no PUBACK for PUBLISH_TIMEOUT_S: try the next broker
            if not self.lost and not self.queue:
                return True


async def publish(
    traffic: SiteTraffic,
    broker_for: Callable[[str], Brokers],
    clock: Clock,
    until_ms: int,
    *,
    audit: Audit | None = None,
    step_ms: int = 100,
    settle_s: float = 60.0,
) -> Audit:
    """Publish every site's messages due until ``until_ms`` of ``clock``, each site on its own MQTT
    connection (client id ``traffic-{site}``, to ``broker_for(site)`` — one broker, or the nodes of a
    cluster to fail over to), QoS 1, each round's messages in flight together.

    Real time: ``clock`` a SystemClock (or a clock another task moves): a round every ``step_ms``.
    As fast as it can: a ManualClock, which ``publish`` moves ``step_ms`` itself after each round
    (the next round starts once the last one's PUBACKs are in). A connection lost (or a PUBACK that
    does not come within ``PUBLISH_TIMEOUT_S``) moves the site to its next broker, where what was
    not acknowledged is sent again; whatever is still not acknowledged ``settle_s`` after the last
    round is counted in ``audit.errors["not_acknowledged"]``."""
    audit = audit if audit is not None else Audit()
    conns = {site: _Connection(site, broker_for(site), audit) for site in traffic.sites}
    try:
        audit.started_s = time.perf_counter()
        while True:
            now = min(clock.now_ms(), until_ms)
            for m in traffic.due(now):
                rec = Sent(m.site, *message_key(m.topic, m.payload), m.retain, m.ts)
                audit.sent.append(rec)
                conns[m.site].queue.append((m, rec))
            last = now >= until_ms
            # A round waits for its PUBACKs (failovers included) PUBLISH_TIMEOUT_S at most, the last
            # one settle_s: a site whose brokers are all away holds the others up that long, no longer
            # (what it owes goes out with a later round).
            deadline = time.perf_counter() + (settle_s if last else PUBLISH_TIMEOUT_S)
            await asyncio.gather(*(c.settle(deadline) for c in conns.values()))
            if last:
                owed = sum(len(c.waiting) + len(c.queue) for c in conns.values())
                if owed:
                    audit.errors["not_acknowledged"] += owed
                break
            if isinstance(clock, ManualClock):
                clock.advance(step_ms)
            else:
                await asyncio.sleep(step_ms / 1000)
        audit.finished_s = time.perf_counter()
    finally:
        await asyncio.gather(*(c.close() for c in conns.values()))
    return audit


async def _measure(args: argparse.Namespace) -> None:
    cfg = TrafficConfig(sites=args.sites, devices=args.devices, seed=args.seed, air_ms=args.air_ms)
    url = BrokerURL.parse(args.broker)
    real = SystemClock()
    clock: Clock = ManualClock(real.now_ms()) if args.fast else real
    start = clock.now_ms()
    traffic = SiteTraffic(cfg, start)
    cpu = time.process_time()
    audit = await publish(traffic, lambda _site: url, clock, start + args.seconds * 1000, step_ms=args.step_ms)
    cpu = time.process_time() - cpu
    wall = audit.finished_s - audit.started_s
    acked = len(audit.acked)
    mode = " (as fast as acknowledged)" if args.fast else ""
    print(f"{cfg.sites} sites x {cfg.devices} devices, {args.seconds} s of schedule{mode}: {acked} acknowledged "
          f"of {len(audit.sent)} in {wall:.2f} s wall = {acked / wall:.0f} msg/s; {cpu:.2f} s CPU = "
          f"{acked / cpu:.0f} msg per CPU-second; errors {dict(audit.errors)}; {dict(audit.by_kind())}")  # fmt: skip


if __name__ == "__main__":
    # `python -m tests.support.site_traffic --broker mqtt://127.0.0.1:1883 --sites 100 --fast`: the rate
    # one process publishes at (--fast: the schedule as fast as the broker acknowledges it).
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--air-ms", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--step-ms", type=int, default=100)
    asyncio.run(_measure(parser.parse_args()))
