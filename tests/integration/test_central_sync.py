"""Node → central over real HTTP: real node processes, real central processes,
a SQLite file and a real PostgreSQL server (issue #4's integration list).

- reports reach central, receipts turn "forwarded", uplink state in /healthz;
- 1,000 events made while central is down arrive exactly once when it is up;
- central SIGKILLed in the middle of the upload, node SIGKILLed in the middle
  of the upload: everything arrives once, and no batch seq is used twice;
- two central workers on one PostgreSQL take racing copies of the same
  batches without duplicates or lost acknowledgements.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from central import db
from tests.support.base import wait_until
from tests.support.central import CentralProcess, init_central_process
from tests.support.node import NodeProcess, configure, init_node, stop_and_check
from tests.support.processes import live_processes

REPORT = {"category": "nuisance", "text": "Harde muziek uit de kelderbox",
          "place": {"point": None, "text": "Hoefkade"}, "audience": "both"}
FAST_UPLINK = "uplink_max_age_s = 0.2\nuplink_backoff_max_s = 1.0\nuplink_poll_s = 2.0\n"


@pytest.fixture
def central(tmp_path: Path, database_url: str) -> Iterator[CentralProcess]:
    url = "" if database_url.startswith("sqlite") else database_url
    proc = init_central_process(tmp_path, url)
    proc.start()
    yield proc
    if proc.proc is not None and proc.proc.poll() is None:
        proc.kill()


@pytest.fixture
def node(tmp_path: Path, mosquitto_bin: str, central: CentralProcess) -> Iterator[NodeProcess]:
    n = init_node(tmp_path, mosquitto_bin)
    configure(n, FAST_UPLINK)
    central.enrol(n)
    yield n
    if n.proc is not None and n.proc.poll() is None:
        n.kill()


def central_db(central: CentralProcess) -> sa.Engine:
    url = central.database_url or f"sqlite:///{central.data_dir / 'central.db'}"
    return db.make_engine(url)


def central_count(engine: sa.Engine, origin: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(db.events)
                                .where(db.events.c.origin == origin)).scalar_one())


def post_reports(node: NodeProcess, n: int) -> list[dict[str, Any]]:
    out = []
    with httpx.Client(base_url=node.base_url, timeout=10.0) as client:
        for _ in range(n):
            r = client.post("/api/v1/reports", json=REPORT)
            assert r.status_code == 201, r.text
            out.append(r.json())
    return out


def node_events(node: NodeProcess) -> int:
    import sqlite3

    with sqlite3.connect(node.db_path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def test_reports_reach_central_and_receipts_follow(node: NodeProcess,
                                                   central: CentralProcess) -> None:
    node.start()
    receipts = post_reports(node, 20)
    engine = central_db(central)
    wait_until(lambda: central_count(engine, node.name) == 40, 20.0,
               message="40 events at central")
    health = wait_until(lambda: (h := node.health())["uplink"]["backlog"] == 0 and h, 10.0)
    uplink = health["uplink"]
    assert uplink["enabled"] and uplink["last_error"] == ""
    assert uplink["holds"][node.name] == {"private": 20, "public": 20}
    status = httpx.get(f"{node.base_url}/status", params={"receipt": receipts[0]["receipt"]})
    assert "Doorgestuurd" in status.text  # forwarded, in Dutch first
    # Triage is the projector's, beside central's worker: within a poll or two.
    def routed() -> list[str]:
        with engine.connect() as conn:
            if conn.execute(sa.select(sa.func.count()).select_from(db.reports)).scalar_one() < 20:
                return []
            return list(conn.execute(sa.select(db.reports.c.route).distinct()).scalars())
    assert wait_until(routed, 10.0, message="20 reports triaged") == ["municipality"]
    assert httpx.get(f"{central.url}/healthz").json()["triage_pending_batches"] == 0
    stop_and_check(node)
    engine.dispose()


def test_thousand_events_while_central_is_down_arrive_exactly_once(
        node: NodeProcess, central: CentralProcess) -> None:
    central.stop()
    node.start()
    post_reports(node, 500)  # 500 reports + 500 neighbour warnings = 1,000 events
    assert node_events(node) == 1000
    health = wait_until(lambda: (h := node.health())["uplink"]["failures"] > 0
                        and h["uplink"]["backlog"] == 1000 and h, 10.0,
                        message="uplink failing with a backlog of 1,000")
    assert "unreachable" in health["uplink"]["last_error"]
    central.start()
    engine = central_db(central)
    wait_until(lambda: central_count(engine, node.name) == 1000, 30.0,
               message="1,000 events at central")
    wait_until(lambda: node.health()["uplink"]["backlog"] == 0, 10.0)
    time.sleep(1.0)  # a late duplicate would show up now
    assert central_count(engine, node.name) == 1000
    stop_and_check(node)
    engine.dispose()


def test_central_killed_mid_upload(node: NodeProcess, central: CentralProcess) -> None:
    node.start()
    stop = threading.Event()
    posted: list[int] = []

    def load() -> None:
        while not stop.is_set():
            post_reports(node, 10)
            posted.append(20)

    t = threading.Thread(target=load)
    t.start()
    try:
        engine = central_db(central)
        wait_until(lambda: central_count(engine, node.name) > 100, 20.0)
        central.kill()  # a power cut at central, mid-batch
        time.sleep(1.5)
        central.start()
        time.sleep(1.0)
    finally:
        stop.set()
        t.join()
    total = sum(posted)
    assert node_events(node) == total
    wait_until(lambda: central_count(engine, node.name) == total, 30.0,
               message=f"{total} events at central")
    stop_and_check(node)
    engine.dispose()


def test_node_killed_mid_upload_never_reuses_a_batch_seq(node: NodeProcess,
                                                         central: CentralProcess) -> None:
    import sqlite3

    configure(node, "uplink_batch_max = 50\n")
    node.start()
    post_reports(node, 300)  # 600 events in batches of 50
    engine = central_db(central)
    wait_until(lambda: central_count(engine, node.name) > 50, 20.0)
    node.kill()
    with sqlite3.connect(node.db_path) as conn:
        used = conn.execute("SELECT value FROM uplink_state WHERE key = 'batch_seq'").fetchone()
    used_before = int(used[0]) if used else 0
    with engine.connect() as conn:
        seen = conn.execute(sa.select(sa.func.max(db.batches.c.batch_seq))).scalar_one()
    assert seen <= used_before  # central never saw a seq the node had not committed first
    node.start()
    wait_until(lambda: central_count(engine, node.name) == 600, 30.0,
               message="600 events at central")
    with engine.connect() as conn:
        replays = conn.execute(sa.select(sa.func.count()).select_from(db.batches)
                               .where(db.batches.c.batch_seq <= used_before)).scalar_one()
        newer = conn.execute(sa.select(sa.func.min(db.batches.c.batch_seq))
                             .where(db.batches.c.received_at > 0,
                                    db.batches.c.batch_seq > used_before)).scalar_one()
    assert replays <= used_before
    assert newer is None or newer > used_before
    stop_and_check(node)
    engine.dispose()


def test_two_workers_on_postgresql_race_without_duplicates(
        tmp_path: Path, postgres_url: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from sync import KeyPair, make_event, sealed
    from sync.enrolment import EnrolRequest

    central = init_central_process(tmp_path, postgres_url, workers=2)
    central.start()
    try:
        code = central.cli("enroll-code", "--node", "racer", "--area", "ESCAMP").stdout
        code = code.split(": ", 1)[1].split()[0]
        keys = KeyPair.generate()
        tls = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "racer")]))
               .sign(tls, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())
        req = EnrolRequest(node="racer", signing_pub=keys.signing_public,
                           encryption_pub=keys.encryption_public, csr_pem=csr, code=code)
        answer = httpx.post(f"{central.url}/api/v1/enroll", json=req.to_dict(), timeout=10)
        assert answer.status_code == 200, answer.text
        import base64

        central_enc = base64.b64decode(answer.json()["doc"]["central"]["encryption_pub"])
        wires = []
        for b in range(10):
            evs = [make_event(keys, origin="racer", stream="private", seq=b * 100 + i + 1,
                              kind="report", ts=1795904700123 + i,
                              body={"category": "social", "text": f"bericht {b}-{i}",
                                    "place": {"point": None, "text": ""},
                                    "audience": "authorities", "receipt": "K7F-3QX"})
                   for i in range(100)]
            wires.append(sealed.seal(sealed.Payload.of(evs), node_id="racer", batch_seq=b + 1,
                                     created=1795904700123, keys=keys,
                                     central_encryption_public=central_enc))
        acks: list[dict[str, Any]] = []
        errors: list[str] = []
        lock = threading.Lock()

        def post(wire: bytes) -> None:
            with httpx.Client(timeout=30) as client:
                r = client.post(f"{central.url}/api/v1/batches", content=wire,
                                headers={"Content-Type": "application/vnd.bart.batch"})
            with lock:
                if r.status_code == 200:
                    acks.append(r.json()["ack"]["doc"])
                else:
                    errors.append(f"{r.status_code} {r.text}")

        threads = [threading.Thread(target=post, args=(w,)) for w in wires for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(acks) == 40
        per_batch: dict[int, set[tuple[int, int]]] = {}
        for a in acks:
            per_batch.setdefault(a["batch_seq"], set()).add((a["count"], a["new"]))
        assert all(v == {(100, 100)} for v in per_batch.values()), per_batch
        engine = db.make_engine(postgres_url)
        assert central_count(engine, "racer") == 1000
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(db.batches)).scalar() == 10
            head = conn.execute(sa.select(db.heads.c.contiguous)).scalar_one()
        assert head == 1000
        engine.dispose()
        # Both workers took part (two processes serving one port).
        assert central.workers == 2
    finally:
        assert central.stop() in (0, -15)


def test_events_of_a_peer_central_does_not_know_are_refused_once_enrolled(
        node: NodeProcess, central: CentralProcess) -> None:
    """``peers.toml`` trusts a peer only until the node has central's roster
    (DESIGN.md §5): an enrolled node refuses the events of a peer central does not
    list, so they never reach its store (nor stall its uplink); ours still go up."""
    import sqlite3

    node.start()
    peer_event = node.peer_alert("Verdachte auto bij de school")
    node.publish_events(peer_event)
    post_reports(node, 3)
    engine = central_db(central)
    wait_until(lambda: central_count(engine, node.name) == 6, 20.0,
               message="our 6 events at central")
    health = wait_until(lambda: (h := node.health())["uplink"]["backlog"] == 0 and h, 10.0)
    assert health["uplink"]["last_error"] == ""
    with sqlite3.connect(node.db_path) as conn:
        assert conn.execute("SELECT 1 FROM events WHERE id = ?",
                            (peer_event.id,)).fetchone() is None
    assert f"origin {node.peer_origin!r} is not trusted here" in node.log_tail(200)
    assert central_count(engine, node.peer_origin) == 0
    stop_and_check(node)
    engine.dispose()


def _projectors(central: CentralProcess) -> list[int]:
    """Pids of the projector processes ``bart central run`` runs as its children
    (``python -m central.worker projector``, central/supervise.py)."""
    assert central.proc is not None
    return [pid for pid, cmdline, ppid in live_processes()
            if ppid == central.proc.pid and b"central.worker\0projector" in cmdline]


def test_the_projector_is_restarted_and_stops_with_central(node: NodeProcess,
                                                          central: CentralProcess) -> None:
    import os
    import signal

    first = wait_until(lambda: _projectors(central), 10.0, message="a projector process")
    assert len(first) == 1
    os.kill(first[0], signal.SIGKILL)
    second = wait_until(lambda: [p for p in _projectors(central) if p != first[0]], 15.0,
                        message="the projector restarted")
    node.start()
    post_reports(node, 5)
    engine = central_db(central)

    def routed() -> int:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(db.reports))
                       .scalar_one())
    wait_until(lambda: routed() == 5, 20.0, message="5 reports routed by the new projector")
    stop_and_check(node)
    assert central.stop() == 0
    wait_until(lambda: not Path(f"/proc/{second[0]}").exists(), 10.0,
               message="the projector gone with central")
    assert "projector exited" in central.log_tail(200)
    engine.dispose()


def test_an_idle_enrolled_node_writes_nothing_when_it_polls(node: NodeProcess,
                                                            central: CentralProcess) -> None:
    """Issue "cost flat": a poll that changes nothing writes nothing (an SD card lives
    longer; the budget is <= 1 MB an hour). Polls every 2 s here; central sees each."""
    import os

    node.start()
    post_reports(node, 1)
    engine = central_db(central)
    wait_until(lambda: central_count(engine, node.name) == 2, 20.0, message="synced")
    wait_until(lambda: node.health()["uplink"]["backlog"] == 0, 10.0, message="backlog 0")
    time.sleep(3.0)  # the answer to the last batch is applied, the status heartbeat sent

    def files() -> tuple[int, ...]:
        out: list[int] = []
        for suffix in ("", "-wal"):
            st = os.stat(f"{node.db_path}{suffix}")
            out += [st.st_size, st.st_mtime_ns]
        return tuple(out)

    def seen() -> int:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(db.nodes.c.last_seen)
                                    .where(db.nodes.c.name == node.name)).scalar_one())

    before, polled = files(), seen()
    wait_until(lambda: seen() > polled, 10.0, message="a poll")
    polled = seen()
    wait_until(lambda: seen() > polled, 10.0, message="another poll")
    assert files() == before, "an idle poll wrote to the node's database"
    stop_and_check(node)
    engine.dispose()
