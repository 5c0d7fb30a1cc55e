"""Login throttling and lockout, kept in ``team.db`` (runs inside the caller's transaction).

* per name: 5 wrong passwords lock it for 15 minutes, then 30, 60, … (at most
  24 h). A good login clears the count; so does a day without failures.
  Unknown names are counted and locked exactly like real ones, so a lockout
  reveals nothing about which names exist;
* per client address: 20 failures within 10 minutes and that address waits
  (:class:`~node.team.errors.Throttled`), before any password is checked.

Times are Unix milliseconds from the caller's (injectable) clock; only
:attr:`Throttled.retry_after` is in seconds (it becomes a Retry-After header).
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Final

from common import ratelimit

from .errors import LockedOut, Throttled

log = logging.getLogger(__name__)

# The numbers are the one abuse-limit policy of node and central (common/ratelimit.py).
MAX_FAILURES: Final = ratelimit.LOGIN_MAX_FAILURES
FORGET_FAILURES_MS: Final = ratelimit.LOGIN_FORGET_FAILURES_S * 1000
CLIENT_MAX_FAILURES: Final = ratelimit.LOGIN_CLIENT_MAX_FAILURES
CLIENT_WINDOW_MS: Final = ratelimit.LOGIN_CLIENT_WINDOW_S * 1000


def lockout_ms(lockouts: int) -> int:
    """How long the ``lockouts``-th lockout of a name lasts, in milliseconds.

    >>> [lockout_ms(n) // 60_000 for n in (1, 2, 3, 8)]
    [15, 30, 60, 1440]
    """
    return round(ratelimit.lockout_seconds(lockouts) * 1000)


def locked_until(conn: sqlite3.Connection, key: str, now: int) -> int | None:
    """When the lockout of name ``key`` ends, or None when it is not locked."""
    row = conn.execute("SELECT locked_until FROM name_failures WHERE key = ?",
                       (key,)).fetchone()
    return int(row[0]) if row and row[0] is not None and row[0] > now else None


def check_client(conn: sqlite3.Connection, client: str, now: int) -> None:
    """Raise :class:`Throttled` when ``client`` failed too often lately."""
    count, oldest = conn.execute(
        "SELECT COUNT(*), MIN(at) FROM client_failures WHERE client = ? AND at > ?",
        (client, now - CLIENT_WINDOW_MS)).fetchone()
    if count >= CLIENT_MAX_FAILURES:
        raise Throttled("too many failed logins from this device; wait a few minutes",
                        max(1.0, (oldest + CLIENT_WINDOW_MS - now) / 1000))


def client_failure(conn: sqlite3.Connection, client: str, now: int) -> None:
    """Count a failed login from ``client`` (and forget failures outside the window)."""
    conn.execute("DELETE FROM client_failures WHERE at <= ?", (now - CLIENT_WINDOW_MS,))
    conn.execute("INSERT INTO client_failures (client, at) VALUES (?, ?)", (client, now))


def name_failure(conn: sqlite3.Connection, key: str, now: int) -> LockedOut | None:
    """Count a wrong password for name ``key``; the lockout it caused, if any."""
    conn.execute("DELETE FROM name_failures WHERE last_failure <= ? AND "
                 "(locked_until IS NULL OR locked_until <= ?)", (now - FORGET_FAILURES_MS, now))
    row = conn.execute("SELECT failures, lockouts FROM name_failures WHERE key = ?",
                       (key,)).fetchone()
    failures, lockouts = (row[0] + 1, row[1]) if row else (1, 0)
    until = None
    if failures >= MAX_FAILURES:
        lockouts += 1
        until = now + lockout_ms(lockouts)
        failures = 0
    conn.execute(
        "INSERT INTO name_failures (key, failures, lockouts, locked_until, last_failure) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET failures = excluded.failures, "
        "lockouts = excluded.lockouts, locked_until = COALESCE(excluded.locked_until, "
        "locked_until), last_failure = excluded.last_failure",
        (key, failures, lockouts, until, now))
    if until is None:
        return None
    log.warning("a team login name is locked for %.0f minutes after %d wrong passwords",
                (until - now) / 60_000, MAX_FAILURES)
    return LockedOut("too many wrong passwords; try again later", until)


def clear(conn: sqlite3.Connection, key: str) -> None:
    """Forget the failures of name ``key`` (after a good login or a new password)."""
    conn.execute("DELETE FROM name_failures WHERE key = ?", (key,))
