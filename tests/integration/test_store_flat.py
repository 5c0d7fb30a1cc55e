"""Reads the pages make cost the same with a long history (issue "cost flat").

The home page finds the answers (acks) to the alerts it shows and the alerts
that replaced them; the team page the answers to its items; a button the last
answer to its alarm. Each lookup must go through its index, whatever SQLite's
planner would pick without statistics. Measured in SQLite's own unit of work
(virtual-machine steps, counted by a progress handler on the store's reader),
not in milliseconds: a walk over the history is thousands of times more steps
and no machine's speed changes the count.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node.store import Store
from sync import KeyPair

TS = 1_795_000_000_000


def fill(path: Path, n: int) -> list[str]:
    """``n`` team alerts, each with two answers, and every tenth replaced by a later alert
    of its origin; returns the alert ids, oldest first."""
    conn = sqlite3.connect(path)
    alerts, rows = [], []
    common = {"source": "team", "category": "other", "severity": "moderate", "title": "t",
              "text": "", "place": {"point": None, "text": ""}, "areas": ["ESC-01"],
              "expires": None, "called_112": False, "called_112_by": "", "button": None}
    seq = {"alert": 0, "ack": 0}
    for i in range(n):
        ident = str(uuid.UUID(int=i + 1))
        alerts.append(ident)
        seq["alert"] += 1
        rows.append((ident, "peer", "public", seq["alert"], TS + i * 10, "alert",
                     json.dumps({**common, "ref": None})))
        for action in ("seen", "on_my_way"):
            seq["ack"] += 1
            rows.append((str(uuid.uuid4()), "acks", "public", seq["ack"], TS + i * 10 + 1, "ack",
                         json.dumps({"ref": ident, "action": action, "by": "team", "note": "",
                                     "to": None})))
        if i % 10 == 0:
            seq["alert"] += 1
            rows.append((str(uuid.uuid4()), "peer", "public", seq["alert"], TS + i * 10 + 2,
                         "alert", json.dumps({**common, "ref": ident})))
    conn.executemany("INSERT INTO events (id, origin, stream, seq, ts, kind, body, sig, "
                     "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, x'00', 0)", rows)
    conn.commit()
    conn.close()
    return alerts


def steps(store: Store, call: Callable[[], Any]) -> int:
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0

    reader = store._reader()
    reader.set_progress_handler(tick, 100)
    try:
        call()
    finally:
        reader.set_progress_handler(None, 100)
    return count[0] * 100


def measure(tmp_path: Path, n: int) -> dict[str, int]:
    path = tmp_path / f"n{n}.db"
    Store(path, origin="n1", keys=KeyPair.generate()).close()  # the schema
    alerts = fill(path, n)
    store = Store(path, origin="n1", keys=KeyPair.generate())
    try:
        newest = alerts[-50:]
        replaced = [a for i, a in enumerate(alerts) if i % 10 == 0][-5:]
        assert store.replaced_alerts(replaced + newest[:5]) == set(replaced)
        assert len(store.acks_for(newest)) == 50
        return {
            "acks_for": steps(store, lambda: store.acks_for(newest)),
            "replaced_alerts": steps(store, lambda: store.replaced_alerts(newest)),
            "open_items": steps(store, lambda: store.open_items(limit=100)),
        }
    finally:
        store.close()


def test_page_lookups_do_not_grow_with_history(tmp_path: Path) -> None:
    small, large = measure(tmp_path, 1_000), measure(tmp_path, 30_000)
    for name in small:
        # Index lookups grow with log(n) at most; a walk would be 30x.
        assert large[name] <= 2 * small[name] + 2_000, (name, small[name], large[name])
