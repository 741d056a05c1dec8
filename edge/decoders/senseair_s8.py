"""Decoder for the Senseair S8 CO2 sensor over Modbus RTU (docs/devices.md). Pure.

9600 baud 8N1. The edge reads input register 3 (IR4 "space CO2", ppm) from the "any address"
0xFE; CRC-16/Modbus (edge/decoders/modbus_crc.py) follows every frame, low byte first::

    request    FE 04 00 03 00 01 D5 C5
    reply      FE 04 02 HH LL crc_lo crc_hi      CO2 = HH·256 + LL ppm
    exception  FE 84 EC crc_lo crc_hi            EC = Modbus exception code

    decoder = SenseairS8Decoder()
    replies = decoder.feed(chunk)    # S8Reading or ModbusException, any chunking

Modbus RTU delimits frames by silence on the line; that timing does not survive a USB adapter
and an OS buffer, so frames are found by content instead: any byte followed by function 03/04
with a byte count of 2, or by an exception function 83/84, starts a candidate of 7 or 5 bytes,
kept only if its CRC matches (edge/decoders/byte_framing.py explains the resynchronisation).

Reject reasons: ``bad_checksum`` (a candidate from address FE whose CRC does not match; from
another address it is taken for noise), ``wrong_address`` (a valid frame from another address),
``wrong_function`` (a valid frame answering another function than 04), ``truncated`` and
``garbage``. Exception replies are not rejections: they are decoded, and the channel counts them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from edge.decoders.byte_framing import NOT_A_FRAME, ByteFramer, NotAFrame, Reject, show
from edge.decoders.modbus_crc import crc_ok, with_crc

ANY_ADDRESS = 0xFE
READ_INPUT_REGISTERS = 0x04
CO2_REGISTER = 3  # IR4 in Senseair's numbering, which counts from 1
EXCEPTION_FLAG = 0x80

EXCEPTION_NAMES = {
    1: "illegal_function",
    2: "illegal_data_address",
    3: "illegal_data_value",
    4: "server_device_failure",
    5: "acknowledge",
    6: "server_device_busy",
    8: "memory_parity_error",
    10: "gateway_path_unavailable",
    11: "gateway_target_failed_to_respond",
}


class S8Reason(StrEnum):
    BAD_CHECKSUM = "bad_checksum"
    WRONG_ADDRESS = "wrong_address"
    WRONG_FUNCTION = "wrong_function"


@dataclass(frozen=True, slots=True)
class S8Reading:
    co2_ppm: int


@dataclass(frozen=True, slots=True)
class ModbusException:
    function: int
    code: int

    @property
    def name(self) -> str:
        return EXCEPTION_NAMES.get(self.code, f"exception_{self.code}")


S8Reply = S8Reading | ModbusException


def read_request(register: int = CO2_REGISTER, count: int = 1, address: int = ANY_ADDRESS) -> bytes:
    """Read ``count`` input registers from ``register``: FE 04 00 03 00 01 D5 C5 for the CO2."""
    return with_crc(bytes([address, READ_INPUT_REGISTERS]) + register.to_bytes(2, "big") + count.to_bytes(2, "big"))


class SenseairS8Format:
    start = re.compile(rb"(?s).(?:[\x03\x04]\x02|[\x83\x84])")
    start_len = 3
    strong_start = re.compile(rb"\xfe(?:\x04\x02|\x84.)", re.DOTALL)
    strong_len = 3
    strong_first = ANY_ADDRESS
    max_frame = 7

    def examine(self, data: bytes) -> tuple[S8Reply, int] | Reject | NotAFrame | None:
        address, function = data[0], data[1]
        length = 5 if function & EXCEPTION_FLAG else 7
        if len(data) < length:
            return None
        frame = data[:length]
        if not crc_ok(frame):
            if address != ANY_ADDRESS:
                return NOT_A_FRAME
            return Reject(S8Reason.BAD_CHECKSUM, f"CRC does not match: {show(frame)}", length)
        if address != ANY_ADDRESS:
            return Reject(
                S8Reason.WRONG_ADDRESS, f"from address {address:02X}, not {ANY_ADDRESS:02X}: {show(frame)}", length
            )
        if function & ~EXCEPTION_FLAG != READ_INPUT_REGISTERS:
            return Reject(S8Reason.WRONG_FUNCTION, f"function {function:02X}, expected 04 or 84: {show(frame)}", length)
        if function & EXCEPTION_FLAG:
            return ModbusException(function=function, code=frame[2]), length
        return S8Reading(co2_ppm=int.from_bytes(frame[3:5], "big")), length


class SenseairS8Decoder(ByteFramer[S8Reply]):
    def __init__(self) -> None:
        super().__init__(SenseairS8Format())
