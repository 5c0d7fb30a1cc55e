"""Baseline servers for bench/ingest.py: the node's own stack, only the storing differs.

Run: ``.venv/bin/python bench/_baseline_app.py lean|naive node run --data-dir DIR``

This is ``bart node run`` itself (same CLI, settings from the same ``bart node
init`` data directory, ``node.server.serve``: the same uvicorn settings and
guarded h11 protocol, the same ASGI entry ``StreamLimit`` → ``CaptivePortal`` →
``ReportIngest`` → FastAPI, the same body limit, content-type check, rate
limiter, ``intake.from_json`` and ``intake.check`` and the same answer). Only
the node's runtime is replaced, so that ``intake.store`` →
``runtime.submit_report(clean)`` does one of:

* ``lean``: nothing (answers 201 with a new id and receipt code): the cost
  of the stack, parsing and validation alone;
* ``naive``: what a straightforward implementation would do: one SQLite
  connection (WAL, ``synchronous=FULL``, as the node's store), and per request
  its own transaction: ``INSERT`` of the cleaned report, ``COMMIT``. The
  blocking write runs on one dedicated worker thread
  (``ThreadPoolExecutor(max_workers=1)``), awaited with ``run_in_executor``:
  it keeps the event loop free (as the node's writer thread does), and one
  thread is what one connection allows without a lock — ``asyncio.to_thread``
  would hand the one connection to several pool threads that then queue on
  that lock anyway. Neither signs events, stores a public warning or
  publishes to MQTT: the node does all three, so the comparison can only
  flatter the baseline.

No Mosquitto, mesh, uplink or buttons are started (the runtime's ``start`` is
a no-op); ``/healthz`` answers ok.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NAIVE_DB = "naive.db"


@dataclass
class _Stored:
    """What ``ReportIngest`` reads of a stored report (as ``node.reports.Submitted``)."""

    id: str
    body: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Submitted:
    report: _Stored
    warning: _Stored | None


class LeanRuntime:
    """A node runtime that stores nothing: validation and HTTP only."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        # Read by other routes (team, mesh) but never on the measured path.
        self.mesh = self.carrier = self.uplink = self.buttons = self.store = None

    async def start(self) -> None:
        """Nothing to start."""

    async def stop(self) -> None:
        """Nothing to stop."""

    def health(self) -> dict[str, Any]:
        """Always ready."""
        return {"status": "ok", "node": self.settings.name, "baseline": type(self).__name__}

    def _answer(self, clean: Mapping[str, Any]) -> _Submitted:
        from node.reports import new_receipt

        report = _Stored(uuid.uuid4().hex, {"receipt": new_receipt()})
        public = clean.get("audience") != "authorities"
        return _Submitted(report, _Stored(uuid.uuid4().hex) if public else None)

    async def submit_report(self, clean: Mapping[str, Any]) -> _Submitted:
        """Answer as if stored."""
        return self._answer(clean)


class NaiveRuntime(LeanRuntime):
    """One connection, one transaction (INSERT + COMMIT) per report, synchronous=FULL."""

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="naive-writer")
        self._conn: sqlite3.Connection | None = None

    def _open(self) -> None:
        conn = sqlite3.connect(Path(self.settings.data_dir) / NAIVE_DB, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS reports (id TEXT PRIMARY KEY, "
                     "receipt TEXT NOT NULL UNIQUE, received_at INTEGER NOT NULL, "
                     "body TEXT NOT NULL)")
        self._conn = conn

    async def start(self) -> None:
        """Open the database on the writer thread."""
        await asyncio.get_running_loop().run_in_executor(self._pool, self._open)

    async def stop(self) -> None:
        """Close the database, then the writer thread."""
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        await asyncio.get_running_loop().run_in_executor(self._pool, close)
        self._pool.shutdown()

    def _insert(self, done: _Submitted, clean: Mapping[str, Any]) -> None:
        assert self._conn is not None
        body = json.dumps(clean, ensure_ascii=False, separators=(",", ":"))
        self._conn.execute("BEGIN")
        try:
            self._conn.execute("INSERT INTO reports VALUES (?, ?, ?, ?)",
                               (done.report.id, done.report.body["receipt"],
                                int(time.time() * 1000), body))
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    async def submit_report(self, clean: Mapping[str, Any]) -> _Submitted:
        """Insert and commit in the writer thread; answer after the COMMIT."""
        done = self._answer(clean)
        await asyncio.get_running_loop().run_in_executor(self._pool, self._insert, done, clean)
        return done


def main() -> int:
    """Patch the node's runtime class, then run the node's own CLI."""
    kind = sys.argv[1] if len(sys.argv) > 1 else ""
    runtimes: dict[str, type[LeanRuntime]] = {"lean": LeanRuntime, "naive": NaiveRuntime}
    if kind not in runtimes:
        print("usage: _baseline_app.py lean|naive node run --data-dir DIR", file=sys.stderr)
        return 2
    import node.portal.app

    node.portal.app.NodeRuntime = runtimes[kind]  # type: ignore[attr-defined,assignment]
    from bart.cli import main as bart_main

    return int(bart_main(sys.argv[2:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
