"""Encoder for BTHome v2 advertisements (service data of UUID 0xFCD2), plain and encrypted, written
from the BTHome v2 format (bthome.io/format) and docs/ble.md, not from the edge.

    encode_bthome([(0x00, 7), (0x01, 93), (0x02, 23.97), (0x03, 63.27)])        → 40 00 07 01 5d 02 5d 09 03 b7 18
    encode_bthome(objects, bindkey=key, mac="54:48:E6:8F:80:A5", counter=1122867)   AES-CCM encrypted

Objects are written in the order given: a device should sort them by id, and tests may not.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.hazmat.primitives.ciphers.aead import AESCCM

SERVICE_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"

# object id → (bytes, signed, resolution) for the objects an air sensor or a test sends.
_FORMATS: dict[int, tuple[int, bool, float]] = {
    0x00: (1, False, 1),  # packet id
    0x01: (1, False, 1),  # battery %
    0x02: (2, True, 0.01),  # temperature °C
    0x03: (2, False, 0.01),  # humidity %
    0x04: (3, False, 0.01),  # pressure hPa
    0x0C: (2, False, 0.001),  # voltage V
    0x0D: (2, False, 1),  # PM2.5 µg/m³
    0x0E: (2, False, 1),  # PM10 µg/m³
    0x12: (2, False, 1),  # CO2 ppm
    0x13: (2, False, 1),  # VOC µg/m³
    0x2E: (1, False, 1),  # humidity % (1 byte)
    0x45: (2, True, 0.1),  # temperature °C (0.1)
    0x62: (4, True, 0.000001),  # speed m/s (signed, 1 µm/s)
    0x63: (4, True, 0.000001),  # acceleration m/s² (signed, 1 µm/s²)
    0x64: (1, False, 1),  # light level
    0x65: (1, False, 1),  # settings revision
    0xF0: (2, False, 1),  # device type id (device information)
}


def encode_object(object_id: int, value: float) -> bytes:
    size, signed, resolution = _FORMATS[object_id]
    return bytes([object_id]) + round(value / resolution).to_bytes(size, "little", signed=signed)


def encode_bthome(
    objects: Sequence[tuple[int, float]],
    *,
    bindkey: bytes | None = None,
    mac: str | None = None,
    counter: int = 0,
    trigger_based: bool = False,
    mac_in_payload: bool = False,
    raw_objects: bytes = b"",
) -> bytes:
    """The service data of one advert. With ``bindkey`` the objects are encrypted (``mac`` is then
    required: it is part of the nonce). ``raw_objects`` is appended to the encoded objects as is
    (unknown ids, truncation: fault injection)."""
    info = 2 << 5 | (0x01 if bindkey else 0) | (0x02 if mac_in_payload else 0) | (0x04 if trigger_based else 0)
    body = b"".join(encode_object(i, v) for i, v in objects) + raw_objects
    mac_bytes = bytes.fromhex(mac.replace(":", "")) if mac else b""
    head = bytes([info]) + (mac_bytes[::-1] if mac_in_payload else b"")
    if bindkey is None:
        return head + body
    if len(mac_bytes) != 6:
        raise ValueError("an encrypted advert needs the device MAC (it is part of the nonce)")
    count = counter.to_bytes(4, "little")
    nonce = mac_bytes + b"\xd2\xfc" + bytes([info]) + count
    sealed = AESCCM(bindkey, tag_length=4).encrypt(nonce, body, None)  # ciphertext + 4-byte MIC
    return head + sealed[:-4] + count + sealed[-4:]
