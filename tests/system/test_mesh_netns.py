"""The mesh end to end: central and three nodes in network namespaces, links cut and healed.

Real parts only: ``bart central run`` and three ``bart node run`` processes
(each with the Mosquitto it starts itself and its own SQLite store), each in
a network namespace made here. What the test does to them is what a
neighbourhood does: a panic button is held, residents report, a team member
answers, links fail and come back, central revokes a node, and strangers
knock on a node's mesh listener.

Topology (module-scoped, reused by every test)::

                          central (10.66.0.1, on bridge br0;
                          ports isolated: nodes cannot talk through it)
                        /        |        \\
                     up0        up0        up0
                    node-a ---- node-b ---- node-c
                       \\     A-B        B-C     /
                        `--------- A-C --------'   (down unless a test brings it up)

- every node is enrolled the real way before its first run
  (``bart central enroll-code`` here, ``bart node enroll URL --code`` in its
  namespace), so its certificate, CA and roster come from central;
- mesh links are veth pairs with their own /24; a link is cut and healed
  with ``ip link set … down/up`` on both ends;
- ``[mesh]``: port 8884, ``discovery = true`` on the node's mesh-link
  addresses only, ``sync_s = 5``, ``retry_max_s = 2``, and static peers
  for the dialling: A dials B and C, C dials B (B dials no one: everything
  on B arrives on its own listener);
- node-a has demo controls, mock GPIO and a wired panic button at the
  meeting point "Speeltuin De Klimboom" (``hold_s = 0.5``).

The test process never gets an address in these networks: HTTP, SSE and the
MQTT clients of the refusal tests open their sockets inside a namespace
(``setns(2)`` on the calling thread; threads started there stay there).
What a node stores is read straight from its SQLite file (read-only).

Tests, in the order they run (later ones rely on the state earlier ones leave):

1. mDNS finds the peers on the mesh links (no advert names a bridge address);
2. a roster that grows after a node's enrolment reaches its mesh without a restart;
3. line A-B-C: a panic alarm on A is stored on C within 2 s, shown once on
   C's team stream with A's meeting point, and C's "on my way" comes back to
   A's light;
4. partition: B-C cut, 1,000 public alerts on A and 1,000 on C, healed:
   every node holds every public event once, within 30 s;
5. triangle: one alert is stored and shown exactly once on every node;
6. hop limit 1: an alert reaches B live but not C, and B relays nothing;
7. a restarted node takes the sessions its peers dial at once;
8. forged, own-origin and ``source: central`` events from a real peer's
   session are refused, logged and not passed on;
9. a certificate of central's CA for a name not in the roster is ignored;
10. a certificate of another CA never completes the TLS handshake;
11. a revoked node's alerts are no longer taken and its session is dropped;
12. no node or central logged a traceback.

A test that catches one of the bugs these tests found (and that are fixed)
says which, and where it lived, in its failure message.

Measured figures (alarm latency, convergence) are printed: run with ``-s``.
Needs root (namespaces); everything is removed by the fixture's finalizer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import os
import queue
import re
import sqlite3
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion

from sync import Event, KeyPair, make_event, sealed
from sync.mesh import Bye, Hello, Ping, Relay, parse
from tests.support.base import bart_command, require, require_binary, wait_until
from tests.support.html import row_of
from tests.support.netns import (
    AREAS,
    BUTTON,
    CENTRAL_IP,
    CENTRAL_PORT,
    CENTRAL_URL,
    CENTRES,
    HTTP_PORT,
    LINKS,
    MEETING_POINT,
    MESH_PORT,
    MQTT_PORT,
    NODES,
    UPLINK_IPS,
    A,
    B,
    C,
    MeshCentral,
    MeshNode,
    TeamMember,
    in_netns,
    link_addresses,
    run,
    tcp_reaches,
)
from tests.support.node import finish, stop_and_check

# Fixture set-up counts against the first test's timeout.
pytestmark = pytest.mark.timeout(150)

#: Who dials whom by address (the rest arrives on the node's own listener).
STATIC_PEERS = {A: ["10.66.12.2", "10.66.13.3"], B: [], C: ["10.66.23.2"]}
SYNC_S = 5.0
ALARM_BOUND_S = 2.0
CONVERGE_BOUND_S = 30.0
BURST = 1000


def node_toml(name: str, *, hop_limit: int = 4, sync_s: float = SYNC_S,
              discovery: bool = True) -> str:
    """node.toml of one test node (the whole file)."""
    lines = [
        f'name = "{name}"', f'area = "{AREAS[name]}"', f'display_name = "{CENTRES[name]}"',
        f"http_port = {HTTP_PORT}", f"mqtt_port = {MQTT_PORT}", "point_port = 0",
        "reports_per_minute = 0", 'log_level = "INFO"',
        "uplink_poll_s = 2.0", "uplink_max_age_s = 0.2", "uplink_backoff_max_s = 2.0",
    ]
    if name == A:
        lines += ['gpio = "mock"', "demo = true", "hold_s = 0.5"]
    else:
        lines += ['gpio = "off"']
    lines += ["", "[mesh]", f"port = {MESH_PORT}", f"discovery = {json.dumps(discovery)}",
              f"interfaces = {json.dumps(link_addresses(name))}",
              f"sync_s = {sync_s}", f"hop_limit = {hop_limit}", "retry_max_s = 2.0"]
    for host in STATIC_PEERS[name]:
        lines += ["", "[[mesh.peers]]", f'host = "{host}"', f"port = {MESH_PORT}"]
    if name == A:
        lines += ["", "[[meeting_points]]", 'id = "klimboom"', f'name = "{MEETING_POINT}"',
                  "", "[[meeting_points.panic_buttons]]", f'id = "{BUTTON}"',
                  'device = "hub"', "button_pin = 17", "led_pin = 23"]
    return "\n".join(lines) + "\n"


# -- the neighbourhood -------------------------------------------------------------------


@dataclass
class Hood:
    """Central, the three nodes and their links."""

    central: MeshCentral
    nodes: dict[str, MeshNode]
    ns: dict[str, str]
    work: Path
    #: Log lines that showed why sessions did not come up on the first start.
    first_start_refusals: list[str] = field(default_factory=list)
    members: dict[str, TeamMember] = field(default_factory=dict)

    def __getitem__(self, name: str) -> MeshNode:
        return self.nodes[name]

    def link(self, one: str, other: str, up: bool) -> None:
        """Cut (``up=False``) or heal a mesh link: ``ip link set`` on both ends."""
        key = (one, other) if (one, other) in LINKS else (other, one)
        (if1, _), (if2, _) = LINKS[key]
        state = "up" if up else "down"
        run("ip", "-n", self.ns[key[0]], "link", "set", "dev", if1, state)
        run("ip", "-n", self.ns[key[1]], "link", "set", "dev", if2, state)

    def sessions(self, *pairs: tuple[str, str], timeout: float = 15.0) -> None:
        """Wait until each pair sees the other among its mesh peers."""
        def up() -> bool:
            return all(y in self[x].peers() and x in self[y].peers() for x, y in pairs)

        try:
            wait_until(up, timeout, 0.1, f"mesh sessions {pairs}")
        except AssertionError as exc:
            views = {n: sorted(self[n].peers()) for n in NODES}
            raise AssertionError(f"{exc}; peers now: {views}\n" + "\n".join(
                f"--- {n} ---\n{self[n].log_tail(25)}" for n in NODES)) from None

    def member(self, name: str) -> TeamMember:
        if name not in self.members:
            self.members[name] = TeamMember.log_in(self[name], f"Lid {name[-1].upper()}")
        return self.members[name]

    def restart(self, names: list[str], **settings: Any) -> None:
        """Stop ``names`` (SIGTERM), write their node.toml with ``settings``, start them."""
        for n in names:
            stop_and_check(self[n])
        for n in names:
            (self[n].data_dir / "node.toml").write_text(node_toml(n, **settings))
            self[n].launch()
        for n in names:
            self[n].wait_healthy()


@pytest.fixture(scope="module")
def hood(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hood]:
    require(os.geteuid() == 0, "network namespaces need root")
    require_binary("ip", "/usr/sbin/ip", "/sbin/ip")
    mosquitto = require_binary("mosquitto", "/usr/sbin/mosquitto")
    work = tmp_path_factory.mktemp("mesh-netns")
    tag = uuid.uuid4().hex[:6]
    ns = {"central": f"bm{tag}-central", A: f"bm{tag}-a", B: f"bm{tag}-b", C: f"bm{tag}-c"}
    made: list[str] = []
    central: MeshCentral | None = None
    nodes: dict[str, MeshNode] = {}
    hood: Hood | None = None
    ok = False
    started = time.monotonic()
    try:
        for name in ns.values():
            result = run("ip", "netns", "add", name, check=False)
            require(result.returncode == 0,
                    f"cannot create a network namespace: {result.stderr.strip()}")
            made.append(name)
            run("ip", "-n", name, "link", "set", "lo", "up")

        # Central's bridge; each node's uplink port on it is isolated, so that
        # the nodes reach central but never each other through it.
        cns = ns["central"]
        run("ip", "-n", cns, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", cns, "address", "add", f"{CENTRAL_IP}/24", "dev", "br0")
        run("ip", "-n", cns, "link", "set", "br0", "up")
        for name in NODES:
            port = f"p{name[-1]}"
            run("ip", "link", "add", "up0", "netns", ns[name], "type", "veth",
                "peer", "name", port, "netns", cns)
            run("ip", "-n", cns, "link", "set", port, "master", "br0")
            run("ip", "-n", cns, "link", "set", "dev", port, "type", "bridge_slave",
                "isolated", "on")
            run("ip", "-n", cns, "link", "set", port, "up")
            run("ip", "-n", ns[name], "address", "add", f"{UPLINK_IPS[name]}/24", "dev", "up0")
            run("ip", "-n", ns[name], "link", "set", "up0", "up")
        for (one, other), ((if1, ip1), (if2, ip2)) in LINKS.items():
            run("ip", "link", "add", if1, "netns", ns[one], "type", "veth",
                "peer", "name", if2, "netns", ns[other])
            run("ip", "-n", ns[one], "address", "add", f"{ip1}/24", "dev", if1)
            run("ip", "-n", ns[other], "address", "add", f"{ip2}/24", "dev", if2)
            if (one, other) != (A, C):  # the triangle's third side starts down
                run("ip", "-n", ns[one], "link", "set", if1, "up")
                run("ip", "-n", ns[other], "link", "set", if2, "up")

        central = MeshCentral(data_dir=work / "central", http_port=CENTRAL_PORT,
                              database_url="", log_path=work / "central.log", netns=cns)
        central.cli("init", "--name", "haaglanden", "--http-host", CENTRAL_IP,
                    "--http-port", str(CENTRAL_PORT), "--public-url", CENTRAL_URL)
        central.start()

        for name in NODES:
            data_dir = work / name
            node = MeshNode(data_dir=data_dir, http_port=HTTP_PORT, mqtt_port=MQTT_PORT,
                            mosquitto=mosquitto, peer=KeyPair.generate(),
                            log_path=work / f"{name}.log", name=name, area=AREAS[name],
                            netns=ns[name])
            run(*bart_command(), "node", "init", "--name", name, "--area", AREAS[name],
                "--data-dir", str(data_dir), "--mesh-port", str(MESH_PORT), env=node.env())
            (data_dir / "node.toml").write_text(node_toml(name))
            nodes[name] = node
        for name in NODES:  # in this order: A's roster from enrolment lists only A
            central.enrol_node(nodes[name])
        hood = Hood(central, nodes, ns, work)

        for node in nodes.values():
            node.launch()
        for node in nodes.values():
            node.wait_healthy()
        try:
            hood.sessions((A, B), (C, B), timeout=8.0)
        except AssertionError:
            # Known bug (see test_roster_news_reaches_the_mesh_without_a_restart):
            # the roster the uplink fetched is saved, but the mesh keeps the one
            # of enrolment until a restart. Note why, then restart once.
            hood.first_start_refusals = [
                line for n in NODES for line in nodes[n].log_text().splitlines()
                if "mesh: not using peer" in line or "mesh: ignoring" in line]
            wait_until(lambda: all({e["name"] for e in nodes[n].roster()["nodes"]} >= set(NODES)
                                   for n in NODES), 15.0, 0.2, "every roster lists all nodes")
            hood.restart(list(NODES))
            hood.sessions((A, B), (C, B), timeout=15.0)
        # Central's bridge really isolates: node-a reaches central there, and node-b's
        # mesh listener over the A-B link, but not over the bridge.
        assert tcp_reaches(ns[A], CENTRAL_IP, CENTRAL_PORT)
        assert tcp_reaches(ns[A], LINKS[(A, B)][1][1], MESH_PORT)
        assert not tcp_reaches(ns[A], UPLINK_IPS[B], MESH_PORT), \
            "nodes reach each other through central's bridge"
        print(f"\n[mesh-netns] central and three nodes up, line A-B-C meshed in "
              f"{time.monotonic() - started:.1f} s")
        yield hood
        ok = True
    finally:
        for member in (hood.members.values() if hood is not None else ()):
            member.client.close()
        for node in nodes.values():
            finish(node, ok)
        if central is not None and central.proc is not None and central.proc.poll() is None:
            if ok:
                central.stop()
            else:
                central.kill()
        for name in made:
            subprocess.run(["ip", "netns", "delete", name], check=False, timeout=30)


# -- MQTT clients of the refusal tests ----------------------------------------------------


class MeshProbe:
    """A paho MQTT v5 client on a node's mesh listener, with a given certificate."""

    def __init__(self, netns: str, host: str, *, ca: Path, cert: Path, key: Path,
                 user: str) -> None:
        self.netns, self.host, self.user = netns, host, user
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connack: queue.Queue[Any] = queue.Queue()
        self.subacks: queue.Queue[Any] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"probe-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.tls_set(ca_certs=str(ca), certfile=str(cert), keyfile=str(key))
        self.client.tls_insecure_set(True)  # the server's certificate names its node
        self.client.on_connect = lambda *a: self.connack.put(a[3])
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.client.on_subscribe = lambda *a: self.subacks.put(a[3])
        self.client.reconnect_delay_set(60, 60)  # one attempt: a refusal stays a refusal
        self.error: BaseException | None = None

    def __enter__(self) -> MeshProbe:
        with in_netns(self.netns):
            try:
                self.client.connect(self.host, MESH_PORT, keepalive=30)
            except (OSError, ssl.SSLError) as exc:
                self.error = exc
            self.client.loop_start()  # the loop's thread stays in the namespace
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()

    def connected(self, timeout: float = 5.0) -> bool:
        if self.error is not None:
            return False
        try:
            reason = self.connack.get(timeout=timeout)
        except queue.Empty:
            return False
        return not reason.is_failure

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        reasons = self.subacks.get(timeout=5.0)
        assert not any(r.is_failure for r in reasons), reasons

    def up(self, payload: bytes) -> None:
        info = self.client.publish(f"bartmesh/v1/{self.user}/up", payload, qos=1)
        info.wait_for_publish(5.0)
        assert info.is_published()

    def docs(self, seconds: float) -> list[Any]:
        out = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                _topic, payload = self.messages.get(timeout=left)
            except queue.Empty:
                break
            out.append(parse(payload))
        return out


def node_keys(node: MeshNode) -> KeyPair:
    return KeyPair.load(node.data_dir / "keys")


def forged_alert(keys: KeyPair, origin: str, seq: int, text: str, source: str = "team") -> Event:
    return make_event(keys, origin=origin, stream="public", seq=seq, kind="alert",
                      ts=int(time.time() * 1000), body={
                          "source": source, "category": "suspicious", "severity": "severe",
                          "title": "Let op", "text": text,
                          "place": {"point": None, "text": "Hoefkade"}, "areas": ["ESC-01"],
                          "expires": None, "ref": None, "called_112": False,
                          "called_112_by": "", "button": None})


def issue_cert(directory: Path, cn: str, ca_key: ec.EllipticCurvePrivateKey,
               ca_cert: x509.Certificate) -> tuple[Path, Path]:
    """A client certificate for ``cn`` signed by ``ca_key``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{cn}.pem", directory / f"{cn}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def self_signed_ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def never(predicate: Callable[[], Any], seconds: float, interval: float = 0.1) -> bool:
    """True when ``predicate`` stayed falsy for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return False
        time.sleep(interval)
    return not predicate()


def marker(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:10]}"


# -- 1. discovery --------------------------------------------------------------------------


def test_mdns_finds_the_peers_on_the_mesh_links(hood: Hood) -> None:
    """B dials no one by address: a session it dialled must come from mDNS. node-b <
    node-c, so B dials C (over B-C) once it sees C's advert; no advert names an
    address on central's bridge (mDNS is on the mesh-link addresses only)."""
    def found() -> list[dict[str, Any]]:
        return [p for p in hood[B].mesh()["peers"] if p["how"] == "mdns"]

    try:
        peers = wait_until(found, 8.0, 0.2, "a peer of node-b found by mDNS")
    except AssertionError as exc:
        lines = [ln for ln in hood[B].log_text().splitlines() if "mesh" in ln]
        raise AssertionError(f"{exc}; node-b's mesh log:\n" + "\n".join(lines[-25:])) from None
    assert {p["name"] for p in peers} == {C}, peers
    assert all(p["dialled"] for p in peers)
    for n in NODES:  # no advert names an address on central's bridge
        found_lines = [ln for ln in hood[n].log_text().splitlines() if "mesh peer found" in ln]
        assert found_lines, n
        assert not [ln for ln in found_lines if "10.66.0." in ln], found_lines


# -- 2. roster news --------------------------------------------------------------------------


def test_roster_news_reaches_the_mesh_without_a_restart(hood: Hood) -> None:
    """Enrolled in the order A, B, C, node-a's roster from enrolment lists only itself;
    its uplink fetches the newer one (listing B and C) within seconds. The mesh must use
    it at once: the fixture noted whether the sessions came up without a restart."""
    if hood.first_start_refusals:
        pytest.fail(
            "bug: a roster fetched by the uplink is saved (central/roster.json) but never "
            "given to the mesh's TrustedKeys (Uplink._apply sets uplink.roster only; "
            "NodeRuntime._load_central_trust runs at start): nodes enrolled after this one "
            "are refused until a restart; and a static peer refused once is never dialled "
            "again (Mesh._dialled -> _drop_target). Log lines:\n"
            + "\n".join(hood.first_start_refusals[:6]))


# -- 3. line: the panic alarm and its answer ---------------------------------------------------


def test_panic_alarm_crosses_the_line_and_the_answer_comes_back(hood: Hood) -> None:
    hood.link(A, C, up=False)
    a, c = hood[A], hood[C]
    member = hood.member(C)
    with member.stream() as team_sse:
        before = {i for (i,) in a.query("SELECT id FROM events WHERE kind = 'alert'")}
        pressed = time.monotonic()
        r = a.http("POST", f"/demo/press/{BUTTON}")
        assert r.status_code == 202, r.text

        def new_alarm() -> str | None:
            rows = a.query("SELECT id FROM events WHERE kind = 'alert' "
                           "AND json_extract(body, '$.button') = ?", BUTTON)
            fresh = [i for (i,) in rows if i not in before]
            return fresh[0] if fresh else None

        alarm = wait_until(new_alarm, 5.0, 0.01, "the alarm stored on node-a")
        stored_c = wait_until(lambda: c.received_at(alarm), 5.0, 0.005,
                              "the alarm stored on node-c")
        seen_c = time.monotonic()
        stored_a = a.received_at(alarm)
        assert stored_a is not None
        latency_ms = stored_c - stored_a
        print(f"\n[mesh-netns] panic alarm: stored on A -> stored on C (2 hops) "
              f"{latency_ms} ms; press -> seen on C {1000 * (seen_c - pressed):.0f} ms "
              f"(hold_s 0.5)")
        assert latency_ms < ALARM_BOUND_S * 1000

        msg = team_sse.wait_for(lambda m: m["id"] == alarm, 5.0)
        assert msg["event"] == "alert" and msg["data"]["origin"] == A
        assert msg["data"]["body"]["place"]["text"] == MEETING_POINT
        assert msg["data"]["alarm"] is True and msg["data"]["row"] == alarm, msg["data"]
        assert MEETING_POINT in msg["data"]["html"]
        # A neighbouring team sees the alarm of another area on its board.
        row = row_of(member.dashboard(), alarm)
        assert MEETING_POINT in row and "Ik ga erheen" in row, row

        r = member.post("/team/ack", ref=alarm, action="on_my_way", note="Ik fiets erheen")
        assert r.status_code == 303 and r.headers["location"] == "/team", r.text

        def ack_on_a() -> list[tuple[Any, ...]]:
            return a.query("SELECT id, origin, json_extract(body, '$.action'), "
                           "json_extract(body, '$.by'), json_extract(body, '$.note') "
                           "FROM events WHERE kind = 'ack' AND json_extract(body, '$.ref') = ?",
                           alarm)

        acks = wait_until(ack_on_a, 5.0, 0.01, "C's answer stored on node-a")
        # Only the public ack travels; the member's name and note stay on C.
        assert [row[1:] for row in acks] == [(C, "on_my_way", "team", "")], acks
        ack_id = acks[0][0]
        back_ms = (a.received_at(ack_id) or 0) - (c.received_at(ack_id) or 0)
        assert back_ms < ALARM_BOUND_S * 1000

        def light() -> str:
            buttons = a.http("GET", "/demo/buttons").json()["buttons"]
            return str(next(b["light"] for b in buttons if b["id"] == BUTTON))

        wait_until(lambda: light() == "coming", 5.0, 0.05, "A's light shows 'coming'")
        print(f"[mesh-netns] 'on my way': stored on C -> stored on A (2 hops) {back_ms} ms; "
              f"A's light: {light()}")
        time.sleep(1.0)  # anything shown twice would have arrived by now
        shown = [m for m in team_sse.all if m["id"] == alarm]
        assert len(shown) == 1, shown
    assert c.query("SELECT COUNT(*) FROM events WHERE id = ?", alarm) == [(1,)]
    assert not c.query("SELECT 1 FROM events WHERE stream = 'private' AND origin != ?", C)
    if CENTRES[A] not in row:
        pytest.fail(f"bug: node-c's team row for node-a's alarm names the origin "
                     f"{A!r}, not its community centre {CENTRES[A]!r}: "
                     "node/team/views.py row_view() overwrites its `names` argument "
                     "(peer names) with the meeting-point names. Row: " + row[:400])


# -- 4. partition and convergence --------------------------------------------------------------


def _post_many(node: MeshNode, n: int, label: str, concurrency: int = 16) -> float:
    """POST ``n`` reports for the neighbours (each makes a public alert); seconds taken."""
    errors: list[BaseException] = []
    took: list[float] = []

    async def go() -> None:
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(base_url=node.base_url, timeout=30.0,
                                     limits=limits) as client:
            sem = asyncio.Semaphore(concurrency)

            async def one(i: int) -> None:
                async with sem:
                    r = await client.post("/api/v1/reports", json={
                        "category": "nuisance", "text": f"{label} {i}",
                        "audience": "neighbours", "place": {"point": None, "text": "Hoefkade"}})
                    if r.status_code != 201:
                        raise AssertionError(f"{node.name}: {r.status_code} {r.text}")

            started = time.monotonic()
            await asyncio.gather(*(one(i) for i in range(n)))
            took.append(time.monotonic() - started)

    def thread_main() -> None:
        try:
            with in_netns(node.netns):
                asyncio.run(go())
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=thread_main, name=f"post-{node.name}")
    worker.start()
    worker.join(120)
    if errors:
        raise errors[0]
    assert took, f"{node.name}: posting did not finish"
    return took[0]


def test_partition_heals_with_every_public_event_exactly_once(hood: Hood) -> None:
    a, c = hood[A], hood[C]
    hood.link(A, C, up=False)
    hood.link(B, C, up=False)
    label = uuid.uuid4().hex[:8]
    results: dict[str, float] = {}
    failures: list[BaseException] = []

    def post(node: MeshNode) -> None:
        try:
            results[node.name] = _post_many(node, BURST, f"{label}-{node.name}")
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=post, args=(n,)) for n in (a, c)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    assert not failures, failures
    print(f"\n[mesh-netns] partition: {BURST} reports for the neighbours on A in "
          f"{results[A]:.1f} s and on C in {results[C]:.1f} s (in parallel, 16 at a time)")

    # The truth: each origin's own public stream.
    truth = {n: {e for e in hood[n].public() if e[0] == n} for n in NODES}
    for n in (A, C):
        assert sum(1 for (_, _, i) in truth[n]
                   if hood[n].query("SELECT 1 FROM events WHERE id = ? AND "
                                    "json_extract(body, '$.text') LIKE ?", i, f"{label}%")) \
            == BURST
    everything = set().union(*truth.values())
    # The cut was real: nothing of C's burst reached A or B.
    c_new = {e for e in truth[C] if e not in a.public()}
    assert len(c_new) >= BURST, "C's alerts crossed the cut"

    hood.link(B, C, up=True)
    healed = time.monotonic()

    def converged() -> bool:
        return all(hood[n].public() == everything for n in NODES)

    try:
        wait_until(converged, CONVERGE_BOUND_S + 30, 0.2, "every node holds every public event")
    except AssertionError as exc:
        counts = {n: len(hood[n].public()) for n in NODES}
        raise AssertionError(f"{exc}: want {len(everything)}, hold {counts}") from None
    took = time.monotonic() - healed
    print(f"[mesh-netns] healed B-C: all three nodes hold all {len(everything)} public "
          f"events after {took:.1f} s")

    for n in NODES:
        node = hood[n]
        rows = node.query("SELECT origin, COUNT(*), MAX(seq), COUNT(DISTINCT id), "
                          "COUNT(DISTINCT seq) FROM events WHERE stream = 'public' "
                          "GROUP BY origin")
        for origin, count, top, ids, seqs in rows:
            want = len(truth[origin])
            # Every seq once, no gaps, every id once.
            assert (count, top, ids, seqs) == (want, want, want, want), (n, origin, rows)
        vector = node.mesh()["vector"]
        assert {o: v["public"] for o, v in vector.items()} == \
            {o: len(truth[o]) for o in NODES if truth[o]}, (n, vector)
    assert took <= CONVERGE_BOUND_S, f"converged after {took:.1f} s (bound {CONVERGE_BOUND_S} s)"


# -- 5. triangle -----------------------------------------------------------------------------


def test_triangle_delivers_every_alert_exactly_once(hood: Hood) -> None:
    hood.link(A, C, up=True)
    hood.sessions((A, B), (C, B), (A, C), timeout=20.0)
    members = {n: hood.member(n) for n in NODES}
    text = marker("Driehoek")
    with members[A].stream() as sse_a, members[B].stream() as sse_b, \
            members[C].stream() as sse_c:
        a = hood[A]
        a.report(text)
        alert = a.alert_for(text)
        wait_until(lambda: hood[B].has(alert) and hood[C].has(alert), 5.0, 0.01,
                   "the alert on B and C")
        streams = {A: sse_a, B: sse_b, C: sse_c}
        for n, sse in streams.items():
            sse.wait_for(lambda m: m["id"] == alert, 5.0)
        time.sleep(1.5)  # a second copy (A->C direct and A->B->C) would be here by now
        for n, sse in streams.items():
            shown = [m for m in sse.all if m["id"] == alert]
            assert len(shown) == 1, (n, shown)
            assert hood[n].alert_for(text) == alert
    # C had it twice (A->C and A->B->C); the seen-set dropped one: one row.
    for n in NODES:
        assert hood[n].query("SELECT COUNT(*) FROM events WHERE id = ?", alert) == [(1,)]


# -- 6. hop limit ------------------------------------------------------------------------------


@pytest.mark.leaves_running("nodes B and C, restarted twice: the module's hood stops them")
def test_hop_limit_one_stops_the_live_relay_at_b(hood: Hood) -> None:
    hood.link(A, C, up=False)
    # A long sync_s: catch-up must not bring the alert to C within the test. No mDNS
    # on B and C: a session that starts during the test (B dials C once it sees its
    # advert) would bring it by catch-up, which no hop limit bounds.
    hood.restart([B, C], hop_limit=1, sync_s=600.0, discovery=False)
    try:
        hood.sessions((A, B), (C, B), timeout=20.0)
        assert hood[B].mesh()["hop_limit"] == 1
        a, b, c = hood[A], hood[B], hood[C]
        text = marker("Hop")
        a.report(text)
        alert = a.alert_for(text)
        started = time.monotonic()
        wait_until(lambda: b.has(alert), 3.0, 0.01, "the alert live on B")
        print(f"\n[mesh-netns] hop limit 1: on B after {1000 * (time.monotonic() - started):.0f}"
              f" ms; C waits")
        log_at = {n: len(hood[n].log_text()) for n in NODES}
        assert never(lambda: c.has(alert), 4.0), (
            "the alert reached C past the hop limit; mesh logs since:\n" + "\n".join(
                f"--- {n} ---\n" + "\n".join(line for line in hood[n].log_text()[log_at[n]:]
                                              .splitlines() if "mesh" in line)
                for n in NODES))
        stats = b.mesh()["stats"]
        assert stats["relayed"] == 0, stats
        assert stats["received"] >= 1, stats
    finally:
        hood.restart([B, C])
    hood.sessions((A, B), (C, B), timeout=20.0)
    # Catch-up is not bound by the hop limit: at the new session C gets it.
    wait_until(lambda: hood[C].has(alert), 10.0, 0.05, "the alert on C after catch-up")


def _log_times(node: MeshNode, pattern: str, since: int) -> list[str]:
    return [ln[11:23] for ln in node.log_text()[since:].splitlines() if re.search(pattern, ln)]


@pytest.mark.leaves_running("node B, restarted: the module's hood stops it")
def test_a_restarted_node_takes_its_peers_sessions_at_once(hood: Hood) -> None:
    """node-b restarts; A and C dial it again within their retry time (2 s). B must
    know both sessions as soon as they said hello: until it does, it relays nothing
    to them."""
    hood.link(A, C, up=False)
    hood.sessions((A, B), (C, B), timeout=20.0)
    since = {n: len(hood[n].log_text()) for n in NODES}
    hood.restart([B])
    up = time.monotonic()

    def both() -> bool:
        return {A, C} <= hood[B].peers()

    wait_until(both, 25.0, 0.05, "node-b's sessions with A and C after its restart")
    took = time.monotonic() - up
    print(f"\n[mesh-netns] node-b restarted: its sessions with A and C after {took:.1f} s")
    if took > 5.0:
        pytest.fail(
            f"bug: node-b took {took:.1f} s to take the sessions A and C dialled: a hello "
            "that reaches node-b's Mosquitto before the node's SUBSCRIBE to bartmesh/v1/+/up "
            "is acknowledged is dropped (the mesh listener opens with the broker, before the "
            "node subscribes), and the dialler says nothing more until its next ping "
            "(PING_S = 10 s). Times: B up "
            f"{_log_times(hood[B], 'is up: portal', since[B])}, A dialled "
            f"{_log_times(hood[A], 'mesh: connected to node-b', since[A])}, C dialled "
            f"{_log_times(hood[C], 'mesh: connected to node-b', since[C])}, B took "
            f"{_log_times(hood[B], 'connected to this node', since[B])}")


# -- 8-11. refusals ----------------------------------------------------------------------------


def _a_listener(hood: Hood) -> str:
    """node-a's mesh address on the A-B link (reached from node-b's namespace)."""
    return LINKS[(A, B)][0][1]


def test_a_real_peers_session_cannot_pass_forged_events(hood: Hood) -> None:
    hood.link(A, C, up=True)
    hood.sessions((A, B), (C, B), (A, C), timeout=20.0)
    a, b, c = hood[A], hood[B], hood[C]
    ca = b.data_dir / "central" / "ca.pem"
    refused_before = a.mesh()["stats"]["refused"]
    log_before = len(a.log_text())
    forged = forged_alert(KeyPair.generate(), B, 10**9, marker("vervalst"))
    own = forged_alert(node_keys(a), A, 10**9, marker("eigen"))
    central_alert = forged_alert(node_keys(b), B, 10**9 + 1, marker("centraal"),
                                 source="central")
    with MeshProbe(b.netns, _a_listener(hood), ca=ca, cert=b.data_dir / "central" / "node.pem",
                   key=b.data_dir / "central" / "node.key", user=B) as probe:
        assert probe.connected(), probe.error
        probe.subscribe(f"bartmesh/v1/{B}/down")
        # Control: the session is taken (A answers a ping on it).
        probe.up(Ping(4242).encode())
        answers = probe.docs(2.0)
        assert any(isinstance(d, Ping) and d.pong and d.n == 4242 for d in answers), answers
        for event in (forged, own, central_alert):
            probe.up(Relay.of(event, 1).encode())
        time.sleep(2.0)
        probe.up(Bye().encode())
    for event in (forged, own, central_alert):
        for node in (a, b, c):
            assert not node.has(event.id), (node.name, event.body["text"])
    assert a.mesh()["stats"]["refused"] >= refused_before + 3
    log = a.log_text()[log_before:]
    assert re.search(rf"mesh: refused {forged.id} from {B}: bad signature", log), log[-2000:]
    assert re.search(rf"mesh: refused {own.id} from {B}: an event of this node's own origin",
                     log), log[-2000:]
    assert re.search(rf"mesh: refused {central_alert.id} from {B}: {B} may not send central",
                     log), log[-2000:]
    assert "Traceback" not in log


def test_a_certificate_for_a_name_not_in_the_roster_is_ignored(hood: Hood) -> None:
    a, b = hood[A], hood[B]
    central_dir = hood.central.data_dir
    ca_cert = x509.load_pem_x509_certificate((central_dir / "ca" / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((central_dir / "ca" / "ca.key").read_bytes(),
                                                None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    cert, key = issue_cert(hood.work / "intruder", "intruder", ca_key, ca_cert)
    event = forged_alert(node_keys(b), B, 10**9 + 2, marker("indringer"))
    log_before = len(a.log_text())
    with MeshProbe(b.netns, _a_listener(hood), ca=central_dir / "ca" / "ca.pem", cert=cert,
                   key=key, user="intruder") as probe:
        # central's CA signed it: Mosquitto lets it in; the node ignores what it says.
        assert probe.connected(), probe.error
        probe.subscribe("bartmesh/v1/intruder/down")
        probe.up(Hello(node="intruder", area="ESC-01", fp="AAAA-BBBB-CCCC", uplink=False,
                       vector={}).encode())
        probe.up(Ping(7).encode())
        probe.up(Relay.of(event, 1).encode())
        answers = probe.docs(3.0)
    assert answers == [], answers
    assert not a.has(event.id)
    assert "intruder" not in a.peers()
    log = a.log_text()[log_before:]
    assert "mesh: ignoring intruder (it is not in central's roster)" in log, log[-2000:]


def test_a_certificate_of_another_ca_never_gets_a_session(hood: Hood) -> None:
    b = hood[B]
    log_before = len(hood[A].log_text())
    ca_key, ca_cert = self_signed_ca("Some other CA")
    cert, key = issue_cert(hood.work / "foreign", B, ca_key, ca_cert)
    with MeshProbe(b.netns, _a_listener(hood), ca=b.data_dir / "central" / "ca.pem",
                   cert=cert, key=key, user=B) as probe:
        assert not probe.connected(5.0), "a certificate of another CA got a CONNACK"
    # Mosquitto says why (TLS 1.2: at the handshake; 1.3: when it reads the certificate).
    wait_until(lambda: re.search(r"certificate verify failed|unknown ca|OpenSSL Error",
                                 hood[A].log_text()[log_before:]), 15.0,
               0.1, "Mosquitto's TLS refusal in node-a's log")


def _central_events(hood: Hood, origin: str) -> list[tuple[str, str, int]]:
    """(id, stream, seq) of ``origin``'s events in central's SQLite database."""
    conn = sqlite3.connect(f"file:{hood.central.data_dir / 'central.db'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT id, stream, seq FROM events WHERE origin = ?",
                            (origin,)).fetchall()
    finally:
        conn.close()


def test_carry_a_node_cut_from_central_reaches_it_through_a_peer(hood: Hood) -> None:
    """A's uplink interface down, B's up: A's 500 reports reach central through B
    exactly once; B keeps them only sealed (none of A's private events in its store);
    an altered sealed batch is refused by central."""
    a, b = hood[A], hood[B]
    hood.link(A, C, up=False)
    hood.sessions((A, B))
    before = len(_central_events(hood, A))
    run("ip", "-n", hood.ns[A], "link", "set", "dev", "up0", "down")
    try:
        took = _post_many(a, 500, "carry")
        mine = a.query("SELECT id, stream, seq FROM events WHERE origin = ?", A)
        started = time.monotonic()

        def at_central() -> bool:
            return len(_central_events(hood, A)) >= len(mine)

        wait_until(at_central, 90.0, 0.5, "A's events at central through B")
        print(f"\n[mesh-netns] carry: 500 reports on A in {took:.1f} s; all {len(mine)} of "
              f"A's events at central through B {time.monotonic() - started:.1f} s later")
        held = _central_events(hood, A)
        assert sorted(held) == sorted(mine), "exactly A's events, each once"
        assert before < len(held)
        assert a.health()["uplink"]["batches_carried"] >= 1
        wait_until(lambda: a.health()["uplink"]["backlog"] == 0, 10.0, 0.2,
                   "A's backlog 0: it took central's acknowledgements")
        # B carried them sealed: none of A's private events in B's store.
        assert not b.query("SELECT 1 FROM events WHERE origin = ? AND stream = 'private'", A)
        assert b.query("SELECT COUNT(*) FROM carried WHERE node = ?", A)[0][0] >= 1
        assert b.mesh()["carry"]["carried_for_peers"] >= 1
    finally:
        run("ip", "-n", hood.ns[A], "link", "set", "dev", "up0", "up")
    # A carrier that altered a batch: central refuses it (the node's signature).
    keys = node_keys(a)
    central_pub = base64.b64decode(json.loads(
        (a.data_dir / "central" / "enrolment.json").read_text())["encryption_pub"])
    event = forged_alert(keys, A, 10_000_000, "altered on the way")
    wire = bytearray(sealed.seal(sealed.Payload.of([event], {}), node_id=A, batch_seq=9_999_999,
                                 created=int(time.time() * 1000), keys=keys,
                                 central_encryption_public=central_pub))
    wire[-5] ^= 0x01
    with in_netns(hood.ns[B]):
        r = httpx.post(f"{CENTRAL_URL}/api/v1/batches", content=bytes(wire),
                       headers={"Content-Type": "application/vnd.bart.batch"}, timeout=10)
    assert r.status_code == 401 and r.json()["error"] == "bad_signature", r.text
    assert event.id not in {i for i, _s, _q in _central_events(hood, A)}


def test_a_revoked_node_is_dropped(hood: Hood) -> None:
    hood.link(A, C, up=True)
    hood.sessions((A, B), (C, B), (A, C), timeout=20.0)
    a, b, c = hood[A], hood[B], hood[C]
    # Control: C's alerts are taken by A now.
    text = marker("voor")
    c.report(text)
    wait_until(lambda: a.query("SELECT 1 FROM events WHERE json_extract(body, '$.text') = ?",
                               text), 5.0, 0.02, "C's alert on A before the revocation")

    # A's log from before the revocation: A may drop C's session (and say so) as soon
    # as its own roster has it, before B's roster does (it raced in full runs).
    log_before = len(a.log_text())
    hood.central.cli("revoke", C)
    revoked_at = time.monotonic()

    def revoked_in(node: MeshNode) -> bool:
        return any(e["name"] == C and e.get("revoked") is not None
                   for e in node.roster()["nodes"])

    wait_until(lambda: revoked_in(a) and revoked_in(b), 15.0, 0.1,
               "the revocation in A's and B's rosters")
    print(f"\n[mesh-netns] revoked node-c: in A's and B's rosters after "
          f"{time.monotonic() - revoked_at:.1f} s")
    text = marker("na")
    c.report(text)
    after = c.alert_for(text)
    taken = not never(lambda: a.has(after), SYNC_S + 3.0)
    peers = a.peers()
    log = a.log_text()[log_before:]
    if taken or C in peers:
        pytest.fail(
            "bug: node-a's roster lists node-c as revoked, yet its mesh "
            + ("took node-c's new alert" if taken else "refused node-c's new alert")
            + f" and {'still lists' if C in peers else 'dropped'} node-c's session "
            f"(A's peers: {sorted(peers)}): the mesh's TrustedKeys keeps the roster of the "
            "node's start (a newer one from the uplink never reaches it), and a dialled "
            "session is not checked against the roster after it connected (Mesh._on_down). "
            f"A's mesh log since: {[ln for ln in log.splitlines() if 'mesh' in ln][:5]}")
    assert re.search(r"node-c.*(central revoked it|not trusted)", log), log[-2000:]


# -- 12. logs ----------------------------------------------------------------------------------


def test_no_node_logged_a_traceback(hood: Hood) -> None:
    logs = {n: hood[n].log_text() for n in NODES}
    logs["central"] = hood.central.log_path.read_text(errors="replace")
    found = {n: [m.start() for m in re.finditer("Traceback", log)] for n, log in logs.items()}
    # A traceback is known (zeroconf logs a failed send on an interface that is down
    # with exc_info) when the line before it is zeroconf's "Network is unreachable".
    known = re.compile(r"WARNING zeroconf: Error with socket \d+ \(\('[0-9.]+', 5353\)\)\): "
                       r"\[Errno 101\] Network is unreachable\n$")
    unknown = {n: [i for i in at if not known.search(logs[n][max(0, i - 200):i])]
               for n, at in found.items()}
    for n, at in unknown.items():
        assert not at, f"--- {n} ---\n{logs[n][max(0, at[0] - 1500):at[0] + 3000]}"
    if any(found.values()):
        first = next(n for n, at in found.items() if at)
        i = found[first][0]
        pytest.fail(
            "bug: a node whose mesh-link interface is down logs a traceback from zeroconf "
            "(`[mesh] interfaces` names an address on it; python-zeroconf logs the failed "
            "multicast send with exc_info), counts "
            f"{ {n: len(at) for n, at in found.items() if at} }:\n"
            + logs[first][max(0, i - 120):i + 300])
