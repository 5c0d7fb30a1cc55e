"""A peer's relay rate is bounded (docs/mesh.md, "A peer's rate"; threat model 3.11).

Three real nodes (``bart node run``, each with its Mosquitto) in a line
F – A – B on loopback, trusting each other by identity file: F dials A, A
dials B. F plays the stolen node: it makes far more public events than any
honest node (its API posts warnings without a report budget in tests), and
afterwards its keys and certificate are used by a script that sends catch-up
chunks no Bart node would. Checked:

- an honest burst of 50 warnings on A all reach B, live, none refused;
- F's flood of 200: A takes its live budget (60 at once, 30 a minute) and
  refuses the rest, counted in /metrics and logged; B holds none that A
  refused (not passed on);
- after the flood, F's next event arrives live on A and B, and when F's next
  session catches up, the gap fills: A and B hold F's stream gapless;
- catch-up has its own bucket (lowered here to 300 so that it runs out):
  a chunk of fresh events beyond it is refused and counted;
- a panic alarm has a live bucket of its own: behind a flood of its origin's
  other events it still arrives;
- the same live bucket holds on the MQTT path (a peer's events on the node's
  own Mosquitto).

Anti-entropy is off in the test window (``sync_s = 3600``): what arrives,
arrives live or in the catch-up a test starts.
"""

from __future__ import annotations

import re
import sqlite3
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from sync import KeyPair, make_event
from sync.mesh import Chunk, Relay
from tests.support.base import bart_command, free_port, require_binary, wait_until
from tests.support.node import NodeProcess, init_node

pytestmark = pytest.mark.timeout(180)

#: The defaults under test (node/config.py: MeshSettings).
BURST, RATE_PER_S = 60, 30 / 60
#: Catch-up's bucket, lowered from 20,000 so that a test can empty it.
CATCHUP_BURST = 300


def _settings(node: NodeProcess, port: int, peers: list[int], metrics: int) -> None:
    text = (node.data_dir / "node.toml").read_text(encoding="utf-8")
    head, _, _ = text.partition("\n[mesh]")
    head = f"metrics_port = {metrics}\n" + head
    text = head + (f"\n[mesh]\nport = {port}\ndiscovery = false\nsync_s = 3600\n"
                   f"catchup_burst = {CATCHUP_BURST}\n")
    for peer in peers:
        text += f'\n[[mesh.peers]]\nhost = "127.0.0.1"\nport = {peer}\n'
    (node.data_dir / "node.toml").write_text(text, encoding="utf-8")


def _bart(node: NodeProcess, *args: str) -> None:
    result = subprocess.run([*bart_command(), "node", *args, "--data-dir", str(node.data_dir)],
                            capture_output=True, text=True, env=node.env(), timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr


def _seqs(node: NodeProcess, origin: str) -> list[int]:
    conn = sqlite3.connect(f"file:{node.db_path}?mode=ro", uri=True)
    try:
        return [s for (s,) in conn.execute(
            "SELECT seq FROM events WHERE origin = ? AND stream = 'public' ORDER BY seq",
            (origin,))]
    finally:
        conn.close()


def _wait_seqs(node: NodeProcess, ok: Callable[[list[int]], bool], timeout: float,
               what: str) -> None:
    wait_until(lambda: ok(_seqs(node, "node-f")), timeout, 0.05, f"{what} on {node.name}")


def _mesh(node: NodeProcess) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(f"{node.base_url}/api/v1/mesh", timeout=5).json()
    return data


def _over_budget(node: NodeProcess, metrics: int) -> dict[tuple[str, str], float]:
    text = httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5).text
    assert "# TYPE bart_node_peer_events_over_budget_total counter" in text \
        or "# TYPE bart_node_peer_events_over_budget counter" in text
    pattern = re.compile(r'^bart_node_peer_events_over_budget_total\{origin="([^"]+)",'
                         r'via="([^"]+)"\} ([0-9.e+]+)$', re.MULTILINE)
    return {(o, v): float(n) for o, v, n in pattern.findall(text)}


def _warn(node: NodeProcess, text: str, client: httpx.Client | None = None) -> None:
    r = (client or httpx).post(f"{node.base_url}/api/v1/reports", timeout=10,
                               json={"category": "suspicious", "text": text,
                                     "audience": "neighbours"})
    assert r.status_code == 201, r.text


def _as_peer(node: NodeProcess, mesh_port: int, peer: NodeProcess,
             documents: list[bytes]) -> None:
    """Connect to ``node``'s mesh listener with ``peer``'s own certificate and send."""
    mesh_dir = peer.data_dir / "mesh"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-stolen-node",
                         protocol=MQTTProtocolVersion.MQTTv5)
    client.tls_set(ca_certs=str(node.data_dir / "tls" / "ca.pem"),
                   certfile=str(mesh_dir / "provisional.pem"),
                   keyfile=str(mesh_dir / "provisional.key"), cert_reqs=ssl.CERT_REQUIRED)
    client.tls_insecure_set(True)
    client.connect("127.0.0.1", mesh_port)
    client.loop_start()
    try:
        for data in documents:
            client.publish(f"bartmesh/v1/{peer.name}/up", data, qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    mosquitto = require_binary("mosquitto", "/usr/sbin/mosquitto")
    base = tmp_path_factory.mktemp("mesh-rate")
    nodes = {n: init_node(base / n, mosquitto, name=f"node-{n}") for n in "fab"}
    ports = {n: free_port() for n in "fab"}
    metrics = {n: free_port() for n in "fab"}
    for n, node in nodes.items():
        if n != "a":  # A keeps the fixture's test peer: the MQTT path's origin
            (node.data_dir / "peers.toml").unlink()

    def trust(n: str) -> None:  # each node's own files: the three at once
        for other in "fab":
            if other != n:
                _bart(nodes[n], "trust", "add", str(base / f"{other}.json"))

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda n: _bart(nodes[n], "trust", "export", "--out",
                                      str(base / f"{n}.json")), "fab"))
        list(pool.map(trust, "fab"))
    _settings(nodes["f"], ports["f"], [ports["a"]], metrics["f"])
    _settings(nodes["a"], ports["a"], [ports["b"]], metrics["a"])
    _settings(nodes["b"], ports["b"], [], metrics["b"])
    try:
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda n: nodes[n].start(), "baf"))
        wait_until(lambda: len(_mesh(nodes["a"])["peers"]) == 2, 20, 0.2,
                   "A meshed with F and B")
        yield {"nodes": nodes, "ports": ports, "metrics": metrics}
    finally:
        for node in nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                node.stop()
    for node in nodes.values():
        assert "Traceback" not in node.log_tail(400), node.log_tail(80)


def test_an_honest_burst_of_alarms_all_arrives_live(line: dict[str, Any]) -> None:
    a, b = line["nodes"]["a"], line["nodes"]["b"]
    with httpx.Client() as client:
        for i in range(50):
            _warn(a, f"Brand in de Dorpsstraat, melding {i}", client)
    wait_until(lambda: len(_seqs(b, "node-a")) == 50, 10, 0.05, "A's 50 warnings on B")
    assert _seqs(b, "node-a") == list(range(1, 51))
    assert _mesh(b)["reach"]["node-a"] == 1  # live from A, not by catch-up
    assert _over_budget(b, line["metrics"]["b"]) == {}
    assert _mesh(b)["stats"]["over_budget"] == 0


def test_a_flood_is_refused_beyond_the_budget_and_not_passed_on(line: dict[str, Any]) -> None:
    f, a, b = (line["nodes"][n] for n in "fab")
    flood = 200
    started = time.monotonic()
    with httpx.Client() as client:
        for i in range(flood):
            _warn(f, f"Vals alarm {i}", client)
    assert len(_seqs(f, "node-f")) == flood  # the stolen node holds all it made

    def settled() -> bool:
        return len(_seqs(a, "node-f")) + int(_mesh(a)["stats"]["over_budget"]) >= flood
    wait_until(settled, 10, 0.1, "A took or refused every event of F")
    elapsed = time.monotonic() - started
    held_a = _seqs(a, "node-f")
    assert BURST <= len(held_a) <= BURST + elapsed * RATE_PER_S + 1, (len(held_a), elapsed)
    assert held_a[:BURST] == list(range(1, BURST + 1))  # the first 60 at once
    refused = flood - len(held_a)
    assert _over_budget(a, line["metrics"]["a"]) == {("node-f", "mesh"): refused}
    log = a.log_tail(400)
    assert log.count("node-f sends more public events than its budget") == 1  # then quiet
    time.sleep(1.0)  # what A would have passed on has reached B by now
    held_b = _seqs(b, "node-f")
    assert set(held_b) <= set(held_a)  # nothing A refused went on
    assert len(held_b) >= BURST


def test_after_the_flood_the_origin_is_not_stalled(line: dict[str, Any]) -> None:
    f, a, b = (line["nodes"][n] for n in "fab")
    top = len(_seqs(f, "node-f"))
    assert _seqs(a, "node-f") != list(range(1, top + 1))  # gaps the flood left
    time.sleep(2.5)  # a token back (30 a minute)
    _warn(f, "Na de vloed: een echte melding")
    for node in (a, b):  # live, past the gaps
        _wait_seqs(node, lambda seqs: top + 1 in seqs, 5, "F's next event")
    line["gap"] = top + 1 - len(_seqs(a, "node-f"))  # for catch-up's bucket to fill
    # F's next session catches up: its hello's vector shows what A lacks, and
    # catch-up's own bucket takes it; A tells B, which fetches it from A.
    f.stop()
    f.start()
    for node in (a, b):
        _wait_seqs(node, lambda seqs: seqs == list(range(1, top + 2)), 20,
                   "F's stream gapless")
    assert _over_budget(a, line["metrics"]["a"]).get(("node-f", "catchup"), 0) == 0
    f.stop()  # from here on a script holds F's keys


def test_catch_up_has_its_own_bound(line: dict[str, Any]) -> None:
    f, a = line["nodes"]["f"], line["nodes"]["a"]
    held = _seqs(a, "node-f")
    top = held[-1]
    assert held == list(range(1, top + 1))
    used = line["gap"]  # the gap the last test filled came out of catch-up's bucket
    keys = KeyPair.load(f.data_dir / "keys")
    now = int(time.time() * 1000)
    events = [make_event(keys, origin="node-f", stream="public", seq=top + 1 + i, kind="alert",
                         ts=now, body={"source": "team", "category": "suspicious",
                                       "severity": "moderate", "title": f"Vals {i}",
                                       "text": "", "areas": []})
              for i in range(CATCHUP_BURST)]
    _as_peer(a, line["ports"]["a"], f,
             [Chunk(tuple(events[i:i + 50])).encode() for i in range(0, len(events), 50)])

    def settled() -> int:
        over = _over_budget(a, line["metrics"]["a"]).get(("node-f", "catchup"), 0)
        return int(len(_seqs(a, "node-f")) - top + over >= len(events))
    wait_until(settled, 10, 0.1, "A took or refused every event of the chunks")
    taken = len(_seqs(a, "node-f")) - top
    assert CATCHUP_BURST - used <= taken <= CATCHUP_BURST - used + 30, (taken, used)
    assert _seqs(a, "node-f")[-1] == top + taken  # lowest first: the gap is at the end
    over = _over_budget(a, line["metrics"]["a"])
    assert over[("node-f", "catchup")] == len(events) - taken
    assert "node-f sends more public events than its budget (catchup" in a.log_tail(400)


def test_a_panic_alarm_passes_a_flood_of_its_own_origin(line: dict[str, Any]) -> None:
    """The live budget keeps alarms apart: behind 100 ordinary events of F that
    empty its bucket on A, F's panic alarm is taken and passed on to B at once."""
    f, a, b = (line["nodes"][n] for n in "fab")
    keys = KeyPair.load(f.data_dir / "keys")
    now = int(time.time() * 1000)
    base = 10_000  # above every seq of F used so far

    def alert(seq: int, **body: str) -> bytes:
        fields = {"source": "team", "category": "suspicious", "severity": "moderate",
                  "title": f"Vals {seq}", "text": "", "areas": [], **body}
        return Relay.of(make_event(keys, origin="node-f", stream="public", seq=seq,
                                   kind="alert", ts=now, body=fields), 1).encode()

    before = _over_budget(a, line["metrics"]["a"]).get(("node-f", "mesh"), 0)
    flood = [alert(base + i) for i in range(100)]
    alarm = alert(base + 100, source="button", category="emergency", severity="extreme",
                  title="Noodknop")
    _as_peer(a, line["ports"]["a"], f, [*flood, alarm])
    for node in (a, b):
        _wait_seqs(node, lambda seqs: base + 100 in seqs, 5, "F's alarm")
    over = _over_budget(a, line["metrics"]["a"])[("node-f", "mesh")] - before
    assert over >= 100 - BURST  # the ordinary ones beyond the bucket: refused
    assert over == 100 - sum(1 for s in _seqs(a, "node-f") if base <= s < base + 100)


def test_the_mqtt_path_shares_the_live_budget(line: dict[str, Any]) -> None:
    a = line["nodes"]["a"]
    flood = 90
    events = [a.peer_alert(f"Via Mosquitto {i}") for i in range(flood)]
    started = time.monotonic()
    a.publish_events(*events)

    def settled() -> int:
        over = _over_budget(a, line["metrics"]["a"]).get((a.peer_origin, "mqtt"), 0)
        return int(len(_seqs(a, a.peer_origin)) + over >= flood)
    wait_until(settled, 10, 0.1, "A took or refused every event on its Mosquitto")
    held = len(_seqs(a, a.peer_origin))
    assert BURST <= held <= BURST + (time.monotonic() - started) * RATE_PER_S + 1
    assert _over_budget(a, line["metrics"]["a"])[(a.peer_origin, "mqtt")] == flood - held
