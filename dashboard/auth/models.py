"""Who a user is and what the auth layer is tuned by: ``Role``, ``User`` and ``AuthPolicy``. Plain
values with no FastAPI or database in them, so the session store (:mod:`dashboard.auth.store`), the
route dependencies (:mod:`dashboard.auth.deps`) and the pages (:mod:`dashboard.pages`) share them
without importing one another."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Role(IntEnum):
    """operator < staff < manager < admin: each role may do everything the ones below it may.

    ``operator`` is the fleet board's role (docs/fleet.md, "Fleet board"): signed in, but no page of a
    site. What the fleet board shows a user is its site grants (``User.sites``), not its role; admins
    see every site."""

    OPERATOR = 1  # not 0: a role is never falsy (``if own_role:`` in route_roles)
    STAFF = 2
    MANAGER = 3
    ADMIN = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        """``"staff"``, ``"manager"`` or ``"admin"``; ValueError naming the choices otherwise."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}; choose operator, staff, manager or admin") from None


#: A site grant meaning every site of the fleet.
ALL_SITES = "*"


@dataclass(frozen=True, slots=True)
class User:
    username: str
    role: Role
    display_name: str
    #: The fleet sites this user may see on the fleet board (``ALL_SITES``: all); empty for site users.
    sites: frozenset[str] = frozenset()

    @property
    def shown_name(self) -> str:
        """The name other people see (acknowledged by …, checked by …)."""
        return self.display_name or self.username

    def may(self, role: Role) -> bool:
        return self.role >= role

    @property
    def fleet_access(self) -> bool:
        """Whether the fleet board opens for this user at all (some site granted, or an admin)."""
        return self.role == Role.ADMIN or bool(self.sites)

    def may_see_site(self, site: str) -> bool:
        return self.role == Role.ADMIN or ALL_SITES in self.sites or site in self.sites


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    """Session lifetimes, login throttling and password hashing cost. The defaults suit a nursery:
    a session lasts a working day; a page left alone for an hour asks for the password again (the
    live room view keeps its session alive while its stream is open, so a tablet watching a nap is
    never signed out mid-nap)."""

    session_lifetime_s: int = 12 * 3600
    session_idle_s: int = 3600
    #: Failed logins before a lockout: of one username from one address, of anything from one address,
    #: and of one username from all addresses together — the last applies only to addresses the user has
    #: not signed in from lately, so nobody elsewhere can lock staff out of their own tablet.
    user_failures: int = 5
    ip_failures: int = 20
    user_wide_failures: int = 10
    #: An address the user signed in from within this many days is known-good for that user.
    known_address_days: int = 90
    #: Audit entries older than this are pruned (an audited deletion; 0 keeps them for ever).
    audit_retention_days: int = 400
    #: Failures older than this are forgotten.
    failure_window_s: int = 15 * 60
    #: First lockout; each further failure while over the limit doubles it, up to the maximum.
    lockout_s: int = 30
    max_lockout_s: int = 15 * 60
    #: argon2id cost (argon2-cffi's defaults: 3 passes over 64 MiB, ~0.1 s on a laptop).
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    argon2_parallelism: int = 4
