"""Feeding bytes to the edge's framed decoders, as the decoder tables write them."""

from __future__ import annotations

from typing import Any

from edge.decoders.byte_framing import ByteFramer
from edge.decoders.rejection import Rejection


def hexb(text: str) -> bytes:
    return bytes.fromhex(text)


def outcomes(decoder: ByteFramer[Any], data: bytes, *, byte_by_byte: bool = False) -> list[Any]:
    """The decoder's output with rejections shown by reason; ``data`` fed whole or byte by byte
    (shared by the PMS5003, MH-Z19B and Senseair S8 tables)."""
    chunks = [data[i : i + 1] for i in range(len(data))] if byte_by_byte else [data]
    return [item.reason if isinstance(item, Rejection) else item for c in chunks for item in decoder.decode(c)]
