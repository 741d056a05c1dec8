"""Decoder for BTHome v2 advertisements (service data of UUID 0xFCD2), plain and encrypted. Pure.

    parse_bthome(service_data, mac, bindkey)  → BTHomePacket | Rejection     one advert, no history
    decoder = BTHomeDecoder(mac, bindkey)                                      one device, with history:
    decoder.decode(service_data, now_ms)      → BTHomePacket | Rejection       + replay, downgrade, duplicates

Layout (https://bthome.io/format/)::

    device info u8   bit0 encrypted, bit1 MAC included (6 bytes, reversed; a bthome-ble extension),
                     bit2 trigger based (sends on change only), bits 5-7 version (must be 2)
    [MAC 6 bytes]    if bit1
    objects          id u8 + value, little-endian, length fixed by the id (text/raw: a length byte;
                     command 0x3B: a byte whose low 5 bits are the argument count, then opcode + args)
    encrypted:       info [MAC] ciphertext(objects) counter u32 MIC(4)
                     AES-CCM, 16-byte bindkey, nonce = MAC(6, as written) + D2 FC + info + counter

An object id this decoder does not know has no known length, so it and everything after it cannot
be read: the objects before it are kept (the spec orders objects by id for exactly this) and the
packet is marked with ``unknown_object_id``; BTHomeDecoder counts it as ``unknown_object``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from edge.decoders.rejection import Rejection

SERVICE_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"
UUID16_LE = b"\xd2\xfc"

INFO_ENCRYPTED = 0x01
INFO_MAC_INCLUDED = 0x02
INFO_TRIGGER_BASED = 0x04
VERSION = 2

COUNTER_LEN = 4
MIC_LEN = 4
#: A counter that drops below this after a higher one is taken as a device restart (new battery,
#: or the u32 wrapping), not a replay; bthome-ble draws the same line.
COUNTER_RESTART_BELOW = 100
#: Within this time a packet id that is not newer is the same advert seen again (scanners report
#: each advert many times); after it, the device is re-announcing its state. As in bthome-ble.
DUPLICATE_WINDOW_MS = 4000


class RejectReason(StrEnum):
    EMPTY = "empty"  # no device info byte
    BAD_VERSION = "bad_version"  # version bits are not 2
    TRUNCATED = "truncated"  # an object, the MAC or counter+MIC cut off
    ENCRYPTED_NO_KEY = "encrypted_no_key"  # encrypted, and no bindkey configured for the device
    DECRYPT_FAILED = "decrypt_failed"  # MIC does not match: wrong key, wrong MAC, or corrupted
    NOT_ENCRYPTED = "not_encrypted"  # plaintext while a bindkey is configured (downgrade)
    REPLAYED = "replayed"  # encryption counter not newer than the last accepted one
    UNKNOWN_OBJECT = "unknown_object"  # counted for a partly decoded packet, see module doc
    DUPLICATE = "duplicate"  # not bad input: the same advert again (counted apart)


@dataclass(frozen=True, slots=True)
class ObjectType:
    name: str
    size: int  # 0: a length byte follows the id
    signed: bool = False
    scale: float = 1.0
    kind: str = "number"  # number | text | raw | command (opcode + args, raw) | version (firmware, "a.b.c")


# The BTHome v2 object table (bthome.io/format), as bthome-ble 3.25 decodes it (its const.py; the
# tests compare with bthome-ble itself). Binary sensors are numbers 0/1; events are the event code
# (button) or code + steps (dimmer) as one little-endian integer; timestamp is unix s.
_BINARY = (
    "battery_low", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door", "garage_door", "gas",
    "heat", "light", "lock", "moisture", "motion", "moving", "occupancy", "plug", "presence", "problem",
    "running", "safety", "smoke", "sound", "tamper", "vibration", "window",
)  # fmt: skip
OBJECT_TYPES: dict[int, ObjectType] = {
    0x00: ObjectType("packet_id", 1),
    0x01: ObjectType("battery_pct", 1),
    0x02: ObjectType("temperature_c", 2, True, 0.01),
    0x03: ObjectType("humidity_pct", 2, False, 0.01),
    0x04: ObjectType("pressure_hpa", 3, False, 0.01),
    0x05: ObjectType("illuminance_lux", 3, False, 0.01),
    0x06: ObjectType("mass_kg", 2, False, 0.01),
    0x07: ObjectType("mass_lb", 2, False, 0.01),
    0x08: ObjectType("dewpoint_c", 2, True, 0.01),
    0x09: ObjectType("count", 1),
    0x0A: ObjectType("energy_kwh", 3, False, 0.001),
    0x0B: ObjectType("power_w", 3, False, 0.01),
    0x0C: ObjectType("voltage_v", 2, False, 0.001),
    0x0D: ObjectType("pm25_ugm3", 2),
    0x0E: ObjectType("pm10_ugm3", 2),
    0x0F: ObjectType("generic_boolean", 1),
    0x10: ObjectType("power_on", 1),
    0x11: ObjectType("opening", 1),
    0x12: ObjectType("co2_ppm", 2),
    0x13: ObjectType("tvoc_ugm3", 2),
    0x14: ObjectType("moisture_pct", 2, False, 0.01),
    **{0x15 + i: ObjectType(name, 1) for i, name in enumerate(_BINARY)},  # 0x15-0x2D
    0x2E: ObjectType("humidity_pct", 1),
    0x2F: ObjectType("moisture_pct", 1),
    0x3A: ObjectType("button", 1),
    0x3B: ObjectType("command", 0, kind="command"),
    0x3C: ObjectType("dimmer", 2),
    0x3D: ObjectType("count", 2),
    0x3E: ObjectType("count", 4),
    0x3F: ObjectType("rotation_deg", 2, True, 0.1),
    0x40: ObjectType("distance_mm", 2),
    0x41: ObjectType("distance_m", 2, False, 0.1),
    0x42: ObjectType("duration_s", 3, False, 0.001),
    0x43: ObjectType("current_a", 2, False, 0.001),
    0x44: ObjectType("speed_ms", 2, False, 0.01),
    0x45: ObjectType("temperature_c", 2, True, 0.1),
    0x46: ObjectType("uv_index", 1, False, 0.1),
    0x47: ObjectType("volume_l", 2, False, 0.1),
    0x48: ObjectType("volume_ml", 2),
    0x49: ObjectType("volume_flow_m3h", 2, False, 0.001),
    0x4A: ObjectType("voltage_v", 2, False, 0.1),
    0x4B: ObjectType("gas_m3", 3, False, 0.001),
    0x4C: ObjectType("gas_m3", 4, False, 0.001),
    0x4D: ObjectType("energy_kwh", 4, False, 0.001),
    0x4E: ObjectType("volume_l", 4, False, 0.001),
    0x4F: ObjectType("water_l", 4, False, 0.001),
    0x50: ObjectType("timestamp", 4),
    0x51: ObjectType("acceleration_ms2", 2, False, 0.001),
    0x52: ObjectType("gyroscope_dps", 2, False, 0.001),
    0x53: ObjectType("text", 0, kind="text"),
    0x54: ObjectType("raw", 0, kind="raw"),
    0x55: ObjectType("volume_storage_l", 4, False, 0.001),
    0x56: ObjectType("conductivity_uscm", 2),
    0x57: ObjectType("temperature_c", 1, True),
    0x58: ObjectType("temperature_c", 1, True, 0.35),
    0x59: ObjectType("count", 1, True),
    0x5A: ObjectType("count", 2, True),
    0x5B: ObjectType("count", 4, True),
    0x5C: ObjectType("power_w", 4, True, 0.01),
    0x5D: ObjectType("current_a", 2, True, 0.001),
    0x5E: ObjectType("direction_deg", 2, False, 0.01),
    0x5F: ObjectType("precipitation_mm", 2, False, 0.1),
    0x60: ObjectType("channel", 1),
    0x61: ObjectType("rotational_speed_rpm", 2),
    0x62: ObjectType("speed_ms", 4, True, 0.000001),
    0x63: ObjectType("acceleration_ms2", 4, True, 0.000001),
    0x64: ObjectType("light_level", 1),
    0x65: ObjectType("settings_revision", 1),
    # Device information (not measurements): the device type and its firmware version.
    0xF0: ObjectType("device_type_id", 2),
    0xF1: ObjectType("firmware_version", 4, kind="version"),
    0xF2: ObjectType("firmware_version", 3, kind="version"),
}

Value = int | float | str | bytes


@dataclass(frozen=True, slots=True)
class BTHomeObject:
    object_id: int
    name: str
    value: Value


@dataclass(frozen=True, slots=True)
class BTHomePacket:
    objects: tuple[BTHomeObject, ...]
    encrypted: bool = False
    #: The device only advertises on change (device info bit 2): long silences are normal.
    trigger_based: bool = False
    #: MAC carried in the payload (device info bit 1), "AA:BB:CC:DD:EE:FF"; None if absent.
    mac: str | None = None
    #: The encryption counter; None for plaintext.
    counter: int | None = None
    #: Decoding stopped at this unknown object id (the objects before it are kept).
    unknown_object_id: int | None = None

    def first(self, name: str) -> Value | None:
        """The value of the first object called ``name``, or None."""
        return next((o.value for o in self.objects if o.name == name), None)

    @property
    def packet_id(self) -> int | None:
        value = self.first("packet_id")
        return value if isinstance(value, int) else None


def parse_bindkey(text: str) -> bytes:
    """A bindkey as written in a kit file (32 hex digits) → 16 bytes; ValueError otherwise."""
    key = bytes.fromhex(text)
    if len(key) != 16:
        raise ValueError(f"a BTHome bindkey is 16 bytes (32 hex digits), got {len(key)} bytes")
    return key


def embedded_mac(service_data: bytes) -> str | None:
    """The MAC a packet carries (device info bit 1), so a shell can route it; None if none."""
    if len(service_data) >= 7 and service_data[0] & INFO_MAC_INCLUDED:
        return _mac_text(service_data[1:7][::-1])
    return None


def parse_bthome(service_data: bytes, mac: str, bindkey: bytes | None = None) -> BTHomePacket | Rejection:
    """Decode one advert from the device at ``mac`` (its advertised address, "AA:BB:…"); never raises.

    Without history: replays, downgrades and duplicates are BTHomeDecoder's business."""
    data = bytes(service_data)
    if not data:
        return Rejection(RejectReason.EMPTY, "no device info byte")
    info = data[0]
    version = info >> 5
    if version != VERSION:
        return Rejection(RejectReason.BAD_VERSION, f"device info 0x{info:02X} says version {version}: {_hex(data)}")
    body = data[1:]
    payload_mac = None
    if info & INFO_MAC_INCLUDED:
        if len(body) < 6:
            return Rejection(RejectReason.TRUNCATED, f"MAC cut off: {_hex(data)}")
        payload_mac, body = _mac_text(body[:6][::-1]), body[6:]
    counter = None
    if info & INFO_ENCRYPTED:
        if bindkey is None:
            return Rejection(RejectReason.ENCRYPTED_NO_KEY, f"encrypted advert and no bindkey configured: {_hex(data)}")
        if len(body) < COUNTER_LEN + MIC_LEN:
            return Rejection(RejectReason.TRUNCATED, f"counter and MIC cut off: {_hex(data)}")
        ciphertext, counter_bytes, mic = body[:-8], body[-8:-4], body[-4:]
        counter = int.from_bytes(counter_bytes, "little")
        nonce = bytes.fromhex((payload_mac or mac).replace(":", "")) + UUID16_LE + bytes([info]) + counter_bytes
        try:
            body = AESCCM(bindkey, tag_length=MIC_LEN).decrypt(nonce, ciphertext + mic, None)
        except InvalidTag:
            return Rejection(RejectReason.DECRYPT_FAILED, f"MIC mismatch (wrong bindkey or MAC?): {_hex(data)}")
    objects, unknown, cut = _objects(body)
    if cut:
        return Rejection(RejectReason.TRUNCATED, f"object 0x{cut:02X} cut off: {_hex(body)}")
    return BTHomePacket(
        objects=objects,
        encrypted=bool(info & INFO_ENCRYPTED),
        trigger_based=bool(info & INFO_TRIGGER_BASED),
        mac=payload_mac,
        counter=counter,
        unknown_object_id=unknown,
    )


class BTHomeDecoder:
    """One device's adverts, in arrival order: parse_bthome plus what needs history.

    - ``not_encrypted``: with a bindkey configured, plaintext adverts are refused (a forged
      plaintext advert would otherwise bypass the key).
    - ``replayed``: an encrypted advert whose counter is not newer than the last accepted one,
      unless it dropped below COUNTER_RESTART_BELOW (device restart); the identical advert seen
      again is a duplicate instead.
    - ``duplicate`` (counted in ``duplicates``, not a problem): a packet id that is not newer
      than the last accepted one (within 64 steps, mod 256) within DUPLICATE_WINDOW_MS.
    """

    def __init__(self, mac: str, bindkey: bytes | None = None) -> None:
        self.mac = mac.upper()
        self.bindkey = bindkey
        self.accepted = 0
        self.duplicates = 0
        self.rejected: Counter[str] = Counter()
        self.last_rejection: Rejection | None = None
        self._last_counter: int | None = None
        self._last_data = b""
        self._last_packet_id: int | None = None
        self._last_accepted_ms = 0

    def decode(self, service_data: bytes, now_ms: int) -> BTHomePacket | Rejection:
        data = bytes(service_data)
        if self._last_counter is not None and data == self._last_data:
            return self._duplicate("the same encrypted advert again")
        if data and data[0] & INFO_ENCRYPTED and self._last_counter is not None and len(data) >= 9:
            counter = int.from_bytes(data[-8:-4], "little")
            if counter <= self._last_counter and not (counter < self._last_counter and counter < COUNTER_RESTART_BELOW):
                return self._reject(
                    Rejection(RejectReason.REPLAYED, f"counter {counter}, last accepted {self._last_counter}")
                )
        result = parse_bthome(data, self.mac, self.bindkey)
        if isinstance(result, Rejection):
            return self._reject(result)
        if self.bindkey is not None and not result.encrypted:
            detail = f"plaintext advert, bindkey configured: {_hex(data)}"
            return self._reject(Rejection(RejectReason.NOT_ENCRYPTED, detail))
        packet_id = result.packet_id
        if (
            packet_id is not None
            and self._last_packet_id is not None
            and now_ms - self._last_accepted_ms <= DUPLICATE_WINDOW_MS
            and not 0 < (packet_id - self._last_packet_id) % 256 < 64
        ):
            return self._duplicate(f"packet id {packet_id} after {self._last_packet_id}")
        if result.counter is not None:
            self._last_counter, self._last_data = result.counter, data
        self._last_packet_id = packet_id
        self._last_accepted_ms = now_ms
        self.accepted += 1
        if result.unknown_object_id is not None:
            self._count(
                Rejection(
                    RejectReason.UNKNOWN_OBJECT,
                    f"object id 0x{result.unknown_object_id:02X} unknown; {len(result.objects)} object(s) before it "
                    f"kept, the rest skipped",
                )
            )
        return result

    def _duplicate(self, detail: str) -> Rejection:
        self.duplicates += 1
        return Rejection(RejectReason.DUPLICATE, detail)

    def _reject(self, rejection: Rejection) -> Rejection:
        self._count(rejection)
        return rejection

    def _count(self, rejection: Rejection) -> None:
        self.rejected[rejection.reason] += 1
        self.last_rejection = rejection


def _objects(body: bytes) -> tuple[tuple[BTHomeObject, ...], int | None, int | None]:
    """(objects, unknown object id or None, id of an object cut off or None)."""
    out: list[BTHomeObject] = []
    pos = 0
    while pos < len(body):
        object_id = body[pos]
        kind = OBJECT_TYPES.get(object_id)
        if kind is None:
            return tuple(out), object_id, None
        pos += 1
        size = kind.size
        if size == 0:
            if pos >= len(body):
                return tuple(out), None, object_id
            # A command's byte counts only its arguments (low 5 bits; the top 3 are reserved).
            size = 1 + (body[pos] & 0x1F) if kind.kind == "command" else body[pos]
            pos += 1
        if pos + size > len(body):
            return tuple(out), None, object_id
        out.append(BTHomeObject(object_id, kind.name, _value(kind, body[pos : pos + size])))
        pos += size
    return tuple(out), None, None


def _value(kind: ObjectType, raw: bytes) -> Value:
    if kind.kind == "text":
        return raw.decode("utf-8", errors="replace")
    if kind.kind in ("raw", "command"):
        return raw
    if kind.kind == "version":  # least significant part first: 00 01 02 04 is 4.2.1.0
        return ".".join(str(b) for b in reversed(raw))
    number = int.from_bytes(raw, "little", signed=kind.signed)
    if kind.scale == 1.0:
        return number
    # Round to the scale's decimals: 2506 × 0.01 is 25.06, not 25.060000000000002.
    places = max(0, -int(Decimal(str(kind.scale)).as_tuple().exponent))
    return round(number * kind.scale, places)


def _mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02X}" for b in raw)


def _hex(data: bytes, limit: int = 40) -> str:
    return data[:limit].hex(" ") + (" …" if len(data) > limit else "")
