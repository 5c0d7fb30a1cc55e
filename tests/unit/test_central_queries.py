"""central/queries.py: central's SQL text lives there, by name, and compiles for both backends."""

from __future__ import annotations

import doctest
import re
import sqlite3
from pathlib import Path

import pytest

import central.queries as q

ROOT = Path(__file__).resolve().parents[2]

STATEMENTS = [v for v in vars(q).values() if isinstance(v, q.Statement)] + [
    q.heads_of(3), q.insight_by_week(12, True), q.insight_by_area(False),
    q.insight_delays("sqlite", 12, True, ("seen", "resolved")),
    q.insight_delays("postgresql", 12, False, ("seen",)), q.batch_slots(3_600_000),
    q.events_about("sqlite", 2), q.events_about("postgresql", 2)]


def test_doctests() -> None:
    failures, _ = doctest.testmod(q)
    assert failures == 0


@pytest.mark.parametrize("statement", STATEMENTS, ids=lambda s: s.name)
def test_every_statement_compiles_to_each_drivers_paramstyle(statement: q.Statement) -> None:
    lite, lite_order = statement.compiled("sqlite")
    pg, pg_order = statement.compiled("postgresql")
    names = re.findall(r"(?<![:\w]):(\w+)", statement.sql)
    assert list(lite_order) == names == list(pg_order)
    for sql in (lite, pg):
        assert not any(re.search(rf"(?<!:):{n}\b", sql) for n in names), sql
    assert lite.count("?") == len(names) and "%s" not in lite
    assert pg.count("%s") == len(names) and not re.search(r"(?<!%)%(?![s%])", pg)


def test_a_literal_question_mark_or_percent_stays_a_literal() -> None:
    """What ``sql.replace("?", "%s")`` (the old central.db.query) got wrong."""
    s = q.Statement("literal", "SELECT id FROM events WHERE body LIKE '%?%' AND id = :id")
    pg, order = s.compiled("postgresql")
    assert pg == "SELECT id FROM events WHERE body LIKE '%%?%%' AND id = %s" and order == ("id",)
    with sqlite3.connect(":memory:") as conn:
        conn.execute("CREATE TABLE events (id TEXT, body TEXT)")
        conn.execute("INSERT INTO events VALUES ('a', 'why?'), ('b', 'so.')")
        assert conn.execute(*s.bind("sqlite", {"id": "a"})).fetchall() == [("a",)]
        assert conn.execute(*s.bind("sqlite", {"id": "b"})).fetchall() == []


def test_the_head_upsert_only_moves_forward() -> None:
    with sqlite3.connect(":memory:") as conn:
        conn.execute("CREATE TABLE heads (origin TEXT, stream TEXT, contiguous INTEGER, "
                     "max_seq INTEGER, PRIMARY KEY (origin, stream))")
        for contiguous, top in ((5, 9), (3, 12), (7, 4)):
            conn.execute(*q.UPSERT_HEAD.bind("sqlite", {
                "origin": "n1", "stream": "public", "contiguous": contiguous, "max_seq": top}))
        assert conn.execute("SELECT contiguous, max_seq FROM heads").fetchall() == [(7, 12)]


def test_tuple_rows_follow_the_declared_columns() -> None:
    assert q.INSERT_EVENTS.compiled("sqlite")[1] == q.EVENT_COLUMNS
    assert q.INSERT_REPORTS.compiled("postgresql")[1] == q.REPORT_COLUMNS
    with pytest.raises(ValueError, match="named twice"):
        q.run_many(None, "sqlite", q.NODE_SEEN, [])


def test_no_sql_text_outside_queries() -> None:
    """Central's SQL text is in central/queries.py (migrations and db.py's connection
    PRAGMAs aside); no placeholder is rewritten by string replacement."""
    wrong = []
    for path in sorted((ROOT / "central").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "central/queries.py" or "/migrations/" in rel:
            continue
        text = path.read_text(encoding="utf-8")
        for pattern in (r"replace\(\"\?\"", r"sa\.text\(", r"\btext\(\s*f?\"",
                        r"\"(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM|WITH \w+ AS) "):
            if re.search(pattern, text):
                wrong.append(f"{rel}: {pattern}")
    assert not wrong, "SQL text outside central/queries.py:\n" + "\n".join(wrong)
