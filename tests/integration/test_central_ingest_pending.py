"""What a stored batch leaves the projector, and the events' index of alarm kinds
(issue 15), on a SQLite file and a real PostgreSQL server.

- A batch's ``pending`` list is runs of seqs, which the projector reads as
  ranges of the ``(origin, stream, seq)`` index: only the events that batch
  stored (an event sent again was projected with the batch that stored it).
- Migration 0012: the ``(kind, ts)`` index of ``events`` holds only alerts
  and acks, on a database that has data; the two statements that read it
  (insight's team answers, retention's alarms about a report) still do.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from central import db, queries
from central.identity import Central
from central.ingest import RUN_GAP, Ingest
from central.insight import ANSWERS
from central.projector import Projector
from tests.support.ingest import TS, batch, count, enrol, new_central, new_engine, reports


@pytest.fixture
def central(tmp_path: Path, database_url: str) -> Central:
    return new_central(tmp_path, database_url)


@pytest.fixture
def engine(central: Central) -> Iterator[sa.Engine]:
    yield from new_engine(central)


def pending_of(engine: sa.Engine, node: str, batch_seq: int) -> Any:
    with engine.connect() as conn:
        raw = conn.execute(sa.select(db.batches.c.pending).where(
            db.batches.c.node == node, db.batches.c.batch_seq == batch_seq)).scalar_one()
    return orjson.loads(raw) if raw is not None else None


def test_pending_runs_cover_what_the_batch_stored_and_the_projector_reads_them(
        engine: sa.Engine, central: Central) -> None:
    keys = enrol(engine, central, "wereld")
    ingest, projector = Ingest(engine, central), Projector(engine)
    first = reports(keys, "wereld", range(1, 11))
    ingest.handle(batch(keys, "wereld", 1, first, central))
    assert pending_of(engine, "wereld", 1) == [["wereld", "private", 1, 10]]
    assert projector.drain() == 1 and count(engine, db.reports) == 10
    # Sent again (5–10) with new ones (11–15), a gap wider than RUN_GAP (16–50
    # never come), 51–53, and alerts of the public stream: runs, not ids.
    far = 16 + RUN_GAP + 3
    again = (first[4:] + reports(keys, "wereld", range(11, 16))
             + reports(keys, "wereld", range(far, far + 3))
             + reports(keys, "wereld", range(1, 3), stream="public"))
    ingest.handle(batch(keys, "wereld", 2, again, central))
    assert pending_of(engine, "wereld", 2) == [
        ["wereld", "private", 5, 15], ["wereld", "private", far, far + 2],
        ["wereld", "public", 1, 2]]
    assert projector.drain() == 1
    assert count(engine, db.reports) == 18 and projector.pending() == 0
    with engine.connect() as conn:
        got = {r.event_id: r.route for r in conn.execute(
            sa.select(db.reports.c.event_id, db.reports.c.route))}
        kept = {(r.route, r.state): int(r.n) for r in conn.execute(sa.select(db.report_counts))
                if r.n}
    reports_sent = first + again[6:14]
    assert set(got) == {e.id for e in reports_sent}
    # Odd seqs are suspicious (police), even ones nuisance (municipality).
    assert got == {e.id: "police" if e.seq % 2 else "municipality" for e in reports_sent}
    assert kept == {("police", "new"): 10, ("municipality", "new"): 8}


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db.__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    return cfg


def plan(engine: sa.Engine, statement: str, params: Any) -> str:
    with engine.connect() as conn:
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        if engine.dialect.name == "postgresql":
            cur.execute("SET enable_seqscan = off")  # is there an index that serves it?
            cur.execute("EXPLAIN " + statement, params)
        else:
            cur.execute("EXPLAIN QUERY PLAN " + statement, params)
        return "\n".join(str(row[0] if engine.dialect.name == "postgresql" else row[-1])
                         for row in cur.fetchall())


def test_migration_0012_on_a_filled_database_indexes_only_alerts_and_acks(
        tmp_path: Path, database_url: str) -> None:
    cfg = alembic_config(database_url)
    command.upgrade(cfg, "0011")
    engine = db.make_engine(database_url)
    try:
        rows = [{"id": f"{i:08d}-0000-7000-8000-000000000000", "origin": "wereld",
                 "stream": "private", "seq": i + 1, "ts": TS + i,
                 "kind": ("report", "report", "alert", "ack")[i % 4],
                 "body": orjson.dumps({"ref": f"{i - 1:08d}-0000-7000-8000-000000000000",
                                       "action": "seen"}).decode(),
                 "sig": "s", "via": "wereld", "received_at": TS} for i in range(400)]
        with engine.begin() as conn:
            conn.execute(db.events.insert(), rows)
        engine.dispose()
        command.upgrade(cfg, "head")
        found = {i["name"]: i for i in sa.inspect(engine).get_indexes("events")}
        assert "idx_events_kind_ts" not in found and "idx_events_alarm_kind_ts" in found
        assert count(engine, db.events) == 400
        dialect = engine.dialect.name
        about = queries.events_about(dialect, 2)
        sql, args = about.bind(dialect, {"i0": rows[1]["id"], "i1": rows[2]["id"]})
        assert "idx_events_alarm_kind_ts" in plan(engine, sql, args)
        with engine.connect() as conn:
            got = sorted(r[0] for r in conn.execute(about.text(), {"i0": rows[1]["id"],
                                                                   "i1": rows[2]["id"]}))
        assert got == [rows[2]["id"], rows[3]["id"]]  # an alert and an ack; not the report
        delays = queries.insight_delays(dialect, 2, True, ANSWERS)
        sql, args = delays.bind(dialect, {"start": TS, "end": TS + 10**6, "w1": TS + 200,
                                          "route": "police"})
        assert "idx_events_alarm_kind_ts" in plan(engine, sql, args)
        engine.dispose()
        command.downgrade(cfg, "0011")
        names = {i["name"] for i in sa.inspect(engine).get_indexes("events")}
        assert "idx_events_kind_ts" in names and "idx_events_alarm_kind_ts" not in names
        engine.dispose()
        command.upgrade(cfg, "head")
    finally:
        engine.dispose()
