"""Every list of central's reports reads an index, with the three b-trees migration
0011 leaves on ``reports`` (issue 15), on both backends.

The statements are the ones the code sends: captured while the staff lists
(every role, state set and page), the untaken emergencies, the Open311 feed,
the insight page and retention run against a filled database, then each is
EXPLAINed (PostgreSQL with ``enable_seqscan`` off: N rows are few enough to
read whole, so the question is whether an index serves the query). A plan
that reads the whole ``reports`` table (SQLite ``SCAN``, PostgreSQL ``Seq
Scan``) fails, and a desk's per-state list must read
``(route, state, ts, event_id)``. The lists merged over the desks are checked
against the same rows sorted here, page by page.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from central import db, handling, insight, open311, retention
from central.projector import insert_reports
from central.staff import alarms as staff_alarms
from central.staff.accounts import StaffMember
from central.triage import ROUTES

N = 4000
NOW = 1_767_225_600_000  # 2026-01-01
STATES = ("new", "in_progress", "handled", "reopened")


def member(role: str) -> StaffMember:
    return StaffMember(key="", name="Ans", role=role, must_change=False, created=0,
                       last_login=None)


def _rows() -> list[tuple[Any, ...]]:
    """N reports over both desks and every state (mostly handled, as in a long history),
    some emergencies, equal times in pairs (the cursor's tie-break)."""
    rows = []
    for i in range(N):
        ts = NOW - (N - i // 2) * 60_000
        state = STATES[i % 4] if i % 10 == 0 else "handled"
        category = "emergency" if i % 37 == 0 else ("nuisance", "waste", "traffic")[i % 3]
        rows.append((f"{i:08d}-0000-4000-8000-000000000000", f"node-{i % 3}", "ABC1234",
                     category, ts, ROUTES[i % 2], "r", state, ts, 1))
    return rows


@pytest.fixture
def filled(database_url: str) -> Iterator[Engine]:
    """An upgraded central with N reports and their events (PostgreSQL analysed)."""
    db.upgrade(database_url)
    engine = db.make_engine(database_url)
    rows = _rows()
    with engine.begin() as conn:
        conn.execute(db.events.insert(), [
            {"id": r[0], "origin": r[1], "stream": "public", "seq": i + 1, "ts": r[4],
             "kind": "report", "body": f'{{"category": "{r[3]}", "text": "t"}}', "sig": "s",
             "via": r[1], "received_at": r[4]} for i, r in enumerate(rows)])
        insert_reports(conn, rows)
    if engine.dialect.name == "postgresql":  # as autovacuum would (central never
        with engine.connect() as conn:       # analyses SQLite: its planner's own rules)
            conn.execute(sa.text("ANALYZE"))
            conn.commit()
    yield engine
    engine.dispose()


def _capture(engine: Engine) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
             executemany: bool) -> None:
        if re.search(r"\breports\b", statement) and statement.lstrip().upper().startswith(
                ("SELECT", "WITH")):
            seen.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", grab)
    for role in ("admin", "police", "municipality"):
        for states in ((), ("new",), ("new", "in_progress", "reopened"), ("handled",)):
            handling.list_reports(engine, member(role), states=states)
            handling.list_reports(engine, member(role), states=states, before=(NOW, "z"))
    handling.list_reports(engine, member("admin"), route="municipality", states=("new",))
    open311.find(engine, open311.parse_query({}, NOW))
    open311.find(engine, open311.parse_query({"status": "open"}, NOW))
    insight.collect(engine, None, NOW)
    insight.collect(engine, "police", NOW)
    staff_alarms.new_by_desk(engine)
    retention.run_retention(engine, apply=False, now_ms=NOW)
    sa.event.remove(engine, "before_cursor_execute", grab)
    return seen


def _plans(engine: Engine, seen: list[tuple[str, Any]]) -> dict[str, list[str]]:
    plans: dict[str, list[str]] = {}
    postgres = engine.dialect.name == "postgresql"
    with engine.connect() as conn:
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        if postgres:  # a table of N rows is read whole when that is cheaper: is there
            cur.execute("SET enable_seqscan = off")  # an index that serves the query?
        for statement, params in seen:
            if statement not in plans:
                cur.execute(("EXPLAIN " if postgres else "EXPLAIN QUERY PLAN ") + statement,
                            params)
                plans[statement] = [str(row[0] if postgres else row[-1])
                                    for row in cur.fetchall()]
    return plans


def test_every_list_of_reports_reads_an_index(filled: Engine) -> None:
    plans = _plans(filled, _capture(filled))
    assert len(plans) >= 12
    whole = re.compile(r"Seq Scan on reports|^SCAN (reports|r)\b")
    for statement, plan in plans.items():
        flat = " ".join(statement.split())
        assert not any(whole.search(line.strip()) for line in plan), (flat, plan)
        if re.search(r"WHERE reports\.route = \S+ AND reports\.state = ", flat):
            assert any("idx_reports_route_state_ts" in line for line in plan), (flat, plan)


def test_migration_0011_leaves_three_btrees_and_no_key_to_events_on_postgresql(
        filled: Engine) -> None:
    found = sa.inspect(filled)
    assert {i["name"] for i in found.get_indexes("reports")} == {
        "idx_reports_route_state_ts", "idx_reports_route_ts"}
    keys = [fk["referred_table"] for fk in found.get_foreign_keys("reports")]
    assert keys == ([] if filled.dialect.name == "postgresql" else ["events"])


def test_lists_merged_over_desks_page_like_one_sorted_list(filled: Engine) -> None:
    rows, limit = _rows(), 50
    for role, states in (("admin", ()), ("admin", ("new", "in_progress", "reopened")),
                         ("admin", ("handled",)), ("police", ("new", "reopened")),
                         ("municipality", ())):
        mine = [r for r in rows if (role == "admin" or r[5] == role)]
        want = [i for _, i in sorted(((r[4], r[0]) for r in mine
                                       if not states or r[7] in states), reverse=True)]
        urgent = [i for _, i in sorted(((r[4], r[0]) for r in mine
                                         if r[7] == "new" and r[3] == "emergency"),
                                        reverse=True)][:limit]
        if states and "new" not in states:
            urgent = []
        page, before = handling.list_reports(filled, member(role), states=states, limit=limit)
        ids = [r.id for r in page]
        assert ids[:len(urgent)] == urgent, (role, states)
        got = [i for i in want[:limit] if i not in urgent]
        assert ids[len(urgent):] == got, (role, states)
        got = want[:limit]
        while before is not None:
            page, before = handling.list_reports(filled, member(role), states=states,
                                                 limit=limit, before=before)
            got += [r.id for r in page]
        assert got == want, (role, states)


def test_counts_of_open_reports_and_emergencies_match_the_rows(filled: Engine) -> None:
    rows = _rows()
    cutoff = retention.cutoff_ms(1, now_ms=NOW)
    result = retention.run_retention(filled, 1, apply=False, now_ms=NOW)
    assert result.open_older > 0
    assert result.open_older == sum(1 for r in rows if r[7] != "handled" and r[4] < cutoff)
    urgent = {d: sum(1 for r in rows if r[5] == d and r[7] == "new" and r[3] == "emergency")
              for d in ROUTES}
    assert staff_alarms.new_by_desk(filled) == {d: n for d, n in urgent.items() if n}
    assert sum(urgent.values()) > 0

