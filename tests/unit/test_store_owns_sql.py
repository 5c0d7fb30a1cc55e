"""The store owns its tables (node/store.py, "Threads, and who owns what"; issue 16).

Every statement on the node's database lives in the store's modules: writes
are named methods of ``WriteTx`` (node/store_writes.py), reads are named
methods of ``Store`` (node/store_queries.py). No other module of ``node/``
runs SQL, opens the database or reaches into the store's connections — the
uplink and carry used to read ``uplink_state`` and ``carried`` on connections
of their own and write with ``tx.conn.execute``. A check of the source
(AST), not a run: it fails on the line that goes behind the store's back.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NODE = ROOT / "node"

#: Modules that may run SQL of their own, each with the reason.
ALLOWED: dict[str, str] = {
    "node/store.py": "the store itself: the writer thread and its readers",
    "node/store_queries.py": "the store's named reads",
    "node/store_writes.py": "the store's named writes (WriteTx's statements)",
    "node/migrations.py": "the schema, migrated by the store on its own writing "
                          "connection before the writer starts",
    "node/backup.py": "bart node backup/restore: SQLite's online backup API takes a "
                      "snapshot beside the writer; a restore fixes the restored file "
                      "before any node runs on it",
    "node/clock.py": "one read-only read at start-up (the newest stamp, mode=ro), "
                     "before the clock stamps anything",
    "node/team/": "team.db: the team accounts' own database file, not the node store",
}

SQL_CALLS = frozenset({"execute", "executemany", "executescript"})
#: The store's private connections: only the store's modules use them.
PRIVATE = frozenset({"_reader", "_read", "_conn"})


def allowed(rel: str) -> bool:
    return any(rel == a or (a.endswith("/") and rel.startswith(a)) for a in ALLOWED)


def violations(source: str) -> list[tuple[int, str]]:
    """(line, what) for every way ``source`` runs SQL on its own."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            func = node.func
            if func.attr in SQL_CALLS:
                found.append((node.lineno, f".{func.attr}(...)"))
            elif func.attr == "connect" and isinstance(func.value, ast.Name) \
                    and func.value.id == "sqlite3":
                found.append((node.lineno, "sqlite3.connect(...)"))
        elif isinstance(node, ast.Attribute):
            if node.attr in PRIVATE and not (isinstance(node.value, ast.Name)
                                             and node.value.id == "self"):
                found.append((node.lineno, f"the store's private .{node.attr}"))
            elif node.attr == "conn" and isinstance(node.value, ast.Name) \
                    and node.value.id == "tx":
                found.append((node.lineno, "tx.conn (use WriteTx's named statements)"))
        elif isinstance(node, ast.ImportFrom) and node.module and \
                node.module.endswith("store") and any(a.name == "connect" for a in node.names):
            found.append((node.lineno, "the store's connect()"))
    return found


def test_no_module_of_the_node_runs_sql_behind_the_store() -> None:
    bad = []
    for path in sorted(NODE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if allowed(rel):
            continue
        bad += [f"{rel}:{line}: {what}" for line, what in violations(path.read_text())]
    assert not bad, ("SQL outside the store's modules: give the store a named method "
                     "(node/store_writes.py, node/store_queries.py):\n" + "\n".join(bad))


def test_every_exception_still_exists_and_says_why() -> None:
    for rel, why in ALLOWED.items():
        assert (ROOT / rel).exists(), f"{rel} is gone: drop it from ALLOWED"
        assert len(why) > 20


def test_the_clock_reads_the_database_read_only() -> None:
    source = (NODE / "clock.py").read_text()
    assert source.count("sqlite3.connect(") == source.count("?mode=ro") == 1


def test_the_check_finds_what_the_uplink_and_carry_did_before() -> None:
    """The old code of node/uplink.py and node/mesh/carry.py is caught, line by line."""
    old = '''
def read_pending(self, limit):
    conn = sqlite3.connect(f"file:{self.settings.db_path}?mode=ro", uri=True)
    return conn.execute("SELECT key, value FROM uplink_state").fetchall()

def keep(tx):
    tx.conn.execute("INSERT OR IGNORE INTO carried VALUES (?)", (1,))

def unanswered(self):
    return self.store._reader().execute("SELECT node FROM carried").fetchall()
'''
    whats = [what for _line, what in violations(old)]
    assert "sqlite3.connect(...)" in whats
    assert "tx.conn (use WriteTx's named statements)" in whats
    assert "the store's private ._reader" in whats
    assert whats.count(".execute(...)") == 3
