"""Pure rules of signing in: username and password checks, and the login throttle. No I/O; times
come in as arguments (the app's injected clock)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Final

USERNAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD: Final = 10
MAX_PASSWORD: Final = 256
MAX_DISPLAY_NAME: Final = 64


def check_username(name: str) -> str:
    """The username as stored (lower case); ValueError with the rule otherwise."""
    if not USERNAME_RE.fullmatch(name):
        raise ValueError("a username is 1–64 letters, digits or . _ @ - (starting with a letter or digit)")
    return name.lower()


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise ValueError(f"a password has at most {MAX_PASSWORD} characters")
    return password


def check_display_name(name: str) -> str:
    name = " ".join(name.split())
    if len(name) > MAX_DISPLAY_NAME or any(ord(c) < 32 for c in name):
        raise ValueError(f"a display name has at most {MAX_DISPLAY_NAME} printable characters")
    return name


def token_digest(token: str) -> str:
    """What the database keeps of a session token: a stolen database file holds no usable session."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class _Counter:
    failures: list[int] = field(default_factory=list)  # times (ms) of recent failures
    locked_until: int = 0


@dataclass
class LoginThrottle:
    """Failed logins per key (``user:<name>``, ``ip:<address>``). Over ``limit`` failures inside
    ``window_ms`` the key is locked for ``lockout_ms``, doubled for every further failure (up to
    ``max_lockout_ms``). Unknown usernames are counted like real ones, so a lockout says nothing
    about whether an account exists. In memory: a restart forgets it (documented)."""

    window_ms: int
    lockout_ms: int
    max_lockout_ms: int
    _counters: dict[str, _Counter] = field(default_factory=dict)

    def retry_after_ms(self, keys: dict[str, int], now_ms: int) -> int:
        """0 when every key may try now; otherwise how long until all may. ``keys`` maps key → limit."""
        return max((max(0, self._counters[k].locked_until - now_ms) for k in keys if k in self._counters), default=0)

    def failed(self, keys: dict[str, int], now_ms: int) -> None:
        for key, limit in keys.items():
            c = self._counters.setdefault(key, _Counter())
            c.failures = [t for t in c.failures if now_ms - t < self.window_ms] + [now_ms]
            over = len(c.failures) - limit
            if over >= 0:
                c.locked_until = now_ms + min(self.max_lockout_ms, self.lockout_ms * 2**min(over, 20))
        self._forget_old(now_ms)

    def succeeded(self, key: str) -> None:
        self._counters.pop(key, None)

    def _forget_old(self, now_ms: int) -> None:
        # Bounded memory under a spray of usernames: drop keys with nothing recent and no lock.
        if len(self._counters) > 10_000:
            for k in [k for k, c in self._counters.items() if c.locked_until <= now_ms and
                      all(now_ms - t >= self.window_ms for t in c.failures)]:
                del self._counters[k]
