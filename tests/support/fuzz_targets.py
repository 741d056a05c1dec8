"""Fuzz targets shared by the test suite (tests/test_fuzz_*.py, a fast derandomized sample) and
bench/fuzz.py (≥ 100k inputs): hypothesis strategies for hostile input and the property each target
must keep (bad input is counted by reason, nothing crashes).

A target is ``Target(name, strategy, run)``: ``run(example)`` feeds one drawn example to the code
under test and raises AssertionError when a property breaks (any other exception is a crash). Every
run also adds to ``TALLY`` what it fed in and how it was judged, which the bench prints.

Properties, per part:
- edge decoders (bytes in): never raise; every rejection they return is counted exactly once, under a
  reason of the decoder's declared set; accepted frames equal what the simulator encoded; valid frames
  spliced between runs of garbage are still found; the result does not depend on the chunking; the
  buffer stays bounded;
- edge channels: never raise; readings are contract models that survive a JSON round trip; problem
  counters only grow, under known reasons;
- gateway ``handle`` and dashboard ``apply``: never raise, never count ``internal_error``; each
  message is rejected at most once, under a known reason; an accepted reading is stored; everything
  the gateway queues for publishing and every live event is well-formed (contract model / strict JSON).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from dashboard.live.link import LiveLink
from dashboard.live.state import Event
from edge.channels.air import Mhz19bChannel, Pms5003Channel, SenseairS8Channel
from edge.channels.base import Channel
from edge.channels.ble import BTHomeAirChannel, ThermometerChannel
from edge.channels.clip import ClipChannel
from edge.channels.mat import MatChannel
from edge.decoders.bthome import BTHomeDecoder, BTHomePacket, parse_bthome
from edge.decoders.bthome import RejectReason as BTHomeReason
from edge.decoders.byte_framing import ByteFramer, FramingReason
from edge.decoders.health_thermometer import RejectReason as ThermoReason
from edge.decoders.health_thermometer import TemperatureMeasurement, decode_temperature_measurement
from edge.decoders.mhz19b import Mhz19bDecoder, Mhz19bReading, Mhz19bReason
from edge.decoders.nmea import MAX_LINE_BYTES, ImuSample, MatFrame, NmeaDecoder
from edge.decoders.nmea import RejectReason as NmeaReason
from edge.decoders.pms5003 import Pms5003Decoder, PmsFrame, PmsReason
from edge.decoders.rejection import Rejection
from edge.decoders.senseair_s8 import ModbusException, S8Reading, S8Reason, SenseairS8Decoder
from firmware_sim.encoders.bthome import encode_bthome
from firmware_sim.encoders.health_thermometer import encode_temperature_measurement
from firmware_sim.encoders.nmea import corrupt_checksum, encode_imu, encode_mat
from firmware_sim.models.mhz19b import encode_reply
from firmware_sim.models.pms5003 import encode_frame
from firmware_sim.models.senseair_s8 import encode_exception, encode_registers
from gateway.config import RulesConfig
from gateway.db.store import Store
from gateway.engine.site import SiteEngine
from nurserywatch.clock import ManualClock
from nurserywatch.command_auth import REASONS
from nurserywatch.contract import (
    MAX_PAYLOAD_BYTES,
    Alert,
    ContractError,
    DeviceAssignment,
    GatewayStatus,
    SessionState,
    Stream,
    TopicKind,
    load_json_object,
    parse_reading,
    parse_topic,
)
from nurserywatch.kit import STREAMS_BY_KIND, Kit, load_kit
from nurserywatch.mqtt import BrokerURL
from tests.support.clock import T0
from tests.support.commands import COMMAND_VERIFIER, signed

ROOT = Path(__file__).resolve().parents[2]
#: Every device kind, BLE ones with a bindkey: the kit the gateway and dashboard targets run with.
KIT: Kit = load_kit(ROOT / "configs" / "kit.example.yaml")
SITE = KIT.site
MAX_TS = 32503680000000  # the contract's UnixMs bound (year 3000)

# ---------------------------------------------------------------- settings profiles

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]
#: The test suite: a few hundred examples per target, the same ones every run (CI must not flake).
settings.register_profile(
    "ci", max_examples=200, derandomize=True, database=None, deadline=None, suppress_health_check=_HEALTH
)
#: Local digging: random, many more examples, failures remembered in .hypothesis/.
settings.register_profile("dev", max_examples=3000, deadline=None, suppress_health_check=_HEALTH)
PROFILE = os.environ.get("NURSERYWATCH_FUZZ_PROFILE", "ci")


def fuzz_settings(**overrides: Any) -> settings:
    """The active profile (NURSERYWATCH_FUZZ_PROFILE, default ``ci``) with per-target overrides."""
    return settings(settings.get_profile(PROFILE), **overrides)


# ---------------------------------------------------------------- tally (what the bench prints)


@dataclass
class Tally:
    #: target → calls into the code under test (byte chunks fed, payloads decoded, messages handled)
    inputs: Counter[str] = field(default_factory=Counter)
    #: (target, reason) → rejections counted by the code under test
    rejected: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: target → frames / readings / messages accepted
    accepted: Counter[str] = field(default_factory=Counter)

    def reject(self, target: str, counts: Counter[str]) -> None:
        for reason, n in counts.items():
            if n:
                self.rejected[(target, reason)] += n


TALLY = Tally()


@dataclass(frozen=True)
class Target:
    name: str
    strategy: st.SearchStrategy[Any]
    run: Callable[[Any], None]


# ---------------------------------------------------------------- generic hostile bytes

#: Bytes that matter to some framing: starts, line ends, separators, the S8 function codes.
_SPECIAL_BYTES = b"$*,\r\n\x42\x4d\x00\x1c\xff\x86\xfe\x04\x02\x83\x84\x03 -0123456789ABCDEFNWIMUAT"
noise = st.one_of(
    st.binary(max_size=48),
    st.lists(st.sampled_from(list(_SPECIAL_BYTES)), max_size=48).map(bytes),
    st.binary(min_size=200, max_size=3000),
)


@st.composite
def spliced(draw: st.DrawFn, frames: st.SearchStrategy[tuple[bytes, Any]], bad: st.SearchStrategy[bytes]) -> Any:
    """Valid frames, corrupted frames and noise in any order, then cut into chunks: (chunks, expected)."""
    parts = draw(
        st.lists(
            st.one_of(
                frames.map(lambda f: ("frame", f)), bad.map(lambda b: ("bad", b)), noise.map(lambda b: ("bad", b))
            ),
            max_size=12,
        )
    )
    stream = b"".join(value[0] if kind == "frame" else value for kind, value in parts)
    expected = [value[1] for kind, value in parts if kind == "frame"]
    cuts = draw(st.lists(st.integers(0, max(0, len(stream))), max_size=16))
    points = sorted({*cuts, 0, len(stream)})
    chunks = [stream[a:b] for a, b in zip(points, points[1:], strict=False)]
    return chunks, expected


def _lcs(a: Sequence[Any], b: Sequence[Any]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b):
            cur = row[j + 1]
            row[j + 1] = prev + 1 if x == y else max(row[j + 1], row[j])
            prev = cur
    return row[-1]


# ---------------------------------------------------------------- edge: serial decoders

NMEA_REASONS = {r.value for r in NmeaReason}
FRAMING_REASONS = {r.value for r in FramingReason}

imu_frames = st.builds(
    lambda s, x, y, z: (encode_imu(s, x, y, z), ImuSample(s, x, y, z)),
    st.integers(0, 65535),
    *[st.integers(-32767, 32767)] * 3,
)
mat_frames = st.builds(
    lambda s, fs, xs: (encode_mat(s, fs, xs), MatFrame(s, fs, tuple(xs))),
    st.integers(0, 65535),
    st.integers(1, 10000),
    st.lists(st.integers(-(2**31) + 1, 2**31 - 1), min_size=1, max_size=40),
)
nmea_frames = st.one_of(imu_frames, mat_frames)
nmea_bad = st.one_of(
    nmea_frames.map(lambda f: corrupt_checksum(f[0])),
    nmea_frames.map(lambda f: f[0][: len(f[0]) // 2]),  # cut off (the next '$' or line end judges it)
    st.text(max_size=80).map(lambda t: b"$" + t.encode("utf-8", "surrogatepass") + b"\r\n"),
    st.integers(MAX_LINE_BYTES - 4, MAX_LINE_BYTES + 40).map(lambda n: b"$NWMAT," + b"1," * n + b"*00\r\n"),
)


def _check_decoded(
    name: str, out: Sequence[Any], before: Counter[str], after: Counter[str], known: set[str]
) -> tuple[list[Any], list[Rejection]]:
    frames = [x for x in out if not isinstance(x, Rejection)]
    rejections = [x for x in out if isinstance(x, Rejection)]
    counted = after - before
    assert counted == Counter(r.reason for r in rejections), (counted, rejections)
    assert set(counted) <= known, f"{name}: unknown reason(s) {set(counted) - known}"
    TALLY.reject(name, counted)
    TALLY.accepted[name] += len(frames)
    return frames, rejections


def run_nmea(example: tuple[list[bytes], list[Any]]) -> None:
    chunks, expected = example
    dec = NmeaDecoder()
    got: list[Any] = []
    for chunk in chunks:
        before = dec.rejected.copy()
        frames, _ = _check_decoded("nmea", dec.decode(chunk), before, dec.rejected, NMEA_REASONS)
        got += frames
        assert len(dec._line) <= MAX_LINE_BYTES and len(dec._garbage) <= 32  # bounded buffer
    TALLY.inputs["nmea"] += len(chunks)
    assert dec.accepted == len(got)
    # A '$' always starts a new sentence and a line end ends one: no noise can hide a valid sentence.
    assert _lcs(expected, got) == len(expected), (expected, got)
    whole = NmeaDecoder()
    assert whole.feed(b"".join(chunks)) == got and whole.rejected == dec.rejected, "depends on the chunking"


@dataclass(frozen=True)
class FramerCase:
    name: str
    make: Callable[[], ByteFramer[Any]]
    frames: st.SearchStrategy[tuple[bytes, Any]]
    bad: st.SearchStrategy[bytes]
    reasons: set[str]


def _pms_key(f: PmsFrame) -> tuple[int, ...]:
    return (f.pm1_cf1_ugm3, f.pm25_cf1_ugm3, f.pm10_cf1_ugm3, f.pm1_ugm3, f.pm25_ugm3, f.pm10_ugm3,
            *f.particles_per_dl, f.reserved)  # fmt: skip


def _flip(data: bytes, at: int, bit: int) -> bytes:
    i = at % len(data)
    return data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1 :]


pms_frames = st.lists(st.integers(0, 0xFFFF), min_size=13, max_size=13).map(lambda w: (encode_frame(w), tuple(w)))
mhz_frames = st.tuples(st.integers(0, 0xFFFF), st.integers(-40, 215)).map(
    lambda v: (encode_reply(v[0], v[1]), Mhz19bReading(v[0]))
)
s8_frames = st.one_of(
    st.integers(0, 0xFFFF).map(lambda v: (encode_registers(0xFE, 4, [v]), S8Reading(v))),
    st.integers(0, 255).map(lambda c: (encode_exception(0xFE, 4, c), ModbusException(0x84, c))),
)


def _corrupted(frames: st.SearchStrategy[tuple[bytes, Any]]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.builds(lambda f, at, bit: _flip(f[0], at, bit), frames, st.integers(0, 64), st.integers(0, 7)),
        st.builds(lambda f, n: f[0][:n], frames, st.integers(0, 31)),
    )


u16 = st.integers(0, 0xFFFF)
FRAMERS = [
    FramerCase("pms5003", Pms5003Decoder, pms_frames, _corrupted(pms_frames),
               FRAMING_REASONS | {r.value for r in PmsReason}),
    FramerCase("mhz19b", Mhz19bDecoder, mhz_frames, _corrupted(mhz_frames),
               FRAMING_REASONS | {r.value for r in Mhz19bReason}),
    FramerCase("senseair_s8", SenseairS8Decoder, s8_frames,
               st.one_of(_corrupted(s8_frames),
                         # valid Modbus frames the edge must not take: another address, another function
                         st.builds(lambda a, v: encode_registers(a, 4, [v]), st.integers(0, 0xFD), u16),
                         st.builds(lambda v: encode_registers(0xFE, 3, [v]), u16),
                         st.builds(lambda c: encode_exception(0xFE, 3, c), st.integers(0, 255))),
               FRAMING_REASONS | {r.value for r in S8Reason}),
]  # fmt: skip


def framer_runner(case: FramerCase) -> Callable[[tuple[list[bytes], list[Any]]], None]:
    key: Callable[[Any], Any] = _pms_key if case.name == "pms5003" else (lambda f: f)

    def run(example: tuple[list[bytes], list[Any]]) -> None:
        chunks, expected = example
        dec = case.make()
        got: list[Any] = []
        bound = dec.format.max_frame + dec.format.strong_len
        for chunk in chunks:
            before = dec.rejected.copy()
            frames, _ = _check_decoded(case.name, dec.decode(chunk), before, dec.rejected, case.reasons)
            got += [key(f) for f in frames]
            assert len(dec._buf) <= bound, f"buffer {len(dec._buf)} > {bound}"
        TALLY.inputs[case.name] += len(chunks)
        assert dec.accepted == len(got)
        # A valid frame is lost only to a chance frame found in the noise that overlaps it (1 in
        # 256 for an MH-Z19B checksum): never more lost than extra frames found.
        common = _lcs(expected, got)
        assert len(expected) - common <= len(got) - common, (expected, got)
        whole = case.make()
        assert [key(f) for f in whole.feed(b"".join(chunks))] == got, "depends on the chunking"
        assert whole.rejected == dec.rejected, "counts depend on the chunking"
        dec.reset()
        assert not dec._buf

    return run


# ---------------------------------------------------------------- edge: BLE payload decoders

MAC = "A4:C1:38:00:11:22"
KEY = bytes(range(16))
bthome_valid = st.builds(
    lambda objs, enc, counter, mac_in: encode_bthome(
        objs, bindkey=KEY if enc else None, mac=MAC, counter=counter, mac_in_payload=mac_in
    ),
    st.lists(
        st.one_of(
            st.tuples(st.just(0x00), st.integers(0, 255)),
            st.tuples(st.just(0x01), st.integers(0, 255)),
            st.tuples(st.just(0x02), st.integers(-32768, 32767).map(lambda v: v / 100)),
            st.tuples(st.just(0x03), st.integers(0, 65535).map(lambda v: v / 100)),
            st.tuples(st.sampled_from([0x0D, 0x0E, 0x12]), st.integers(0, 65535)),
        ),
        max_size=6,
    ),
    st.booleans(),
    st.integers(0, 2**32 - 1),
    st.booleans(),
)
bthome_payloads = st.one_of(
    st.binary(max_size=40),
    st.binary(max_size=30).map(lambda b: bytes([0x40 | (b[0] & 0x07 if b else 0)]) + b[1:]),  # version 2 info
    bthome_valid,
    st.builds(lambda p, at, bit: _flip(p, at, bit) if p else p, bthome_valid, st.integers(0, 40), st.integers(0, 7)),
    st.builds(lambda p, n: p[:n], bthome_valid, st.integers(0, 30)),
)
BTHOME_REASONS = {r.value for r in BTHomeReason}


def run_bthome(example: tuple[list[tuple[bytes, int]], bool]) -> None:
    adverts, keyed = example
    dec = BTHomeDecoder(MAC, KEY if keyed else None)
    now = T0
    for data, dt in adverts:
        now += dt
        assert isinstance(parse_bthome(data, MAC, KEY if keyed else None), BTHomePacket | Rejection)
        before = (dec.accepted, dec.duplicates, dec.rejected.copy())
        result = dec.decode(data, now)
        counted = dec.rejected - before[2]
        assert set(counted) <= BTHOME_REASONS
        accepted, dup = dec.accepted - before[0], dec.duplicates - before[1]
        if isinstance(result, BTHomePacket):
            # accepted, plus ``unknown_object`` when decoding had to stop at an unknown id
            assert accepted == 1 and dup == 0
            assert counted == (Counter({"unknown_object": 1}) if result.unknown_object_id is not None else Counter())
            TALLY.accepted["bthome"] += 1
        else:
            assert accepted == 0 and isinstance(result, Rejection) and result.reason in BTHOME_REASONS
            if result.reason == BTHomeReason.DUPLICATE:
                assert dup == 1 and not counted
            else:
                assert dup == 0 and counted == Counter({result.reason: 1})
        TALLY.reject("bthome", counted)
    TALLY.inputs["bthome"] += len(adverts)


thermo_valid = st.builds(
    lambda v, f, t, ty, dec: encode_temperature_measurement(v, fahrenheit=f, temp_type=ty, decimals=dec),
    st.floats(-100, 200, allow_nan=False),
    st.booleans(),
    st.none(),
    st.one_of(st.none(), st.integers(0, 255)),
    st.integers(0, 3),
)
thermo_payloads = st.one_of(
    st.binary(max_size=20),
    thermo_valid,
    st.builds(lambda p, extra: p + extra, thermo_valid, st.binary(min_size=1, max_size=4)),
    st.builds(
        lambda raw, flags: bytes([flags]) + raw.to_bytes(4, "little") + bytes(8),
        st.integers(0, 2**32 - 1),
        st.integers(0, 255),
    ),
)
THERMO_REASONS = {r.value for r in ThermoReason}


def run_thermometer(payloads: list[bytes]) -> None:
    for data in payloads:
        result = decode_temperature_measurement(data)
        if isinstance(result, Rejection):
            assert result.reason in THERMO_REASONS
            TALLY.rejected[("thermometer", result.reason)] += 1
        else:
            assert isinstance(result, TemperatureMeasurement)
            assert result.celsius == result.celsius and abs(result.celsius) != float("inf")  # finite
            TALLY.accepted["thermometer"] += 1
    TALLY.inputs["thermometer"] += len(payloads)


# ---------------------------------------------------------------- edge: channels (what the shells feed)

CHANNEL_EXTRA = {"unexpected_frame", "out_of_range", "no_reply", "modbus_exception", "queue_full"}


@dataclass(frozen=True)
class ChannelCase:
    name: str
    make: Callable[[], Channel]
    #: What one on_bytes call gets: chunks of a serial stream, or whole BLE payloads.
    inputs: st.SearchStrategy[list[bytes]]
    reasons: set[str]


def _chunks(
    frames: st.SearchStrategy[tuple[bytes, Any]], bad: st.SearchStrategy[bytes]
) -> st.SearchStrategy[list[bytes]]:
    return spliced(frames, bad).map(lambda e: e[0])


# A mat streams one rate; a change of rate restarts its analysis, so mostly keep it at 25 Hz.
mat_stream = st.builds(
    lambda s, fs, xs: (encode_mat(s, fs, xs), None),
    st.integers(0, 65535),
    st.one_of(st.just(25), st.integers(1, 400)),
    st.lists(st.integers(-(2**31) + 1, 2**31 - 1), min_size=1, max_size=30),
)
CHANNELS = [
    ChannelCase("clip_channel", lambda: ClipChannel("clip-01"), _chunks(nmea_frames, nmea_bad), NMEA_REASONS),
    ChannelCase("mat_channel", lambda: MatChannel("mat-01"),
                _chunks(st.one_of(mat_stream, mat_frames, imu_frames), nmea_bad), NMEA_REASONS),
    ChannelCase("pms5003_channel", lambda: Pms5003Channel("pm-01"), _chunks(pms_frames, FRAMERS[0].bad),
                FRAMERS[0].reasons),
    ChannelCase("mhz19b_channel", lambda: Mhz19bChannel("co2-01"), _chunks(mhz_frames, FRAMERS[1].bad),
                FRAMERS[1].reasons),
    ChannelCase("senseair_s8_channel", lambda: SenseairS8Channel("co2-02"), _chunks(s8_frames, FRAMERS[2].bad),
                FRAMERS[2].reasons),
    ChannelCase("thermometer_channel", lambda: ThermometerChannel("thermo-03"), st.lists(thermo_payloads, max_size=12),
                THERMO_REASONS),
    ChannelCase("bthome_channel", lambda: BTHomeAirChannel("air-risu", MAC, KEY),
                st.lists(bthome_payloads, max_size=12), BTHOME_REASONS - {"duplicate"}),
]  # fmt: skip


def channel_runner(case: ChannelCase) -> Callable[[tuple[list[bytes], list[int]]], None]:
    known = case.reasons | CHANNEL_EXTRA

    def run(example: tuple[list[bytes], list[int]]) -> None:
        inputs, steps = example
        ch = case.make()
        now = T0
        seen: Counter[str] = Counter()
        for i, data in enumerate(inputs):
            now += steps[i % len(steps)] if steps else 40
            if ch.poll_interval_s is not None and i % 3 == 0:
                assert ch.request()
            if i % 5 == 4:
                ch.port_opened()  # the port came back: partial frames are forgotten
            ch.on_bytes(data, now)
            for stream, reading in ch.readings(now):
                assert isinstance(reading, BaseModel)
                assert parse_reading(stream, reading.model_dump_json()) == reading  # the contract accepts it
                TALLY.accepted[case.name] += 1
            problems = ch.problems()
            assert not (seen - problems), f"a counter went down: {seen} → {problems}"
            assert set(problems) <= known, f"unknown reason(s) {set(problems) - known}"
            if problems != seen:
                assert ch.last_problem() is not None
            seen = problems
        TALLY.reject(case.name, seen)
        TALLY.inputs[case.name] += len(inputs)

    return run


# ---------------------------------------------------------------- MQTT: topics and payloads

idents = st.from_regex(r"\A[a-z0-9_-]{1,12}\Z")
odd_idents = st.one_of(
    st.just(""),
    st.just("+"),
    st.just("#"),
    st.just("A"),
    st.just("x" * 65),
    st.text(max_size=12),
    st.sampled_from(["ひよこ", "mat-01 ", "mat-01\x00", "../mat-01", "MAT-01", "mat/01"]),
).map(str)  # one branch: a nested one_of would be flattened and outweigh the good values
DEVICES = [d.id for d in KIT.devices]
AGENTS = [a.id for a in KIT.agents]
ROOMS = [r.id for r in KIT.rooms]
CHILDREN = [c.id for c in KIT.children]
devices = st.one_of(st.sampled_from(DEVICES), idents, odd_idents)
streams = st.one_of(st.sampled_from([s.value for s in Stream]), odd_idents)


def _topic(*parts: str, site: str = SITE) -> str:
    return "/".join(["nurserywatch", "v1", site, *parts])


topics = st.one_of(
    st.tuples(st.sampled_from(DEVICES), st.sampled_from([s.value for s in Stream])).map(
        lambda p: _topic("reading", *p)
    ),
    st.tuples(devices, streams).map(lambda p: _topic("reading", *p)),
    devices.map(lambda d: _topic("status", d)),
    st.one_of(st.sampled_from(AGENTS), idents, odd_idents).map(lambda a: _topic("edge", a)),
    st.one_of(idents, odd_idents).map(lambda a: _topic("alert", a)),
    st.one_of(idents, odd_idents).map(lambda a: _topic("escalation", a)),
    st.sampled_from(["ack", "session", "record", "assign", "nope", ""]).map(lambda c: _topic("command", c)),
    st.one_of(st.sampled_from(ROOMS), odd_idents).map(lambda r: _topic("session", r)),
    st.just(_topic("gateway")),
    devices.map(lambda d: _topic("assignment", d)),
    # wrong site, version, levels, wildcards, empty levels, unicode
    st.tuples(st.one_of(idents, odd_idents), st.sampled_from(DEVICES)).map(
        lambda p: _topic("reading", p[1], "air", site=p[0])
    ),
    st.sampled_from([
        "", "/", "#", "+/+/+", "nurserywatch", "nurserywatch/v1", f"nurserywatch/v1/{SITE}",
        f"nurserywatch/v2/{SITE}/reading/mat-01/breathing", f"nurserywatch/v1/{SITE}/reading/mat-01",
        f"nurserywatch/v1/{SITE}/reading/mat-01/breathing/extra", f"nurserywatch/v1/{SITE}/reading//breathing",
        f"/nurserywatch/v1/{SITE}/status/mat-01", f"nurserywatch/v1/{SITE}/status/mat-01/",
        f"nurserywatch/v1/{SITE}/reading/+/breathing", f"nurserywatch/v1/{SITE}/#", f"NURSERYWATCH/v1/{SITE}/gateway",
        f"nurserywatch/v1/{SITE}/command", f"nurserywatch/v1/{SITE}/status/mat-01\u0000",
    ]),
    st.text(max_size=60),
    st.lists(st.one_of(idents, odd_idents), min_size=1, max_size=8).map(lambda p: _topic(*p)),
)  # fmt: skip

#: Timestamps: near the gateway's clock mostly, and the edges of the contract's range and beyond.
timestamps = st.one_of(
    st.integers(T0 - 3_600_000, T0 + 3_600_000),
    st.integers(T0 - 60_000, T0 + 60_000),
    st.integers(0, MAX_TS),
    st.sampled_from([T0, T0 + 1000]),  # repeats: duplicates and out-of-order seq
    st.sampled_from([0, 1, MAX_TS, MAX_TS + 1, -1, 2**63, 2**64, T0 + 86_400_000 * 365]),
)
floats = st.floats(allow_nan=True, allow_infinity=True)
unit = st.floats(0, 1)
seqs = st.one_of(st.integers(0, 70000), st.integers(0, 3), st.sampled_from([-1, 2**31, 2**63 - 1, 2**63, 2**64, 2**80]))
by = st.one_of(st.text(min_size=1, max_size=20), st.just(""), st.just("x" * 129))

_READING_FIELDS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "breathing": st.fixed_dictionaries(
        {},
        optional={
            "rate_bpm": st.one_of(st.none(), st.floats(0, 200), floats),
            "amplitude": st.one_of(st.none(), floats),
            "motion": st.one_of(st.none(), unit),
            "present": st.one_of(st.none(), st.booleans()),
            "quality": st.one_of(st.none(), unit),
            "last_breath_ts": st.one_of(st.none(), timestamps),
        },
    ),
    "posture": st.fixed_dictionaries(
        {"position": st.sampled_from(["supine", "prone", "left", "right", "upright", "unknown", "sideways"])},
        optional={"accel_mg": st.lists(st.integers(-40000, 40000), min_size=2, max_size=4)},
    ),
    "body_temp": st.fixed_dictionaries({"celsius": st.one_of(st.floats(19, 46), floats)}),
    "air": st.fixed_dictionaries(
        {},
        optional={
            "co2_ppm": st.floats(-10, 110000),
            "pm25_ugm3": st.floats(-1, 11000),
            "pm10_ugm3": st.floats(-1, 11000),
            "temp_c": st.floats(-50, 90),
            "rh_pct": st.floats(-1, 101),
        },
    ),
    "waveform": st.fixed_dictionaries(
        {
            "fs_hz": st.floats(-1, 10001),
            "t0": timestamps,
            "samples": st.lists(st.integers(-(2**40), 2**40), max_size=50),
        }
    ),
}
_VALID_FIELDS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "breathing": st.fixed_dictionaries(
        {"present": st.booleans(), "rate_bpm": st.one_of(st.none(), st.floats(0, 80)), "quality": unit,
         "motion": unit, "amplitude": st.floats(0, 1000)},
        optional={"last_breath_ts": st.integers(T0 - 60_000, T0 + 400_000)},
    ),
    "posture": st.fixed_dictionaries(
        {"position": st.sampled_from(["supine", "prone", "left", "right", "upright", "unknown"])}
    ),
    "body_temp": st.fixed_dictionaries({"celsius": st.floats(35, 41)}),
    "air": st.fixed_dictionaries({}, optional={"co2_ppm": st.floats(400, 3000), "pm25_ugm3": st.floats(0, 100)}),
    "waveform": st.fixed_dictionaries(
        {"fs_hz": st.just(25), "t0": st.just(T0), "samples": st.lists(st.integers(-100, 100), max_size=5)}
    ),
}  # fmt: skip
readings = st.one_of(
    *[
        st.tuples(st.just(stream), st.fixed_dictionaries({"ts": timestamps, "seq": seqs}), fields).map(
            lambda p: (p[0], {**p[1], **p[2]})
        )
        for stream, fields in _READING_FIELDS.items()
    ]
)
alert_dicts = st.fixed_dictionaries(
    {
        "id": st.one_of(idents, odd_idents),
        "rule": st.sampled_from(["apnea", "prone", "co2_high", "fever", "BAD"]),
        "severity": st.sampled_from(["critical", "warning", "info", "fatal"]),
        "state": st.sampled_from(["active", "resolved", "gone"]),
        "started_ts": timestamps,
        "updated_ts": timestamps,
        "message": st.text(max_size=20),
        "message_en": st.text(max_size=20),
    },
    optional={
        "acknowledged": st.booleans(),
        "acknowledged_by": st.one_of(st.none(), by),
        "escalated": st.booleans(),
        "device": st.one_of(st.none(), st.sampled_from(DEVICES), odd_idents),
        "room": st.one_of(st.none(), st.sampled_from(ROOMS)),
        "value": st.one_of(st.none(), floats, st.text(max_size=5)),
        "notify_count": st.integers(-1, 5),
    },
)
OPEN_ALERT = "@open"  # replaced at run time by an alert id the gateway holds open (if any)
COMMAND_DICTS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "ack": st.fixed_dictionaries({"alert_id": st.one_of(st.just(OPEN_ALERT), idents, odd_idents), "by": by}),
    "session": st.fixed_dictionaries(
        {"room": st.one_of(st.sampled_from(ROOMS), idents), "action": st.sampled_from(["start", "stop", "pause"]),
         "by": by}
    ),
    "record": st.fixed_dictionaries(
        {"entry": st.one_of(st.integers(-1, 30), seqs), "by": by},
        optional={
            "action": st.sampled_from(["confirm", "correct", "erase"]),
            "changes": st.one_of(st.none(), st.dictionaries(
                st.sampled_from(["posture", "prone_seen", "on_mat", "breathing_rate_bpm", "breathing_ok",
                                 "body_temp_c", "note", "child"]),
                st.one_of(st.none(), st.booleans(), floats, st.text(max_size=10), st.integers(-2**70, 2**70)),
                max_size=3)),
            "reason": st.one_of(st.none(), st.text(max_size=10), st.just("r" * 501)),
        },
    ),
    "assign": st.fixed_dictionaries(
        {"device": st.one_of(st.sampled_from(DEVICES), odd_idents),
         "child": st.one_of(st.none(), st.sampled_from(CHILDREN), idents), "by": by}
    ),
}  # fmt: skip
command_dicts = st.one_of(*COMMAND_DICTS.values())
status_dicts = st.one_of(
    st.fixed_dictionaries(
        {"ts": timestamps, "online": st.booleans()},
        optional={"battery_pct": st.floats(-5, 105), "rssi_dbm": st.floats(-160, 30)},
    ),
    st.fixed_dictionaries(
        {"online": st.booleans()},
        optional={"ts": timestamps, "version": st.text(max_size=8),
                  "devices": st.lists(st.one_of(st.sampled_from(DEVICES), odd_idents), max_size=4),
                  "clock_ok": st.one_of(st.none(), st.booleans())},
    ),
    st.fixed_dictionaries(
        {"room": st.sampled_from(ROOMS), "active": st.booleans(), "updated_ts": timestamps},
        optional={"session_id": st.text(max_size=8), "source": st.sampled_from(["staff", "schedule", "moon"])},
    ),
    st.fixed_dictionaries(
        {"device": st.sampled_from(DEVICES), "source": st.sampled_from(["kit", "staff"]), "updated_ts": timestamps},
        optional={"child": st.one_of(st.none(), st.sampled_from(CHILDREN)), "day": st.text(max_size=10)},
    ),
    st.fixed_dictionaries({"online": st.booleans()}, optional={"ts": timestamps, "heartbeat_s": floats}),
)  # fmt: skip
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), floats, st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12,
)
wrong_values = st.one_of(
    json_values,
    st.sampled_from([None, True, "", "NaN", [], {}, 1e308, -0.0, 2**64, "2026-01-01T00:00:00Z", "１２３"]),
)


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A plausible payload with a field replaced by a wrong type, dropped, or an unknown one added."""
    d = dict(draw(base))
    action = draw(st.sampled_from(["keep", "keep", "replace", "drop", "add"]))
    if action == "replace" and d:
        d[draw(st.sampled_from(sorted(d)))] = draw(wrong_values)
    elif action == "drop" and d:
        del d[draw(st.sampled_from(sorted(d)))]
    elif action == "add":
        d[draw(st.text(max_size=10))] = draw(wrong_values)
    return d


def _dumps(value: Any) -> bytes:
    # allow_nan: Python's json writes NaN/Infinity literals, which JSON does not have but a buggy
    # or hostile publisher may send.
    return json.dumps(value, allow_nan=True, ensure_ascii=False).encode("utf-8", "surrogatepass")


DIGITS_5000 = "9" * 5000
special_payloads = st.sampled_from([
    b"", b" ", b"null", b"0", b'"x"', b"[]", b"{}", b"{", b"}", b"\x00", b"\xff\xfe", b"\xef\xbb\xbf{}",
    b"[" * 100_000, b"{\"a\":" * 30_000, b"[" * 20_000 + b"]" * 20_000,
    b'{"ts": NaN, "seq": 1}', b'{"ts": Infinity, "seq": 1}', b'{"ts": -Infinity, "seq": 1, "position": "supine"}',
    b'{"ts": 1e400, "seq": 1}', b'{"ts": ' + DIGITS_5000.encode() + b', "seq": 1}',
    b'{"ts": 1767225600000, "seq": ' + DIGITS_5000.encode() + b'}',
    b'{"ts": 1767225600000, "seq": 1, "position": "supine", "accel_mg": [' + b"[" * 5000 + b"]" * 5000 + b"]}",
    b'{"ts": 1767225600000, "ts": "late", "seq": 1, "position": "supine"}',
    b'{"ts": 1767225600000, "seq": 1, "celsius": 36.5' + b" " * (MAX_PAYLOAD_BYTES - 50) + b"}",
    b'{"ts": 1767225600000, "seq": 2, "celsius": 36.5, "pad": "' + b"x" * MAX_PAYLOAD_BYTES + b'"}',
    b'{"pad": "' + b"y" * (2 * 2**20) + b'"}',  # 2 MB
    b'{"ts": 1767225600000, "seq": 3, "position": "supine\xff"}', b'{"ts": 1767225600000, "seq": 4, "\xed\xa0\x80": 1}',
])  # fmt: skip
payloads = st.one_of(
    readings.map(lambda r: _dumps(r[1])),
    mutated(readings.map(lambda r: r[1])).map(_dumps),
    command_dicts.map(_dumps),
    mutated(command_dicts).map(_dumps),
    status_dicts.map(_dumps),
    mutated(status_dicts).map(_dumps),
    alert_dicts.map(_dumps),
    mutated(alert_dicts).map(_dumps),
    json_values.map(_dumps),
    special_payloads,
    st.binary(max_size=64),
    st.builds(lambda p, at: p[:at] + b"\xc3\x28" + p[at:], readings.map(lambda r: _dumps(r[1])), st.integers(0, 80)),
)


_DEVICE_STREAMS = [(d.id, s.value) for d in KIT.devices for s in sorted(STREAMS_BY_KIND[d.kind])]


def _maybe_mutated(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> bytes:
    return draw(st.one_of(base.map(_dumps), base.map(_dumps), mutated(base).map(_dumps), special_payloads))


@st.composite
def messages(draw: st.DrawFn) -> tuple[str, bytes, bool]:
    """Mostly a topic the receiver follows with a payload meant for it (so the checks behind parsing
    and validation are reached), else anything."""
    which = draw(st.sampled_from(["reading", "reading", "reading", "command", "status", "alert", "any", "any"]))
    if which == "reading":
        device, stream = draw(st.sampled_from(_DEVICE_STREAMS))
        base: dict[str, Any] = {"ts": draw(timestamps), "seq": draw(seqs)}
        if draw(st.booleans()):  # a reading that passes validation: the rules, store and records get it
            base = {"ts": T0 + draw(st.integers(-600_000, 400_000)), "seq": draw(st.integers(0, 20))}
            payload = _dumps({**base, **draw(_VALID_FIELDS[stream])})
        else:
            payload = _maybe_mutated(draw, _READING_FIELDS[stream].map(lambda f: {**base, **f}))
        return _topic("reading", device, stream), payload, draw(st.booleans())
    if which == "command":
        name = draw(st.sampled_from(sorted(COMMAND_DICTS)))
        return _topic("command", name), _maybe_mutated(draw, COMMAND_DICTS[name]), False
    if which == "status":
        topic = draw(st.one_of(st.sampled_from(DEVICES).map(lambda d: _topic("status", d)),
                               st.sampled_from(AGENTS).map(lambda a: _topic("edge", a))))  # fmt: skip
        return topic, _maybe_mutated(draw, status_dicts), draw(st.booleans())
    if which == "alert":
        alert = draw(alert_dicts)
        kind = draw(st.sampled_from(["alert", "escalation"]))
        payload = draw(st.one_of(st.just(b""), st.just(_dumps(alert)), mutated(st.just(alert)).map(_dumps)))
        ident = str(alert["id"]) if draw(st.booleans()) else draw(idents)
        return _topic(kind, ident), payload, draw(st.booleans())
    return draw(topics), draw(payloads), draw(st.booleans())


#: One message stream: (message, ms the clock moves before it, whether the gateway ticks after it).
message_streams = st.lists(st.tuples(messages(), st.integers(0, 30_000), st.booleans()), min_size=1, max_size=12)


def _resolve(topic: str, payload: bytes, open_alerts: list[str]) -> bytes:
    if OPEN_ALERT.encode() in payload and open_alerts:
        return payload.replace(OPEN_ALERT.encode(), open_alerts[0].encode())
    return payload


# ---------------------------------------------------------------- gateway

GATEWAY_REASONS = {
    "bad_topic", "unknown_device", "unexpected_stream", "unknown_agent", "unknown_alert", "unknown_room",
    "bad_json", "invalid_payload", "too_large", "bad_utf8", "duplicate", "stale", "future",
    # command/record (docs/records.md)
    "unknown_record", "not_a_record", "already_confirmed", "invalid_command",
    # signed commands (nurserywatch/command_auth.py)
    *REASONS,
    # command/assign (gateway/engine/assignments.py)
    "not_assignable", "unknown_child", "wrong_room", "device_alerting",
}  # fmt: skip
_OUTBOX_MODELS: dict[TopicKind, type[BaseModel]] = {
    TopicKind.ALERT: Alert, TopicKind.ESCALATION: Alert, TopicKind.SESSION: SessionState,
    TopicKind.GATEWAY: GatewayStatus, TopicKind.ASSIGNMENT: DeviceAssignment,
}  # fmt: skip


@contextmanager
def quiet(*names: str) -> Iterator[None]:
    """Rejections are logged (rate-limited); thousands of them would only slow the run down."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextmanager
def fresh_gateway() -> Iterator[SiteEngine]:
    with tempfile.TemporaryDirectory(prefix="nw-fuzz-") as tmp, Store(Path(tmp) / "gw.sqlite3") as store:
        gw = SiteEngine(KIT, store, RulesConfig(), ManualClock(T0), command_key=COMMAND_VERIFIER)
        try:
            yield gw
        finally:
            gw.close()


def run_gateway_messages(stream: list[tuple[tuple[str, bytes, bool], int, bool]]) -> None:
    with quiet("gateway", "nurserywatch"), fresh_gateway() as gw:
        clock = gw.clock
        assert isinstance(clock, ManualClock)
        for (topic, payload, retained), dt, tick in stream:
            clock.advance(dt)
            payload = _resolve(topic, payload, [a.id for a in gw.open_alerts()])
            payload = _signed_mostly(topic, payload, clock.now_ms())
            stats = gw.stats
            before, stored, obs = stats.rejected.copy(), stats.readings_stored, stats.observer_errors
            gw.handle(topic, payload, retained)
            counted = stats.rejected - before
            assert "internal_error" not in counted and "store_error" not in counted, (topic, payload[:200], counted)
            assert counted.total() <= 1, f"one message counted {counted}"
            assert set(counted) <= GATEWAY_REASONS, f"unknown reason(s) {set(counted) - GATEWAY_REASONS}"
            assert stats.observer_errors == obs, "an observer failed"
            _check_reading_outcome(gw, topic, counted, stats.readings_stored - stored)
            TALLY.reject("gateway", counted)
            if tick:
                gw.tick()
                assert stats.rejected["internal_error"] == 0 and stats.observer_errors == obs
            _check_outbox(gw)
        TALLY.inputs["gateway"] += len(stream)


def _signed_mostly(topic: str, payload: bytes, now_ms: int) -> bytes:
    """A command object signed as the dashboard would (so the checks behind the signature are
    reached), except about one in four left as it is (refused as unsigned)."""
    if "/command/" not in topic or len(payload) % 4 == 0:
        return payload
    try:
        fields = load_json_object(payload)
        return signed(topic, fields, now_ms) if "auth" not in fields else payload
    except (ContractError, ValueError):  # not an object, or nothing canonical JSON can hold
        return payload


def _check_reading_outcome(gw: SiteEngine, topic: str, counted: Counter[str], stored: int) -> None:
    try:
        t = parse_topic(topic)
    except ValueError:
        return
    if t.site != SITE or t.kind is not TopicKind.READING or t.device is None or t.stream is None:
        assert stored == 0
        return
    device = gw.device(t.device)
    if device is None or t.stream not in STREAMS_BY_KIND[device.kind]:
        assert stored == 0 and counted.total() == 1
        return
    if not counted:
        assert stored == 1, "a reading accepted without being stored"
        TALLY.accepted["gateway"] += 1
    elif "stale" in counted:
        assert stored == 1  # stored (it is data) but not judged: older than what the rules saw
    else:
        assert stored == 0


def _check_outbox(gw: SiteEngine) -> None:
    for pending in gw.outbox():
        if not pending.payload:
            continue  # clearing a retained message
        model = _OUTBOX_MODELS[parse_topic(pending.topic).kind]
        model.model_validate_json(pending.payload)  # raises if the gateway would publish something malformed


# ---------------------------------------------------------------- dashboard

DASHBOARD_REASONS = {
    "bad_topic", "bad_identifier", "wrong_site", "unexpected_topic", "unknown_device", "unknown_agent",
    "unknown_room", "id_mismatch", "bad_json", "invalid_payload", "too_large", "bad_utf8", "future",
}  # fmt: skip


def run_dashboard_messages(stream: list[tuple[tuple[str, bytes, bool], int, bool]]) -> None:
    clock = ManualClock(T0)
    link = LiveLink(KIT, BrokerURL(host="127.0.0.1", port=1), clock=clock, identifier="fuzz")
    sub = link.fanout.subscribe()
    state = link.state
    with quiet("dashboard"):
        for (topic, payload, retained), dt, resync in stream:
            clock.advance(dt)
            payload = _resolve(topic, payload, sorted(state.alerts))
            before = state.rejected.copy()
            link.handle(topic, payload, retained)
            counted = state.rejected - before
            assert "internal_error" not in counted, (topic, payload[:200])
            assert counted.total() <= 1, f"one message counted {counted}"
            assert set(counted) <= DASHBOARD_REASONS, f"unknown reason(s) {set(counted) - DASHBOARD_REASONS}"
            TALLY.reject("dashboard", counted)
            TALLY.accepted["dashboard"] += not counted
            if resync:
                state.begin_resync()
            events: list[Event] = []
            while not sub.queue.empty():
                item = sub.queue.get_nowait()
                assert item is not None, "the live stream was closed"
                events.append(item)
            for event in [*events, state.snapshot(clock.now_ms()), link.tick_event()]:
                json.dumps(event.data, allow_nan=False)  # what the SSE stream sends must be strict JSON
    TALLY.inputs["dashboard"] += len(stream)


# ---------------------------------------------------------------- all targets

steps_ms = st.lists(st.integers(0, 2000), min_size=1, max_size=4)
TARGETS: list[Target] = [
    Target("nmea", spliced(nmea_frames, nmea_bad), run_nmea),
    *[Target(c.name, spliced(c.frames, c.bad), framer_runner(c)) for c in FRAMERS],
    Target("bthome", st.tuples(st.lists(st.tuples(bthome_payloads, st.integers(0, 6000)), max_size=10), st.booleans()),
           run_bthome),
    Target("thermometer", st.lists(thermo_payloads, max_size=10), run_thermometer),
    *[Target(c.name, st.tuples(c.inputs, steps_ms), channel_runner(c)) for c in CHANNELS],
    Target("gateway", message_streams, run_gateway_messages),
    Target("dashboard", message_streams, run_dashboard_messages),
]  # fmt: skip
TARGETS_BY_NAME = {t.name: t for t in TARGETS}
