"""The node store on real SQLite files: durability settings, seq, idempotency."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from node.errors import SeqConflict
from node.reports import store_report, validate_report_input
from node.store import Store, WriteTx
from sync import Event, KeyPair, make_event
from sync.replication import Held

ALERT = {"source": "team", "title": "Let op"}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "node.db", origin="n1", keys=KeyPair.generate())
    yield s
    s.close()


def test_pragmas_and_migrations(store: Store, tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "node.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    names = [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY name")]
    assert names == ["001_events", "002_receipts", "003_point_presses", "004_json_indexes",
                     "005_uplink", "006_armed_alarms", "007_mesh", "008_receipt_reply",
                     "009_central_state", "010_alert_ref"]
    # The writer's own connection runs with synchronous=FULL (2).
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_concurrent_appends_get_gapless_seqs_in_few_commits(store: Store) -> None:
    async def main() -> list[int]:
        events = await asyncio.gather(*[
            store.write(lambda tx: tx.append_local("alert", "public", ALERT))
            for _ in range(300)])
        return [e.seq for e in events]

    seqs = asyncio.run(main())
    assert sorted(seqs) == list(range(1, 301))
    assert store.commits < 300  # group commit coalesced them
    assert store.heads() == {("n1", "public"): Held(300)}


def test_failure_in_one_work_item_does_not_affect_others(store: Store) -> None:
    def bad(tx: object) -> None:
        tx.append_local("alert", "public", ALERT)  # type: ignore[attr-defined]
        raise ValueError("boom")

    async def main() -> None:
        ok1 = store.write(lambda tx: tx.append_local("alert", "public", ALERT))
        fail = store.write(bad)
        ok2 = store.write(lambda tx: tx.append_local("alert", "public", ALERT))
        results = await asyncio.gather(ok1, fail, ok2, return_exceptions=True)
        assert isinstance(results[1], ValueError)
        assert sorted(r.seq for r in (results[0], results[2])) == [1, 2]  # type: ignore[union-attr]

    asyncio.run(main())
    assert store.count_events() == 2


def test_foreign_events_are_idempotent_and_conflicts_refused(store: Store) -> None:
    peer = KeyPair.generate()
    e1 = make_event(peer, origin="peer", stream="public", seq=1, kind="alert", ts=1795904700000,
                    body=ALERT)
    assert store.write_sync(lambda tx: tx.insert(e1)) is True
    assert store.write_sync(lambda tx: tx.insert(e1)) is False
    forged = make_event(peer, origin="peer", stream="public", seq=1, kind="alert",
                        ts=1795904700001, body=ALERT)
    with pytest.raises(SeqConflict):
        store.write_sync(lambda tx: tx.insert(forged))
    assert store.count_events() == 1


def test_report_with_neighbours_makes_a_public_warning_without_contact(store: Store) -> None:
    clean = validate_report_input({
        "category": "suspicious", "text": "man bij auto's", "audience": "both",
        "contact": "06-12345678", "place": {"point": None, "text": "Hoepelhof"}})
    done = store.write_sync(lambda tx: store_report(tx, clean, "ESC-01"))
    assert done.report.stream == "private" and done.report.body["contact"] == "06-12345678"
    assert done.warning is not None and done.warning.stream == "public"
    assert "06-12345678" not in done.warning.encode().decode()
    assert done.warning.body["ref"] == done.report.id
    state, event = store.receipt(done.report.body["receipt"])  # type: ignore[misc]
    assert state == "received" and event.id == done.report.id

    private = validate_report_input({**clean, "audience": "authorities"})
    only = store.write_sync(lambda tx: store_report(tx, private, "ESC-01"))
    assert only.warning is None


def test_a_prepared_event_is_stored_as_made_only_while_it_fits(store: Store) -> None:
    now = store.clock_ms()
    early = store.prepare_local("alert", "public", ALERT, now - 5)
    assert early.seq == 1 and store.count_events() == 0  # made, not stored
    stored = store.write_sync(lambda tx: tx.append_local("alert", "public", ALERT,
                                                         prepared=early))
    assert stored is early  # signed during the hold, inserted at its deadline
    assert store.get_event(early.id) == early
    assert store.heads() == {("n1", "public"): Held(1)}

    # Another event of the stream came first: its seq is taken, so a new event.
    late = store.prepare_local("alert", "public", ALERT, store.clock_ms())
    store.write_sync(lambda tx: tx.append_local("alert", "public", ALERT))
    made = store.write_sync(lambda tx: tx.append_local("alert", "public", ALERT,
                                                       prepared=late))
    assert made.id != late.id and made.seq == 3
    # Not yet due (ts ahead of the transaction), too old, or of another kind: made anew.
    status = {"event": "button_fault", "button": "b1"}
    other = {"source": "team", "title": "Iets anders"}
    for ts, kind, stream, body in ((store.clock_ms() + 60_000, "alert", "public", ALERT),
                                   (now - 61_000, "alert", "public", ALERT),
                                   (store.clock_ms(), "status", "private", status),
                                   (store.clock_ms(), "alert", "public", other)):
        odd = store.prepare_local(kind, stream, body, ts)
        made = store.write_sync(lambda tx, odd=odd: tx.append_local("alert", "public", ALERT,
                                                                     prepared=odd))
        assert made.id != odd.id and made.verify(store.keys.signing_public) is None
    assert store.heads() == {("n1", "public"): Held(7)} and store.count_events() == 7


def test_covered_work_commits_without_a_flush_unless_it_writes_something_new(
        store: Store) -> None:
    def synchronous() -> int:
        return int(store._conn.execute("PRAGMA synchronous").fetchone()[0])

    seen: list[int] = []

    def append(prepared: Event | None) -> Callable[[WriteTx], Event]:
        def work(tx: WriteTx) -> Event:
            seen.append(synchronous())
            return tx.append_local("alert", "public", ALERT, prepared=prepared)
        return work

    # Covered and stored as prepared: one COMMIT with synchronous=NORMAL (1).
    ready = store.prepare_local("alert", "public", ALERT, store.clock_ms())
    assert store.submit(append(ready), already_durable=True).result(10) is ready
    assert (store.unflushed_commits, seen) == (1, [1])
    assert synchronous() == 2  # FULL again for everything else
    # Covered, but the prepared event no longer fits (its seq is taken): the
    # event is made anew, so the transaction runs again, flushed.
    stale = store.prepare_local("alert", "public", ALERT, store.clock_ms() - 1)
    store.write_sync(lambda tx: tx.append_local("alert", "public", ALERT))
    made = store.submit(append(stale), already_durable=True).result(10)
    assert made.id != stale.id and made.seq == 3
    assert store.unflushed_commits == 1 and seen[1:] == [1, 2]
    assert store.heads() == {("n1", "public"): Held(3)} and store.count_events() == 3
    # Covered work in one transaction with uncovered work: flushed.
    gate, held = threading.Event(), threading.Event()

    def hold(tx: WriteTx) -> None:  # holds the writer (in its own batch) while two queue
        held.set()
        gate.wait(10)

    store.submit(hold)
    assert held.wait(10)
    ready = store.prepare_local("alert", "public", ALERT, store.clock_ms())
    first = store.submit(append(ready), already_durable=True)
    second = store.submit(append(None))
    gate.set()
    assert first.result(10) is ready and second.result(10).seq == 5
    assert store.unflushed_commits == 1 and seen[-2:] == [2, 2]
    assert synchronous() == 2
    # Covered work next to covered work that raises: isolated, and flushed.

    def fails(tx: WriteTx) -> None:
        raise ValueError("no")

    gate.clear()
    held.clear()
    store.submit(hold)
    assert held.wait(10)
    ready = store.prepare_local("alert", "public", ALERT, store.clock_ms())
    good = store.submit(append(ready), already_durable=True)
    bad = store.submit(fails, already_durable=True)
    gate.set()
    assert good.result(10) is ready and isinstance(bad.exception(10), ValueError)
    assert store.unflushed_commits == 1 and seen[-2:] == [1, 2] and synchronous() == 2


def test_heads_survive_reopen(tmp_path: Path) -> None:
    keys = KeyPair.generate()
    with Store(tmp_path / "n.db", origin="n1", keys=keys) as s:
        for _ in range(5):
            s.write_sync(lambda tx: tx.append_local("alert", "public", ALERT))
    with Store(tmp_path / "n.db", origin="n1", keys=keys) as s:
        event = s.write_sync(lambda tx: tx.append_local("alert", "public", ALERT))
        assert event.seq == 6
        assert sqlite3.connect(tmp_path / "n.db").execute(
            "PRAGMA integrity_check").fetchone()[0] == "ok"


def test_receipt_collision_rolls_back_without_a_gap(store: Store, monkeypatch) -> None:
    import node.reports as reports

    codes = iter(["AAA-AAA", "AAA-AAA", "BBB-BBB"])
    monkeypatch.setattr(reports, "new_receipt", lambda: next(codes))
    clean = validate_report_input({"category": "nuisance", "audience": "authorities"})
    first = store.write_sync(lambda tx: store_report(tx, clean, "ESC-01"))
    # The second try collides, is rolled back, and runs again (isolated) with a new code.
    second = store.write_sync(lambda tx: store_report(tx, clean, "ESC-01"))
    assert first.report.body["receipt"] == "AAA-AAA"
    assert second.report.body["receipt"] == "BBB-BBB"
    assert (first.report.seq, second.report.seq) == (1, 2)  # the collision used no seq
    assert store.count_events() == 2


def test_button_faults_follow_the_last_fault_event(store: Store) -> None:
    from node.buttons import press_task

    assert store.button_faults() == []
    store.write_sync(press_task("hek", "klimboom", "fault", "ESC-01", None))
    store.write_sync(press_task("bank", "plein", "fault", "ESC-01", None))
    assert sorted(b for b, _ in store.button_faults()) == ["bank", "hek"]
    store.write_sync(press_task("hek", "klimboom", "fault_cleared", "ESC-01", None))
    assert [b for b, _ in store.button_faults()] == ["bank"]
    # A fault cleared within the same millisecond (one transaction: one clock
    # reading) is cleared: the last event decides by seq, not by time.
    store.write_sync(lambda tx: [press_task("bank", "plein", "fault_cleared", "ESC-01", None)(tx),
                                 press_task("bank", "plein", "fault", "ESC-01", None)(tx)])
    assert [b for b, _ in store.button_faults()] == ["bank"]
    store.write_sync(lambda tx: [press_task("bank", "plein", kind, "ESC-01", None)(tx)
                                 for kind in ("fault", "fault_cleared")])
    assert store.button_faults() == []


def test_team_answers_keep_names_out_of_public(store: Store) -> None:
    from node.alarms import store_team_ack

    alarm = store.write_sync(lambda tx: tx.append_local("alert", "public", ALERT))
    public, private = store.write_sync(
        lambda tx: store_team_ack(tx, alarm.id, "on_my_way", "Fatima", "ik neem de fiets"))
    assert public.stream == "public" and public.body["by"] == "team"
    assert public.body["note"] == "" and "Fatima" not in public.encode().decode()
    assert private.stream == "private" and private.body["by"] == "Fatima"
    item = next(i for i in store.open_items() if i["id"] == alarm.id)
    assert (item["state"], item["by"]) == ("on_my_way", "Fatima")  # the team sees who


def _peer_alert(keys: KeyPair, seq: int) -> Event:
    return make_event(keys, origin="peer", stream="public", seq=seq, kind="alert",
                      body=ALERT, ts=1_795_000_000_000 + seq)


def test_heads_are_gapless_prefix_plus_ranges_and_survive_a_restart(tmp_path: Path) -> None:
    """Events of a peer received out of order: the prefix and the islands beyond it,
    in memory after each COMMIT and read back the same at the next start."""
    peer = KeyPair.generate()
    path = tmp_path / "node.db"
    with Store(path, origin="n1", keys=KeyPair.generate()) as store:
        for seq in (1, 2, 5, 6, 9):
            store.write_sync(lambda tx, seq=seq: tx.insert(_peer_alert(peer, seq)))
        store.write_sync(lambda tx: tx.append_local("alert", "public", ALERT))
        assert store.heads("public") == {("peer", "public"): Held(2, [(5, 6), (9, 9)]),
                                         ("n1", "public"): Held(1)}
    with Store(path, origin="n1", keys=KeyPair.generate()) as store:
        assert store.heads() == {("peer", "public"): Held(2, [(5, 6), (9, 9)]),
                                 ("n1", "public"): Held(1)}
        for seq in (3, 4):
            store.write_sync(lambda tx, seq=seq: tx.insert(_peer_alert(peer, seq)))
        assert store.heads()[("peer", "public")] == Held(6, [(9, 9)])
        assert [e.seq for e in store.events_between("peer", "public", 2, 6, 10)] == \
            [2, 3, 4, 5, 6]


def test_heads_leave_out_what_a_failed_piece_wrote(store: Store) -> None:
    """A piece that raises is rolled back to its savepoint: its seqs are not held."""
    peer = KeyPair.generate()

    def fails(tx: WriteTx) -> None:
        tx.insert(_peer_alert(peer, 3))
        raise RuntimeError("refused after writing")

    async def main() -> None:
        ok = store.write(lambda tx: tx.insert(_peer_alert(peer, 1)))
        bad = store.write(fails)
        results = await asyncio.gather(ok, bad, return_exceptions=True)
        assert results[0] is True and isinstance(results[1], RuntimeError)

    asyncio.run(main())
    assert store.heads() == {("peer", "public"): Held(1)}


def test_pruned_seqs_count_as_held_at_start(tmp_path: Path) -> None:
    """A floor (seqs pruned because central holds them) keeps the prefix where it was."""
    peer = KeyPair.generate()
    path = tmp_path / "node.db"
    with Store(path, origin="n1", keys=KeyPair.generate()) as store:
        for seq in range(1, 6):
            store.write_sync(lambda tx, seq=seq: tx.insert(_peer_alert(peer, seq)))

        def prune(tx: WriteTx) -> None:
            tx.conn.execute("DELETE FROM events WHERE origin = 'peer' AND seq <= 3")
            tx.conn.execute("INSERT INTO held_floor VALUES ('peer', 'public', 3)")

        store.write_sync(prune)
    with Store(path, origin="n1", keys=KeyPair.generate()) as store:
        assert store.heads() == {("peer", "public"): Held(5)}


def test_transaction_work_runs_only_on_the_writer_thread(store: Store) -> None:
    """The threading contract (node/store.py): a WriteTx kept past its work and
    used from another thread is refused, and nothing is written."""
    kept: list[WriteTx] = []
    store.write_sync(lambda tx: kept.append(tx))
    from node.errors import StoreError
    with pytest.raises(StoreError, match="writer thread"):
        kept[0].append_local("alert", "public", {"source": "team", "title": "Laat"})
    assert store.count_events() == 0 and store.head(store.origin, "public") == 0

