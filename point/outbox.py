"""A durable outbox of button presses (SQLite, WAL, synchronous=FULL).

A press is on disk before the light changes; it leaves the outbox only when
the node confirmed it. Press ids are UUIDv7, so the node de-duplicates a press
that was delivered more than once.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sync import new_id


@dataclass(frozen=True)
class Press:
    """One button event waiting for delivery."""

    id: str
    button: str
    kind: str
    ts: int


class Outbox:
    """Presses not yet confirmed by the node, oldest first."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS presses (id TEXT PRIMARY KEY, button TEXT NOT NULL, "
            "kind TEXT NOT NULL, ts INTEGER NOT NULL, delivered_at INTEGER)")
        self._lock = threading.Lock()

    def add(self, button: str, kind: str) -> Press:
        """Store a press durably and return it."""
        press = Press(str(new_id()), button, kind, int(time.time() * 1000))
        with self._lock:
            self._conn.execute("INSERT INTO presses (id, button, kind, ts) VALUES (?, ?, ?, ?)",
                               (press.id, press.button, press.kind, press.ts))
        return press

    def pending(self) -> list[Press]:
        """Presses the node has not confirmed, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, button, kind, ts FROM presses WHERE delivered_at IS NULL "
                "ORDER BY id").fetchall()
        return [Press(*row) for row in rows]

    def delivered(self, press_id: str) -> bool:
        """Mark a press confirmed; False if it was unknown or already confirmed."""
        with self._lock:
            cur = self._conn.execute(
                "UPDATE presses SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL",
                (int(time.time() * 1000), press_id))
        return cur.rowcount == 1

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._conn.close()
