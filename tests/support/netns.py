"""Building blocks of the system tests in network namespaces: central on a bridge,
nodes on their own namespaces joined by veth mesh links (``tests/system``).

Used by ``tests/system/test_mesh_netns.py`` (a fixed line A-B-C) and by
``tests.support.neighbourhood`` (a neighbourhood a test can shape and break).
Addresses and ports are fixed: each run has namespaces of its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import socket
import sqlite3
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from node.team import TEAM_DB, TeamAccounts
from tests.support.base import bart_command, wait_until
from tests.support.central import CentralProcess
from tests.support.html import csrf_of
from tests.support.node import START_TIMEOUT_S, NodeProcess
from tests.support.sse import SseReader

A, B, C = "node-a", "node-b", "node-c"
NODES = (A, B, C)
AREAS = {A: "ESC-01", B: "ESC-02", C: "ESC-03"}
CENTRES = {A: "Buurthuis De Kleine Wereld", B: "Wijkcentrum De Boog",
           C: "Buurthuis Het Anker"}
HTTP_PORT, MQTT_PORT, MESH_PORT = 8080, 1883, 8884
CENTRAL_IP, CENTRAL_PORT = "10.66.0.1", 8080
CENTRAL_URL = f"http://{CENTRAL_IP}:{CENTRAL_PORT}"
UPLINK_IPS = {A: "10.66.0.11", B: "10.66.0.12", C: "10.66.0.13"}
#: Mesh links: (one, other) -> (its interface and address on one, … on other).
LINKS: dict[tuple[str, str], tuple[tuple[str, str], tuple[str, str]]] = {
    (A, B): (("ab", "10.66.12.1"), ("ba", "10.66.12.2")),
    (B, C): (("bc", "10.66.23.2"), ("cb", "10.66.23.3")),
    (A, C): (("ac", "10.66.13.1"), ("ca", "10.66.13.3")),
}
MEETING_POINT, BUTTON = "Speeltuin De Klimboom", "klimboom-hek"
TEAM_PASSWORD = "een lange zin als wachtwoord"
TEAM_COOKIE = "bart_team"


def link_addresses(name: str) -> list[str]:
    """The node's addresses on its mesh links (where mDNS may go)."""
    out = []
    for (one, other), ((_, ip1), (_, ip2)) in LINKS.items():
        if name == one:
            out.append(ip1)
        elif name == other:
            out.append(ip2)
    return out


# -- network namespaces -----------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def in_netns(ns: str) -> Iterator[None]:
    """Run the block with this thread in network namespace ``ns``: sockets opened here
    (and threads started here) live there."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def run(*cmd: str, timeout: float = 60, check: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                            check=False, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}): "
                             f"{result.stdout}{result.stderr}")
    return result


def tcp_reaches(ns: str, host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a TCP connection from namespace ``ns`` to ``host:port`` is accepted."""
    with in_netns(ns):
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError:
            return False
    return True


def bart_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BART_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


# -- processes ---------------------------------------------------------------------------


@dataclass
class MeshNode(NodeProcess):
    """``bart node run`` in its own network namespace."""

    netns: str = ""

    def start(self, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
        self.launch()
        result: dict[str, Any] = self.wait_healthy(timeout)
        return result

    def launch(self) -> None:
        """Start the process; do not wait."""
        assert self.proc is None or self.proc.poll() is not None, "node already running"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, *bart_command(), "node", "run",
                 "--data-dir", str(self.data_dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env(), start_new_session=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{HTTP_PORT}"

    def http(self, method: str, path: str, **kw: Any) -> httpx.Response:
        kw.setdefault("timeout", 10.0)
        with in_netns(self.netns):
            return httpx.request(method, self.base_url + path, **kw)

    def health(self) -> dict[str, Any]:
        data: dict[str, Any] = self.http("GET", "/healthz", timeout=5.0).json()
        return data

    def mesh(self) -> dict[str, Any]:
        r = self.http("GET", "/api/v1/mesh")
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    def peers(self) -> set[str]:
        return {p["name"] for p in self.mesh()["peers"]}

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10.0)

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with contextlib.closing(self.db()) as conn:
            return list(conn.execute(sql, args).fetchall())

    def public(self) -> set[tuple[str, int, str]]:
        """(origin, seq, id) of every public event this node holds."""
        return {(o, s, i) for o, s, i in
                self.query("SELECT origin, seq, id FROM events WHERE stream = 'public'")}

    def has(self, event_id: str) -> bool:
        return bool(self.query("SELECT 1 FROM events WHERE id = ?", event_id))

    def received_at(self, event_id: str) -> int | None:
        rows = self.query("SELECT received_at FROM events WHERE id = ?", event_id)
        return int(rows[0][0]) if rows else None

    def roster(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            (self.data_dir / "central" / "roster.json").read_text())["doc"]
        return data

    def report(self, text: str, audience: str = "neighbours") -> dict[str, Any]:
        r = self.http("POST", "/api/v1/reports", json={
            "category": "suspicious", "text": text, "audience": audience,
            "place": {"point": None, "text": "Hoefkade"}})
        assert r.status_code == 201, r.text
        data: dict[str, Any] = r.json()
        return data

    def alert_for(self, text: str) -> str:
        """Id of the public alert this node holds whose text is ``text`` (exactly one)."""
        rows = self.query("SELECT id FROM events WHERE kind = 'alert' "
                          "AND json_extract(body, '$.text') = ?", text)
        assert len(rows) == 1, f"{self.name}: {len(rows)} alerts with text {text!r}"
        return str(rows[0][0])


@dataclass
class MeshCentral(CentralProcess):
    """``bart central run`` in its own network namespace, on the bridge address."""

    netns: str = ""

    @property
    def url(self) -> str:
        return CENTRAL_URL

    def start(self, timeout: float = START_TIMEOUT_S, extra: Sequence[str] = ()) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, *bart_command(), "central",
                 "run", "--data-dir", str(self.data_dir), *extra],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=bart_env(), start_new_session=True)

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"central exited with {self.proc.returncode}:\n"
                                     f"{self.log_tail()}")
            with in_netns(self.netns):
                return httpx.get(f"{self.url}/healthz", timeout=2.0).status_code == 200

        try:
            wait_until(up, timeout, 0.1, "central /healthz")
        except AssertionError as exc:
            self.kill()
            raise AssertionError(f"{exc}\n--- central log ---\n{self.log_tail()}") from None

    def enrol_node(self, node: MeshNode) -> None:
        """A code here, ``bart node enroll`` in the node's namespace (over the bridge)."""
        out = self.cli("enroll-code", "--node", node.name, "--area", node.area).stdout
        code = re.search(r"--code\s+(\S+)", out) or re.search(r":\s*(\S+)", out)
        assert code, out
        run("ip", "netns", "exec", node.netns, *bart_command(), "node", "enroll",
            CENTRAL_URL, "--code", code.group(1), "--data-dir", str(node.data_dir),
            env=node.env())


@dataclass
class TeamMember:
    """A logged-in team member of one node, talking HTTP like a browser without JS."""

    node: MeshNode
    name: str
    client: httpx.Client

    @classmethod
    def log_in(cls, node: MeshNode, name: str) -> TeamMember:
        with TeamAccounts(node.data_dir / TEAM_DB) as team:
            otp = team.add(name)
        member = cls(node, name, httpx.Client(base_url=node.base_url, timeout=10.0,
                                              follow_redirects=False))
        r = member.request("POST", "/team/login", data={"name": name, "password": otp})
        assert r.status_code == 303 and r.headers["location"] == "/team/password", r.text
        page = member.request("GET", "/team/password")
        r = member.request("POST", "/team/password", data={
            "csrf": csrf_of(page.text), "current": otp, "new": TEAM_PASSWORD,
            "repeat": TEAM_PASSWORD})
        assert r.status_code == 303 and r.headers["location"] == "/team", r.text
        return member

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        with in_netns(self.node.netns):
            return self.client.request(method, path, **kw)

    @property
    def token(self) -> str:
        token = self.client.cookies.get(TEAM_COOKIE)
        assert token
        return str(token)

    def dashboard(self) -> str:
        r = self.request("GET", "/team")
        assert r.status_code == 200, r.status_code
        return r.text

    def post(self, path: str, **data: str) -> httpx.Response:
        data.setdefault("csrf", csrf_of(self.dashboard()))
        return self.request("POST", path, data=data)

    @contextlib.contextmanager
    def stream(self) -> Iterator[Any]:
        """The team's SSE stream (``/team/stream``), read on a thread in the node's namespace."""
        reader = SseReader(f"{self.node.base_url}/team/stream",
                                   headers={"Cookie": f"{TEAM_COOKIE}={self.token}"})
        with in_netns(self.node.netns):
            reader.__enter__()  # its thread is born in the namespace and stays there
        try:
            yield reader
        finally:
            reader.__exit__()

