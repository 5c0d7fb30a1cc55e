"""Named, transactional migrations of ``team.db`` (as in :mod:`node.migrations`).

Each migration runs once, inside one ``BEGIN IMMEDIATE`` transaction, and is
recorded by name in ``_migrations``. Never edit a migration that has shipped;
add a new one.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

Migration = tuple[str, Callable[[sqlite3.Connection], None]]


def _m001_accounts(conn: sqlite3.Connection) -> None:
    # Times are seconds since the epoch (REAL), as the injectable clock gives them.
    conn.execute("""
        CREATE TABLE members (
            key TEXT PRIMARY KEY,             -- casefolded name: names are unique ignoring case
            name TEXT NOT NULL,
            pw_hash TEXT NOT NULL,
            must_change INTEGER NOT NULL,
            created REAL NOT NULL,
            last_login REAL
        )""")
    conn.execute("""
        CREATE TABLE sessions (
            token_hash TEXT PRIMARY KEY,      -- SHA-256 of the token; the token is never stored
            member_key TEXT NOT NULL REFERENCES members (key) ON DELETE CASCADE,
            created REAL NOT NULL,
            last_seen REAL NOT NULL
        )""")
    conn.execute("CREATE INDEX idx_sessions_member ON sessions (member_key)")
    # Per name, whether or not an account exists: a lockout must not reveal names.
    conn.execute("""
        CREATE TABLE name_failures (
            key TEXT PRIMARY KEY,
            failures INTEGER NOT NULL,
            lockouts INTEGER NOT NULL,
            locked_until REAL,
            last_failure REAL NOT NULL
        )""")
    conn.execute("CREATE TABLE client_failures (client TEXT NOT NULL, at REAL NOT NULL)")
    conn.execute("CREATE INDEX idx_client_failures ON client_failures (client, at)")
    conn.execute("""
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            member TEXT NOT NULL,
            action TEXT NOT NULL,
            detail TEXT NOT NULL
        )""")


MIGRATIONS: list[Migration] = [
    ("001_accounts", _m001_accounts),
]


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply pending migrations in order; return the names applied now.

    Safe when two processes (the node and ``bart node team add``) open a new
    file at once: the check for each migration is repeated inside its write
    transaction.
    """
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at INTEGER)")
    applied = []
    for name, apply in MIGRATIONS:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone():
                conn.execute("COMMIT")
                continue
            apply(conn)
            conn.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                         (name, int(time.time())))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied
