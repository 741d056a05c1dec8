"""Encoder for the project's NMEA-style sentences, written from docs/devices.md (not from the edge).

    $NWIMU,<seq>,<ax_mg>,<ay_mg>,<az_mg>*HH\\r\\n
    $NWMAT,<seq>,<fs_hz>,<s1>,...,<sn>*HH\\r\\n

``HH`` is the XOR of every byte between ``$`` and ``*``, as two upper-case hex digits.
``seq`` is a per-device counter that wraps at 65536.
"""

from __future__ import annotations

from collections.abc import Sequence

SEQ_MODULO = 65536


def checksum(body: bytes) -> int:
    """XOR of every byte of ``body`` (the text between ``$`` and ``*``)."""
    value = 0
    for byte in body:
        value ^= byte
    return value


def encode_sentence(talker: str, fields: Sequence[int]) -> bytes:
    body = ",".join([talker, *(str(int(f)) for f in fields)]).encode("ascii")
    return b"$" + body + b"*" + f"{checksum(body):02X}".encode("ascii") + b"\r\n"


def encode_imu(seq: int, ax_mg: int, ay_mg: int, az_mg: int) -> bytes:
    return encode_sentence("NWIMU", [seq % SEQ_MODULO, ax_mg, ay_mg, az_mg])


def encode_mat(seq: int, fs_hz: int, samples: Sequence[int]) -> bytes:
    if not samples:
        raise ValueError("an NWMAT sentence carries at least one sample")
    if fs_hz <= 0:
        raise ValueError(f"fs_hz must be positive, got {fs_hz}")
    return encode_sentence("NWMAT", [seq % SEQ_MODULO, fs_hz, *samples])


def corrupt_checksum(sentence: bytes) -> bytes:
    """The same sentence with a checksum that is guaranteed wrong (fault injection)."""
    star = sentence.rindex(b"*")
    good = int(sentence[star + 1 : star + 3], 16)
    return sentence[: star + 1] + f"{good ^ 0x5A:02X}".encode("ascii") + sentence[star + 3 :]
