"""Pure rules of signing in: username and password checks, and the login throttle. No I/O; times
come in as arguments (the app's injected clock)."""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from dashboard.i18n import catalogue

USERNAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD: Final = 10
MAX_PASSWORD: Final = 256
MAX_DISPLAY_NAME: Final = 64
COMMON_PASSWORDS_FILE: Final = "common_passwords.txt"


def check_username(name: str) -> str:
    """The username as stored (lower case); ValueError with the rule otherwise."""
    if not USERNAME_RE.fullmatch(name):
        raise ValueError("a username is 1–64 letters, digits or . _ @ - (starting with a letter or digit)")
    return name.lower()


class PasswordRejected(ValueError):
    """A password the rule refuses. ``text``: its catalogue key and placeholders (ja/en in
    dashboard/i18n.py); ``str()`` is the English and the Japanese message, for the command line."""

    def __init__(self, key: str, **params: str) -> None:
        self.text = (key, params)
        en, ja = (catalogue(lang)[key].format(**params) for lang in ("en", "ja"))
        super().__init__(f"{en} / {ja}")


@functools.cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords (dashboard/auth/common_passwords.txt), lower case."""
    text = (Path(__file__).parent / COMMON_PASSWORDS_FILE).read_text(encoding="utf-8")
    return frozenset(w.strip().lower() for w in text.splitlines() if w.strip() and not w.startswith("#"))


def _classes(password: str) -> int:
    """How many of: lower-case, upper-case, digits, other ASCII (symbols, space), non-ASCII."""
    kinds = {
        "lower" if c.isascii() and c.islower() else "upper" if c.isascii() and c.isupper()
        else "digit" if c.isascii() and c.isdigit() else "other" if c.isascii() else "non-ascii"
        for c in password
    }  # fmt: skip
    return len(kinds)


def check_password(password: str, username: str = "") -> str:
    """The password when the rule allows it; PasswordRejected naming the reason otherwise. The rule:
    10–256 characters, at least 5 different characters and two kinds of character (so not one letter
    repeated, not only digits), not containing the username, and neither the password nor its letters
    alone (``Password2026!`` → ``password``) in the shipped list of common passwords."""
    if len(password) < MIN_PASSWORD:
        raise PasswordRejected("password.too_short", n=str(MIN_PASSWORD))
    if len(password) > MAX_PASSWORD:
        raise PasswordRejected("password.too_long", n=str(MAX_PASSWORD))
    lowered = password.lower()
    if len(username) >= 3 and username.lower() in lowered:
        raise PasswordRejected("password.has_username")
    letters = "".join(c for c in lowered if c.isalpha())
    if lowered in common_passwords() or (len(letters) >= 4 and letters in common_passwords()):
        raise PasswordRejected("password.common")
    if len(set(password)) < 5:
        raise PasswordRejected("password.repetitive")
    if _classes(password) < 2:
        raise PasswordRejected("password.one_class")
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


@dataclass(frozen=True, slots=True)
class TallyRow:
    """Refused sign-ins of one (address, username, action) in one window beyond the first."""

    ip: str
    username: str
    action: str
    count: int
    first_ms: int
    last_ms: int


@dataclass
class _Tally:
    start_ms: int
    count: int = 0  # after the first (which was written at once)
    last_ms: int = 0


@dataclass
class FailureTally:
    """Refused sign-ins for the audit log, aggregated: the first of an (address, username, action) in a
    window is written at once (``add`` says so); the rest are counted and written as one row when the
    window has passed (``due``) or the dashboard stops (``drain``). 300 wrong passwords from one address
    make two rows, not 300."""

    window_ms: int
    _open: dict[tuple[str, str, str], _Tally] = field(default_factory=dict)

    def add(self, ip: str, username: str, action: str, now_ms: int) -> bool:
        """Count one refusal; True when it is the first of its window (write it now). Call ``due`` first:
        an ended window still here is replaced."""
        key = (ip, username, action)
        tally = self._open.get(key)
        if tally is None or now_ms - tally.start_ms >= self.window_ms:
            self._open[key] = _Tally(now_ms)
            return True
        tally.count += 1
        tally.last_ms = now_ms
        return False

    def due(self, now_ms: int) -> list[TallyRow]:
        """The windows that have ended with more than their first refusal (removed from the tally)."""
        ended = [k for k, t in self._open.items() if now_ms - t.start_ms >= self.window_ms]
        return [row for k in ended if (row := self._pop(k)) is not None]

    def drain(self) -> list[TallyRow]:
        return [row for k in list(self._open) if (row := self._pop(k)) is not None]

    def _pop(self, key: tuple[str, str, str]) -> TallyRow | None:
        t = self._open.pop(key)
        return TallyRow(*key, t.count, t.start_ms, t.last_ms) if t.count else None


@dataclass
class LoginThrottle:
    """Failed logins per key (``pair:<address> <name>``, ``ip:<address>``, ``user:<name>``). Over ``limit``
    failures inside ``window_ms`` the key is locked for ``lockout_ms``, doubled for every further
    failure (up to ``max_lockout_ms``). Unknown usernames are counted like real ones, so a lockout says
    nothing about whether an account exists. In memory: a restart forgets it (documented). Which keys
    are counted and which are checked is the caller's (dashboard/routes/auth.py ``throttle_keys``)."""

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
