"""Team accounts, sessions, login throttling and the audit log, in ``team.db``.

Accounts are not events: they live in their own SQLite file next to the node
store, ``<data_dir>/team.db``, so that ``bart node team add`` can write it
while the node runs (WAL, ``busy_timeout``, every write in ``BEGIN
IMMEDIATE``). Passwords are hashed with scrypt (:mod:`node.team.passwords`);
session tokens are stored only as their SHA-256.

Rules (all on the injectable ``clock_ms``; times are Unix milliseconds, as at
central and in every event):

* a new account gets a one-time password and must choose its own at first login;
* wrong passwords lock a name, and failing clients wait (:mod:`node.team.lockout`);
* a session ends 12 hours after its last use, and 7 days after login at most.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "team.db"
>>> with TeamAccounts(path, scrypt_n=2**10) as team:
...     otp = team.add("Fatma")
...     team.verify("fatma", otp.lower(), "10.0.0.7").must_change
True
"""

from __future__ import annotations

import builtins
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from common.clock import now_ms
from common.logins import token_hash
from common.passwords import (
    SCRYPT_N,
    dummy_hash,
    hash_password,
    new_one_time_password,
    normalise_one_time_password,
    verify_login,
)

from .errors import InvalidName, LockedOut, LoginFailed, NameTaken, UnknownMember
from .lockout import check_client, clear, client_failure, locked_until, name_failure
from .passwords import check_new_password, name_key, normalise_name
from .schema import migrate

SESSION_IDLE_MS: Final = 12 * 3_600_000
SESSION_MAX_MS: Final = 7 * 86_400_000
#: A session's last use is written at most this often (SD cards wear out).
TOUCH_EVERY_MS: Final = 60_000
AUDIT_KEEP: Final = 50_000
MAX_TOKEN: Final = 128


@dataclass(frozen=True)
class Member:
    """A team account as the pages and the CLI see it (never its hash); times in ms."""

    name: str
    created: int
    last_login: int | None
    must_change: bool
    locked_until: int | None


@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit log: who did what, when (Unix ms)."""

    id: int
    at: int
    member: str
    action: str
    detail: str


def _create_private(path: Path) -> None:
    """Create ``path`` mode 0600 before SQLite does: it holds password hashes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


class TeamAccounts:
    """The team's accounts and sessions in ``path`` (usually ``<data_dir>/team.db``).

    Thread-safe: routes call the slow methods (:meth:`verify`,
    :meth:`set_password`) in a worker thread so that hashing never blocks the
    event loop. ``clock_ms`` gives the time in Unix milliseconds. ``scrypt_n``
    is for tests only; stored hashes carry their own parameters.
    """

    def __init__(self, path: Path, clock_ms: Callable[[], int] = now_ms, *,
                 scrypt_n: int = SCRYPT_N) -> None:
        self.path = path
        self.clock_ms = clock_ms
        self._n = scrypt_n
        self._dummy = dummy_hash(scrypt_n)
        self._lock = threading.RLock()
        _create_private(path)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                               timeout=10.0)
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn: sqlite3.Connection | None = conn

    # -- plumbing --------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.ProgrammingError("team accounts are closed")
        return self._conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._db()

    def _member(self, conn: sqlite3.Connection, key: str, now: int) -> Member | None:
        row = conn.execute("SELECT name, created, last_login, must_change FROM members "
                           "WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return Member(row[0], row[1], row[2], bool(row[3]), locked_until(conn, key, now))

    # -- accounts --------------------------------------------------------------

    def add(self, name: str) -> str:
        """Create an account; return its one-time password (shown once, never stored)."""
        clean = normalise_name(name)
        otp = new_one_time_password()
        pw_hash = hash_password(otp, n=self._n)
        now = self.clock_ms()
        with self._write() as conn:
            try:
                conn.execute("INSERT INTO members (key, name, pw_hash, must_change, created) "
                             "VALUES (?, ?, ?, 1, ?)", (clean.casefold(), clean, pw_hash, now))
            except sqlite3.IntegrityError:
                raise NameTaken(f"there is already a team member called {clean}") from None
            self._audit(conn, now, "(cli)", "account.add", clean)
        return otp

    def remove(self, name: str) -> None:
        """Delete an account and end its sessions at once."""
        key = self._key_or_unknown(name)
        now = self.clock_ms()
        with self._write() as conn:
            if conn.execute("DELETE FROM members WHERE key = ?", (key,)).rowcount == 0:
                raise UnknownMember(f"there is no team member called {name.strip()}")
            self._audit(conn, now, "(cli)", "account.remove", normalise_name(name))

    def list(self) -> builtins.list[Member]:
        """Every account, by name."""
        now = self.clock_ms()
        with self._read() as conn:
            keys = [r[0] for r in conn.execute("SELECT key FROM members ORDER BY key")]
            found = [self._member(conn, key, now) for key in keys]
        return [m for m in found if m is not None]

    def member(self, name: str) -> Member | None:
        """One account by name (ignoring case), or None."""
        try:
            key = name_key(name)
        except InvalidName:
            return None
        with self._read() as conn:
            return self._member(conn, key, self.clock_ms())

    @staticmethod
    def _key_or_unknown(name: str) -> str:
        try:
            return name_key(name)
        except InvalidName:
            raise UnknownMember(f"there is no team member called {name.strip()[:40]}") from None

    # -- passwords ---------------------------------------------------------------

    def verify(self, name: str, password: str, client: str) -> Member:
        """Check a login; the member on success, else :class:`LoginFailed`.

        Raises :class:`Throttled` for a client with too many failures and
        :class:`LockedOut` for a locked name, both before any hashing. An
        unknown name costs the same hashing time as a known one.
        """
        now = self.clock_ms()
        try:
            key: str | None = name_key(name)
        except (InvalidName, TypeError):
            key = None
        with self._write() as conn:
            check_client(conn, client, now)
            until = locked_until(conn, key, now) if key else None
            if until is not None:
                client_failure(conn, client, now)
            row = conn.execute("SELECT pw_hash, must_change FROM members WHERE key = ?",
                               (key,)).fetchone() if key else None
        if until is not None:
            raise LockedOut("too many wrong passwords; try again later", until)
        # Exactly one scrypt run whoever the name belongs to (unknown, known, still
        # on its one-time password): the time tells no names apart (issue 17).
        ok = verify_login(password, row[0] if row else None, one_time=bool(row and row[1]),
                          dummy=self._dummy)
        error: LockedOut | None = None
        with self._write() as conn:
            member = self._member(conn, key, now) if ok and key else None
            if member is not None and key:
                if member.locked_until is not None:  # locked while we were hashing
                    raise LockedOut("too many wrong passwords; try again later",
                                    member.locked_until)
                clear(conn, key)
                conn.execute("UPDATE members SET last_login = ? WHERE key = ?", (now, key))
                self._audit(conn, now, member.name, "login", f"client {client}")
                return Member(member.name, member.created, now, member.must_change, None)
            client_failure(conn, client, now)
            error = name_failure(conn, key, now) if key else None
            self._audit(conn, now, _label(name), "login.failed", f"client {client}")
        raise error or LoginFailed("wrong name or password")

    def set_password(self, name: str, old: str, new: str) -> None:
        """Replace the password (and the one-time password's must-change flag).

        Ends every session of the member: the caller starts a fresh one.
        """
        key = self._key_or_unknown(name)
        now = self.clock_ms()
        with self._read() as conn:
            until = locked_until(conn, key, now)
            row = conn.execute("SELECT pw_hash, must_change, name FROM members WHERE key = ?",
                               (key,)).fetchone()
        if until is not None:
            raise LockedOut("too many wrong passwords; try again later", until)
        candidate = normalise_one_time_password(old) if row and row[1] else old
        check_new_password(new, candidate)
        matches = verify_login(old, row[0] if row else None, one_time=bool(row and row[1]),
                               dummy=self._dummy)
        if row is None or not matches:
            with self._write() as conn:
                error = name_failure(conn, key, now)
                self._audit(conn, now, _label(name), "password.failed", "wrong old password")
            raise error or LoginFailed("the current password is wrong")
        new_hash = hash_password(new, n=self._n)
        with self._write() as conn:
            conn.execute("UPDATE members SET pw_hash = ?, must_change = 0 WHERE key = ?",
                         (new_hash, key))
            conn.execute("DELETE FROM sessions WHERE member_key = ?", (key,))
            clear(conn, key)
            self._audit(conn, now, row[2], "password.change", "")

    # -- sessions ----------------------------------------------------------------

    def create_session(self, name: str) -> str:
        """A new session for ``name``: the token for its cookie (only its hash is kept)."""
        key = self._key_or_unknown(name)
        token = secrets.token_urlsafe(32)
        now = self.clock_ms()
        with self._write() as conn:
            if not conn.execute("SELECT 1 FROM members WHERE key = ?", (key,)).fetchone():
                raise UnknownMember(f"there is no team member called {name.strip()}")
            conn.execute("DELETE FROM sessions WHERE last_seen <= ? OR created <= ?",
                         (now - SESSION_IDLE_MS, now - SESSION_MAX_MS))
            conn.execute("INSERT INTO sessions (token_hash, member_key, created, last_seen) "
                         "VALUES (?, ?, ?, ?)", (token_hash(token), key, now, now))
        return token

    def session(self, token: str | None, *, touch: bool = True) -> Member | None:
        """The member a session token belongs to, or None when unknown or expired.

        ``touch=False`` checks without extending the session (the live stream
        does so: an open tab alone keeps nobody logged in).
        """
        if not token or len(token) > MAX_TOKEN:
            return None
        digest = token_hash(token)
        now = self.clock_ms()
        with self._read() as conn:
            row = conn.execute("SELECT member_key, created, last_seen FROM sessions "
                               "WHERE token_hash = ?", (digest,)).fetchone()
            if row is None:
                return None
            key, created, last_seen = row
            if now >= last_seen + SESSION_IDLE_MS or now >= created + SESSION_MAX_MS:
                with self._write() as wconn:
                    wconn.execute("DELETE FROM sessions WHERE token_hash = ?", (digest,))
                return None
            member = self._member(conn, key, now)
            if touch and member is not None and now - last_seen >= TOUCH_EVERY_MS:
                with self._write() as wconn:
                    wconn.execute("UPDATE sessions SET last_seen = ? WHERE token_hash = ?",
                                  (now, digest))
        return member

    def end_session(self, token: str | None) -> None:
        """Log out: forget the session (nothing happens for an unknown token)."""
        if not token or len(token) > MAX_TOKEN:
            return
        with self._write() as conn:
            conn.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash(token),))

    # -- audit ---------------------------------------------------------------------

    def record(self, member: Member | str, action: str, detail: str = "") -> None:
        """Add a line to the audit log: who (``member``), what, and now."""
        who = member.name if isinstance(member, Member) else member
        with self._write() as conn:
            self._audit(conn, self.clock_ms(), who, action, detail)

    @staticmethod
    def _audit(conn: sqlite3.Connection, now: int, who: str, action: str,
               detail: str) -> None:
        cur = conn.execute("INSERT INTO audit (at, member, action, detail) VALUES (?, ?, ?, ?)",
                           (now, who[:80], action[:80], detail[:2000]))
        if cur.lastrowid and cur.lastrowid % 1000 == 0:  # bounded on an SD card
            conn.execute("DELETE FROM audit WHERE id <= ?", (cur.lastrowid - AUDIT_KEEP,))

    def audit_log(self, limit: int = 100) -> builtins.list[AuditEntry]:
        """The newest ``limit`` audit lines, newest first."""
        with self._read() as conn:
            rows = conn.execute("SELECT id, at, member, action, detail FROM audit "
                                "ORDER BY id DESC LIMIT ?", (max(0, limit),)).fetchall()
        return [AuditEntry(*row) for row in rows]

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Close the database; safe to call twice."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> TeamAccounts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _label(name: str) -> str:
    """A typed name made safe to log: single-line, at most 40 characters."""
    try:
        return normalise_name(name)
    except (InvalidName, TypeError):
        return " ".join(str(name).split())[:40] or "(empty)"
