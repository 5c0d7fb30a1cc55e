"""Staff accounts of central: roles, logins, sessions, lockout and the audit log.

Everything lives in central's database (tables in :mod:`central.staff.db`),
so any number of stateless workers share sessions and lockouts. Rules, all on
the injectable ``clock_ms``:

* ``bart central staff add NAME --role ROLE`` prints a one-time password; the
  first login must choose a personal password (at least 12 characters);
* per name, 5 wrong passwords lock it for 15 minutes, then 30, 60, … (at most
  24 h); unknown names are counted and locked exactly like real ones, so a
  lockout says nothing about which names exist. Per client address, 20
  failures within 10 minutes and that address waits before any password is
  checked;
* a session ends 4 hours after its last use and 12 hours after login at most
  (a shift); only the SHA-256 of its token is stored;
* every action is written to the audit log: who, when, what, on what.

Password hashing (~50 ms) runs outside any database transaction.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from common import logins, ratelimit
from common.logins import token_hash
from common.passwords import (
    SCRYPT_N,
    dummy_hash,
    hash_password,
    new_one_time_password,
    verify_login,
)

from .. import db
from ..errors import CentralError
from ..passwords import InvalidName, check_new_password, name_key, normalise_name
from .db import (
    staff,
    staff_audit,
    staff_client_failures,
    staff_name_failures,
    staff_sessions,
)

log = logging.getLogger(__name__)

ROLES: Final = ("police", "municipality", "admin")
SESSION_IDLE_MS: Final = 4 * 3600 * 1000
SESSION_MAX_MS: Final = 12 * 3600 * 1000
#: A session's last use is written at most this often.
TOUCH_EVERY_MS: Final = 60 * 1000
MAX_TOKEN: Final = 128
# The login numbers are the one abuse-limit policy of node and central (common/ratelimit.py).
MAX_FAILURES: Final = ratelimit.LOGIN_MAX_FAILURES
LOCKOUT_MS: Final = ratelimit.LOGIN_LOCKOUT_S * 1000
LOCKOUT_MAX_MS: Final = ratelimit.LOGIN_LOCKOUT_MAX_S * 1000
FORGET_FAILURES_MS: Final = ratelimit.LOGIN_FORGET_FAILURES_S * 1000
CLIENT_MAX_FAILURES: Final = ratelimit.LOGIN_CLIENT_MAX_FAILURES
CLIENT_WINDOW_MS: Final = ratelimit.LOGIN_CLIENT_WINDOW_S * 1000
MAX_DETAIL: Final = 500


class StaffError(CentralError):
    """Root of the errors of staff accounts and staff actions."""


class NameTaken(StaffError):
    """A staff account with this name (ignoring case) exists already."""


class UnknownStaff(StaffError):
    """There is no staff account with this name."""


class InvalidRole(StaffError, ValueError):
    """A role is not one of police, municipality, admin."""


class LoginFailed(StaffError, logins.LoginFailed):
    """Name or password is wrong (deliberately does not say which)."""


class LockedOut(LoginFailed, logins.LockedOut):
    """Too many wrong passwords for this name: no login until ``until`` (ms)."""

    until: int


class Throttled(LoginFailed, logins.Throttled):
    """Too many failed logins from this client address: wait ``retry_after`` seconds."""


@dataclass(frozen=True)
class StaffMember:
    """A staff account as pages and the CLI see it (never its hash)."""

    key: str
    name: str
    role: str
    must_change: bool
    created: int
    last_login: int | None

    def sees(self, route: str) -> bool:
        """May this member see and handle reports routed to ``route``?"""
        return self.role == "admin" or self.role == route


@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit log."""

    id: int
    at: int
    staff: str
    action: str
    subject: str
    detail: str


def lockout_ms(lockouts: int) -> int:
    """How long the ``lockouts``-th lockout in a row lasts: 15 min, doubling, ≤ 24 h.

    >>> [lockout_ms(n) // 60_000 for n in (1, 2, 3, 8)]
    [15, 30, 60, 1440]
    """
    return int(ratelimit.lockout_seconds(lockouts) * 1000)


def audit(conn: Connection, at: int, who: str, action: str, subject: str = "",
          detail: str = "") -> None:
    """Write one audit line inside the caller's transaction."""
    conn.execute(staff_audit.insert().values(at=at, staff=who[:40], action=action[:32],
                                             subject=subject[:64], detail=detail[:MAX_DETAIL]))


def _member(row: Any) -> StaffMember:
    return StaffMember(key=row.key, name=row.name, role=row.role,
                       must_change=bool(row.must_change), created=int(row.created),
                       last_login=int(row.last_login) if row.last_login is not None else None)


def _login_key(name: str) -> str:
    """The key of ``name``; for an invalid name one no account can have.

    Invalid names are still counted for lockout, under their own key; the
    ``#`` (never in a valid name) keeps a padded or over-long spelling of a
    real name from reaching that account.
    """
    try:
        return name_key(name)
    except InvalidName:
        return "#" + " ".join(str(name)[:160].split()).casefold()[:159]


class StaffAccounts:
    """Staff accounts and sessions in central's database.

    ``scrypt_n`` is for tests only; stored hashes carry their own parameters.
    """

    def __init__(self, engine: Engine, clock_ms: Callable[[], int] | None = None, *,
                 scrypt_n: int = SCRYPT_N) -> None:
        self.engine = engine
        self.clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._n = scrypt_n
        self._dummy = dummy_hash(scrypt_n)

    # -- accounts (CLI) --------------------------------------------------------------

    def add(self, name: str, role: str, *, by: str = "cli") -> str:
        """Create an account; returns its one-time password (shown once)."""
        if role not in ROLES:
            raise InvalidRole(f"role must be one of {', '.join(ROLES)}")
        clean = normalise_name(name)
        otp = new_one_time_password()
        pw_hash = hash_password(otp, n=self._n)
        now = self.clock_ms()
        with self.engine.begin() as conn:
            ins = db.insert_ignore(conn.dialect.name, staff).values(
                key=clean.casefold(), name=clean, role=role, pw_hash=pw_hash, must_change=True,
                created=now, last_login=None).returning(staff.c.key)
            if conn.execute(ins).first() is None:
                raise NameTaken(f"a staff account named {clean!r} exists already")
            audit(conn, now, by, "staff_add", clean, f"role {role}")
        return otp

    def remove(self, name: str, *, by: str = "cli") -> None:
        """Delete an account and end its sessions."""
        key = _login_key(name)
        now = self.clock_ms()
        with self.engine.begin() as conn:
            conn.execute(staff_sessions.delete().where(staff_sessions.c.staff_key == key))
            row = conn.execute(sa.delete(staff).where(staff.c.key == key)
                               .returning(staff.c.name)).first()
            if row is None:
                raise UnknownStaff(f"no staff account named {name!r}")
            audit(conn, now, by, "staff_remove", str(row.name))

    def reset(self, name: str, *, by: str = "cli") -> str:
        """A new one-time password for a forgotten one; ends the account's sessions."""
        key = _login_key(name)
        otp = new_one_time_password()
        pw_hash = hash_password(otp, n=self._n)
        now = self.clock_ms()
        with self.engine.begin() as conn:
            row = conn.execute(staff.update().where(staff.c.key == key)
                               .values(pw_hash=pw_hash, must_change=True)
                               .returning(staff.c.name)).first()
            if row is None:
                raise UnknownStaff(f"no staff account named {name!r}")
            conn.execute(staff_sessions.delete().where(staff_sessions.c.staff_key == key))
            conn.execute(staff_name_failures.delete().where(staff_name_failures.c.key == key))
            audit(conn, now, by, "staff_reset", str(row.name))
        return otp

    def members(self) -> list[StaffMember]:
        """Every account, by name."""
        with db.reading(self.engine) as conn:
            rows = conn.execute(sa.select(staff).order_by(staff.c.key)).all()
        return [_member(r) for r in rows]

    def get(self, name: str) -> StaffMember | None:
        """One account by name (any case), or None."""
        with db.reading(self.engine) as conn:
            row = conn.execute(sa.select(staff).where(staff.c.key == _login_key(name))).first()
        return _member(row) if row else None

    # -- logging in ------------------------------------------------------------------

    def verify(self, name: str, password: str, client: str) -> StaffMember:
        """The member whose name and password these are; else :class:`LoginFailed`."""
        key = _login_key(name)
        client = client[:64]
        now = self.clock_ms()
        with self.engine.begin() as conn:
            count, oldest = conn.execute(
                sa.select(sa.func.count(), sa.func.min(staff_client_failures.c.at)).where(
                    staff_client_failures.c.client == client,
                    staff_client_failures.c.at > now - CLIENT_WINDOW_MS)).one()
            if count >= CLIENT_MAX_FAILURES:
                raise Throttled("too many failed logins from this address; wait a few minutes",
                                max(1.0, (int(oldest) + CLIENT_WINDOW_MS - now) / 1000))
            locked = conn.execute(sa.select(staff_name_failures.c.locked_until).where(
                staff_name_failures.c.key == key)).scalar()
            row = conn.execute(sa.select(staff).where(staff.c.key == key)).first()
        if locked is not None and locked > now:
            raise LockedOut("too many wrong passwords; try again later", int(locked))
        # Exactly one scrypt run, for an unknown name, a known one and one that
        # still has its one-time password alike: the time tells no names apart.
        ok = verify_login(password, row.pw_hash if row is not None else None,
                          one_time=row is not None and bool(row.must_change), dummy=self._dummy)
        if not ok:
            # Recorded in a transaction of its own that commits: raising inside
            # it would roll the count back.
            with self.engine.begin() as conn:
                lock = self._failure(conn, key, client, now)
                audit(conn, now, name[:40] or "?", "login_failed", client,
                      "locked" if lock else "")
            if lock is not None:
                raise lock
            raise LoginFailed("wrong name or password")
        assert row is not None
        with self.engine.begin() as conn:
            conn.execute(staff_name_failures.delete().where(staff_name_failures.c.key == key))
            conn.execute(staff.update().where(staff.c.key == key).values(last_login=now))
            audit(conn, now, row.name, "login", client)
        return _member(row)

    def _failure(self, conn: Connection, key: str, client: str, now: int) -> LockedOut | None:
        conn.execute(staff_client_failures.delete().where(
            staff_client_failures.c.at <= now - CLIENT_WINDOW_MS))
        conn.execute(staff_client_failures.insert().values(client=client, at=now))
        t = staff_name_failures
        conn.execute(t.delete().where(t.c.last_failure <= now - FORGET_FAILURES_MS,
                                      sa.or_(t.c.locked_until.is_(None),
                                             t.c.locked_until <= now)))
        row = conn.execute(sa.select(t.c.failures, t.c.lockouts).where(t.c.key == key)
                           .with_for_update()).first()
        failures, lockouts = (int(row.failures) + 1, int(row.lockouts)) if row else (1, 0)
        until: int | None = None
        if failures >= MAX_FAILURES:
            lockouts += 1
            until = now + lockout_ms(lockouts)
            failures = 0
        if row is None:
            ins = db.insert_ignore(conn.dialect.name, t).values(
                key=key, failures=failures, lockouts=lockouts, locked_until=until,
                last_failure=now)
            conn.execute(ins)
        else:
            values: dict[str, Any] = {"failures": failures, "lockouts": lockouts,
                                      "last_failure": now}
            if until is not None:
                values["locked_until"] = until
            conn.execute(t.update().where(t.c.key == key).values(**values))
        if until is None:
            return None
        log.warning("a staff login name is locked for %d minutes after %d wrong passwords",
                    (until - now) // 60_000, MAX_FAILURES)
        return LockedOut("too many wrong passwords; try again later", until)

    def set_password(self, member: StaffMember, old: str, new: str) -> None:
        """Replace ``member``'s password after checking the old one; ends other sessions."""
        check_new_password(new, old)
        with db.reading(self.engine) as conn:
            row = conn.execute(sa.select(staff).where(staff.c.key == member.key)).first()
        if row is None:
            raise UnknownStaff("the account no longer exists")
        ok = verify_login(old, row.pw_hash, one_time=bool(row.must_change), dummy=self._dummy)
        if not ok:
            raise LoginFailed("the current password is wrong")
        pw_hash = hash_password(new, n=self._n)
        with self.engine.begin() as conn:
            conn.execute(staff.update().where(staff.c.key == member.key)
                         .values(pw_hash=pw_hash, must_change=False))
            audit(conn, self.clock_ms(), member.name, "password")

    # -- sessions --------------------------------------------------------------------

    def create_session(self, member: StaffMember) -> str:
        """A new session token for ``member`` (only its hash is stored)."""
        token = secrets.token_urlsafe(32)
        now = self.clock_ms()
        with self.engine.begin() as conn:
            conn.execute(staff_sessions.delete().where(
                staff_sessions.c.staff_key == member.key,
                sa.or_(staff_sessions.c.last_seen <= now - SESSION_IDLE_MS,
                       staff_sessions.c.created <= now - SESSION_MAX_MS)))
            conn.execute(staff_sessions.insert().values(
                token_hash=token_hash(token), staff_key=member.key, created=now, last_seen=now))
        return token

    def session(self, token: str, *, touch: bool = True) -> StaffMember | None:
        """The member of a live session, or None (expired, ended, unknown)."""
        if not token or len(token) > MAX_TOKEN:
            return None
        digest = token_hash(token)
        now = self.clock_ms()
        s = staff_sessions
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(staff, s.c.created.label("s_created"),
                                         s.c.last_seen.label("s_seen"))
                               .join(s, s.c.staff_key == staff.c.key)
                               .where(s.c.token_hash == digest)).first()
            if row is None:
                conn.rollback()
                return None
            if row.s_seen <= now - SESSION_IDLE_MS or row.s_created <= now - SESSION_MAX_MS:
                conn.execute(s.delete().where(s.c.token_hash == digest))
                conn.commit()
                return None
            if touch and now - row.s_seen >= TOUCH_EVERY_MS:
                conn.execute(s.update().where(s.c.token_hash == digest).values(last_seen=now))
            conn.commit()
        return _member(row)

    def end_session(self, token: str) -> None:
        """Log out: forget the session."""
        if not token or len(token) > MAX_TOKEN:
            return
        with self.engine.begin() as conn:
            conn.execute(staff_sessions.delete().where(
                staff_sessions.c.token_hash == token_hash(token)))

    # -- audit -----------------------------------------------------------------------

    def record(self, who: str, action: str, subject: str = "", detail: str = "") -> None:
        """Write one audit line in its own transaction."""
        with self.engine.begin() as conn:
            audit(conn, self.clock_ms(), who, action, subject, detail)

    def audit_log(self, limit: int = 200, *, before: int | None = None) -> list[AuditEntry]:
        """The newest audit lines first."""
        query = sa.select(staff_audit).order_by(staff_audit.c.id.desc()).limit(limit)
        if before is not None:
            query = query.where(staff_audit.c.id < before)
        with db.reading(self.engine) as conn:
            rows = conn.execute(query).all()
        return [AuditEntry(int(r.id), int(r.at), r.staff, r.action, r.subject, r.detail)
                for r in rows]
