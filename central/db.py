"""Central's storage: SQLAlchemy Core tables over SQLite or PostgreSQL.

The schema is created and changed only by Alembic migrations
(``central/migrations/``); ``upgrade()`` runs them. The same code runs on a
SQLite file (one machine, the demo) and on PostgreSQL (production, several
workers): inserts that may race use ``ON CONFLICT DO NOTHING`` on both, and
counters are taken with a row lock (``UPDATE … RETURNING``).

Times are Unix milliseconds (UTC) in BIGINT columns.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine

from common.files import private_database

metadata = sa.MetaData()


def partial_index(name: str, *columns: Any, where: Any) -> sa.Index:
    """An index over ``columns`` of the rows ``where`` holds (a Core condition).

    The migrations create these with ``sqlite_where``/``postgresql_where``; here the
    condition is kept in the index's ``info`` (``info["where"]``) instead, because
    SQLAlchemy imports a dialect to check such arguments: both dialects, and the
    sqlite3 driver, in every process (~1.6 MB with PostgreSQL, ~2.2 with SQLite,
    issue 15). Only Alembic's autogenerate would read them, and central writes its
    migrations by hand.
    """
    return sa.Index(name, *columns, info={"where": where})


nodes = sa.Table(
    "nodes", metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("area", sa.String(16), nullable=False),
    sa.Column("signing_pub", sa.String(64), nullable=False, unique=True),
    sa.Column("encryption_pub", sa.String(64), nullable=False, unique=True),
    sa.Column("cert_pem", sa.Text, nullable=False),
    sa.Column("enrolled_at", sa.BigInteger, nullable=False),
    sa.Column("revoked_at", sa.BigInteger),
    sa.Column("last_seen", sa.BigInteger),
    sa.Column("last_batch_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("backlog", sa.BigInteger),
    sa.Column("version", sa.String(40)),
    sa.Column("silent_after_s", sa.Integer, nullable=False, server_default="900"),
    # The community centre's name as the node tells it in each batch (desks show it).
    sa.Column("display", sa.String(80)),
)

# Every public key ever enrolled, also of revoked nodes: a key is enrolled once.
used_keys = sa.Table(
    "used_keys", metadata,
    sa.Column("public_key", sa.String(64), primary_key=True),
    sa.Column("node", sa.String(63), nullable=False),
    sa.Column("at", sa.BigInteger, nullable=False),
)

enrol_codes = sa.Table(
    "enrol_codes", metadata,
    sa.Column("code_hash", sa.String(64), primary_key=True),
    sa.Column("node", sa.String(63), nullable=False),
    sa.Column("area", sa.String(16), nullable=False),
    sa.Column("created", sa.BigInteger, nullable=False),
    sa.Column("expires", sa.BigInteger, nullable=False),
    sa.Column("used_at", sa.BigInteger),
)

batches = sa.Table(
    "batches", metadata,
    sa.Column("node", sa.String(63), primary_key=True),
    sa.Column("batch_seq", sa.BigInteger, primary_key=True),
    sa.Column("received_at", sa.BigInteger, nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("new", sa.Integer, nullable=False),
    # Event ids of the batch's reports not yet projected (JSON array); NULL when done.
    sa.Column("pending", sa.Text),
)
partial_index("idx_batches_pending", batches.c.received_at, where=batches.c.pending.isnot(None))

events = sa.Table(
    "events", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("origin", sa.String(63), nullable=False),
    sa.Column("stream", sa.String(8), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("sig", sa.String(88), nullable=False),
    sa.Column("via", sa.String(63), nullable=False),
    sa.Column("received_at", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("origin", "stream", "seq", name="uq_events_origin_stream_seq"),
)
# Alerts and acks only (migration 0012): the insight page's team answers and
# retention's alarms about a report read it; reports, nearly every event, need none.
partial_index("idx_events_alarm_kind_ts", events.c.kind, events.c.ts,
              where=events.c.kind.in_(("alert", "ack")))

# What central holds of each (origin, stream): the gapless prefix and the highest seq.
heads = sa.Table(
    "heads", metadata,
    sa.Column("origin", sa.String(63), primary_key=True),
    sa.Column("stream", sa.String(8), primary_key=True),
    sa.Column("contiguous", sa.BigInteger, nullable=False),
    sa.Column("max_seq", sa.BigInteger, nullable=False),
)

# Counters for central's own streams (seq allocation under concurrent workers).
counters = sa.Table(
    "counters", metadata,
    sa.Column("name", sa.String(80), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

# Triage and handling state of each report (the event itself stays immutable).
reports = sa.Table(
    "reports", metadata,
    sa.Column("event_id", sa.String(36), sa.ForeignKey("events.id"), primary_key=True),
    sa.Column("origin", sa.String(63), nullable=False),
    sa.Column("receipt", sa.String(7), nullable=False),
    sa.Column("category", sa.String(16), nullable=False),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Column("route", sa.String(16), nullable=False),
    sa.Column("rule", sa.String(80), nullable=False),
    sa.Column("state", sa.String(16), nullable=False, server_default="new"),
    sa.Column("handler", sa.String(80)),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
)
sa.Index("idx_reports_route_state_ts", reports.c.route, reports.c.state, reports.c.ts,
         reports.c.event_id)

# Reports per (route, state), kept by triggers on ``reports`` (migration 0008): the
# staff pages' tab counts, without counting history on every page load.
report_counts = sa.Table(
    "report_counts", metadata,
    sa.Column("route", sa.String(16), primary_key=True),
    sa.Column("state", sa.String(16), primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
)
# A desk's whole list, the Open311 feed, the insight page. Lists over every desk read
# one range per desk (a route is always one of ``triage.ROUTES``): migration 0011
# dropped ``(state, ts, event_id)`` and ``(ts)``, and on PostgreSQL the foreign key
# to ``events`` (the projector inserts only reports of stored events; central never
# deletes an event).
sa.Index("idx_reports_route_ts", reports.c.route, reports.c.ts, reports.c.event_id)

# State changes that travel back to the node of the report (receipt status).
report_updates = sa.Table(
    "report_updates", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("report_id", sa.String(36), nullable=False),
    sa.Column("origin", sa.String(63), nullable=False),
    sa.Column("receipt", sa.String(7), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("at", sa.BigInteger, nullable=False),
    # A desk's short public answer to the resident (shown with the receipt code).
    sa.Column("reply", sa.Text),
)
sa.Index("idx_report_updates_origin", report_updates.c.origin, report_updates.c.id)

# Alarms for the desks: a node's panic alarm or a team's escalation (central/alarms.py).
alarms = sa.Table(
    "alarms", metadata,
    sa.Column("id", sa.String(36), primary_key=True),  # the event the alarm is about
    sa.Column("origin", sa.String(63), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # panic | escalation
    sa.Column("subject", sa.String(8), nullable=False),  # alert | report
    sa.Column("desk", sa.String(16), nullable=False),  # police | municipality
    sa.Column("place", sa.String(200), nullable=False, server_default=""),
    sa.Column("what", sa.String(32), nullable=False, server_default=""),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Column("received_at", sa.BigInteger, nullable=False),
    sa.Column("escalated_at", sa.BigInteger),
    sa.Column("team_state", sa.String(16), nullable=False, server_default="new"),
    sa.Column("state", sa.String(16), nullable=False, server_default="new"),
    sa.Column("handler", sa.String(80)),
    sa.Column("answered_at", sa.BigInteger),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
)
sa.Index("idx_alarms_desk_state", alarms.c.desk, alarms.c.state, alarms.c.ts)

roster_docs = sa.Table(
    "roster_docs", metadata,
    sa.Column("serial", sa.BigInteger, primary_key=True),
    sa.Column("issued", sa.BigInteger, nullable=False),
    sa.Column("signed", sa.Text, nullable=False),
)


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """An engine for ``url`` with the settings each backend needs.

    SQLite: WAL, ``synchronous=FULL`` (acknowledged is durable), a busy
    timeout so that two workers on one file wait instead of failing, foreign
    keys on. PostgreSQL: psycopg 3, pre-ping so a restarted server is noticed.
    """
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("sqlite"):
        import sqlite3

        path = sa.engine.make_url(url).database
        if path and path != ":memory:" and not path.startswith("file:"):
            private_database(path)  # residents' reports: 0600 whatever the umask
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa_event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Autocommit-style isolation, so that BEGIN IMMEDIATE below is ours.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @sa_event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            # Writers take the lock at BEGIN: no deadlock-prone upgrade later.
            # Readers (see reading()) take a snapshot and no lock: WAL lets them
            # run beside the one writer. Straight to the driver: through
            # exec_driver_sql this cost ~60 µs, three times for every batch.
            # Its errors are wrapped as SQLAlchemy would (OperationalError …).
            sql = "BEGIN" if conn.get_execution_options().get("bart_read") else "BEGIN IMMEDIATE"
            try:
                conn.connection.driver_connection.execute(sql)
            except sqlite3.Error as exc:
                raise sa.exc.DBAPIError.instance(sql, (), exc, sqlite3.Error) from exc

        return engine
    return sa.create_engine(url, pool_size=pool_size, max_overflow=pool_size,
                            pool_pre_ping=True)


def reading(engine: Engine) -> sa.Connection:
    """A connection for reads only: ``with db.reading(engine) as conn: …``.

    On SQLite a plain ``engine.connect()`` would begin with ``BEGIN
    IMMEDIATE`` and hold the file's one write lock while it reads; this one
    begins at once with a plain ``BEGIN``: every read through it, also by
    :func:`central.queries.run`, sees one snapshot, and the lock stays with writers. The
    transaction is never committed (anything written would be rolled back).
    """
    conn = engine.connect().execution_options(bart_read=True)
    conn.begin()
    return conn


def insert_ignore(engine_or_dialect: str, table: sa.Table) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` for the engine's dialect (only that
    dialect's module is imported)."""
    if engine_or_dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table).on_conflict_do_nothing()


def upgrade(url: str) -> None:
    """Bring the database at ``url`` to the newest schema (Alembic ``upgrade head``)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")


@functools.cache
def copy_types(table: str, columns: tuple[str, ...]) -> list[str]:
    """PostgreSQL's names of the types of ``table``'s ``columns``, for a binary
    ``COPY`` (each value goes as its column's type: an int4 column takes no int8)."""
    out = []
    for name in columns:
        kind = metadata.tables[table].c[name].type
        if isinstance(kind, sa.BigInteger):
            out.append("int8")
        elif isinstance(kind, sa.Integer):
            out.append("int4")
        elif isinstance(kind, sa.Text):
            out.append("text")
        elif isinstance(kind, sa.String):
            out.append("varchar")
        else:
            raise TypeError(f"{table}.{name}: no binary COPY type for {kind!r}")
    return out


def copy_new_rows(cur: Any, statements: Any, rows: Sequence[tuple[Any, ...]]) -> int:
    """Insert ``rows`` on PostgreSQL (``cur``: a psycopg cursor inside a transaction;
    ``statements``: a :class:`central.queries.BulkCopy`) and return how many were new.

    Straight ``COPY`` first, inside a savepoint: rows are nearly always new, and a
    temporary table's write and read cost the server several µs per row
    (bench/central_sync.py). A ``COPY`` that meets a row already stored (a batch
    sent or projected again) is undone, and the rows go through the temporary
    table and one ``INSERT … SELECT … ON CONFLICT DO NOTHING``.
    """
    import psycopg

    from . import queries

    types = copy_types(statements.table, statements.columns)
    cur.execute(queries.SAVEPOINT)
    try:
        with cur.copy(statements.copy) as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)
    except psycopg.errors.UniqueViolation:
        cur.execute(queries.ROLLBACK_TO_SAVEPOINT)
    else:
        cur.execute(queries.RELEASE_SAVEPOINT)
        return len(rows)
    cur.execute(statements.create)
    with cur.copy(statements.copy_in) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)
    cur.execute(statements.move)
    added = int(cur.rowcount)
    cur.execute(statements.clear)
    return added
