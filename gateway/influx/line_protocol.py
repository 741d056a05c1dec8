"""InfluxDB line protocol and write policy for readings — pure: no I/O, no clock (times are passed in).

Schema (docs/storage.md): one measurement per stream (``breathing``, ``posture``, ``body_temp``,
``air``), tags ``site``, ``room``, ``device`` and ``child`` (the kit's pseudonymous child id, only
when the device is bound to one), fields from the contract reading (numbers as floats, ``present``
as a boolean, ``position`` as a string; ``seq`` and ``last_breath_ts`` as integers because they are
identities, not measurements), millisecond timestamps (``precision=ms``). Waveforms are not written:
raw samples belong on the edge, not in a trend database.

The I/O shell is gateway/influx/writer.py; this module decides *what* to send and *what to do* with
each answer (write, retry after a delay, split a rejected batch, dead-letter one bad point).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum

from nurserywatch.contract import (
    AirReading,
    BodyTempReading,
    BreathingReading,
    PostureReading,
    Reading,
    Stream,
)

#: The streams that become points (waveforms stay out of the database).
MEASURED_STREAMS = frozenset({Stream.BREATHING, Stream.POSTURE, Stream.BODY_TEMP, Stream.AIR})

FieldValue = float | int | bool | str


# ---------------------------------------------------------------- escaping (line protocol spec)
#
# InfluxDB 1.x line protocol: in measurement names a backslash goes before commas and spaces; in tag
# keys, tag values and field keys before commas, equals signs and spaces; a backslash itself is NOT
# escaped there (InfluxDB 1.6.7 stores a tag value written `back\\slash` with both backslashes, and
# one written `a\\,b` as `a\,b`). Only string field values unescape it: there a backslash is doubled
# and a double quote escaped. Newlines end a point and cannot be written; nor can a name or tag ending
# in a backslash (it would escape the separator after it): both are refused with ValueError.


def _escape(text: str, specials: str, what: str) -> str:
    if "\n" in text:
        raise ValueError(f"line protocol cannot carry a newline in a {what}: {text!r}")
    if text.endswith("\\"):
        raise ValueError(f"line protocol cannot carry a {what} ending in a backslash: {text!r}")
    for char in specials:
        text = text.replace(char, "\\" + char)
    return text


def escape_measurement(name: str) -> str:
    return _escape(name, ", ", "measurement")


def escape_key(key: str) -> str:
    """Tag keys, tag values and field keys: comma, equals sign and space are escaped."""
    return _escape(key, ",= ", "tag or field key or tag value")


def escape_string_field(value: str) -> str:
    if "\n" in value:
        raise ValueError(f"line protocol cannot carry a newline in a string field: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', r"\"") + '"'


def format_field(value: FieldValue) -> str:
    # bool before int: bool is an int subclass in Python.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"line protocol has no {value!r}")
        return repr(value)
    return escape_string_field(value)


def encode_line(measurement: str, tags: dict[str, str], fields: dict[str, FieldValue], ts_ms: int) -> str:
    """One point. Tags are sorted (what InfluxDB recommends); empty tag values are left out (the
    protocol has none); at least one field is required."""
    if not fields:
        raise ValueError(f"{measurement}: a point needs at least one field")
    tag_part = "".join(f",{escape_key(k)}={escape_key(v)}" for k, v in sorted(tags.items()) if v != "")
    field_part = ",".join(f"{escape_key(k)}={format_field(v)}" for k, v in fields.items())
    return f"{escape_measurement(measurement)}{tag_part} {field_part} {ts_ms}"


# ---------------------------------------------------------------- readings → points


def reading_fields(reading: Reading) -> dict[str, FieldValue]:
    """The fields of one contract reading (None values are left out)."""
    out: dict[str, FieldValue] = {}

    def num(name: str, value: float | None) -> None:
        if value is not None:
            out[name] = float(value)

    if isinstance(reading, BreathingReading):
        num("rate_bpm", reading.rate_bpm)
        num("amplitude", reading.amplitude)
        num("motion", reading.motion)
        num("quality", reading.quality)
        if reading.present is not None:
            out["present"] = reading.present
        if reading.last_breath_ts is not None:
            out["last_breath_ts"] = reading.last_breath_ts
    elif isinstance(reading, PostureReading):
        out["position"] = reading.position.value
        if reading.accel_mg is not None:
            for axis, v in zip("xyz", reading.accel_mg, strict=True):
                out[f"accel_{axis}_mg"] = float(v)
    elif isinstance(reading, BodyTempReading):
        out["celsius"] = float(reading.celsius)
    elif isinstance(reading, AirReading):
        num("co2_ppm", reading.co2_ppm)
        num("pm25_ugm3", reading.pm25_ugm3)
        num("pm10_ugm3", reading.pm10_ugm3)
        num("temp_c", reading.temp_c)
        num("rh_pct", reading.rh_pct)
    out["seq"] = reading.seq  # always present, so every point has a field
    return out


def reading_line(
    *, site: str, room: str, device: str, child: str | None, stream: Stream, reading: Reading
) -> str | None:
    """The line for one accepted reading; None for streams that are not written (waveforms)."""
    if stream not in MEASURED_STREAMS:
        return None
    tags = {"site": site, "room": room, "device": device}
    if child is not None:
        tags["child"] = child
    return encode_line(stream.value, tags, reading_fields(reading), reading.ts)


# ---------------------------------------------------------------- batching


@dataclass
class Batcher:
    """Collects lines into batches: full at ``max_lines`` or ``max_bytes``, due ``max_age_ms`` after
    its first line. Times come from the caller."""

    max_lines: int = 5000
    max_bytes: int = 1 << 20
    max_age_ms: int = 1000
    _lines: list[str] = field(default_factory=list)
    _bytes: int = 0
    _first_ms: int | None = None

    def add(self, line: str, now_ms: int) -> list[str] | None:
        """Add a line; returns the batch when it became full."""
        if self._first_ms is None:
            self._first_ms = now_ms
        self._lines.append(line)
        self._bytes += len(line.encode()) + 1
        if len(self._lines) >= self.max_lines or self._bytes >= self.max_bytes:
            return self.take()
        return None

    def due_at(self) -> int | None:
        """When the current batch must go out by age (None: empty)."""
        return None if self._first_ms is None else self._first_ms + self.max_age_ms

    def take(self) -> list[str]:
        lines, self._lines, self._bytes, self._first_ms = self._lines, [], 0, None
        return lines

    def __len__(self) -> int:
        return len(self._lines)


# ---------------------------------------------------------------- answers and retries


class Verdict(StrEnum):
    WRITTEN = "written"
    RETRY = "retry"  # the database is away or busy: keep the batch, try again later
    REJECTED = "rejected"  # the batch holds a bad point (or is too large): split it


def classify(status: int | None) -> Verdict:
    """What an HTTP answer means for a batch. ``None``: no answer (connection refused, timeout).

    Only 400 (bad point, including InfluxDB's partial write) and 413 (too large) split the batch.
    Everything else that is not a 2xx is retried — including 401/403/404, which are configuration
    errors: dropping readings because a token expired would lose data that staff may need.
    """
    if status is not None and 200 <= status < 300:
        return Verdict.WRITTEN
    if status in (400, 413):
        return Verdict.REJECTED
    return Verdict.RETRY


def split(batch: list[str]) -> tuple[list[str], list[str]]:
    """Halves of a rejected batch, written separately until the bad point stands alone. (Re-writing
    a point InfluxDB already took from a partial write is harmless: same series and time overwrite.)"""
    mid = len(batch) // 2
    return batch[:mid], batch[mid:]


def parse_retry_after(value: str | None, now_s: float) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date. None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when: datetime = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now_s)


@dataclass
class Backoff:
    """Exponential backoff with full jitter, capped; a server's Retry-After is a lower bound."""

    base_s: float = 0.5
    cap_s: float = 30.0
    #: A longer Retry-After is shortened to this: a misconfigured proxy must not stop writes for hours.
    max_retry_after_s: float = 300.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self, retry_after_s: float | None = None) -> float:
        ceiling = min(self.cap_s, self.base_s * (2**self.attempt))
        self.attempt += 1
        delay = self.rng.uniform(ceiling / 2, ceiling)  # "equal jitter": never hammer at once
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.max_retry_after_s))
        return delay

    def reset(self) -> None:
        self.attempt = 0
