"""The dashboard's own SQLite database (``data_dir/dashboard.sqlite3``, WAL): users with argon2id
password hashes, sessions (only a SHA-256 of the token is stored), and the append-only audit log
(UPDATE and DELETE on it are refused by triggers).

Thin I/O shell: every method takes the time as an argument. One connection guarded by a lock, so
the blocking password check can run in a worker thread (``asyncio.to_thread``) while the event
loop keeps using the database."""

from __future__ import annotations

import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from dashboard.auth.logic import PasswordRejected, check_display_name, check_password, check_username, token_digest
from dashboard.auth.models import ALL_SITES, AuthPolicy, Role, User
from nurserywatch.contract import IDENT_RE
from nurserywatch.sqlite import connect

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS users (
    username      TEXT PRIMARY KEY,
    display_name  TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('operator', 'staff', 'manager', 'admin')),
    password_hash TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_ms    INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL,
    last_login_ms INTEGER
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash   TEXT PRIMARY KEY,
    username     TEXT NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    csrf_token   TEXT NOT NULL,
    created_ms   INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    ip           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (username);
-- The fleet sites a user may see on the fleet board ('*': all of them); docs/fleet.md, "Fleet board".
CREATE TABLE IF NOT EXISTS user_sites (
    username TEXT NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    site     TEXT NOT NULL,
    PRIMARY KEY (username, site)
);
CREATE TABLE IF NOT EXISTS audit (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms    INTEGER NOT NULL,
    username TEXT,
    role     TEXT,
    action   TEXT NOT NULL,
    target   TEXT NOT NULL,
    detail   TEXT NOT NULL,
    ip       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts_ms);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE INDEX IF NOT EXISTS audit_user_ip ON audit (username, ip);
-- Each pruning of the audit log past its retention, itself append-only. Deleting from the audit log is
-- refused unless the entry is older than the newest pruning's cut-off (AuthStore.prune_audit).
CREATE TABLE IF NOT EXISTS audit_prune (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms     INTEGER NOT NULL,
    before_ms INTEGER NOT NULL,
    deleted   INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_prune_no_update BEFORE UPDATE ON audit_prune
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_prune_no_delete BEFORE DELETE ON audit_prune
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
DROP TRIGGER IF EXISTS audit_no_delete;  -- the first version refused every DELETE: replaced at every open
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    WHEN OLD.ts_ms >= (SELECT coalesce(max(before_ms), 0) FROM audit_prune)
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only (only entries past the retention are pruned)'); END;
"""

USER_COLUMNS: Final = (
    "username, role, display_name, disabled, created_ms, last_login_ms,"
    " (SELECT group_concat(site, ' ') FROM user_sites g WHERE g.username = users.username)"
)
#: The users table's columns, for rebuilding it when its role CHECK predates a role (_migrate_roles).
_USERS_COPY: Final = "username, display_name, role, password_hash, disabled, created_ms, updated_ms, last_login_ms"
#: Only write last_seen when it moved this much: no database write on every request.
TOUCH_EVERY_MS: Final = 60_000


class UserError(ValueError):
    """A user change that cannot be made (exists, unknown, last admin, bad name or password). ``text``:
    a catalogue key and its placeholders when the reason has a translation (the password rule)."""

    def __init__(self, message: str, text: tuple[str, dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.text = text


@dataclass(frozen=True, slots=True)
class Session:
    token_hash: str
    user: User
    csrf_token: str
    created_ms: int
    last_seen_ms: int


@dataclass(frozen=True, slots=True)
class UserRow:
    user: User
    disabled: bool
    created_ms: int
    last_login_ms: int | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    ts_ms: int
    username: str | None
    role: str | None
    action: str
    target: str
    detail: str
    ip: str


class AuthStore:
    """``path`` None keeps everything in memory (tests)."""

    def __init__(self, path: Path | None, policy: AuthPolicy) -> None:
        self.path = path
        self.policy = policy
        self.hasher = PasswordHasher(
            time_cost=policy.argon2_time_cost,
            memory_cost=policy.argon2_memory_kib,
            parallelism=policy.argon2_parallelism,
        )
        # Checked against when the username is unknown, so both cases take the same time (made on first use).
        self._dummy_hash: str | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = connect(path or ":memory:", synchronous=None, foreign_keys=True, check_same_thread=False)
        self._lock = threading.Lock()
        #: Goes up whenever this store ends sessions (logout, user disabled, new password): live streams
        #: re-check their session when it moved, so a logout ends the room view's stream within a second.
        self.sessions_ended = 0
        with self._lock:
            self._migrate_roles()
            self._db.executescript(SCHEMA)

    def _migrate_roles(self) -> None:
        """A database made before the operator role has a CHECK on ``users.role`` that refuses it:
        rebuild the table with today's (SQLite's documented way to change a constraint: copy, drop,
        rename, with foreign keys off so the sessions survive)."""
        row = self._db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'users'").fetchone()
        if row is None or "'operator'" in row[0]:
            return
        create = SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS users") : SCHEMA.index(");") + 2]
        self._db.execute("PRAGMA foreign_keys=OFF")
        try:
            self._db.execute("BEGIN")
            self._db.execute(create.replace("IF NOT EXISTS users", "users_new"))
            self._db.execute(f"INSERT INTO users_new ({_USERS_COPY}) SELECT {_USERS_COPY} FROM users")
            self._db.execute("DROP TABLE users")
            self._db.execute("ALTER TABLE users_new RENAME TO users")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        finally:
            self._db.execute("PRAGMA foreign_keys=ON")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------ users

    def add_user(self, username: str, password: str, role: Role, display_name: str, now_ms: int) -> User:
        try:
            name = check_username(username)
            check_password(password, name)
            shown = check_display_name(display_name)
        except PasswordRejected as exc:
            raise UserError(str(exc), exc.text) from None
        except ValueError as exc:
            raise UserError(str(exc)) from None
        digest = self.hasher.hash(password)
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO users (username, display_name, role, password_hash, created_ms, updated_ms)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (name, shown, role.label, digest, now_ms, now_ms),
                )
            except sqlite3.IntegrityError:
                raise UserError(f"user {name!r} already exists") from None
        return User(name, role, shown)

    def get_user(self, username: str) -> UserRow | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {USER_COLUMNS} FROM users WHERE username = ?", (username.lower(),)
            ).fetchone()
        return _user_row(row) if row else None

    def list_users(self) -> list[UserRow]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {USER_COLUMNS} FROM users ORDER BY username"
            ).fetchall()
        return [_user_row(r) for r in rows]

    def count_users(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM users").fetchone()[0])

    def set_role(self, username: str, role: Role, now_ms: int) -> User:
        row = self._existing(username)
        if row.user.role == Role.ADMIN and role != Role.ADMIN:
            self._keep_an_admin(row.user.username)
        with self._lock:
            self._db.execute(
                "UPDATE users SET role = ?, updated_ms = ? WHERE username = ?", (role.label, now_ms, row.user.username)
            )
        return User(row.user.username, role, row.user.display_name)

    def set_sites(self, username: str, sites: list[str], now_ms: int) -> User:
        """Replace the fleet sites ``username`` may see on the fleet board (``["*"]``: all; ``[]``: none).
        Applies at the user's next request (sessions read the user fresh)."""
        row = self._existing(username)
        wanted = sorted({s.strip() for s in sites if s.strip()})
        for site in wanted:
            if site != ALL_SITES and not IDENT_RE.fullmatch(site):
                raise UserError(f"{site!r} is not a site id (lower-case letters, digits, '-' and '_'), "
                                f"nor {ALL_SITES!r} for all")
        name = row.user.username
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM user_sites WHERE username = ?", (name,))
            self._db.executemany("INSERT INTO user_sites (username, site) VALUES (?, ?)", [(name, s) for s in wanted])
            self._db.execute("UPDATE users SET updated_ms = ? WHERE username = ?", (now_ms, name))
            self._db.execute("COMMIT")
        return User(name, row.user.role, row.user.display_name, frozenset(wanted))

    def set_disabled(self, username: str, disabled: bool, now_ms: int) -> None:
        """Disabling also ends every session of the user at once."""
        row = self._existing(username)
        if disabled and row.user.role == Role.ADMIN:
            self._keep_an_admin(row.user.username)
        with self._lock:
            self._db.execute(
                "UPDATE users SET disabled = ?, updated_ms = ? WHERE username = ?",
                (int(disabled), now_ms, row.user.username),
            )
            if disabled:
                self._db.execute("DELETE FROM sessions WHERE username = ?", (row.user.username,))
                self.sessions_ended += 1

    def set_password(self, username: str, password: str, now_ms: int) -> None:
        """A new password ends the user's sessions (a stolen session does not survive the change)."""
        row = self._existing(username)
        try:
            check_password(password, row.user.username)
        except PasswordRejected as exc:
            raise UserError(str(exc), exc.text) from None
        digest = self.hasher.hash(password)
        with self._lock:
            self._db.execute(
                "UPDATE users SET password_hash = ?, updated_ms = ? WHERE username = ?",
                (digest, now_ms, row.user.username),
            )
            self._db.execute("DELETE FROM sessions WHERE username = ?", (row.user.username,))
            self.sessions_ended += 1

    def check_password(self, username: str, password: str, now_ms: int) -> User | None:
        """The user when the password is right and the account enabled; None otherwise (which of
        the two is deliberately not said). Blocking (argon2): call it from a worker thread."""
        with self._lock:
            row = self._db.execute(
                "SELECT username, role, display_name, password_hash, disabled FROM users WHERE username = ?",
                (username.lower(),),
            ).fetchone()
        if row is None and self._dummy_hash is None:
            self._dummy_hash = self.hasher.hash(secrets.token_hex(16))
        stored = row[3] if row else self._dummy_hash
        assert stored is not None
        try:
            self.hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if row is None or row[4]:
            return None
        user = User(row[0], Role.parse(row[1]), row[2])
        rehash = self.hasher.hash(password) if self.hasher.check_needs_rehash(stored) else None
        with self._lock:
            if rehash:  # the policy's cost went up since this hash was made
                self._db.execute("UPDATE users SET password_hash = ? WHERE username = ?", (rehash, user.username))
            self._db.execute("UPDATE users SET last_login_ms = ? WHERE username = ?", (now_ms, user.username))
        return user

    def _existing(self, username: str) -> UserRow:
        row = self.get_user(username)
        if row is None:
            raise UserError(f"no user {username!r}")
        return row

    def _keep_an_admin(self, username: str) -> None:
        with self._lock:
            others = self._db.execute(
                "SELECT count(*) FROM users WHERE role = 'admin' AND disabled = 0 AND username != ?", (username,)
            ).fetchone()[0]
        if not others:
            raise UserError(f"{username!r} is the last enabled admin; make another admin first")

    # ------------------------------------------------------------ sessions

    def create_session(self, user: User, now_ms: int, ip: str) -> tuple[str, Session]:
        """A new session; returns the token for the cookie (only its digest is stored)."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        digest = token_digest(token)
        with self._lock:
            self._db.execute(
                "INSERT INTO sessions (token_hash, username, csrf_token, created_ms, last_seen_ms, ip)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (digest, user.username, csrf, now_ms, now_ms, ip),
            )
            # Old sessions are swept here, on login, rather than by a background task.
            self._db.execute(
                "DELETE FROM sessions WHERE created_ms < ? OR last_seen_ms < ?",
                (now_ms - self.policy.session_lifetime_s * 1000, now_ms - self.policy.session_idle_s * 1000),
            )
        return token, Session(digest, user, csrf, now_ms, now_ms)

    def session(self, token: str, now_ms: int, policy: AuthPolicy) -> Session | None:
        """The live session of ``token`` (and touch it), or None: unknown, expired (lifetime or
        idle), or its user disabled. The user is read fresh, so a role change applies at once."""
        digest = token_digest(token)
        with self._lock:
            row = self._db.execute(
                "SELECT s.csrf_token, s.created_ms, s.last_seen_ms, u.username, u.role, u.display_name, u.disabled,"
                " (SELECT group_concat(site, ' ') FROM user_sites g WHERE g.username = u.username)"
                " FROM sessions s JOIN users u USING (username) WHERE s.token_hash = ?",
                (digest,),
            ).fetchone()
            if row is None:
                return None
            csrf, created, seen, username, role, display, disabled, sites = row
            if disabled or now_ms - created >= policy.session_lifetime_s * 1000 or (
                now_ms - seen >= policy.session_idle_s * 1000
            ):
                self._db.execute("DELETE FROM sessions WHERE token_hash = ?", (digest,))
                return None
            if now_ms - seen >= TOUCH_EVERY_MS:
                self._db.execute("UPDATE sessions SET last_seen_ms = ? WHERE token_hash = ?", (now_ms, digest))
                seen = now_ms
        return Session(digest, User(username, Role.parse(role), display, _sites(sites)), csrf, created, seen)

    def end_session(self, token_hash: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))
            self.sessions_ended += 1

    def count_sessions(self, username: str) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM sessions WHERE username = ?", (username,)).fetchone()[0])

    # ------------------------------------------------------------ audit

    def audit(self, now_ms: int, user: User | None, action: str, target: str, detail: str, ip: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO audit (ts_ms, username, role, action, target, detail, ip) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (now_ms, user.username if user else None, user.role.label if user else None, action, target, detail,
                 ip),
            )

    def signed_in_from(self, username: str, ip: str, since_ms: int) -> bool:
        """Whether ``username`` signed in from ``ip`` since ``since_ms`` (a known-good address: the
        login throttle never locks the account out there because of failures from elsewhere)."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM audit WHERE username = ? AND ip = ? AND action = 'login' AND ts_ms >= ? LIMIT 1",
                (username.lower(), ip, since_ms),
            ).fetchone()
        return row is not None

    def prune_audit(self, now_ms: int, retention_days: int) -> int:
        """Delete the audit entries older than ``retention_days`` (0: keep for ever); returns how many.
        Deliberate and itself recorded: the cut-off goes into ``audit_prune`` (which the delete trigger
        checks, so nothing newer can be deleted) and an ``audit.prune`` entry says what was removed."""
        if retention_days <= 0:
            return 0
        before = now_ms - retention_days * 86_400_000
        with self._lock:
            (count,) = self._db.execute("SELECT count(*) FROM audit WHERE ts_ms < ?", (before,)).fetchone()
            if not count:
                return 0
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO audit_prune (ts_ms, before_ms, deleted) VALUES (?, ?, ?)", (now_ms, before, count)
                )
                self._db.execute("DELETE FROM audit WHERE ts_ms < ?", (before,))
                self._db.execute(
                    "INSERT INTO audit (ts_ms, username, role, action, target, detail, ip) VALUES (?, NULL, NULL,"
                    " 'audit.prune', '', ?, 'dashboard')",
                    (now_ms, f"{count} entries older than {retention_days} days removed (retention)"),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return int(count)

    def audit_entries(self, limit: int = 200, action: str | None = None) -> list[AuditEntry]:
        """The newest entries first."""
        query = "SELECT id, ts_ms, username, role, action, target, detail, ip FROM audit"
        args: tuple[object, ...] = ()
        if action:
            query += " WHERE action = ?"
            args = (action,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [AuditEntry(*r) for r in rows]


def _user_row(row: tuple[str, str, str, int, int, int | None, str | None]) -> UserRow:
    username, role, display, disabled, created, last_login, sites = row
    return UserRow(User(username, Role.parse(role), display, _sites(sites)), bool(disabled), created, last_login)


def _sites(joined: str | None) -> frozenset[str]:
    return frozenset(joined.split()) if joined else frozenset()
