"""Named, transactional migrations of ``team.db`` (the runner is :mod:`common.migrations`).

Each migration runs once, inside one ``BEGIN IMMEDIATE`` transaction, and is
recorded by name in ``_migrations``; two processes opening a new file at once
(the node and ``bart node team add``) apply each exactly once. Never edit a
migration that has shipped; add a new one.

Times are integer Unix milliseconds (``002_times_ms``), like central's staff
accounts and every event.
"""

from __future__ import annotations

import sqlite3

from common import migrations as _runner
from common.migrations import Migration


def _m001_accounts(conn: sqlite3.Connection) -> None:
    # Times were seconds since the epoch (REAL) until 002_times_ms.
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


# Every time column of 001, REAL seconds → INTEGER milliseconds.
_TIMES_MS = {
    "members": """
        CREATE TABLE members (
            key TEXT PRIMARY KEY,             -- casefolded name: names are unique ignoring case
            name TEXT NOT NULL,
            pw_hash TEXT NOT NULL,
            must_change INTEGER NOT NULL,
            created INTEGER NOT NULL,
            last_login INTEGER
        )""",
    "sessions": """
        CREATE TABLE sessions (
            token_hash TEXT PRIMARY KEY,      -- SHA-256 of the token; the token is never stored
            member_key TEXT NOT NULL REFERENCES members (key) ON DELETE CASCADE,
            created INTEGER NOT NULL,
            last_seen INTEGER NOT NULL
        )""",
    "name_failures": """
        CREATE TABLE name_failures (
            key TEXT PRIMARY KEY,
            failures INTEGER NOT NULL,
            lockouts INTEGER NOT NULL,
            locked_until INTEGER,
            last_failure INTEGER NOT NULL
        )""",
    "client_failures": "CREATE TABLE client_failures (client TEXT NOT NULL, at INTEGER NOT NULL)",
    "audit": """
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at INTEGER NOT NULL,
            member TEXT NOT NULL,
            action TEXT NOT NULL,
            detail TEXT NOT NULL
        )""",
}
_COPY = {
    "members": "key, name, pw_hash, must_change, {created}, {last_login}",
    "sessions": "token_hash, member_key, {created}, {last_seen}",
    "name_failures": "key, failures, lockouts, {locked_until}, {last_failure}",
    "client_failures": "client, {at}",
    "audit": "id, {at}, member, action, detail",
}
_TIME_COLUMNS = ("created", "last_login", "last_seen", "locked_until", "last_failure", "at")


def _m002_times_ms(conn: sqlite3.Connection) -> None:
    # SQLite cannot change a column's type: each table is rebuilt. The old
    # tables are renamed first, not dropped after the new ones exist: with
    # foreign_keys on (it cannot be switched off inside a transaction),
    # dropping the old members table would cascade into the new sessions.
    # Renaming members carries sessions' reference along (to members_old),
    # so sessions_old is dropped before members_old and nothing cascades.
    seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
    for table in _TIMES_MS:
        conn.execute(f"ALTER TABLE {table} RENAME TO {table}_old")
    conn.execute("DROP INDEX idx_sessions_member")
    conn.execute("DROP INDEX idx_client_failures")
    ms = {col: f"CAST(round({col} * 1000) AS INTEGER)" for col in _TIME_COLUMNS}
    for table, create in _TIMES_MS.items():
        conn.execute(create)
        columns = _COPY[table].format(**ms)
        names = _COPY[table].format(**{col: col for col in _TIME_COLUMNS})
        conn.execute(f"INSERT INTO {table} ({names}) SELECT {columns} FROM {table}_old")
    if seq is not None:  # ids of trimmed audit lines are never given out again
        conn.execute("DELETE FROM sqlite_sequence WHERE name = 'audit'")
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('audit', ?)", seq)
    for table in ("sessions", "members", "name_failures", "client_failures", "audit"):
        conn.execute(f"DROP TABLE {table}_old")
    conn.execute("CREATE INDEX idx_sessions_member ON sessions (member_key)")
    conn.execute("CREATE INDEX idx_client_failures ON client_failures (client, at)")
    broken = conn.execute("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise sqlite3.IntegrityError(f"002_times_ms left broken references: {broken[:3]}")


MIGRATIONS: list[Migration] = [
    ("001_accounts", _m001_accounts),
    ("002_times_ms", _m002_times_ms),
]


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply pending migrations in order; return the names applied now."""
    return _runner.migrate(conn, MIGRATIONS)
