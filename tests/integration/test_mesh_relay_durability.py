"""Relayed events are committed without a flush (docs/mesh.md, "Relayed events
are stored without a flush"; node/store.py's docstring).

A public event that a node neither made nor acknowledged to anyone — relayed
by a peer, fetched by catch-up — is committed with ``synchronous=NORMAL``;
everything else keeps ``synchronous=FULL``, and a transaction holding both
flushes. A power cut can then lose only a suffix of relayed COMMITs: the
heads a node loads at start are what its file holds, and catch-up fetches
the rest again. Checked here on real SQLite files (the pragma seen inside the
transaction, fsyncs counted with strace, a WAL cut back to an earlier COMMIT
as a power cut leaves it) and with two real ``bart node run`` processes.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from node.store import Store, WriteTx, load_held
from sync import Event, KeyPair, make_event
from sync.replication import Held
from tests.support.base import free_port, require_binary, wait_until
from tests.support.node import NodeProcess, init_node, mesh_settings

pytestmark = pytest.mark.timeout(180)

ALERT = {"source": "team", "title": "Let op"}
PEER_BODY = {"source": "team", "category": "suspicious", "severity": "moderate",
             "title": "Buurtteam", "text": "", "areas": []}
FULL, NORMAL = 2, 1


def _peer_events(keys: KeyPair, first: int, n: int, origin: str = "peer") -> list[Event]:
    now = int(time.time() * 1000)
    return [make_event(keys, origin=origin, stream="public", seq=seq, kind="alert", ts=now,
                       body=PEER_BODY) for seq in range(first, first + n)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "n.db", origin="n1", keys=KeyPair.generate()) as s:
        yield s


def _synchronous(tx: WriteTx) -> int:
    return int(tx.conn.execute("PRAGMA synchronous").fetchone()[0])


def _hold(store: Store) -> threading.Event:
    """Hold the writer in a transaction of its own; set the returned gate to
    let it go: what is queued meanwhile commits as one group."""
    gate, held = threading.Event(), threading.Event()

    def hold(tx: WriteTx) -> None:
        held.set()
        gate.wait(10)

    store.submit(hold)
    assert held.wait(10)
    return gate


def test_a_relayed_write_commits_with_normal_a_local_one_with_full(store: Store) -> None:
    peer = KeyPair.generate()
    seen: list[tuple[str, int]] = []

    def relayed(events: list[Event]) -> Callable[[WriteTx], int]:
        def work(tx: WriteTx) -> int:
            seen.append(("relayed", _synchronous(tx)))
            return sum(tx.insert(e) for e in events)
        return work

    def local(tx: WriteTx) -> Event:
        seen.append(("local", _synchronous(tx)))
        return tx.append_local("alert", "public", ALERT)

    # Alone: a relayed write (threads and the event loop alike) commits without a flush.
    assert store.submit(relayed(_peer_events(peer, 1, 2)), durable=False).result(10) == 2

    async def from_the_loop() -> int:
        return await store.write_soon(relayed(_peer_events(peer, 3, 1)), durable=False)

    assert asyncio.run(from_the_loop()) == 1
    assert store.unflushed_commits == 2
    # A local write, and a write of the default kind: flushed.
    store.write_sync(local)
    assert seen == [("relayed", NORMAL), ("relayed", NORMAL), ("local", FULL)]
    assert store.unflushed_commits == 2
    writer = store._conn
    assert writer.execute("PRAGMA synchronous").fetchone()[0] == FULL  # restored

    # One group with a relayed and a local write: the group flushes.
    gate = _hold(store)
    a = store.submit(relayed(_peer_events(peer, 4, 1)), durable=False)
    b = store.submit(local)
    gate.set()
    assert a.result(10) == 1 and b.result(10).seq == 2
    assert seen[-2:] == [("relayed", FULL), ("local", FULL)]
    assert store.unflushed_commits == 2

    # A group of relayed writes only, and relayed next to already durable work: no flush.
    gate = _hold(store)
    c = store.submit(relayed(_peer_events(peer, 5, 1)), durable=False)
    d = store.submit(relayed(_peer_events(peer, 6, 1)), durable=False)
    ready = store.prepare_local("alert", "public", ALERT, store.clock_ms())
    e = store.submit(lambda tx: tx.append_local("alert", "public", ALERT, prepared=ready),
                     already_durable=True)
    gate.set()
    assert (c.result(10), d.result(10), e.result(10)) == (1, 1, ready)
    assert seen[-2:] == [("relayed", NORMAL), ("relayed", NORMAL)]
    assert store.unflushed_commits == 3
    # Relayed next to covered work that turns out to write something new: flushed.
    gate = _hold(store)
    f = store.submit(relayed(_peer_events(peer, 7, 1)), durable=False)
    stale = store.prepare_local("alert", "public", ALERT, store.clock_ms() - 1)
    store.submit(lambda tx: tx.append_local("alert", "public", ALERT))  # takes its seq
    g = store.submit(lambda tx: tx.append_local("alert", "public", ALERT, prepared=stale),
                     already_durable=True)
    gate.set()
    assert f.result(10) == 1 and g.result(10).id != stale.id
    assert store.unflushed_commits == 3
    assert seen[-1] == ("relayed", FULL)  # the group ran again, flushed
    assert writer.execute("PRAGMA synchronous").fetchone()[0] == FULL
    assert store.heads() == {("n1", "public"): Held(5), ("peer", "public"): Held(7)}


_FSYNC_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from node.store import Store
    from sync import KeyPair, make_event
    path, kind, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    peer = KeyPair.generate()
    body = {"source": "team", "category": "suspicious", "severity": "moderate",
            "title": "Buurtteam", "text": "", "areas": []}
    events = [make_event(peer, origin="peer", stream="public", seq=s, kind="alert",
                         ts=int(time.time() * 1000), body=body) for s in range(1, n + 1)]
    store = Store(path, origin="n1", keys=KeyPair.generate())
    store.write_sync(lambda tx: None)  # opened, migrated
    open("/dev/null", "w").close()  # a marker in the trace: from here
    for e in events:
        if kind == "relayed":
            store.submit(lambda tx, e=e: tx.insert(e), durable=False).result(10)
        else:
            store.write_sync(lambda tx: tx.append_local("alert", "public", {"source": "team",
                                                        "title": "Let op"}))
    open("/dev/null", "w").close()  # to here
    store.close()
""")


def _fsyncs(tmp_path: Path, kind: str, n: int) -> int:
    """fsync/fdatasync calls of ``n`` single-write transactions of ``kind``."""
    strace = require_binary("strace")  # CI=true: a missing strace fails, never skips
    script = tmp_path / "writes.py"
    script.write_text(_FSYNC_SCRIPT, encoding="utf-8")
    trace = tmp_path / f"{kind}.trace"
    result = subprocess.run(
        [strace, "-f", "-qq", "-o", str(trace), "-e", "trace=fsync,fdatasync,openat",
         sys.executable, str(script), str(tmp_path / f"{kind}.db"), kind, str(n)],
        capture_output=True, text=True, timeout=120, check=False,
        cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr[-2000:]
    lines = trace.read_text().splitlines()
    marks = [i for i, line in enumerate(lines) if '"/dev/null"' in line]
    assert len(marks) == 2, lines[-20:]
    between = lines[marks[0]:marks[1]]
    return sum(1 for line in between if "fsync(" in line or "fdatasync(" in line)


def test_relayed_commits_make_no_fsync_local_ones_do(tmp_path: Path) -> None:
    n = 20
    relayed = _fsyncs(tmp_path, "relayed", n)
    local = _fsyncs(tmp_path, "local", n)
    print(f"{n} relayed COMMITs: {relayed} fsyncs; {n} local COMMITs: {local} fsyncs")
    assert relayed == 0
    assert local >= n


# -- a power cut, as the disk may be left by one -----------------------------------------

def _commit_ends(wal: Path) -> list[int]:
    """File offsets just after each COMMIT frame of the WAL's current generation."""
    data = wal.read_bytes()
    if len(data) < 32:
        return []
    page_size = struct.unpack(">I", data[8:12])[0]
    salts = data[16:24]
    ends, offset = [], 32
    while offset + 24 + page_size <= len(data):
        header = data[offset:offset + 24]
        if header[8:16] != salts:
            break
        offset += 24 + page_size
        if struct.unpack(">I", header[4:8])[0]:  # db size after commit: a COMMIT frame
            ends.append(offset)
    return ends


def _cut(src: Path, dst: Path, end: int) -> None:
    """Copy the database ``src`` to ``dst`` with its WAL cut after byte ``end``:
    what a power cut leaves when the frames after ``end`` never reached the disk."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    with open(f"{src}-wal", "rb") as fh:
        Path(f"{dst}-wal").write_bytes(fh.read(end))
    Path(f"{dst}-shm").unlink(missing_ok=True)


def _on_file(path: Path) -> dict[tuple[str, str], Held]:
    """What the file holds, seq by seq (independent of load_held's shortcuts)."""
    conn = sqlite3.connect(path)
    try:
        out: dict[tuple[str, str], Held] = {}
        for origin, stream, floor in conn.execute("SELECT origin, stream, seq FROM held_floor"):
            out[(origin, stream)] = Held(floor)
        for origin, stream, seq in conn.execute("SELECT origin, stream, seq FROM events"):
            out.setdefault((origin, stream), Held()).add(seq)
        return {k: v for k, v in out.items() if v.top}
    finally:
        conn.close()


def _events(path: Path) -> dict[str, tuple[str, str, int]]:
    conn = sqlite3.connect(path)
    try:
        return {i: (o, s, q) for i, o, s, q in conn.execute(
            "SELECT id, origin, stream, seq FROM events")}
    finally:
        conn.close()


def _inserting(events: list[Event]) -> Callable[[WriteTx], int]:
    """The mesh's work for events of peers: insert each; how many were new."""
    def work(tx: WriteTx) -> int:
        return sum(tx.insert(e) for e in events)
    return work


def test_a_power_cut_loses_only_relayed_commits_and_the_heads_say_so(tmp_path: Path) -> None:
    keys, peer = KeyPair.generate(), KeyPair.generate()
    path = tmp_path / "live" / "n.db"
    made = _peer_events(peer, 1, 8)  # seqs 6 and 7 never arrive
    live = Store(path, origin="n1", keys=keys)
    try:
        live.write_sync(lambda tx: tx.append_local("alert", "public", ALERT))
        for event in made[:3]:
            live.submit(_inserting([event]), durable=False).result(10)
        # A flushed COMMIT after relayed ones: it takes them to the disk with it.
        live.write_sync(lambda tx: tx.append_local("alert", "public", ALERT))
        flushed = _commit_ends(Path(f"{path}-wal"))[-1]
        # Relayed after the last flush, out of order (a gap, as catch-up can leave).
        for event in [made[3], made[4], made[7]]:
            live.submit(_inserting([event]), durable=False).result(10)
        assert live.unflushed_commits == 6
        everything = _events(path)
        ends = _commit_ends(Path(f"{path}-wal"))
        assert ends[-1] > flushed and len(ends) >= 3
        for n, end in enumerate(e for e in ends if e >= flushed):
            cut = tmp_path / f"cut{n}" / "n.db"
            _cut(path, cut, end)
            held = _events(cut)
            lost = {everything[i] for i in set(everything) - set(held)}
            # Only relayed events are lost, and only those of COMMITs after the last flush.
            assert {origin for origin, _, _ in lost} <= {"peer"}
            assert all(seq in (4, 5, 8) for _, _, seq in lost)
            # The heads a node starts with are what its file holds.
            conn = sqlite3.connect(cut)
            assert load_held(conn) == _on_file(cut)
            conn.close()
            with Store(cut, origin="n1", keys=keys) as restarted:
                assert restarted.heads() == _on_file(cut)
                assert restarted.heads("public")[("n1", "public")] == Held(2)
                # Catch-up brings what was lost; what is held is not taken twice.
                missing = [made[3], made[4], made[7]]
                again = restarted.submit(_inserting(missing), durable=False).result(10)
                assert again == len(lost)
                assert restarted.heads()[("peer", "public")] == Held(5, [(8, 8)])
        assert n >= 2  # the cut before the relayed COMMITs, between them, after them
    finally:
        live.close()


# -- two real nodes: B is killed, its WAL cut back, and A's catch-up heals it --------------

def _mesh(node: NodeProcess) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(f"{node.base_url}/api/v1/mesh", timeout=5).json()
    return data


def _seqs(path: Path, origin: str) -> list[int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [s for (s,) in conn.execute(
            "SELECT seq FROM events WHERE origin = ? AND stream = 'public' ORDER BY seq",
            (origin,))]
    finally:
        conn.close()


def _other_tables(path: Path) -> dict[str, list[Any]]:
    conn = sqlite3.connect(path)
    try:
        names = [n for (n,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'events'")]
        return {n: sorted(map(repr, conn.execute(f'SELECT * FROM "{n}"'))) for n in names}
    finally:
        conn.close()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[NodeProcess, NodeProcess]]:
    mosquitto = require_binary("mosquitto", "/usr/sbin/mosquitto")
    a = init_node(tmp_path / "a", mosquitto, name="node-a")
    b = init_node(tmp_path / "b", mosquitto, name="node-b")
    for node in (a, b):
        (node.data_dir / "peers.toml").unlink()
        node.bart("trust", "export", "--out", str(tmp_path / f"{node.name}.json"))
    a.bart("trust", "add", str(tmp_path / "node-b.json"))
    b.bart("trust", "add", str(tmp_path / "node-a.json"))
    port_b = free_port()
    # No anti-entropy within the test: only a new session's catch-up can heal.
    mesh_settings(a, free_port(), [port_b], sync_s=600)  # A dials B
    mesh_settings(b, port_b, [], sync_s=600)
    try:
        yield a, b
    finally:
        for node in (a, b):
            if node.proc is not None and node.proc.poll() is None:
                node.stop()
    for node in (a, b):
        assert "Traceback" not in node.log_tail(400), node.log_tail(80)


def test_relayed_events_lost_by_a_cut_come_back_by_catch_up(
        pair: tuple[NodeProcess, NodeProcess], tmp_path: Path) -> None:
    a, b = pair
    b.start()
    a.start()
    wait_until(lambda: len(_mesh(b)["peers"]) == 1, 20, 0.2, "A and B meshed")
    for i in range(12):
        r = httpx.post(f"{a.base_url}/api/v1/reports", timeout=10, json={
            "category": "suspicious", "text": f"Melding {i}", "audience": "neighbours"})
        assert r.status_code == 201, r.text
        time.sleep(0.05)  # one relayed COMMIT each on B
    made = _seqs(a.db_path, "node-a")
    assert len(made) == 12
    wait_until(lambda: _seqs(b.db_path, "node-a") == made, 10, 0.05, "B stored A's alerts")
    assert _mesh(b)["vector"]["node-a"]["public"] == 12
    a.stop()
    b.kill()  # SIGKILL to B and its Mosquitto

    # SIGKILL keeps what the WAL holds; a power cut may drop the frames the
    # disk had not been told to keep. Cut B's WAL back, COMMIT by COMMIT,
    # until some of A's alerts are gone — checking each time that nothing but
    # relayed events is lost.
    # (Copies first: the last connection to close would checkpoint the WAL away.)
    crashed = tmp_path / "crashed" / "node.db"
    ends = _commit_ends(Path(f"{b.db_path}-wal"))
    assert ends, "B's WAL holds no COMMIT"
    _cut(b.db_path, crashed, ends[-1])
    whole = tmp_path / "whole" / "node.db"
    _cut(crashed, whole, ends[-1])
    full_rest = _other_tables(whole)
    cut_at = None
    for k, end in enumerate(reversed(ends[:-1])):
        trial = tmp_path / f"trial{k}" / "node.db"
        _cut(crashed, trial, end)
        if _other_tables(trial) != full_rest:
            break  # this COMMIT held more than relayed events: a flushed one
        if len(_seqs(trial, "node-a")) <= len(made) - 3:
            cut_at = end
            break
    assert cut_at is not None, "no COMMIT boundary that loses relayed events only"
    _cut(crashed, b.db_path, cut_at)  # B's files as the cut left them
    kept = _seqs(b.db_path, "node-a")
    assert kept == made[:len(kept)] and len(kept) <= len(made) - 3  # a suffix lost

    # At start B reads what it holds from its file: its vector claims nothing lost.
    conn = sqlite3.connect(b.db_path)
    assert load_held(conn) == _on_file(b.db_path)
    conn.close()
    b.start()
    assert _mesh(b)["vector"].get("node-a", {}).get("public", 0) == len(kept)
    assert _seqs(b.db_path, "node-a") == kept
    # A new session: A's catch-up sends what B's hello says it lacks.
    a.start()
    wait_until(lambda: _seqs(b.db_path, "node-a") == made, 20, 0.1,
               "B caught up with the alerts the cut lost")
    assert _mesh(b)["vector"]["node-a"]["public"] == 12
