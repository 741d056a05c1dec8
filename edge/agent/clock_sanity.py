"""Clock sanity, sans I/O: never publish a timestamp from a clock that is known to be wrong.

A Raspberry Pi has no real-time clock: after power-up its wall clock starts at whatever was saved
(fake-hwclock) or at 1970, until NTP sets it — then the clock *steps*. The edge therefore stamps
sensor data with a steady timebase (the monotonic clock, anchored to the wall clock once at start,
so normally the two are equal), and converts to wall time only when a reading leaves for the spool:

    guard = ClockSanity(wall, mono_ms, synchronised, build_date_ms)
    channel.on_bytes(data, guard.now_ms())            # steady time for everything the channels see
    ready = guard.admit([(key, reading), ...])        # once per tick: [] while the clock is not plausible

The wall clock is *plausible* when it is at or after the software's build date, or when the
injected probe says it is synchronised. Until then ``admit`` HOLDS readings in memory (bounded by
``max_held``; the oldest are dropped and counted as ``clock_hold_full``) and ``ok`` is False (the
agent publishes it as ``clock_ok`` in its status). When it becomes plausible, every held reading is
released re-stamped: each unix-ms field (TIME_FIELDS) moves by the same offset, i.e.
``ts = wall_now − (mono_now − mono_sample)``. A later step of the wall clock (fake-hwclock time
corrected by NTP) is applied the same way to readings stamped before it, so a reading's
``last_breath_ts`` never lands on the wrong side of a step; the DSP windows never see one at all.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Generic, TypeVar

from pydantic import BaseModel

from nurserywatch.clock import Clock

log = logging.getLogger(__name__)

#: The unix-millisecond fields of the contract's reading models (checked by tests/edge/test_edge_clock.py).
TIME_FIELDS = ("ts", "last_breath_ts", "t0")
#: Readings held while the clock is not plausible: 30 minutes of 20 devices at 1 reading/s.
MAX_HELD = 36_000
#: A change of (wall − monotonic) larger than this is a step of the wall clock; smaller ones are
#: the two clocks being read a moment apart.
STEP_MS = 20

K = TypeVar("K")
M = TypeVar("M", bound=BaseModel)


class ClockSanity(Generic[K, M]):
    """``K``: whatever the caller keys a reading with (device, stream); ``M``: the reading model."""

    def __init__(
        self,
        wall: Clock,
        mono_ms: Callable[[], int],
        synchronised: Callable[[], bool],
        build_date_ms: int,
        *,
        max_held: int = MAX_HELD,
    ) -> None:
        self.wall, self.mono_ms, self.synchronised = wall, mono_ms, synchronised
        self.build_date_ms = build_date_ms
        self.max_held = max_held
        #: None until the first check; then whether the wall clock is plausible.
        self.ok: bool | None = None
        #: Why it is (not) plausible, for logs and the doctor.
        self.reason = "not checked yet"
        #: Readings dropped while held, by reason (``clock_hold_full``).
        self.dropped: Counter[str] = Counter()
        self._anchor = wall.now_ms() - mono_ms()  # steady = monotonic + anchor
        self._offset = self._anchor  # wall − monotonic as last observed (changes only by steps)
        self._held: deque[tuple[K, M]] = deque()
        self._dropping = False

    def now_ms(self) -> int:
        """Steady time for stamping sensor data: the wall clock at start, then monotonic."""
        return self.mono_ms() + self._anchor

    @property
    def held(self) -> int:
        return len(self._held)

    def check(self) -> bool:
        """Look at the clocks now: note a step of the wall clock, decide whether it is plausible."""
        wall, mono = self.wall.now_ms(), self.mono_ms()
        offset = wall - mono
        if abs(offset - self._offset) > STEP_MS:
            log.info("wall clock stepped by %+.3f s", (offset - self._offset) / 1000)
            self._offset = offset
        if wall >= self.build_date_ms:
            ok, reason = True, f"{_iso(wall)} is after the build date {_iso(self.build_date_ms)}"
        elif self.synchronised():
            ok, reason = True, f"synchronised ({_iso(wall)})"
        else:
            ok, reason = (
                False,
                (f"{_iso(wall)} is before the build date {_iso(self.build_date_ms)} and the clock is not synchronised"),
            )
        if ok is not self.ok:
            if ok:
                log.info("clock plausible: %s%s", reason, f"; releasing {self.held} held readings" if self.held else "")
            else:
                log.warning("clock NOT plausible: %s; holding readings until it is", reason)
        self.ok, self.reason = ok, reason
        return ok

    def admit(self, items: Iterable[tuple[K, M]]) -> list[tuple[K, M]]:
        """This tick's readings (stamped with now_ms()) in; what may be published now out, in order,
        stamped with wall time: [] while the clock is not plausible, then the held ones first."""
        if not self.check():
            for item in items:
                if len(self._held) >= self.max_held:
                    if not self._dropping:
                        log.warning(
                            "clock still not plausible and %d readings held: dropping the oldest from now on",
                            self.max_held,
                        )
                        self._dropping = True
                    self._held.popleft()
                    self.dropped["clock_hold_full"] += 1
                self._held.append(item)
            return []
        self._dropping = False
        out = [*self._held, *items]
        self._held.clear()
        shift = self._offset - self._anchor
        if shift == 0:
            return out
        return [(key, _shifted(reading, shift)) for key, reading in out]


def _shifted(reading: M, shift_ms: int) -> M:
    update = {f: v + shift_ms for f in TIME_FIELDS if isinstance(v := getattr(reading, f, None), int)}
    return reading.model_copy(update=update)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
