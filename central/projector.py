"""The projector: triaged ``reports`` rows derived from stored events (DESIGN.md §6).

Ingest (``central/ingest.py``) stores events and answers the node; it does not
triage. A stored batch that brought reports keeps their event ids in
``batches.pending``. The projector takes such batches, oldest first, loads
their report events, routes each by the triage rules and inserts its
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
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import alarms, db, queries
from .cluster import STANDBY_POLL_S, ProjectorLock, application_name
from .ingest import now_ms
from .metrics import PROJECTOR_NAME

log = logging.getLogger(__name__)

#: Batches taken per run, and how long an idle projector sleeps.
BATCHES_PER_RUN = 20
POLL_S = 0.2
_CHUNK = 500  # ids per ``IN (…)``: below SQLite's default variable limit
#: The kinds a batch's ``pending`` list names (central/ingest.py).
_KINDS = frozenset({"report", "alert", "ack"})

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
        q = (sa.select(db.batches.c.node, db.batches.c.batch_seq, db.batches.c.pending)
             .where(db.batches.c.pending.isnot(None))
             .order_by(db.batches.c.received_at).limit(limit))
        if self.dialect == "postgresql":
            with self.engine.begin() as conn:
                taken = conn.execute(q.with_for_update(skip_locked=True)).all()
                for row in taken:
                    self._write(conn, row, self._triage(self._fetch(conn, row)))
            return len(taken)
        with db.reading(self.engine) as conn:  # a snapshot; no lock held
            taken = conn.execute(q).all()
            fetched = [(row, self._fetch(conn, row)) for row in taken]
        work = [(row, self._triage(events)) for row, events in fetched]
        for row, reports in work:
            with self.engine.begin() as conn:
                self._write(conn, row, reports)
        return len(taken)

    def _write(self, conn: Connection, batch: Any,
               work: tuple[list[tuple[Any, ...]], list[Any]]) -> None:
        reports, others = work
        if reports:
            _insert_ignore(conn, self.dialect, reports)
            alarms.bump(conn)
        if others:
            # After the reports: an escalation in this batch finds its report row.
            alarms.project(conn, others, self.central_origin, now_ms())
        conn.execute(db.batches.update().where(
            db.batches.c.node == batch.node, db.batches.c.batch_seq == batch.batch_seq)
            .values(pending=None))
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

    def _fetch(self, conn: Connection, batch: Any) -> list[Any]:
        """The stored events of ``batch`` the projector looks at (id, origin, ts, kind, body).

        An id that is not stored (a fork of an event held under another id)
        has nothing to project.
        """
        ids = _ids(batch.pending, batch.node, batch.batch_seq)
        ev = db.events.c
        rows: list[Any] = []
        for i in range(0, len(ids), _CHUNK):
            # By primary key only: with a condition on kind as well, PostgreSQL
            # chose the (kind, ts) index over a fast-growing table and took
            # ~1.4 s per batch instead of ~50 ms.
            rows.extend(row for row in conn.execute(
                sa.select(ev.id, ev.origin, ev.ts, ev.kind, ev.body)
                .where(ev.id.in_(ids[i:i + _CHUNK]))) if row.kind in _KINDS)
        return rows

    def _triage(self, events: list[Any]) -> tuple[list[tuple[Any, ...]], list[Any]]:
        """One ``reports`` row per report event, routed by the rules; and the alerts
        and acks for the alarm desk (central/alarms.py)."""
        at = now_ms()
        out: list[tuple[Any, ...]] = []
        others = [row for row in events if row.kind != "report"]
        for row in events:
            if row.kind != "report":
                continue
            body = orjson.loads(row.body)
            route, rule = self._route(row.id, body)
            out.append((row.id, row.origin, body["receipt"], body["category"], row.ts,
                        route, rule[:80], "new", at, 1))
        return out, others

    def _route(self, event_id: str, body: Mapping[str, Any]) -> tuple[str, str]:
        try:
            return self.router(body)
        except Exception:  # a rule bug must not block every later report
            log.exception("triage failed for report %s; using the default route", event_id)
            return default_router(body)


def _ids(pending: str, node: str, batch_seq: int) -> list[str]:
    try:
        ids = orjson.loads(pending)
    except orjson.JSONDecodeError:
        ids = None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        log.error("batch %s/%s: unreadable pending list, skipped", node, batch_seq)
        return []
    return ids


def _insert_ignore(conn: Connection, dialect: str, rows: list[tuple[Any, ...]]) -> None:
    cur = conn.connection.cursor()
    try:
        queries.run_many(cur, dialect, queries.INSERT_REPORTS, rows)
    finally:
        cur.close()


# --------------------------------------------------------------- as a process

def _process_main(data_dir: str, database_url: str | None, parent: int | None) -> None:
    """Run a projector until SIGTERM/SIGINT.

    The entry point of the process ``bart central run`` starts (``parent``:
    its pid, to stop with it), and of ``bart central triage`` (no parent).
    """
    import signal

    from .identity import load_central
    from .triage import router_for

    logging.basicConfig(level=os.environ.get("BART_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    central = load_central(Path(data_dir), database_url=database_url)
    engine = db.make_engine(central.database_url)
    projector = Projector(engine, router_for(central.data_dir), central_origin=central.origin)

    def orphaned() -> None:  # the parent died without stopping us
        while not stop.wait(1.0):
            if os.getppid() != parent:
                stop.set()

    if parent is not None:
        threading.Thread(target=orphaned, name="bart-projector-parent", daemon=True).start()
    try:
        if projector.dialect == "postgresql":
            with ProjectorLock(central.database_url) as lock:
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


class ProjectorProcess:
    """One projector process, restarted if it dies, stopped with the server."""

    def __init__(self, data_dir: Path, database_url: str | None) -> None:
        self._args = (str(data_dir), database_url, os.getpid())
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: Any = None
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        """The projector process's id (a new one after each restart)."""
        return self._proc.pid if self._proc is not None else None

    def is_alive(self) -> bool:
        """Whether the projector process runs now (on PostgreSQL: projecting or standing by)."""
        return self._proc is not None and bool(self._proc.is_alive())

    def start(self) -> None:
        """Start the projector, once this central's keys are known to be the database's.

        Raises :class:`central.cluster.IdentityMismatch` (nothing started) when
        the database belongs to a central with other keys: every process over
        one database must be one central (docs/central-scale.md).
        """
        claim_for(Path(self._args[0]), self._args[1])
        self._spawn()
        self._watch = threading.Thread(target=self._supervise, name="bart-projector-watch",
                                       daemon=True)
        self._watch.start()

    def _spawn(self) -> None:
        self._proc = self._ctx.Process(target=_process_main, args=self._args,
                                       name=PROJECTOR_NAME, daemon=False)
        self._proc.start()

    def _supervise(self) -> None:
        delay = 1.0
        started = time.monotonic()
        while not self._stop.wait(1.0):
            if self._proc.is_alive():
                continue
            if self._proc.exitcode == 0:
                # Stopped by a signal (Ctrl-C and systemctl stop reach the whole
                # group): the server is stopping too, or someone meant it.
                log.warning("projector stopped; not restarted")
                return
            if time.monotonic() - started >= 60:
                delay = 1.0  # it had been running fine: a fresh failure
            log.error("projector exited with %s; restarting in %.0f s", self._proc.exitcode,
                      delay)
            if self._stop.wait(delay):
                return
            delay = min(60.0, delay * 2)
            started = time.monotonic()
            self._spawn()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.join(timeout)
        if self._proc is not None and self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(timeout)
