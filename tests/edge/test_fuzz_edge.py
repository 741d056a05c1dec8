"""Fuzzing the edge (a fast, derandomized sample; bench/fuzz.py runs ≥ 100k inputs): every serial
decoder and its resynchronisation, the BLE payload decoders, and every channel the shells feed.
The properties are in tests/fuzz_targets.py; the @example lines are bugs fuzzing found."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given

from edge.channels.clip import ClipChannel
from edge.decoders.byte_framing import ByteFramer
from edge.decoders.mhz19b import Mhz19bDecoder
from edge.decoders.nmea import MAX_LINE_BYTES, NmeaDecoder
from edge.decoders.pms5003 import Pms5003Decoder
from edge.decoders.senseair_s8 import SenseairS8Decoder
from firmware_sim.encoders.nmea import encode_imu, encode_mat
from firmware_sim.models.mhz19b import encode_reply
from firmware_sim.models.pms5003 import encode_frame
from firmware_sim.models.senseair_s8 import encode_registers
from tests.support.fuzz_targets import CHANNELS, FRAMERS, TARGETS_BY_NAME, fuzz_settings


@fuzz_settings()
@given(TARGETS_BY_NAME["nmea"].strategy)
def test_nmea_stream(example_: Any) -> None:
    TARGETS_BY_NAME["nmea"].run(example_)


@pytest.mark.parametrize("name", [c.name for c in FRAMERS])
def test_binary_framer_stream(name: str) -> None:
    target = TARGETS_BY_NAME[name]

    @fuzz_settings()
    @given(target.strategy)
    def run(example_: Any) -> None:
        target.run(example_)

    run()


@fuzz_settings()
@given(TARGETS_BY_NAME["bthome"].strategy)
def test_bthome_adverts(example_: Any) -> None:
    TARGETS_BY_NAME["bthome"].run(example_)


@fuzz_settings()
@given(TARGETS_BY_NAME["thermometer"].strategy)
def test_thermometer_payloads(example_: Any) -> None:
    TARGETS_BY_NAME["thermometer"].run(example_)


@pytest.mark.parametrize("name", [c.name for c in CHANNELS if c.name != "clip_channel"])
def test_channel(name: str) -> None:
    target = TARGETS_BY_NAME[name]

    @fuzz_settings(max_examples=60)
    @given(target.strategy)
    def run(example_: Any) -> None:
        target.run(example_)

    run()


@fuzz_settings(max_examples=60)
@given(TARGETS_BY_NAME["clip_channel"].strategy)
# Found: a mat sentence on a clip's port was counted (unexpected_frame) but last_problem() stayed
# None, so the agent's rejection log line named no cause.
@example(([encode_mat(0, 1, [0])], [0]))
def test_clip_channel(example_: Any) -> None:
    TARGETS_BY_NAME["clip_channel"].run(example_)


def test_clip_channel_names_an_unexpected_frame() -> None:
    clip = ClipChannel("clip-01")
    clip.on_bytes(encode_imu(1, 0, 0, 1000) + encode_mat(7, 25, [1, 2]), 0)
    assert clip.problems() == {"unexpected_frame": 1}
    assert clip.last_problem() == "unexpected_frame: MatFrame seq 7 on a clip port"


@pytest.mark.parametrize("name", ["nmea", *[c.name for c in FRAMERS]])
def test_a_megabyte_of_noise_keeps_the_buffer_bounded_and_the_next_frames_are_found(name: str) -> None:
    """Huge input: 1 MiB of (seeded) noise in 64 KiB reads, then two valid frames."""
    noise = random.Random(7).randbytes(2**20)
    cases: dict[str, tuple[bytes, Callable[[], NmeaDecoder | ByteFramer[Any]], int]] = {
        "nmea": (encode_imu(5, 1, 2, 3), NmeaDecoder, MAX_LINE_BYTES),
        "pms5003": (encode_frame([7] * 13), Pms5003Decoder, 36),
        "mhz19b": (encode_reply(612), Mhz19bDecoder, 11),
        "senseair_s8": (encode_registers(0xFE, 4, [777]), SenseairS8Decoder, 10),
    }
    valid, make, bound = cases[name]
    dec = make()
    for i in range(0, len(noise), 65536):
        assert not dec.feed(noise[i : i + 65536]) or name != "nmea"
        held = len(dec._line) if isinstance(dec, NmeaDecoder) else len(dec._buf)
        assert held <= bound
    got = dec.feed(valid * 2)
    assert len(got) == 2 and got[0] == got[1]
    assert sum(dec.rejected.values()) > 0
