"""The uplink's outbox and pruning on a real SQLite store (no central needed).

- the outbox is every event beyond what central holds, in seq order, bounded;
- events being sent (in flight) are not read again for the next batch;
- pruning removes only events central holds *and* older than the retention,
  never the newest of a stream (seqs must not restart), and their receipts.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from node.config import NodeSettings
from node.reports import store_report, validate_report_input
from node.setup import init_node
from node.store import Store
from node.uplink import Uplink

DAY_MS = 86_400_000


def make_node(tmp_path: Path, clock: list[int]) -> tuple[NodeSettings, Store, Uplink]:
    settings, keys = init_node(tmp_path / "node", name="wereld", area="ESC-01")
    settings = NodeSettings.load(settings.data_dir, retention_days=30)
    store = Store(settings.db_path, origin=settings.name, keys=keys, clock_ms=lambda: clock[0])
    uplink = Uplink(settings, store, keys)
    uplink.central_origin = "central-x"  # as enrolment would set it
    return settings, store, uplink


def add_reports(store: Store, n: int) -> None:
    clean = validate_report_input({"category": "nuisance", "text": "Afval naast de container",
                                   "audience": "both"})
    for _ in range(n):
        store.write_sync(lambda tx: store_report(tx, clean, "ESC-01"))


def test_outbox_is_what_central_lacks_and_skips_what_is_in_flight(tmp_path: Path) -> None:
    clock = [1_795_000_000_000]
    _, store, uplink = make_node(tmp_path, clock)
    try:
        add_reports(store, 10)  # 10 private reports + 10 public warnings
        events, backlog, _ = uplink.read_pending(100)
        assert backlog == 20 and len(events) == 20
        store.write_sync(lambda tx: tx.set_uplink_value("acked/wereld/private", 4))
        events, backlog, _ = uplink.read_pending(100)
        assert backlog == 16
        assert [e.seq for e in events if e.stream == "private"] == list(range(5, 11))
        uplink._inflight = {("wereld", "private"): 8, ("wereld", "public"): 10}
        events, backlog, _ = uplink.read_pending(100)
        assert backlog == 16  # still owed to central
        assert [(e.stream, e.seq) for e in events] == [("private", 9), ("private", 10)]
        uplink._inflight = {}
        events, _, _ = uplink.read_pending(5)
        assert len(events) == 5  # bounded
    finally:
        store.close()


def test_prune_keeps_what_central_lacks_the_recent_and_the_newest(tmp_path: Path) -> None:
    clock = [1_795_000_000_000]
    settings, store, uplink = make_node(tmp_path, clock)
    try:
        add_reports(store, 6)  # old: seqs 1..6 in both streams
        clock[0] += 40 * DAY_MS
        add_reports(store, 2)  # recent: seqs 7..8
        clock[0] += 1000
        store.write_sync(lambda tx: tx.set_uplink_value("acked/wereld/private", 8))
        store.write_sync(lambda tx: tx.set_uplink_value("acked/wereld/public", 3))
        gone = asyncio.run(uplink.prune())
        with sqlite3.connect(settings.db_path) as conn:
            private = [r[0] for r in conn.execute(
                "SELECT seq FROM events WHERE stream = 'private' ORDER BY seq")]
            public = [r[0] for r in conn.execute(
                "SELECT seq FROM events WHERE stream = 'public' ORDER BY seq")]
            receipts = conn.execute("SELECT COUNT(*) FROM receipts").fetchone()[0]
        assert private == [7, 8]  # old and held by central: gone
        assert public == [4, 5, 6, 7, 8]  # central holds only 1..3 of these
        assert gone == 9 and receipts == 2
        # The store's seqs go on where they were (the newest of each stream stays).
        add_reports(store, 1)
        with sqlite3.connect(settings.db_path) as conn:
            top = conn.execute("SELECT MAX(seq) FROM events WHERE stream = 'private'").fetchone()
        assert top[0] == 9
    finally:
        store.close()


def test_the_watch_and_the_back_off_run_on_the_injected_clock_and_jitter(
        tmp_path: Path) -> None:
    """Uplink's timers take ``monotonic`` and its back-off ``uniform`` as given (issue 16):
    an alarm's fast polling ends after ``uplink_alarm_watch_s`` of that clock."""
    settings, keys = init_node(tmp_path / "node", name="wereld", area="ESC-01")
    settings = NodeSettings.load(settings.data_dir, uplink_alarm_watch_s=60.0)
    store = Store(settings.db_path, origin=settings.name, keys=keys)
    now = [1000.0]
    picks: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        picks.append((low, high))
        return high

    uplink = Uplink(settings, store, keys, monotonic=lambda: now[0], uniform=uniform)
    try:
        alarm = store.write_sync(lambda tx: tx.append_local("alert", "public", {
            "source": "button", "category": "emergency", "severity": "extreme",
            "title": "", "text": "", "place": {"point": None, "text": ""},
            "areas": ["ESC-01"], "expires": None, "ref": None, "called_112": False,
            "called_112_by": "", "button": "hek"}))
        uplink.wake([alarm])
        assert uplink.watching() and uplink.state.watching == 1
        now[0] += 59.0
        assert uplink.watching()
        now[0] += 1.0
        assert not uplink.watching() and uplink.state.watching == 0
        uplink.state.failures = 3
        assert uplink._backoff() == 8.0 and picks == [(1.0, 8.0)]
    finally:
        store.close()
