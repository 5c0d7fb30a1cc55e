"""Three real nodes meshed before any central exists (``bart node trust add``).

Each node is ``bart node run`` with its own Mosquitto; they trust each other by
identity file and dial each other by address (``[[mesh.peers]]``) in a line
A–B–C on loopback. Checked: an alert made on A is stored on C through B;
what C missed while it was down it gets by catch-up; a peer's forged,
own-origin, "central" or unknown-origin event is refused and stored nowhere.
(The roster path, mDNS and link cuts: tests/system/test_mesh_netns.py.)
"""

from __future__ import annotations

import sqlite3
import ssl
import time
from collections.abc import Iterator
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from sync import KeyPair, make_event
from sync.mesh import Relay
from tests.support.base import free_port, require_binary, wait_until
from tests.support.node import NodeProcess, init_node, mesh_settings
from tests.support.sse import SseReader

pytestmark = pytest.mark.timeout(180)


def _public(node: NodeProcess) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{node.db_path}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT origin, COUNT(*) FROM events WHERE stream = 'public' "
                                 "GROUP BY origin").fetchall())
    finally:
        conn.close()


def _mesh(node: NodeProcess) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(f"{node.base_url}/api/v1/mesh", timeout=5).json()
    return data


def _held(node: NodeProcess, origin: str) -> int:
    """How many of ``origin``'s public events ``node`` counts (0 before the first: a
    test of this module may run first on its xdist worker, with a new line)."""
    return int(_mesh(node)["vector"].get(origin, {}).get("public", 0))


def _warn(node: NodeProcess, text: str) -> str:
    r = httpx.post(f"{node.base_url}/api/v1/reports", timeout=10,
                   json={"category": "suspicious", "text": text, "audience": "neighbours"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, NodeProcess]]:
    mosquitto = require_binary("mosquitto", "/usr/sbin/mosquitto")
    base = tmp_path_factory.mktemp("mesh-trusted")
    nodes = {n: init_node(base / n, mosquitto, name=f"node-{n}") for n in "abc"}
    ports = {n: free_port() for n in "abc"}
    for n, node in nodes.items():
        (node.data_dir / "peers.toml").unlink()  # the fixture's test peer: not here
        node.bart("trust", "export", "--out", str(base / f"{n}.json"))
    for n, node in nodes.items():
        for other in "abc":
            if other != n:
                node.bart("trust", "add", str(base / f"{other}.json"))
    mesh_settings(nodes["a"], ports["a"], [ports["b"]], sync_s=2)
    mesh_settings(nodes["b"], ports["b"], [ports["c"]], sync_s=2)
    mesh_settings(nodes["c"], ports["c"], [], sync_s=2)
    try:
        for node in nodes.values():
            node.start()
        wait_until(lambda: len(_mesh(nodes["b"])["peers"]) == 2, 20, 0.2,
                   "B meshed with A and C")
        yield nodes
    finally:
        for node in nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                node.stop()
    for node in nodes.values():
        assert "Traceback" not in node.log_tail(400), node.log_tail(80)


def test_an_alert_on_a_is_stored_on_c_through_b(line: dict[str, NodeProcess]) -> None:
    a, c = line["a"], line["c"]
    before = _public(c).get("node-a", 0)
    started = time.monotonic()
    _warn(a, "Inbraak bij de school")
    wait_until(lambda: _public(c).get("node-a", 0) == before + 1, 5, 0.01,
               "A's alert stored on C")
    print(f"A -> B -> C stored after {(time.monotonic() - started) * 1000:.0f} ms")
    view = _mesh(c)
    assert view["vector"]["node-a"]["public"] == before + 1
    assert view["reach"]["node-a"] == 2  # two hops: A -> B -> C
    assert [p["name"] for p in view["peers"]] == ["node-b"]
    assert view["provisional"] is True  # no central: the nodes' own certificates


@pytest.mark.leaves_running("node C, restarted: the module's line stops it")
def test_what_c_missed_while_down_comes_by_catch_up(line: dict[str, NodeProcess]) -> None:
    a, c = line["a"], line["c"]
    c.stop()
    for i in range(30):
        _warn(a, f"Melding {i} terwijl C uit staat")
    held_a = _public(a)["node-a"]
    c.start()
    wait_until(lambda: _public(c).get("node-a") == held_a, 20, 0.1,
               "C caught up with everything A made")
    conn = sqlite3.connect(f"file:{c.db_path}?mode=ro", uri=True)
    seqs = [s for (s,) in conn.execute(
        "SELECT seq FROM events WHERE origin = 'node-a' AND stream = 'public' ORDER BY seq")]
    conn.close()
    assert seqs == list(range(1, held_a + 1))  # gapless, exactly once


def _as_peer(node: NodeProcess, peer: NodeProcess, documents: list[bytes]) -> None:
    """Connect to ``node``'s mesh listener with ``peer``'s own certificate and send."""
    mesh_dir = peer.data_dir / "mesh"
    toml = (node.data_dir / "node.toml").read_text()
    mesh_port = int(toml.split("[mesh]\nport = ")[1].split("\n")[0])
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-as-peer",
                         protocol=MQTTProtocolVersion.MQTTv5)
    client.tls_set(ca_certs=str(node.data_dir / "tls" / "ca.pem"),
                   certfile=str(mesh_dir / "provisional.pem"),
                   keyfile=str(mesh_dir / "provisional.key"), cert_reqs=ssl.CERT_REQUIRED)
    client.tls_insecure_set(True)
    client.connect("127.0.0.1", mesh_port)
    client.loop_start()
    try:
        for data in documents:
            info = client.publish(f"bartmesh/v1/{peer.name}/up", data, qos=1)
            info.wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def test_forged_and_foreign_events_are_refused(line: dict[str, NodeProcess]) -> None:
    a, b, c = line["a"], line["b"], line["c"]
    before = {n.name: _public(n) for n in (a, b, c)}
    now = int(time.time() * 1000)
    b_seq = _mesh(a)["vector"].get("node-b", {}).get("public", 0) + 1
    body = {"source": "team", "category": "suspicious", "severity": "moderate",
            "title": "Vals", "text": "", "areas": []}
    stranger = KeyPair.generate()
    forged = make_event(stranger, origin="node-b", stream="public", seq=b_seq, kind="alert",
                        ts=now, body=body)
    own = make_event(stranger, origin="node-a", stream="public", seq=999, kind="alert",
                     ts=now, body=body)
    unknown = make_event(stranger, origin="node-x", stream="public", seq=1, kind="alert",
                         ts=now, body=body)
    b_keys = KeyPair.load(b.data_dir / "keys")
    police = make_event(b_keys, origin="node-b", stream="public", seq=b_seq, kind="alert",
                        ts=now, body={**body, "source": "central"})
    _as_peer(a, b, [Relay.of(e, 1).encode() for e in (forged, own, unknown, police)]
             + [b"{not json", b'{"v": 2, "t": "ev"}'])
    time.sleep(1.5)  # what would have been stored and relayed by now
    assert {n.name: _public(n) for n in (a, b, c)} == before
    log = a.log_tail(200)
    assert "bad signature" in log and "own origin" in log and "not trusted" in log
    assert "may not send central alerts" in log
    stats = _mesh(a)["stats"]
    assert stats["refused"] >= 6


def test_a_fork_is_refused(line: dict[str, NodeProcess]) -> None:
    """Another event under a seq A already holds, properly signed by B's own key
    (a node whose key was copied, or that reused a seq): refused and logged; the
    event A holds stays."""
    a, b = line["a"], line["b"]
    _warn(b, "Een melding van B")
    wait_until(lambda: _public(a).get("node-b", 0) >= 1, 5, 0.05, "B's alert on A")
    conn = sqlite3.connect(f"file:{a.db_path}?mode=ro", uri=True)
    held_id, held_seq = conn.execute(
        "SELECT id, seq FROM events WHERE origin = 'node-b' AND stream = 'public' "
        "ORDER BY seq DESC LIMIT 1").fetchone()
    conn.close()
    b_keys = KeyPair.load(b.data_dir / "keys")
    fork = make_event(b_keys, origin="node-b", stream="public", seq=held_seq, kind="alert",
                      ts=int(time.time() * 1000),
                      body={"source": "team", "category": "suspicious", "severity": "moderate",
                            "title": "Andere versie", "text": "", "areas": []})
    before = _public(a)
    _as_peer(a, b, [Relay.of(fork, 1).encode()])
    wait_until(lambda: "fork" in a.log_tail(50), 5, 0.1, "the fork logged on A")
    assert _public(a) == before
    conn = sqlite3.connect(f"file:{a.db_path}?mode=ro", uri=True)
    assert conn.execute("SELECT id FROM events WHERE origin = 'node-b' AND stream = 'public' "
                        "AND seq = ?", (held_seq,)).fetchone() == (held_id,)
    assert conn.execute("SELECT 1 FROM events WHERE id = ?", (fork.id,)).fetchone() is None
    conn.close()


def _lock_store(node: NodeProcess) -> sqlite3.Connection:
    """Take the write lock of ``node``'s SQLite file (a real second writer, as a
    backup tool or a stuck process would): its COMMITs wait, readers go on."""
    conn = sqlite3.connect(node.db_path, isolation_level=None, timeout=5)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def _a_alert_id(a: NodeProcess, report_id: str) -> str:
    conn = sqlite3.connect(f"file:{a.db_path}?mode=ro", uri=True)
    try:
        for event_id, body in conn.execute(
                "SELECT id, body FROM events WHERE origin = 'node-a' AND stream = 'public' "
                "AND kind = 'alert' ORDER BY seq DESC LIMIT 5"):
            if report_id in body:
                return str(event_id)
    finally:
        conn.close()
    raise AssertionError(f"no alert for report {report_id} on A")


def _has(node: NodeProcess, event_id: str) -> bool:
    conn = sqlite3.connect(f"file:{node.db_path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone() \
            is not None
    finally:
        conn.close()


def test_a_relay_passes_on_before_its_commit_and_shows_only_after(
        line: dict[str, NodeProcess]) -> None:
    """B's COMMIT is held up by a second writer on its SQLite file: A's alert
    still reaches C through B (passed on before B stored it), but B publishes
    it on its Mosquitto and its SSE stream only once its own COMMIT is done."""
    a, b, c = line["a"], line["b"], line["c"]
    held_b = _held(b, "node-a")
    with b.service_client("test-relay-shown") as probe, \
            SseReader(f"{b.base_url}/api/v1/stream") as sse:
        probe.wait_connected()
        probe.subscribe("bart/v1/node-a/public/#")
        lock = _lock_store(b)
        try:
            report = _warn(a, "Brand in de schuur, kom helpen")
            alert = _a_alert_id(a, report)
            wait_until(lambda: _has(c, alert), 5, 0.01, "A's alert stored on C through B")
            time.sleep(0.3)  # anything B would show early has had time to show
            assert not _has(b, alert)
            assert [t for t, p in probe.drain(0.1) if alert.encode() in p] == []
            assert all(m["id"] != alert for m in sse.all), "shown on B before its COMMIT"
            assert _held(b, "node-a") == held_b  # not counted yet
        finally:
            lock.rollback()
            lock.close()
        topic, payload = probe.messages.get(timeout=5)
        assert alert.encode() in payload, topic
        assert _has(b, alert)  # published only after it was committed
        sse.wait_for(lambda m: m["id"] == alert, 5)
    wait_until(lambda: _held(b, "node-a") == held_b + 1, 5, 0.05,
               "B's vector counts the alert once committed")


def test_a_relay_whose_commit_fails_still_converges(line: dict[str, NodeProcess]) -> None:
    """B's COMMIT fails (its SQLite file stays locked by another writer past the
    store's busy timeout): B has passed the alert on, does not count it in its
    vector nor show it, and gets it again by catch-up once its file is free."""
    a, b, c = line["a"], line["b"], line["c"]
    held_b = _held(b, "node-a")
    lock = _lock_store(b)
    try:
        report = _warn(a, "Waterlek in de kelder van het buurthuis")
        alert = _a_alert_id(a, report)
        wait_until(lambda: _has(c, alert), 5, 0.01, "A's alert stored on C through B")
        wait_until(lambda: "could not store" in b.log_tail(40), 20, 0.2,
                   "B's COMMIT failed (busy timeout 10 s)")
        assert _held(b, "node-a") == held_b
        assert not _has(b, alert)
    finally:
        lock.rollback()
        lock.close()
    # Anti-entropy (sync_s = 2 here) brings it from A or C.
    wait_until(lambda: _has(b, alert), 15, 0.1, "B caught up with the alert it failed to store")
    wait_until(lambda: _held(b, "node-a") == held_b + 1, 5, 0.05,
               "B's vector counts it")
    conn = sqlite3.connect(f"file:{b.db_path}?mode=ro", uri=True)
    assert conn.execute("SELECT COUNT(*) FROM events WHERE id = ?", (alert,)).fetchone() == (1,)
    conn.close()
