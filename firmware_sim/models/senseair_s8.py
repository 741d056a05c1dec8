"""Senseair S8 CO2 sensor as a Modbus RTU server, written from the Modbus specification and
Senseair's register map (docs/devices.md), not from the edge; its CRC is computed here, by table.

Requests are 8 bytes: address, function, start register u16 BE, count u16 BE, CRC-16/Modbus low
byte first. The model answers requests to the "any address" FE or to its own address 0x68:

- function 04 (input registers): 0 meter status, 1 alarm status, 2 output status, 3 space CO2
  (ppm), 26 type id low (0x0177), 28 firmware version (0x0154) — the last two as real S8s answer
  (captures in arendst/Tasmota tasmota/xsns_17_senseair.ino);
- function 03 (holding registers): 0 acknowledgement, 1 special command, 31 ABC period (180 h);
- a register outside the map → exception 02 (illegal data address), as a real S8 answers for
  register 4; a count of 0 or more than 125 → exception 03; any other function → exception 01.

Requests with a bad CRC, to another address or to the broadcast address 0 get no answer.

Scenario timeline steps as for the MH-Z19B: ``{at_s: 0, co2_ppm: 600}``.
"""

from __future__ import annotations

from firmware_sim.models.mhz19b import Co2Timeline, co2_timeline
from firmware_sim.scenario import DeviceScenario, SimContext

ANY_ADDRESS = 0xFE
OWN_ADDRESS = 0x68
READ_HOLDING = 0x03
READ_INPUT = 0x04
ILLEGAL_FUNCTION = 1
ILLEGAL_DATA_ADDRESS = 2
ILLEGAL_DATA_VALUE = 3
MAX_COUNT = 125  # the Modbus limit for one read
REQUEST_BYTES = 8
MAX_PENDING = 64
CO2_REGISTER = 3
#: Register maps; None is the live CO2 value.
INPUTS: dict[int, int | None] = {0: 0, 1: 0, 2: 0, CO2_REGISTER: None, 26: 0x0177, 28: 0x0154}
HOLDING: dict[int, int | None] = {0: 0, 1: 0, 31: 180}


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/Modbus: reflected polynomial 0xA001, initial value 0xFFFF."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc


def seal(frame: bytes) -> bytes:
    """Append the CRC, low byte first."""
    crc = crc16(frame)
    return frame + bytes([crc & 0xFF, crc >> 8])


def encode_registers(address: int, function: int, values: list[int]) -> bytes:
    body = bytes([address, function, 2 * len(values)])
    for v in values:
        body += bytes([v >> 8 & 0xFF, v & 0xFF])
    return seal(body)


def encode_exception(address: int, function: int, code: int) -> bytes:
    return seal(bytes([address, function | 0x80, code]))


class SenseairS8Model:
    """A RespondingModel: gets every chunk read from the port, returns the replies."""

    def __init__(self, timeline: Co2Timeline) -> None:
        self.timeline = timeline
        self._pending = b""
        self.answered = 0

    def respond(self, request: bytes, t_s: float) -> bytes:
        buf = (self._pending + request)[-MAX_PENDING:]
        replies = b""
        i = 0
        while len(buf) - i >= REQUEST_BYTES:
            frame = buf[i : i + REQUEST_BYTES]
            if crc16(frame) != 0:  # a frame followed by its own CRC has a CRC of zero
                i += 1
                continue
            i += REQUEST_BYTES
            reply = self._answer(frame, t_s)
            if reply:
                replies += reply
                self.answered += 1
        self._pending = buf[i:]
        return replies

    def _answer(self, frame: bytes, t_s: float) -> bytes:
        address, function = frame[0], frame[1]
        if address not in (ANY_ADDRESS, OWN_ADDRESS):
            return b""
        start = frame[2] << 8 | frame[3]
        count = frame[4] << 8 | frame[5]
        if function == READ_INPUT:
            registers = INPUTS
        elif function == READ_HOLDING:
            registers = HOLDING
        else:
            return encode_exception(address, function, ILLEGAL_FUNCTION)
        if not 1 <= count <= MAX_COUNT:
            return encode_exception(address, function, ILLEGAL_DATA_VALUE)
        wanted = range(start, start + count)
        if any(r not in registers for r in wanted):
            return encode_exception(address, function, ILLEGAL_DATA_ADDRESS)
        values = [self.timeline.ppm_at(t_s) if (v := registers[r]) is None else v for r in wanted]
        return encode_registers(address, function, values)


def make_senseair_s8(spec: DeviceScenario, ctx: SimContext) -> SenseairS8Model:
    return SenseairS8Model(co2_timeline(spec, ctx, "Senseair S8"))
