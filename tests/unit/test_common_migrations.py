"""common.migrations: the one named-migration runner of the node store and ``team.db``.

Before issue 16 there were two: the node store's checked ``_migrations`` once,
before its transactions (two processes starting on a new file could both
apply a migration), the team's checked again inside each ``BEGIN IMMEDIATE``.
Real SQLite files; two connections in threads and two real processes race.
"""

from __future__ import annotations

import doctest
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import common.migrations
from common.migrations import Migration, applied, migrate
from node import migrations as node_migrations
from node.team import schema as team_schema

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]


def connect(path: Path, busy_ms: int = 10_000) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
    conn.execute("PRAGMA journal_mode = WAL")
    return conn


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = connect(tmp_path / "x.db")
    yield conn
    conn.close()


def counted(name: str) -> Migration:
    """A migration that leaves one row per application: applied twice shows twice."""
    def apply(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS runs (name TEXT)")
        conn.execute("INSERT INTO runs (name) VALUES (?)", (name,))
    return name, apply


def runs(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT name FROM runs ORDER BY rowid")]


def test_docstring_examples() -> None:
    assert doctest.testmod(common.migrations).failed == 0


def test_applies_in_order_once_and_records_name_and_time_in_ms(
        db: sqlite3.Connection) -> None:
    steps = [counted("001_a"), counted("002_b")]
    assert migrate(db, steps, clock_ms=lambda: 1_800_000_000_123) == ["001_a", "002_b"]
    assert migrate(db, steps) == []
    assert migrate(db, [*steps, counted("003_c")]) == ["003_c"]
    assert runs(db) == ["001_a", "002_b", "003_c"]
    assert applied(db) == ["001_a", "002_b", "003_c"]
    rows = db.execute("SELECT name, applied_at FROM _migrations ORDER BY rowid").fetchall()
    assert rows[0] == ("001_a", 1_800_000_000_123)
    assert rows[2][1] > 1_700_000_000_000  # the wall clock, in milliseconds


def test_a_failing_migration_is_rolled_back_and_not_recorded(db: sqlite3.Connection) -> None:
    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half (x INTEGER)")
        conn.execute("INSERT INTO runs (name) VALUES ('002_bad')")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        migrate(db, [counted("001_a"), ("002_bad", half_then_fail), counted("003_c")])
    assert not db.in_transaction
    assert applied(db) == ["001_a"]
    assert runs(db) == ["001_a"]  # neither 002's row nor 003 (not tried after a failure)
    assert db.execute("SELECT 1 FROM sqlite_master WHERE name = 'half'").fetchone() is None
    # Fixed, it applies the next time, with the rest.
    assert migrate(db, [counted("001_a"), counted("002_bad"), counted("003_c")]) == [
        "002_bad", "003_c"]


def test_a_migration_that_ends_its_own_transaction_is_refused(db: sqlite3.Connection) -> None:
    def script(conn: sqlite3.Connection) -> None:
        conn.executescript("CREATE TABLE s (x INTEGER);")  # COMMITs first

    with pytest.raises(RuntimeError, match="ended its own transaction"):
        migrate(db, [("001_script", script)])
    assert applied(db) == []


def test_refuses_duplicate_names_and_an_open_transaction(db: sqlite3.Connection) -> None:
    with pytest.raises(ValueError, match="same name"):
        migrate(db, [counted("001_a"), counted("001_a")])
    db.execute("BEGIN")
    with pytest.raises(ValueError, match="outside any transaction"):
        migrate(db, [counted("001_a")])
    db.execute("ROLLBACK")


def test_an_up_to_date_file_needs_no_write_lock(tmp_path: Path) -> None:
    """A start while another process writes (the node and ``bart node team add``)."""
    path = tmp_path / "x.db"
    with connect(path) as first:
        migrate(first, [counted("001_a")])
    writer = connect(path)
    writer.execute("BEGIN IMMEDIATE")
    try:
        reader = connect(path, busy_ms=0)
        assert migrate(reader, [counted("001_a")]) == []
        reader.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_two_connections_migrating_a_new_file_at_once_apply_each_exactly_once(
        tmp_path: Path) -> None:
    """B looks at ``_migrations`` while A is inside 001 (so B saw it pending) and
    then waits for A's write lock: B must find 001 done once it holds the lock."""
    path = tmp_path / "new.db"
    inside, b_started = threading.Event(), threading.Event()

    def slow(conn: sqlite3.Connection) -> None:
        counted("001_slow")[1](conn)
        inside.set()
        assert b_started.wait(10)
        time.sleep(0.3)  # B reads the (still empty) table, then blocks on BEGIN IMMEDIATE

    steps: list[Migration] = [("001_slow", slow), counted("002_b")]
    result: dict[str, list[str]] = {}

    def run(who: str, wait_for: threading.Event | None) -> None:
        if wait_for is not None:
            assert wait_for.wait(10)
            b_started.set()
        conn = connect(path)
        try:
            result[who] = migrate(conn, steps)
        finally:
            conn.close()

    threads = [threading.Thread(target=run, args=("a", None)),
               threading.Thread(target=run, args=("b", inside))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert set(result) == {"a", "b"}
    with connect(path) as conn:
        assert sorted(runs(conn)) == ["001_slow", "002_b"]
        assert applied(conn) == ["001_slow", "002_b"]
    assert sorted(result["a"] + result["b"]) == ["001_slow", "002_b"]
    assert result["a"][0] == "001_slow"


CHILD = textwrap.dedent("""
    import sqlite3, sys, time
    sys.path.insert(0, {root!r})
    from common.migrations import migrate

    def step(name):
        def apply(conn):
            conn.execute("CREATE TABLE IF NOT EXISTS runs (name TEXT)")
            conn.execute("INSERT INTO runs (name) VALUES (?)", (name,))
            time.sleep(0.2)  # while one holds the lock, the others read and wait
        return name, apply

    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 20000")
    conn.execute("PRAGMA journal_mode = WAL")
    start = float(sys.argv[2])
    while time.time() < start:
        time.sleep(0.001)
    print(",".join(migrate(conn, [step(f"{{i:03d}}_m") for i in range(1, 6)])))
""")


def test_processes_starting_at_once_on_a_new_file_apply_each_migration_once(
        tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(ROOT)), encoding="utf-8")
    start = time.time() + 1.5
    children = [subprocess.Popen([sys.executable, str(script), str(path), str(start)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(4)]
    outputs: list[str] = []
    for child in children:
        out, err = child.communicate(timeout=40)
        assert child.returncode == 0, err
        outputs.extend(name for name in out.strip().split(",") if name)
    expected = [f"{i:03d}_m" for i in range(1, 6)]
    assert sorted(outputs) == expected  # each applied by exactly one process
    with connect(path) as conn:
        assert runs(conn) == expected
        assert applied(conn) == expected


OLD_TABLE = "CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at INTEGER)"


@pytest.mark.parametrize("module", [node_migrations, team_schema])
def test_files_made_by_the_old_runners_keep_working(tmp_path: Path, module: object) -> None:
    """Same table, same names: an existing node store or team.db applies nothing new."""
    names = [name for name, _ in module.MIGRATIONS]  # type: ignore[attr-defined]
    with connect(tmp_path / "old.db") as conn:
        assert module.migrate(conn) == names  # type: ignore[attr-defined]
        # What the old runners wrote: Unix seconds.
        conn.execute("UPDATE _migrations SET applied_at = 1790000000")
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = '_migrations'").fetchone()
        assert sql[0] == OLD_TABLE
        assert module.migrate(conn) == []  # type: ignore[attr-defined]
        assert applied(conn) == names


def test_the_node_store_migrations_use_the_shared_runner(tmp_path: Path) -> None:
    """Neither the node store nor team.db keeps a runner of its own (they drifted once)."""
    with connect(tmp_path / "node.db") as conn:
        node_migrations.migrate(conn)
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone() == (0,)
        assert applied(conn)[:2] == ["001_events", "002_receipts"]
    source = (ROOT / "node" / "migrations.py").read_text(encoding="utf-8")
    team_source = (ROOT / "node" / "team" / "schema.py").read_text(encoding="utf-8")
    for text in (source, team_source):
        assert "execute(\"BEGIN" not in text and "INSERT INTO _migrations" not in text
