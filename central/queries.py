"""Every statement central writes as SQL text, by name, in one place.

Most of central speaks SQLAlchemy Core (``central.db``'s tables). The
statements here are text because they run for every batch (SQLAlchemy's
statement machinery cost more than the queries themselves, ~0.1 ms each,
measured in bench/central_sync.py), or because they need what Core does not
say the same way on both backends (JSON fields, window functions, advisory
locks).

A :class:`Statement` is written once with named parameters (``:node``) and
compiled by SQLAlchemy for each backend's driver: ``?`` for sqlite3, ``%s``
for psycopg, with the ``%`` of a literal escaped as psycopg needs. Nothing
here rewrites placeholders by string replacement (which would also turn a
``'?'`` or ``'%'`` inside a literal into a parameter).

>>> s = Statement("demo", "SELECT a FROM t WHERE x = :x AND y LIKE '5%' AND z = :x")
>>> s.compiled("sqlite")
("SELECT a FROM t WHERE x = ? AND y LIKE '5%' AND z = ?", ('x', 'x'))
>>> s.compiled("postgresql")[0]
"SELECT a FROM t WHERE x = %s AND y LIKE '5%%' AND z = %s"
>>> s.bind("sqlite", {"x": 7})[1]
(7, 7)
"""

from __future__ import annotations

import functools
from collections import namedtuple
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

from sync.bodies import ESCALATE_TO as ROUTES


@functools.cache
def _dialect(name: str) -> Dialect:
    """The driver's dialect of ``name``, positional: parameters travel as tuples on both
    backends. Imported when first needed: a process imports only its backend's
    (the other's is ~1.6-2.2 MB, issue 15)."""
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import psycopg

        return psycopg.dialect(paramstyle="format")  # type: ignore[no-untyped-call]
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import pysqlite

        return pysqlite.dialect()
    raise KeyError(name)


class Statement:
    """One named SQL statement with ``:name`` parameters, compiled once per backend."""

    __slots__ = ("_compiled", "name", "sql")

    def __init__(self, name: str, sql: str) -> None:
        self.name = name
        self.sql = sql.strip()
        self._compiled: dict[str, tuple[str, tuple[str, ...]]] = {}

    def __repr__(self) -> str:
        return f"Statement({self.name!r})"

    def compiled(self, dialect: str) -> tuple[str, tuple[str, ...]]:
        """The statement in ``dialect``'s driver paramstyle, and its parameters' order."""
        done = self._compiled.get(dialect)
        if done is None:
            compiled = sa.text(self.sql).compile(dialect=_dialect(dialect))
            done = (compiled.string, tuple(compiled.positiontup or ()))
            self._compiled[dialect] = done
        return done

    def bind(self, dialect: str, params: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
        """The SQL and the positional parameters for ``dialect``."""
        sql, order = self.compiled(dialect)
        return sql, tuple(params[name] for name in order)

    def text(self) -> sa.TextClause:
        """The statement for ``Connection.execute`` (SQLAlchemy binds the parameters)."""
        return sa.text(self.sql)


def run(conn: Connection, statement: Statement, params: Mapping[str, Any] | None = None, *,
        named: bool = False) -> list[Any]:
    """Run ``statement`` through the DB-API cursor; its rows (none for a statement
    without). ``named``: rows with attribute access by column name."""
    sql, args = statement.bind(conn.dialect.name, params or {})
    cur = conn.connection.cursor()
    try:
        cur.execute(sql, args)
        if cur.description is None:
            return []
        rows = cur.fetchall()
        if named:
            cls = _row_class(tuple(d[0] for d in cur.description))
            return [cls(*row) for row in rows]
        return list(rows)
    finally:
        cur.close()


def run_many(cur: Any, dialect: str, statement: Statement,
             rows: Iterable[Sequence[Any]]) -> int:
    """``executemany`` of ``statement`` on a DB-API cursor, each row a tuple in the
    order the statement names its parameters (each once); returns the rowcount."""
    sql, order = statement.compiled(dialect)
    if len(set(order)) != len(order):
        raise ValueError(f"{statement.name}: a parameter named twice cannot take tuples")
    cur.executemany(sql, rows)
    return int(cur.rowcount)


@functools.lru_cache(maxsize=64)
def _row_class(names: tuple[str, ...]) -> Any:
    return namedtuple("Row", names)


def insert_ignore(name: str, table: str, columns: Sequence[str]) -> Statement:
    """``INSERT INTO table (columns) VALUES (…) ON CONFLICT DO NOTHING``, parameters
    named and ordered as ``columns``."""
    return Statement(name, f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                           f"({', '.join(':' + c for c in columns)}) ON CONFLICT DO NOTHING")


def json_text(dialect: str, column: str, key: str) -> str:
    """SQL for the text of ``key`` in ``column`` (a JSON object stored as text)."""
    if not (key.isidentifier() and column.replace(".", "").isidentifier()):
        raise ValueError(f"not a column and key: {column!r}, {key!r}")
    if dialect == "postgresql":
        return f"({column}::json ->> '{key}')"
    return f"json_extract({column}, '$.{key}')"


# -- ingest: every batch (central/ingest.py) -------------------------------------------

#: Columns of ``events`` in the order ingest writes them.
EVENT_COLUMNS: Final = ("id", "origin", "stream", "seq", "ts", "kind", "body", "sig", "via",
                        "received_at")

NODE_KEYS: Final = Statement(
    "node_keys", "SELECT signing_pub, revoked_at FROM nodes WHERE name = :name")
#: Claims (node, batch_seq); no row back: a replay.
BATCH_CLAIM: Final = Statement(
    "batch_claim", "INSERT INTO batches (node, batch_seq, received_at, count, new) "
                   "VALUES (:node, :batch_seq, :at, :count, 0) ON CONFLICT DO NOTHING "
                   "RETURNING batch_seq")
BATCH_HELD: Final = Statement(
    "batch_held", "SELECT count, new FROM batches WHERE node = :node AND batch_seq = :batch_seq")
#: How many events were new, and what the projector still has to look at: JSON, a list of
#: ``[origin, stream, first seq, last seq]`` runs (``central.ingest.pending_runs``; batches
#: stored by older code hold a list of event ids, which the projector still reads).
BATCH_PENDING: Final = Statement(
    "batch_pending", "UPDATE batches SET new = :new, pending = :pending "
                     "WHERE node = :node AND batch_seq = :batch_seq")
NODE_SEEN: Final = Statement(
    "node_seen", "UPDATE nodes SET last_seen = :at, backlog = COALESCE(:backlog, backlog), "
                 "version = COALESCE(:version, version), display = COALESCE(:display, display), "
                 "last_batch_seq = CASE WHEN last_batch_seq < :batch_seq THEN :batch_seq "
                 "ELSE last_batch_seq END WHERE name = :name")
#: SQLite: the events of a batch, ``executemany``.
INSERT_EVENTS: Final = insert_ignore("insert_events", "events", EVENT_COLUMNS)
#: PostgreSQL: undoes a ``COPY`` that met a row already stored (then :class:`BulkCopy`'s
#: temporary table).
SAVEPOINT: Final = "SAVEPOINT bart_copy"
ROLLBACK_TO_SAVEPOINT: Final = "ROLLBACK TO SAVEPOINT bart_copy"
RELEASE_SAVEPOINT: Final = "RELEASE SAVEPOINT bart_copy"


class BulkCopy(NamedTuple):
    """PostgreSQL's bulk insert of new rows into one table, statements without
    parameters (:func:`central.db.copy_new_rows` runs them): ``COPY`` straight
    in; should a row be there already, through a per-connection temporary
    table and one ``INSERT … SELECT … ON CONFLICT DO NOTHING``, then the
    temporary table emptied (several batches may share a transaction).

    The ``COPY`` is binary: each value goes as its column's type (``table``
    and ``columns`` name them; central.db maps them to PostgreSQL's), not as
    text that the server scans byte by byte for delimiters and escapes (~11 %
    of the worker's backend under perf, on report events of ~550 bytes). On
    1,000-row batches of realistic events, six rounds each: client 1.72 →
    1.26 µs per row, server 5.35 → 5.18 (medians)."""

    copy: str
    create: str
    copy_in: str
    move: str
    clear: str
    table: str
    columns: tuple[str, ...]


def bulk_copy(table: str, columns: Sequence[str]) -> BulkCopy:
    """The :class:`BulkCopy` statements of ``table``'s ``columns``."""
    names = ", ".join(columns)
    temp = f"bart_in_{table}"
    return BulkCopy(
        f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)",
        f"CREATE TEMP TABLE IF NOT EXISTS {temp} (LIKE {table}) ON COMMIT DELETE ROWS",
        f"COPY {temp} ({names}) FROM STDIN (FORMAT BINARY)",
        f"INSERT INTO {table} ({names}) SELECT {names} FROM {temp} ON CONFLICT DO NOTHING",
        f"DELETE FROM {temp}",
        table, tuple(columns))


@functools.lru_cache(maxsize=32)
def heads_of(count: int) -> Statement:
    """The heads of ``count`` origins, named ``:o0`` … (one statement per count)."""
    marks = ", ".join(f":o{n}" for n in range(count))
    return Statement(f"heads_of_{count}",
                     f"SELECT origin, stream, contiguous FROM heads WHERE origin IN ({marks})")


CENTRAL_EVENTS_AFTER: Final = Statement(
    "central_events_after", "SELECT id, origin, stream, seq, ts, kind, body, sig FROM events "
    "WHERE origin = :origin AND stream = 'public' AND seq > :after ORDER BY seq LIMIT :limit")
RECEIPT_UPDATES_AFTER: Final = Statement(
    "receipt_updates_after", "SELECT id, report_id, receipt, state, at, reply "
    "FROM report_updates WHERE origin = :origin AND id > :after ORDER BY id LIMIT :limit")
NEWEST_ROSTER: Final = Statement(
    "newest_roster", "SELECT serial FROM roster_docs ORDER BY serial DESC LIMIT 1")
HEAD: Final = Statement(
    "head", "SELECT contiguous, max_seq FROM heads WHERE origin = :origin AND stream = :stream")
EVENTS_AFTER: Final = Statement(
    "events_after", "SELECT count(*), max(seq) FROM events "
                    "WHERE origin = :origin AND stream = :stream AND seq > :after")
SEQS_AFTER: Final = Statement(
    "seqs_after", "SELECT seq FROM events WHERE origin = :origin AND stream = :stream "
                  "AND seq > :after ORDER BY seq")
#: PostgreSQL: the head row locked until the batch's commit (its events counted after).
HEAD_LOCKED: Final = Statement(
    "head_locked", "SELECT contiguous, max_seq FROM heads WHERE origin = :origin "
                   "AND stream = :stream FOR UPDATE")
#: PostgreSQL: a head row to lock, for a stream central has never had.
HEAD_CREATE: Final = Statement(
    "head_create", "INSERT INTO heads (origin, stream, contiguous, max_seq) "
                   "VALUES (:origin, :stream, 0, 0) ON CONFLICT DO NOTHING")
#: A head only ever moves forward (CASE: max() on SQLite, greatest() on PostgreSQL).
UPSERT_HEAD: Final = Statement(
    "upsert_head", "INSERT INTO heads (origin, stream, contiguous, max_seq) "
    "VALUES (:origin, :stream, :contiguous, :max_seq) ON CONFLICT (origin, stream) DO UPDATE "
    "SET contiguous = CASE WHEN heads.contiguous > excluded.contiguous "
    "THEN heads.contiguous ELSE excluded.contiguous END, "
    "max_seq = CASE WHEN heads.max_seq > excluded.max_seq "
    "THEN heads.max_seq ELSE excluded.max_seq END")


# -- projector (central/projector.py) -----------------------------------------------------

#: Columns of ``reports`` in the order the projector writes them.
REPORT_COLUMNS: Final = ("event_id", "origin", "receipt", "category", "ts", "route", "rule",
                         "state", "updated_at", "version")
INSERT_REPORTS: Final = insert_ignore("insert_reports", "reports", REPORT_COLUMNS)
#: PostgreSQL: the projector's bulk insert (:func:`staging`); the temporary table
#: is emptied after each insert, since several batches may share one transaction.
#: PostgreSQL: new reports (central/projector.py) and a batch's events (central/ingest.py).
REPORTS_COPY: Final = bulk_copy("reports", REPORT_COLUMNS)
EVENTS_COPY: Final = bulk_copy("events", EVENT_COLUMNS)
#: SQLite: what a batch of new reports adds to one (route, state) count (migration 0010).
REPORT_COUNTS_ADD: Final = Statement(
    "report_counts_add",
    "INSERT INTO report_counts (route, state, n) VALUES (:route, :state, :n) "
    "ON CONFLICT (route, state) DO UPDATE SET n = report_counts.n + excluded.n")
#: The events a batch stored in one run of its ``pending`` list: a range of the
#: ``(origin, stream, seq)`` index, only the events this batch stored (``via``, ``received_at``).
EVENTS_IN_RUN: Final = Statement(
    "events_in_run", "SELECT id, origin, ts, kind, body FROM events WHERE origin = :origin "
                     "AND stream = :stream AND seq >= :first AND seq <= :last "
                     "AND via = :via AND received_at = :at")
#: The events a ``pending`` list of ids names (batches stored before runs), by primary
#: key: on SQLite the list as JSON text, on PostgreSQL as an array.
EVENTS_BY_IDS_SQLITE: Final = Statement(
    "events_by_ids", "SELECT id, origin, ts, kind, body FROM events "
                     "WHERE id IN (SELECT value FROM json_each(:ids))")
EVENTS_BY_IDS_PG: Final = Statement(
    "events_by_ids", "SELECT id, origin, ts, kind, body FROM events WHERE id = ANY(:ids)")
BATCH_PROJECTED: Final = Statement(
    "batch_projected", "UPDATE batches SET pending = NULL "
                       "WHERE node = :node AND batch_seq = :batch_seq")


# -- insight (central/insight.py): figures of the last weeks ---------------------------


def week_bounds(starts: Sequence[int]) -> dict[str, int]:
    """The parameters ``:w1`` … of :func:`week_case`: the start of every week but the first."""
    return {f"w{i}": start for i, start in enumerate(starts[1:], start=1)}


def week_case(weeks: int, column: str) -> str:
    """``CASE WHEN col < :w1 THEN 0 … ELSE weeks-1 END``: the week a time falls in."""
    parts = [f"WHEN {column} < :w{i} THEN {i - 1}" for i in range(1, weeks)]
    return f"CASE {' '.join(parts)} ELSE {weeks - 1} END"


def _route_filter(routed: bool) -> str:
    """One desk (``:route``), or every desk: ``route IN (…)`` lets the database read a
    time range per desk on ``(route, ts, event_id)`` (migration 0011 dropped the
    index on ``ts`` alone; a route is always one of ``ROUTES``)."""
    if routed:
        return "AND r.route = :route"
    return f"AND r.route IN ({', '.join(repr(d) for d in ROUTES)})"


@functools.lru_cache(maxsize=8)
def insight_by_week(weeks: int, routed: bool) -> Statement:
    """Reports per week and category (``:start``, ``:end``, ``:w…``, ``:route``)."""
    return Statement("insight_by_week",
                     f"SELECT week, category, COUNT(*) FROM (SELECT {week_case(weeks, 'r.ts')} "
                     f"AS week, r.category FROM reports r WHERE r.ts >= :start AND r.ts < :end "
                     f"{_route_filter(routed)}) t GROUP BY week, category")


@functools.lru_cache(maxsize=8)
def insight_by_area(routed: bool) -> Statement:
    """Reports per area (of the node they came from) and category."""
    return Statement("insight_by_area",
                     "SELECT n.area, r.category, COUNT(*) FROM reports r "
                     "LEFT JOIN nodes n ON n.name = r.origin WHERE r.ts >= :start "
                     f"AND r.ts < :end {_route_filter(routed)} GROUP BY n.area, r.category")


@functools.lru_cache(maxsize=16)
def insight_delays(dialect: str, weeks: int, routed: bool,
                   answers: tuple[str, ...]) -> Statement:
    """Per week: how many reports were answered (a team's ack in ``answers`` or the
    desk's first update) and handled, with the p50 and p90 of the delays in ms."""
    if not all(a.isidentifier() for a in answers):
        raise ValueError(f"not answer names: {answers!r}")
    ref, action = json_text(dialect, "e.body", "ref"), json_text(dialect, "e.body", "action")
    answer_list = ", ".join(f"'{a}'" for a in answers)
    week, route_filter = week_case(weeks, "r.ts"), _route_filter(routed)
    # ``e.kind IN ('alert', 'ack')`` says no more than ``e.kind = 'ack'``: it is the
    # term of the partial index on (kind, ts) (migration 0012), which SQLite reads
    # only for a query that names it.
    return Statement("insight_delays", f"""
WITH acks AS (
  SELECT {ref} AS ref, MIN(e.ts) AS at FROM events e
  WHERE e.kind = 'ack' AND e.kind IN ('alert', 'ack') AND e.ts >= :start
    AND {action} IN ({answer_list})
  GROUP BY {ref}
), base AS (
  SELECT {week} AS week, r.ts AS ts, a.at AS ack,
    (SELECT MIN(u.at) FROM report_updates u WHERE u.report_id = r.event_id) AS desk,
    (SELECT MIN(u.at) FROM report_updates u
      WHERE u.report_id = r.event_id AND u.state = 'handled') AS handled
  FROM reports r LEFT JOIN acks a ON a.ref = r.event_id
  WHERE r.ts >= :start AND r.ts < :end {route_filter}
), delays AS (
  SELECT week, 'answer' AS measure,
    CASE WHEN desk IS NULL OR (ack IS NOT NULL AND ack < desk) THEN ack ELSE desk END - ts AS d
  FROM base WHERE ack IS NOT NULL OR desk IS NOT NULL
  UNION ALL
  SELECT week, 'handled' AS measure, handled - ts AS d FROM base WHERE handled IS NOT NULL
), ranked AS (
  SELECT week, measure, CASE WHEN d < 0 THEN 0 ELSE d END AS d,
    ROW_NUMBER() OVER (PARTITION BY week, measure ORDER BY d) AS rn,
    COUNT(*) OVER (PARTITION BY week, measure) AS n
  FROM delays
)
SELECT week, measure, n, MIN(CASE WHEN rn >= 0.5 * n THEN d END) AS p50,
  MIN(CASE WHEN rn >= 0.9 * n THEN d END) AS p90
FROM ranked GROUP BY week, measure, n""")


@functools.lru_cache(maxsize=4)
def batch_slots(unit_ms: int) -> Statement:
    """Per node: in how many ``unit_ms`` slots it sent a batch (``:since``, ``:now``)."""
    return Statement("batch_slots", f"SELECT node, COUNT(DISTINCT received_at / {int(unit_ms)}) "
                     "FROM batches WHERE received_at >= :since AND received_at <= :now "
                     "GROUP BY node")


# -- retention (central/retention.py) ----------------------------------------------------


@functools.lru_cache(maxsize=16)
def events_about(dialect: str, count: int) -> Statement:
    """(id, body) of the alerts and acks whose ``ref`` is one of ``:i0`` … (``count``);
    ``kind IN ('alert', 'ack')`` is the term of the partial index it reads (migration 0012)."""
    marks = ", ".join(f":i{n}" for n in range(count))
    return Statement("events_about", "SELECT id, body FROM events WHERE kind IN ('alert', 'ack') "
                     f"AND {json_text(dialect, 'body', 'ref')} IN ({marks})")


# -- the projector's lock (central/cluster.py; PostgreSQL only) ----------------------------

# Two-key advisory locks show as classid, objid and objsubid 2 in pg_locks.
_OURS = ("l.locktype = 'advisory' AND l.granted AND l.classid = CAST(:a AS oid) "
         "AND l.objid = CAST(:b AS oid) AND l.objsubid = 2")
TRY_LOCK: Final = Statement(
    "try_lock", "SELECT pg_try_advisory_lock(CAST(:a AS integer), CAST(:b AS integer))")
UNLOCK: Final = Statement(
    "unlock", "SELECT pg_advisory_unlock(CAST(:a AS integer), CAST(:b AS integer))")
LOCK_HELD: Final = Statement(
    "lock_held", f"SELECT count(*) FROM pg_locks l WHERE {_OURS} AND l.pid = pg_backend_pid()")
LOCK_HOLDERS: Final = Statement(
    "lock_holders", "SELECT a.application_name, extract(epoch FROM a.backend_start) "
    f"FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE {_OURS} "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())")
