"""The tests' clock origin and the clocks tests inject."""

from __future__ import annotations

import time

#: 2026-01-01T00:00:00Z = 09:00 in Asia/Tokyo, in epoch ms: where the tests' ManualClocks start.
T0 = 1_767_225_600_000
MIN = 60_000


class ShiftedClock:
    """Real time moved to 2030: a timestamp in 2030 proves it came from the injected clock."""

    START_MS = 1_893_456_000_000

    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def now_ms(self) -> int:
        return self.START_MS + int((time.monotonic() - self._t0) * 1000)
