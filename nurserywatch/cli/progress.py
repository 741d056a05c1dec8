"""Progress of a long command (data export/erase, the fuzz bench) on standard error.

On a terminal one line is rewritten in place (``\\r``) at most every ``tty_every_s``. Anywhere else —
a log file, a pipe, journald, a CI log — ``\\r`` would leave every intermediate state in the log on one
garbled line, so there plain lines are written, at most one every ``plain_every_s``. Either way the
final state is written once, ending the line.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class ProgressLine:
    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        tty: bool | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        tty_every_s: float = 0.5,
        plain_every_s: float = 10.0,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.tty = self.stream.isatty() if tty is None else tty
        self._monotonic = monotonic
        self._every_s = tty_every_s if self.tty else plain_every_s
        self._last: float | None = None
        self._shown = 0  # length of the line now on a terminal (to blank a longer one's rest)

    def update(self, text: str, *, final: bool = False) -> None:
        """Show ``text`` if the interval has passed since the last one shown, or if ``final``."""
        now = self._monotonic()
        if not final and self._last is not None and now - self._last < self._every_s:
            return
        self._last = now
        if self.tty:
            pad = " " * max(0, self._shown - len(text))
            self.stream.write(f"\r{text}{pad}" + ("\n" if final else ""))
            self._shown = 0 if final else len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
