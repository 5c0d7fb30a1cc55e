"""Named, transactional SQLite migrations: the one runner of the node store and ``team.db``.

A migration is a name and a function that changes the schema. Each runs at
most once per database file, inside one ``BEGIN IMMEDIATE`` transaction, and
is recorded in that same transaction by name (with ``applied_at``, Unix
milliseconds) in the table ``_migrations``. A migration that raises is rolled
back and not recorded, and the migrations after it are not tried. Never edit
a migration that has shipped; add a new one.

Safe when two processes (the node and ``bart node team add``, or two starts at
once) open a new file at the same moment: whether a migration was applied is
checked again inside its write transaction, so each runs exactly once. Files
that are up to date cost one read and no write transaction.

The connection must be in autocommit mode (``isolation_level=None``), with a
``busy_timeout`` long enough to wait for the other process's migration. A
migration runs its statements with ``conn.execute``: ``executescript`` would
commit half of it on its own.

>>> import sqlite3
>>> conn = sqlite3.connect(":memory:", isolation_level=None)
>>> steps = [("001_notes", lambda c: c.execute("CREATE TABLE notes (text TEXT)"))]
>>> migrate(conn, steps, clock_ms=lambda: 1_800_000_000_000)
['001_notes']
>>> migrate(conn, steps)
[]
>>> conn.execute("SELECT name, applied_at FROM _migrations").fetchall()
[('001_notes', 1800000000000)]
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

from .clock import now_ms

__all__ = ["Migration", "applied", "migrate"]

#: A migration: its name (recorded; never reuse one) and the function that applies it.
Migration = tuple[str, Callable[[sqlite3.Connection], object]]


def _ensure_table(conn: sqlite3.Connection) -> None:
    # The layout of the node store's and team.db's table since their first
    # release; existing files keep it (applied_at of rows written before the
    # runner moved here are Unix seconds).
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at INTEGER)")


def applied(conn: sqlite3.Connection) -> list[str]:
    """The names of the migrations recorded in ``conn``'s database, in the order applied."""
    _ensure_table(conn)
    return [row[0] for row in conn.execute("SELECT name FROM _migrations ORDER BY rowid")]


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration], *,
            clock_ms: Callable[[], int] = now_ms) -> list[str]:
    """Apply the pending ``migrations`` in order; return the names applied now.

    Raises :class:`ValueError` for duplicate names or a connection inside a
    transaction (its work would be committed by the migration's). Whatever a
    failing migration raises is raised again, after its rollback.
    """
    names = [name for name, _ in migrations]
    if len(set(names)) != len(names):
        raise ValueError("two migrations have the same name")
    if conn.in_transaction:
        raise ValueError("migrate() needs a connection outside any transaction")
    done = set(applied(conn))
    now_applied: list[str] = []
    for name, apply in migrations:
        if name in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have applied it since we looked: check again
            # now that we hold the write lock.
            if conn.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone():
                conn.execute("COMMIT")
                continue
            apply(conn)
            if not conn.in_transaction:  # e.g. executescript(), which COMMITs first
                raise RuntimeError(f"migration {name} ended its own transaction")
            conn.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                         (name, clock_ms()))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        now_applied.append(name)
    return now_applied
