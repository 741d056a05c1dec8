"""Rate-limited summaries of bad input, so a noisy port cannot flood the log (pure).

One line per source at most every ``interval_s``, with the counts since the previous line, the
running totals and the latest rejection — enough to diagnose wiring or baud-rate trouble.
"""

from __future__ import annotations

from collections import Counter


class RejectLog:
    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self._seen: dict[str, Counter[str]] = {}
        self._logged_at: dict[str, float] = {}

    def summary(self, source: str, totals: Counter[str], last: object, now_s: float) -> str | None:
        """A log line if ``source`` has new rejections and its interval has passed, else None."""
        seen = self._seen.get(source, Counter())
        new = totals - seen
        if not new:
            return None
        logged_at = self._logged_at.get(source)
        if logged_at is not None and now_s - logged_at < self.interval_s:
            return None
        self._seen[source] = totals.copy()
        self._logged_at[source] = now_s
        return f"{source}: rejected {new.total()} sentence(s) ({_fmt(new)}); totals {_fmt(totals)}; last: {last}"


def _fmt(counts: Counter[str]) -> str:
    return ", ".join(f"{reason}={n}" for reason, n in sorted(counts.items()))
