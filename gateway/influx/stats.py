"""The InfluxDB writer's counters: a plain record the writer updates and the gateway's stats and
/metrics read (its own module so the transport-free engine can hold it without loading the writer)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class WriterStats:
    """The writer's counters (since the gateway started; ``buffered`` is the disk buffer's depth now).
    ``GatewayStats.influx`` is this object; ``counters()`` is the form for logs and /metrics."""

    #: Lines InfluxDB confirmed (2xx), re-sent overlap included.
    written: int = 0
    #: Lines waiting in the on-disk buffer now.
    buffered: int = 0
    dead_lettered: int = 0
    #: Write attempts that failed and will be retried (the database away or busy).
    retries: int = 0
    #: Lines dropped by the on-disk buffer at its bound (oldest first).
    dropped: int = 0
    #: Readings re-sent from the gateway's SQLite at start (after a crash; docs/storage.md).
    backfilled: int = 0
    #: The last failed or rejected write ("" when none): what, and when (Unix s).
    last_error: str = ""
    last_error_ts: float | None = None
    #: The last few dead-lettered lines, for the log and for tests.
    dead_letters: deque[str] = field(default_factory=lambda: deque(maxlen=100))

    def counters(self) -> dict[str, int]:
        """The numbers, by name (stable names: a metrics endpoint exports them as they are)."""
        return {
            "written": self.written, "buffered": self.buffered, "dropped": self.dropped,
            "dead_lettered": self.dead_lettered, "retries": self.retries, "backfilled": self.backfilled,
        }  # fmt: skip

    def summary(self) -> str:
        """One log line."""
        text = ", ".join(f"{k} {v}" for k, v in self.counters().items())
        return text + (f"; last error: {self.last_error}" if self.last_error else "")
