"""The projector: triaged ``reports`` rows derived from stored events (DESIGN.md §6).

Ingest (``central/ingest.py``) stores events and answers the node; it does not
triage. A stored batch that brought reports (alerts, acks) keeps runs of
their seqs in ``batches.pending``. The projector takes such batches, oldest
first, loads the report events that batch stored (a range of the ``(origin,
stream, seq)`` index per run), routes each by the triage rules and inserts its
``reports`` row (``ON CONFLICT DO NOTHING``: a report already there keeps its
state and any route staff gave it), then clears ``pending`` — all in one
transaction, so a crash at any point leaves the batch pending and the next
run does it again, with the same result.

Why apart from ingest: triage and the second insert cost more CPU than
verifying, opening and storing the events (measured: ~12 of ~39 µs per
event), and the node's acknowledgement does not depend on them. ``bart
central run`` runs one projector process beside its HTTP worker(s). On
PostgreSQL several ``bart central run`` (several hosts) each start one, and
only the holder of an advisory lock projects while the others stand by
(:func:`run_when_holding`, central/cluster.py); should two ever overlap,
they claim batches with ``FOR UPDATE SKIP LOCKED`` and nothing is projected
twice. A report reaches the staff pages within one poll interval of its batch.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from common.clock import now_ms

from . import alarms, db, queries
from .cluster import STANDBY_POLL_S, ProjectorLock, application_name

log = logging.getLogger(__name__)

#: Batches taken per run, and how long an idle projector sleeps.
BATCHES_PER_RUN = 20
POLL_S = 0.2
#: The kinds a batch's ``pending`` list names (central/ingest.py).
_KINDS = frozenset({"report", "alert", "ack"})


class Event(NamedTuple):
    """A stored event as the projector reads it (central/alarms.py reads these too)."""

    id: str
    origin: str
    ts: int
    kind: str
    body: str


#: ``route(report_body) -> (route, rule name)``; central/triage.py provides the real one.
Router = Callable[[Mapping[str, Any]], tuple[str, str]]


def default_router(body: Mapping[str, Any]) -> tuple[str, str]:
    """Police for suspicious and emergency, municipality for the rest (DESIGN.md §6)."""
    if body.get("category") in ("suspicious", "emergency"):
        return "police", "default-police"
    return "municipality", "default-municipality"


class Projector:
    """Derives ``reports`` rows from pending batches; safe to run more than once."""

    def __init__(self, engine: Engine, router: Router = default_router, *,
                 central_origin: str = "") -> None:
        self.engine = engine
        self.central_origin = central_origin
        self.router = router
        self.dialect = engine.dialect.name

    def pending(self) -> int:
        """How many stored batches still wait for projection."""
        with db.reading(self.engine) as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(db.batches)
                                    .where(db.batches.c.pending.isnot(None))).scalar_one())

    def run_once(self, limit: int = BATCHES_PER_RUN) -> int:
        """Project up to ``limit`` pending batches; returns how many were done.

        SQLite has one writer for the whole file: the reports are read and
        triaged outside any write transaction, and each batch is then written
        in a short one (a few ms), so ingest never waits behind triage.
        PostgreSQL locks only the batch rows taken (``SKIP LOCKED`` spreads
        batches over several projectors), so it projects inside one
        transaction.
        """
        q = (sa.select(db.batches.c.node, db.batches.c.batch_seq, db.batches.c.received_at,
                       db.batches.c.pending)
             .where(db.batches.c.pending.isnot(None))
             .order_by(db.batches.c.received_at).limit(limit))
        if self.dialect == "postgresql":
            with self.engine.begin() as conn:
                taken = conn.execute(q.with_for_update(skip_locked=True)).all()
                work = [(row, self._triage(self._fetch(conn, row))) for row in taken]
                # Every report of the run in one statement (the count trigger runs
                # once); alarms.project reads events, not reports, so the order
                # against the batches' alerts and acks changes nothing.
                reports = [r for _, (rows, _others) in work for r in rows]
                if reports:
                    insert_reports(conn, reports)
                    alarms.bump(conn)
                for row, (_rows, others) in work:
                    self._write(conn, row, ([], others))
            return len(taken)
        with db.reading(self.engine) as conn:  # a snapshot; no lock held
            taken = conn.execute(q).all()
            fetched = [(row, self._fetch(conn, row)) for row in taken]
        work = [(row, self._triage(events)) for row, events in fetched]
        for row, reports_others in work:
            with self.engine.begin() as conn:
                self._write(conn, row, reports_others)
        return len(taken)

    def _write(self, conn: Connection, batch: Any,
               work: tuple[list[tuple[Any, ...]], list[Any]]) -> None:
        reports, others = work
        if reports:
            insert_reports(conn, reports)
            alarms.bump(conn)
        if others:
            # After the reports: an escalation in this batch finds its report row.
            alarms.project(conn, others, self.central_origin, now_ms())
        queries.run(conn, queries.BATCH_PROJECTED,
                    {"node": batch.node, "batch_seq": batch.batch_seq})
        log.debug("batch %s/%s: %d reports triaged", batch.node, batch.batch_seq, len(reports))

    def drain(self) -> int:
        """Project until nothing is pending; returns the number of batches done."""
        done = 0
        while n := self.run_once():
            done += n
        return done

    def run(self, stop: threading.Event, poll_s: float = POLL_S,
            held: Callable[[], bool] | None = None) -> None:
        """Project until ``stop`` is set; a failing run is logged and retried.

        ``held``: asked before every run; when it says False (the projector
        lock is lost, central/cluster.py), this returns without projecting.
        """
        failures = 0
        while not stop.is_set():
            if held is not None and not held():
                return
            try:
                busy = self.run_once()
                failures = 0
            except Exception:  # the database away, a DB-API error: retry, never die
                failures += 1
                log.exception("projection failed (%d in a row); retrying", failures)
                busy = 0
                stop.wait(min(30.0, poll_s * 2 ** min(failures, 8)))
                continue
            if not busy:
                stop.wait(poll_s)

    def _fetch(self, conn: Connection, batch: Any) -> list[tuple[Any, ...]]:
        """The stored events of ``batch`` the projector looks at (id, origin, ts, kind, body).

        ``pending`` holds runs of seqs (:func:`central.ingest.pending_runs`):
        each is one range of the ``(origin, stream, seq)`` index, of the events
        this batch stored (``via`` its node, ``received_at`` its time). An
        event the batch brought that was stored already (sent again, or a fork
        of an event held under another id) was projected with the batch that
        stored it. A list of ids (a batch stored by older code) is read by
        primary key. Through the DB-API cursor: SQLAlchemy's rows took ~10 µs
        per event here under cProfile, more than the triage.
        """
        work = _pending(batch.pending, batch.node, batch.batch_seq)
        if not work:
            return []
        cur = conn.connection.cursor()
        try:
            if isinstance(work[0], str):  # ids
                if self.dialect == "postgresql":
                    sql, _ = queries.EVENTS_BY_IDS_PG.compiled(self.dialect)
                    args: tuple[Any, ...] = (work,)
                else:
                    sql, _ = queries.EVENTS_BY_IDS_SQLITE.compiled(self.dialect)
                    args = (orjson.dumps(work).decode(),)
                cur.execute(sql, args)
                return [row for row in cur.fetchall() if row[3] in _KINDS]
            sql, _ = queries.EVENTS_IN_RUN.compiled(self.dialect)
            out: list[tuple[Any, ...]] = []
            for origin, stream, first, last in work:
                cur.execute(sql, (origin, stream, first, last, batch.node, batch.received_at))
                out.extend(row for row in cur.fetchall() if row[3] in _KINDS)
            return out
        finally:
            cur.close()

    def _triage(self, events: list[tuple[Any, ...]]
                ) -> tuple[list[tuple[Any, ...]], list[Event]]:
        """One ``reports`` row per report event, routed by the rules; and the alerts
        and acks for the alarm desk (central/alarms.py)."""
        at = now_ms()
        out: list[tuple[Any, ...]] = []
        others: list[Event] = []
        loads, route = orjson.loads, self._route
        # Plain tuples, (id, origin, ts, kind, body): an Event per report cost more
        # than its use.
        for ident, origin, ts, kind, raw in events:
            if kind != "report":
                others.append(Event(ident, origin, ts, kind, raw))
                continue
            body = loads(raw)
            to, rule = route(ident, body)
            out.append((ident, origin, body["receipt"], body["category"], ts, to, rule[:80],
                        "new", at, 1))
        return out, others

    def _route(self, event_id: str, body: Mapping[str, Any]) -> tuple[str, str]:
        try:
            return self.router(body)
        except Exception:  # a rule bug must not block every later report
            log.exception("triage failed for report %s; using the default route", event_id)
            return default_router(body)


def _pending(pending: str, node: str, batch_seq: int) -> list[Any]:
    """A batch's ``pending`` list: ``[origin, stream, first, last]`` runs, or (a batch
    stored by older code) event ids; ``[]`` when it is neither (logged)."""
    try:
        work = orjson.loads(pending)
    except orjson.JSONDecodeError:
        work = None
    if isinstance(work, list) and (all(isinstance(i, str) for i in work) or all(
            isinstance(r, list) and len(r) == 4 and isinstance(r[0], str)
            and isinstance(r[1], str) and type(r[2]) is int and type(r[3]) is int
            for r in work)):
        return work
    log.error("batch %s/%s: unreadable pending list, skipped", node, batch_seq)
    return []


def insert_reports(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> int:
    """Insert triaged ``reports`` rows (tuples in ``queries.REPORT_COLUMNS`` order),
    ``ON CONFLICT DO NOTHING``, and count the new ones in ``report_counts`` within
    ``conn``'s transaction; returns how many were new.

    The writer of new reports (the projector; a test or a repair by hand should
    use this too). Set-based, so that the counts cost one statement per
    batch, not one per row (migration 0010):

    - PostgreSQL: ``COPY`` straight into ``reports``; should a row be there
      already (a batch projected again), the ``COPY`` is undone and the rows
      go through a temporary table and one ``INSERT … SELECT … ON CONFLICT DO
      NOTHING``. The statement-level trigger of migration 0010 counts the
      rows either statement inserted.
    - SQLite (no statement-level triggers): one ``executemany`` per (route,
      state), whose row count is the number of rows that were new — the
      writer lock held since ``BEGIN IMMEDIATE`` makes it exact — then one
      upsert per (route, state) into ``report_counts``.
    """
    if not rows:
        return 0
    dialect = conn.dialect.name
    cur = conn.connection.cursor()
    try:
        if dialect == "postgresql":
            return _copy_reports(cur, rows)
        groups: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
        for row in rows:
            groups.setdefault((row[_ROUTE], row[_STATE]), []).append(row)
        new = {key: queries.run_many(cur, dialect, queries.INSERT_REPORTS, group)
               for key, group in groups.items()}
        counted = [(route, state, n) for (route, state), n in new.items() if n]
        if counted:
            queries.run_many(cur, dialect, queries.REPORT_COUNTS_ADD, counted)
        return sum(new.values())
    finally:
        cur.close()


def _copy_reports(cur: Any, rows: Sequence[tuple[Any, ...]]) -> int:
    """PostgreSQL's half of :func:`insert_reports` (``cur``: a psycopg cursor)."""
    return db.copy_new_rows(cur, queries.REPORTS_COPY, rows)


_ROUTE = queries.REPORT_COLUMNS.index("route")
_STATE = queries.REPORT_COLUMNS.index("state")


# --------------------------------------------------------------- as a process

def _process_main(data_dir: str, database_url: str | None, parent: int | None) -> None:
    """This central's settings loaded, then :func:`project_until_stopped`
    (``bart central triage``)."""
    from .identity import load_central

    central = load_central(Path(data_dir), database_url=database_url)
    project_until_stopped(central.data_dir, central.database_url, central.origin, parent)


def project_until_stopped(data_dir: Path, database_url: str, origin: str,
                          parent: int | None) -> None:
    """Run a projector until SIGTERM/SIGINT.

    The projector process of ``bart central run`` (central/worker.py;
    ``parent``: the pid of the process that started it, to stop with it), and
    ``bart central triage`` (no parent). It needs the database, the triage
    rules and central's origin, not settings or keys: ``bart central run``
    checked those and hands these over, so its projector imports no pydantic.
    """
    import signal

    from .triage import router_for

    logging.basicConfig(level=os.environ.get("BART_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    engine = db.make_engine(database_url)
    projector = Projector(engine, router_for(data_dir), central_origin=origin)

    def orphaned() -> None:  # the parent died without stopping us
        while not stop.wait(1.0):
            if os.getppid() != parent:
                stop.set()

    if parent is not None:
        threading.Thread(target=orphaned, name="bart-projector-parent", daemon=True).start()
    try:
        if projector.dialect == "postgresql":
            with ProjectorLock(database_url) as lock:
                run_when_holding(projector, lock, stop)
        else:  # SQLite: one machine, one projector, no lock (as ever)
            projector.run(stop)
    finally:
        engine.dispose()


def run_when_holding(projector: Projector, lock: ProjectorLock, stop: threading.Event,
                     poll_s: float = POLL_S, standby_s: float = STANDBY_POLL_S) -> None:
    """Hot standby: project while ``lock`` is held, else try for it every ``standby_s``.

    Several ``bart central run`` over one PostgreSQL each run this; the
    holder projects, the others wait (central/cluster.py). A lost lock (its
    connection gone) sends this process back to standby.
    """
    failures = 0
    said_standby = False
    while not stop.is_set():
        try:
            got = lock.try_acquire()
        except sa.exc.SQLAlchemyError as exc:
            failures += 1
            if failures == 1:
                log.error("projector: cannot reach the database for its lock (%s); retrying",
                          exc.__class__.__name__)
            stop.wait(min(30.0, standby_s * 2 ** min(failures, 6)))
            continue
        failures = 0
        if not got:
            if not said_standby:
                log.info("projector standing by: another central process projects")
                said_standby = True
            stop.wait(standby_s)
            continue
        said_standby = False
        log.info("projector lock taken by %s: this process projects now",
                 application_name())
        projector.run(stop, poll_s, held=lock.held)
        if not stop.is_set():
            log.error("projector lock lost (its database connection went away); standing by")


def run_foreground(data_dir: Path, database_url: str | None) -> None:
    """``bart central triage``: the projector alone, for central served another way.

    Refuses (:class:`central.cluster.IdentityMismatch`) when the database
    belongs to a central with other keys.
    """
    claim_for(data_dir, database_url)
    _process_main(str(data_dir), database_url, None)


def claim_for(data_dir: Path, database_url: str | None) -> None:
    """Claim the database for this central's identity, or refuse (central/cluster.py)."""
    from .cluster import claim_identity
    from .identity import load_central

    central = load_central(data_dir, database_url=database_url)
    engine = db.make_engine(central.database_url, pool_size=1)
    try:
        claim_identity(engine, central)
    finally:
        engine.dispose()
