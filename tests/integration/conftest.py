"""Fixtures for integration tests that run a whole node as a real subprocess.

``bart node init`` + ``bart node run`` in a temporary data directory, talking
to it only from the outside: HTTP (httpx), MQTT (paho, as the node's own
service user or the read-only integration user) and the files it leaves on
disk. Nothing of the node is mocked.

pytest imports every ``conftest.py`` outside a package under the module name
``conftest``; once this file is loaded, ``from conftest import free_port`` in
a test module of this folder resolves to *this* module. The helpers of
``tests/conftest.py`` are therefore re-exported here unchanged.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import importlib.util
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker.topics import event_topic
from node.server import LOOP_BUDGET_ENV, LOOP_HELD
from sync import Event, KeyPair, make_event
from tests.support.base import IN_CI, free_port, require, require_binary  # noqa: F401

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


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05,
               message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
        except Exception as exc:
            value, last_exc = None, exc
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} not reached within {timeout:.1f}s"
                                 + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


def bart_command() -> list[str]:
    """The ``bart`` console script of the running interpreter's environment."""
    script = Path(sys.executable).with_name("bart")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "bart.cli"]


def live_processes() -> Iterator[tuple[int, bytes, int]]:
    """(pid, command line, parent pid) of every live (non-zombie) process."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            yield int(entry.name), cmdline, int(fields[1])


def mosquitto_pids_for(data_dir: Path) -> list[int]:
    """Live mosquitto processes whose command line names ``data_dir``."""
    needle = str(data_dir.resolve()).encode()
    return [pid for pid, cmdline, _ in live_processes()
            if b"mosquitto" in cmdline.split(b"\0")[0] and needle in cmdline]


def log_tail(path: Path, lines: int = 60) -> str:
    """The last ``lines`` lines of a process log, for failure messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def kill_group(pid: int) -> None:
    """SIGKILL a process group (gone already is fine)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def terminate(proc: subprocess.Popen[bytes], timeout: float, kill: Callable[[], None],
              what: str, log_path: Path) -> int:
    """SIGTERM ``proc``'s group and wait; on a timeout ``kill()`` and fail. Exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill()
            raise AssertionError(f"{what} ignored SIGTERM for {timeout}s:\n"
                                 f"{log_tail(log_path)}") from None
    return int(proc.returncode)


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


class MqttProbe:
    """A plain paho client (MQTT 3.1.1) used from test code: collect and publish."""

    def __init__(self, host: str, port: int, user: str | None, password: str | None,
                 client_id: str) -> None:
        self.host, self.port = host, port
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connack: queue.Queue[Any] = queue.Queue()
        self.subacks: queue.Queue[list[Any]] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311)
        if user is not None:
            self.client.username_pw_set(user, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self._started = False

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connack.put(reason)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        self.messages.put((msg.topic, bytes(msg.payload)))

    def _on_subscribe(self, _c: Any, _u: Any, _mid: Any, reasons: Any, _p: Any) -> None:
        self.subacks.put(list(reasons))

    def __enter__(self) -> MqttProbe:
        self.client.reconnect_delay_set(60, 60)  # a refused CONNACK must stay refused
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self._started = True
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        if self._started:
            self.client.loop_stop()

    def first_connack(self, timeout: float = 5.0) -> Any:
        return self.connack.get(timeout=timeout)

    def wait_connected(self, timeout: float = 5.0) -> None:
        reason = self.first_connack(timeout)
        assert not reason.is_failure, f"CONNACK refused: {reason}"

    def subscribe(self, *filters: str, timeout: float = 5.0) -> list[Any]:
        self.client.subscribe([(f, 1) for f in filters])
        return self.subacks.get(timeout=timeout)

    def publish(self, topic: str, payload: bytes, timeout: float = 5.0) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout)
        assert info.is_published(), f"no PUBACK for {topic}"

    def drain(self, seconds: float) -> list[tuple[str, bytes]]:
        """Everything that arrives within ``seconds``."""
        out = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                out.append(self.messages.get(timeout=left))
            except queue.Empty:
                break
        return out


class SseReader:
    """Reads ``GET /api/v1/stream`` on a thread; parsed messages land in a queue."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.headers = headers or {}
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        #: Every message received, in order (wait_for consumes ``events`` only).
        self.all: list[dict[str, Any]] = []
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(5.0, read=60.0))
        self._thread = threading.Thread(target=self._run, name="sse-reader", daemon=True)
        self._sock: socket.socket | None = None
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            with self._client.stream("GET", self.url, headers=self.headers) as r:
                assert r.status_code == 200, r.status_code
                stream = r.extensions.get("network_stream")
                self._sock = stream.get_extra_info("socket") if stream is not None else None
                fields: dict[str, str] = {}
                for line in r.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith(":"):
                        if "connected" in line:
                            self.connected.set()
                        continue
                    if line == "":
                        if "data" in fields:
                            msg = {"event": fields.get("event", "message"),
                                   "id": fields.get("id"), "data": json.loads(fields["data"])}
                            self.all.append(msg)
                            self.events.put(msg)
                        fields = {}
                        continue
                    name, _, value = line.partition(":")
                    fields[name] = value[1:] if value.startswith(" ") else value
        except Exception as exc:
            if not self._stop.is_set():
                self.error = exc

    def __enter__(self) -> SseReader:
        self._thread.start()
        assert self.connected.wait(5.0), f"SSE stream did not open ({self.error!r})"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        sock = self._sock
        if sock is not None:  # wake the reader blocked in recv() at once
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5.0)
        self._client.close()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool],
                 timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self.events.get(timeout=left)
            except queue.Empty:
                break
            if predicate(msg):
                return msg
        raise AssertionError(f"no matching SSE message within {timeout}s (error: {self.error!r})")


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


def configure(node: NodeProcess, settings: str, tables: str = "") -> None:
    """Add plain ``settings`` to node.toml before its first table, ``tables`` at the end."""
    config = node.data_dir / "node.toml"
    head, sep, rest = config.read_text(encoding="utf-8").partition("\n[[")
    config.write_text(f"{head}\n{settings}\n{sep}{rest}{tables}", encoding="utf-8")


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


@contextlib.contextmanager
def node_running(base: Path, mosquitto: str) -> Iterator[NodeProcess]:
    node = init_node(base, mosquitto)
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
        if node.proc is not None and node.proc.poll() is None:
            if ok:
                stop_and_check(node)
            else:
                node.kill()


@pytest.fixture(scope="module")
def running_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node run by ``bart node run`` for the whole module (stopped with SIGTERM)."""
    mosquitto = require_binary("mosquitto", "/usr/sbin/mosquitto")
    with node_running(tmp_path_factory.mktemp("node"), mosquitto) as node:
        yield node


@pytest.fixture
def fresh_node(tmp_path: Path, mosquitto_bin: str) -> Iterator[NodeProcess]:
    """A node of its own for one test (for tests that break things)."""
    with node_running(tmp_path, mosquitto_bin) as node:
        yield node


@pytest.fixture
def stopped_node(tmp_path: Path, mosquitto_bin: str) -> Iterator[NodeProcess]:
    """An initialised node that is not running; killed at the end if a test left it on."""
    node = init_node(tmp_path, mosquitto_bin)
    yield node
    if node.proc is not None and node.proc.poll() is None:
        node.kill()


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium driven by Playwright (never a downloaded browser)."""
    chromium = require_binary("chromium", "/usr/bin/chromium", "chromium-browser")
    require(importlib.util.find_spec("playwright") is not None,
            "playwright (python) is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


# ------------------------------------------------------------------ central


@dataclass
class CentralProcess:
    """A central created with ``bart central init`` and run with ``bart central run``."""

    data_dir: Path
    http_port: int
    database_url: str
    log_path: Path
    workers: int = 1
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``bart central ARGS --data-dir …`` and return the finished process."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("BART_")}
        result = subprocess.run(
            [*bart_command(), "central", *args, "--data-dir", str(self.data_dir)],
            capture_output=True, text=True, env=env, timeout=60, check=False)
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        assert self.proc is None or self.proc.poll() is not None, "central already running"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BART_")}
        env["PYTHONUNBUFFERED"] = "1"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*bart_command(), "central", "run", "--data-dir", str(self.data_dir),
                 "--workers", str(self.workers)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True)

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"central exited with {self.proc.returncode}:\n"
                                     f"{self.log_tail()}")
            return httpx.get(f"{self.url}/healthz", timeout=2.0).status_code == 200

        try:
            wait_until(up, timeout, 0.1, "central /healthz")
        except AssertionError as exc:
            self.kill()  # a supervisor whose workers failed may linger
            raise AssertionError(f"{exc}\n--- central log ---\n{self.log_tail()}") from None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        assert self.proc is not None
        code = terminate(self.proc, timeout, self.kill, "central", self.log_path)
        assert_no_asgi_error(self.log_path, "central")
        return code

    def kill(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            kill_group(proc.pid)
            proc.wait(10)

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)

    def enrol(self, node: NodeProcess, area: str = AREA) -> None:
        """Enrol ``node`` the way a volunteer does: a code here, ``bart node enroll`` there."""
        out = self.cli("enroll-code", "--node", node.name, "--area", area).stdout
        code = out.split(": ", 1)[1].split()[0]
        result = subprocess.run(
            [*bart_command(), "node", "enroll", self.url, "--code", code,
             "--data-dir", str(node.data_dir)],
            capture_output=True, text=True, env=node.env(), timeout=60, check=False)
        assert result.returncode == 0, result.stderr


def init_central_process(base: Path, database_url: str = "", *, workers: int = 1,
                         name: str = "haaglanden") -> CentralProcess:
    """``bart central init`` in ``base/central`` on a free port (SQLite unless a URL is given)."""
    port = free_port()
    central = CentralProcess(data_dir=base / "central", http_port=port,
                             database_url=database_url, log_path=base / "central.log",
                             workers=workers)
    args = ["init", "--name", name, "--http-port", str(port),
            "--public-url", f"http://127.0.0.1:{port}"]
    if database_url:
        args += ["--database-url", database_url]
    central.cli(*args)
    return central


# -- a disk that fills: a real tmpfs --------------------------------------------------

def fill_disk(disk: Path) -> Path:
    """Take every free byte of ``disk`` (a tmpfs); the file to delete to free it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):  # unbuffered: every byte written is on the disk
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs: a node's disk that can fill (root only; CI runs the tests as root)."""
    mount = require_binary("mount", "/usr/bin/mount", "/bin/mount")
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run([mount, "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs",
                           str(disk)], capture_output=True, text=True, check=False)
    require(done.returncode == 0, f"cannot mount a tmpfs (not root?): {done.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
