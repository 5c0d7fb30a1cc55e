"""A whole node as a real subprocess: ``bart node init`` + ``bart node run`` in a
temporary data directory, talked to only from the outside (HTTP, MQTT, its files).

``node_running`` starts one and, when the block ends normally, stops it with
SIGTERM and checks that it stopped cleanly (``stop_and_check``): exit code 0,
no Mosquitto left behind, no event-loop callback over its budget, no request
that raised past every handler.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from broker.topics import event_topic
from node.reports import new_receipt
from node.server import LOOP_BUDGET_ENV, LOOP_HELD
from sync import Event, KeyPair, make_event
from tests.support.base import bart_command, free_port, log_tail, wait_until
from tests.support.mqtt import MqttProbe
from tests.support.processes import kill_group, mosquitto_pids_for, terminate

NODE_NAME = "n1"
AREA = "ESC-01"
PEER_ORIGIN = "peer-1"
RECEIPT_PATTERN = r"^[A-HJ-NP-Z2-9]{3}-[A-HJ-NP-Z2-9]{3}$"
MEETING_POINTS = (
    {"id": "speeltuin", "name": "Speeltuin De Klimboom",
     "description": "Bij de ingang aan de Zonnebloemstraat"},
    {"id": "buurthuis", "name": "Buurthuis De Boog", "description": "Voor de hoofdingang"},
)
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
#: CPU milliseconds one event-loop callback of a test's node may use (node/server.py):
#: a page or handler above it delays every alarm behind it (issue "cost flat"; the
#: home page once held it for 778 ms at 10^6 events). Counted from when the portal
#: serves: start-up (migrations, keys, the broker) runs before, and the templates
#: and team.db open off the loop. 100: pages take 2-10 ms of CPU; a loaded 2-core
#: CI machine stretches CPU time too.
LOOP_BUDGET_MS = 100
#: What uvicorn logs when a request raised past every handler (a 500 with a
#: traceback): a test run fails on it, node or central (issue 17, hostile input).
ASGI_ERROR = "Exception in ASGI application"


def assert_no_asgi_error(log_path: Path, what: str) -> None:
    """Fail when any request in ``log_path`` ended in an unhandled exception."""
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    at = text.find(ASGI_ERROR)
    assert at < 0, f"a request to {what} raised past every handler:\n{text[at:at + 3000]}"


@dataclass
class NodeProcess:
    """One node created with ``bart node init`` and run with ``bart node run``."""

    data_dir: Path
    http_port: int
    mqtt_port: int
    mosquitto: str
    peer: KeyPair
    log_path: Path
    name: str = NODE_NAME
    area: str = AREA
    peer_origin: str = PEER_ORIGIN
    proc: subprocess.Popen[bytes] | None = None
    env_extra: dict[str, str] = field(default_factory=dict)
    _peer_seq: int = 0
    _peer_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "node.db"

    @property
    def creds(self) -> dict[str, str]:
        data: dict[str, str] = json.loads((self.data_dir / "secrets" / "mqtt.json").read_text())
        return data

    @property
    def service_password(self) -> str:
        return self.creds["service_password"]

    @property
    def integration_password(self) -> str:
        return self.creds["integration_password"]

    # -- process ---------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BART_")}
        env.update({"BART_REPORTS_PER_MINUTE": "0", "BART_MOSQUITTO_BINARY": self.mosquitto,
                    "PYTHONUNBUFFERED": "1", LOOP_BUDGET_ENV: str(LOOP_BUDGET_MS)})
        env.update(self.env_extra)
        return env

    def start(self, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
        """Start ``bart node run`` in its own process group; wait for status ok."""
        assert self.proc is None or self.proc.poll() is not None, "node already running"
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                [*bart_command(), "node", "run", "--data-dir", str(self.data_dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env(), start_new_session=True)
        finally:
            log.close()
        return self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
        def ok() -> dict[str, Any] | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited with {self.proc.returncode}:\n{self.log_tail()}")
            health = self.health()
            return health if health.get("status") == "ok" else None

        try:
            result: dict[str, Any] = wait_until(ok, timeout, 0.1, "/healthz status ok")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- node log ---\n{self.log_tail()}") from None
        return result

    def health(self) -> dict[str, Any]:
        r = httpx.get(f"{self.base_url}/healthz", timeout=5.0)
        data: dict[str, Any] = r.json()
        return data

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM to the node; wait; return its exit code."""
        assert self.proc is not None
        return terminate(self.proc, timeout, self.kill, "node", self.log_path)

    def kill(self) -> None:
        """SIGKILL the node's process group and its Mosquitto (a power cut)."""
        proc = self.proc
        broker_pids = mosquitto_pids_for(self.data_dir)
        if proc is not None and proc.poll() is None:
            kill_group(proc.pid)
        for pid in broker_pids:  # Mosquitto leads its own session (and process group)
            kill_group(pid)
        if proc is not None:
            proc.wait(10)
        wait_until(lambda: not mosquitto_pids_for(self.data_dir), 5.0,
                   message="killed mosquitto gone")

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)

    def bart(self, *args: str) -> str:
        """``bart node ARGS --data-dir …`` with this node's environment; its output."""
        result = subprocess.run([*bart_command(), "node", *args, "--data-dir",
                                 str(self.data_dir)],
                                capture_output=True, text=True, env=self.env(), timeout=60,
                                check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout

    # -- peer events -------------------------------------------------------------

    def next_peer_seq(self) -> int:
        with self._peer_lock:
            self._peer_seq += 1
            return self._peer_seq

    def peer_alert(self, text: str, *, keys: KeyPair | None = None, origin: str | None = None,
                   seq: int | None = None, **body: Any) -> Event:
        """A signed public alert from the trusted peer (or from ``keys``/``origin``)."""
        fields: dict[str, Any] = {"source": "team", "category": "suspicious",
                                  "severity": "moderate", "title": "Buurtteam",
                                  "text": text, "areas": [self.area]}
        fields.update(body)
        return make_event(keys or self.peer, origin=origin or self.peer_origin,
                          stream="public", seq=seq if seq is not None else self.next_peer_seq(),
                          kind="alert", ts=int(time.time() * 1000), body=fields)

    def mqtt_client(self, user: str | None, password: str | None,
                    client_id: str) -> MqttProbe:
        return MqttProbe("127.0.0.1", self.mqtt_port, user, password, client_id)

    def service_client(self, client_id: str) -> MqttProbe:
        return self.mqtt_client("bart-node", self.service_password, client_id)

    def publish_events(self, *events: Event, repeat: int = 1) -> None:
        """Publish events as the service user at QoS 1, waiting for each PUBACK."""
        with self.service_client(f"test-pub-{time.monotonic_ns()}") as client:
            client.wait_connected()
            for _ in range(repeat):
                for event in events:
                    client.publish(event_topic(event.origin, event.stream, event.kind),
                                   event.encode())


def init_node(base: Path, mosquitto: str, *, name: str = NODE_NAME) -> NodeProcess:
    """``bart node init`` in ``base/node``, plus meeting points and a trusted peer."""
    data_dir = base / "node"
    peer = KeyPair.generate()
    node = NodeProcess(data_dir=data_dir, http_port=free_port(), mqtt_port=free_port(),
                       mosquitto=mosquitto, peer=peer, log_path=base / "node.log", name=name)
    result = subprocess.run(
        [*bart_command(), "node", "init", "--name", name, "--area", AREA,
         "--data-dir", str(data_dir), "--http-port", str(node.http_port),
         "--mqtt-port", str(node.mqtt_port)],
        capture_output=True, text=True, env=node.env(), timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    with (data_dir / "node.toml").open("a", encoding="utf-8") as fh:
        for point in MEETING_POINTS:
            fh.write("\n[[meeting_points]]\n")
            for key, value in point.items():
                fh.write(f"{key} = {json.dumps(value, ensure_ascii=False)}\n")
        # Its own mesh port (nodes of one test host must not share 8884); mDNS
        # only where a test asks for it.
        fh.write(f"\n[mesh]\nport = {free_port()}\ndiscovery = false\n")
    signing = base64.b64encode(peer.signing_public).decode()
    (data_dir / "peers.toml").write_text(
        f'[peers.{PEER_ORIGIN}]\nsigning_key = "{signing}"\n', encoding="utf-8")
    return node


def mesh_settings(node: NodeProcess, port: int, peers: list[int], *, sync_s: float) -> None:
    """Replace node.toml's ``[mesh]`` section (and what follows it): the mesh listener on
    ``port``, dialling the nodes on 127.0.0.1 at ``peers``, no mDNS."""
    text = (node.data_dir / "node.toml").read_text(encoding="utf-8")
    head, _, _ = text.partition("\n[mesh]")
    text = head + f"\n[mesh]\nport = {port}\ndiscovery = false\nsync_s = {sync_s:g}\n"
    for peer in peers:
        text += f'\n[[mesh.peers]]\nhost = "127.0.0.1"\nport = {peer}\n'
    (node.data_dir / "node.toml").write_text(text, encoding="utf-8")


def configure(node: NodeProcess, settings: str, tables: str = "") -> None:
    """Add plain ``settings`` to node.toml before its first table, ``tables`` at the end."""
    config = node.data_dir / "node.toml"
    head, sep, rest = config.read_text(encoding="utf-8").partition("\n[[")
    config.write_text(f"{head}\n{settings}\n{sep}{rest}{tables}", encoding="utf-8")


def stop_and_check(node: NodeProcess) -> None:
    """Graceful stop: exit code 0, no Mosquitto of this node left behind, no request
    that raised past every handler."""
    code = node.stop()
    leftover = mosquitto_pids_for(node.data_dir)
    for pid in leftover:  # do not leak processes into the rest of the run
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    assert code == 0, f"bart node run exited with {code} after SIGTERM:\n{node.log_tail()}"
    assert not leftover, f"mosquitto {leftover} of {node.data_dir} outlived the node"
    held = [ln for ln in node.log_path.read_text(errors="replace").splitlines()
            if LOOP_HELD in ln]
    assert not held, "the node's event loop was held longer than its budget:\n" + \
        "\n".join(held[:5])
    assert_no_asgi_error(node.log_path, f"node {node.name}")


def finish(node: NodeProcess, ok: bool) -> None:
    """The end of a node a fixture started: when still running, stopped and checked
    (``stop_and_check``) if all went well (``ok``), killed otherwise."""
    if node.proc is not None and node.proc.poll() is None:
        if ok:
            stop_and_check(node)
        else:
            node.kill()


@contextlib.contextmanager
def node_running(base: Path, mosquitto: str, *, settings: str = "",
                 env: dict[str, str] | None = None) -> Iterator[NodeProcess]:
    """A node initialised in ``base`` (``settings`` added to node.toml, ``env`` to its
    environment), started; stopped and checked when the block ends normally, killed
    when it raised."""
    node = init_node(base, mosquitto)
    if settings:
        configure(node, settings)
    node.env_extra.update(env or {})
    try:
        node.start()
    except BaseException:
        if node.proc is not None:
            node.kill()
        raise
    ok = False
    try:
        yield node
        ok = True
    finally:
        finish(node, ok)


def fill_reports(db: Path, origin: str, n: int) -> None:
    """``n`` reports of ``origin`` with their receipts, held by central already, written
    straight into the node's SQLite file (the node stopped): a store with history in
    seconds (tests/integration/test_node_memory.py, bench/idle.py)."""
    conn = sqlite3.connect(db)
    try:
        seq0 = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events WHERE origin = ? AND "
                            "stream = 'private'", (origin,)).fetchone()[0]
        start = int(time.time() * 1000) - n
        events, receipts = [], []
        for i in range(n):
            ident, receipt, ts = str(uuid.uuid4()), new_receipt(), start + i
            body = json.dumps({
                "audience": "authorities", "called_112": False, "category": "nuisance",
                "contact": "", "lang": "nl", "place": {"point": None, "text": f"Hoefkade {i}"},
                "receipt": receipt, "text": f"Melding {i}: scooter scheurt door de straat"})
            events.append((ident, origin, "private", seq0 + i + 1, ts, "report", body, b"s", ts))
            receipts.append((receipt, ident, "forwarded", ts))
        conn.executemany("INSERT INTO events (id, origin, stream, seq, ts, kind, body, sig, "
                         "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", events)
        conn.executemany("INSERT INTO receipts (receipt, event_id, state, updated_at) "
                         "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", receipts)
        conn.execute("INSERT INTO uplink_state (key, value) VALUES (?, ?) ON CONFLICT (key) "
                     "DO UPDATE SET value = excluded.value",
                     (f"acked/{origin}/private", seq0 + n))
        conn.commit()
    finally:
        conn.close()

