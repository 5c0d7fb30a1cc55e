"""Discovery across a real link: nodes in network namespaces, and dig as an outside client.

Four network namespaces on one Ethernet segment: a bridge ``br0`` lives in
the *hub* namespace (which is also the "third view" of dig and of a plain
multicast query), and each node namespace (``a``, ``b``, ``d``) is joined to
it by a veth pair whose node end is ``eth0``. Each node is a small Python
process (``ip netns exec``) running one :class:`node.mesh.discovery.Discovery`
on ``interfaces=["eth0"]`` that prints its peers as a JSON line on every
change and closes on SIGTERM.

Checked here and not in the loopback tests: multicast between hosts,
interfaces given by name, that an independent DNS implementation (BIND's
dig) reads our records as meant, that a plain legacy mDNS query (RFC 6762
§6.7) sent to 224.0.0.251 from a third host is answered by every node, and
how long a node that vanishes without a goodbye (power cut: SIGKILL) stays,
and that a second node with a name already taken is refused.

dig note: ``dig @224.0.0.251 -p 5353`` does not work with dig 9.18: mDNS
responders answer a legacy query by unicast from their own address, and dig
drops replies from any address but the one it asked. So dig asks each node's
responder directly (``dig @10.77.0.1 -p 5353``), which RFC 6762 §5.5 allows.

Needs root (namespaces). Namespaces and processes are removed by the
fixtures' finalizers; names are unique per run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from node.mesh.discovery import SERVICE_TYPE, service_name
from tests.support import require, require_binary
from tests.support.netns import run

pytestmark = pytest.mark.timeout(180)

SUBNET = "10.77.0"
HUB_IP = f"{SUBNET}.254"
NODE_IPS = {"a": f"{SUBNET}.1", "b": f"{SUBNET}.2", "d": f"{SUBNET}.4"}
FPS = {"a": "QX7K-3MFA-P2RT", "b": "AB2C-DEFG-HJK9", "d": "ZZZZ-2222-MMMM"}
AREAS = {"a": "ESC-01", "b": "LDV-02", "d": "ESC-01"}
ROOT = Path(__file__).resolve().parents[2]

NODE_SCRIPT = textwrap.dedent("""
    import asyncio, dataclasses, json, signal, sys
    from node.mesh.discovery import Advert, Discovery, NameConflict

    name, area, port, fp, interface, ttl, check_s = sys.argv[1:8]

    def show(peers):
        print(json.dumps({"peers": {n: dataclasses.asdict(f) for n, f in peers.items()}}),
              flush=True)

    async def main():
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        advert = Advert(name, area, int(port), fp)
        try:
            async with Discovery(advert, show, interfaces=[interface], ttl=int(ttl),
                                 check_s=float(check_s)):
                print(json.dumps({"started": True}), flush=True)
                await stop.wait()
        except NameConflict as exc:
            print(json.dumps({"conflict": str(exc)}), flush=True)
            sys.exit(3)
        print(json.dumps({"closed": True}), flush=True)

    asyncio.run(main())
""")

# A legacy (one-shot) mDNS query, RFC 6762 §6.7: from an ephemeral port to the
# group; every responder answers by unicast, echoing the query id.
QUERY_SCRIPT = textwrap.dedent("""
    import json, socket, struct, sys, time
    qtype, source = sys.argv[1], sys.argv[2]
    query = struct.pack(">6H", 0x5A17, 0, 1, 0, 0, 0)
    for label in qtype.rstrip(".").split("."):
        query += bytes([len(label)]) + label.encode()
    query += b"\\0" + struct.pack(">HH", 12, 1)  # PTR, IN
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(source))
    s.settimeout(0.2)
    s.sendto(query, ("224.0.0.251", 5353))
    replies, deadline = [], time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            data, addr = s.recvfrom(9000)
        except TimeoutError:
            continue
        replies.append({"from": addr[0], "port": addr[1], "data": data.hex()})
    print(json.dumps(replies))
""")


@dataclass
class NodeProc:
    """One Discovery in its namespace; its JSON lines are read by a thread."""

    name: str
    netns: str
    port: int
    fp: str
    area: str
    ttl: int
    check_s: float
    log_path: Path
    proc: subprocess.Popen[str] | None = None
    lines: list[dict[str, Any]] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _reader: threading.Thread | None = None

    def start(self, until: str = "started") -> None:
        self.lines.clear()
        log = self.log_path.open("a")
        try:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, sys.executable, "-c", NODE_SCRIPT,
                 self.name, self.area, str(self.port), self.fp, "eth0", str(self.ttl),
                 str(self.check_s)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, text=True,
                cwd=ROOT, start_new_session=True)
        finally:
            log.close()
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True,
                                        name=f"read-{self.name}")
        self._reader.start()
        self.wait(lambda line: until in line, 20)

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            with self._cond:
                self.lines.append(json.loads(raw))
                self._cond.notify_all()
        with self._cond:
            self.lines.append({"exited": proc.wait()})
            self._cond.notify_all()

    def wait(self, condition: Callable[[dict[str, Any]], bool], timeout: float) -> float:
        """Seconds until a line (seen since start) satisfies ``condition``."""
        started = time.monotonic()
        with self._cond:
            while not any(condition(line) for line in self.lines):
                left = timeout - (time.monotonic() - started)
                if left <= 0 or any("exited" in line for line in self.lines):
                    raise AssertionError(
                        f"{self.name}: condition not met in {timeout} s; lines: {self.lines}"
                        f"\n--- log ---\n{self.log_path.read_text()}")
                self._cond.wait(left)
        return time.monotonic() - started

    def wait_peers(self, condition: Callable[[dict[str, Any]], bool], timeout: float) -> float:
        """Seconds until the latest peer table satisfies ``condition``."""
        def latest_matches(_line: dict[str, Any]) -> bool:
            tables = [line["peers"] for line in self.lines if "peers" in line]
            return condition(tables[-1] if tables else {})
        return self.wait(latest_matches, timeout)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self._reader is not None:
            self._reader.join(10)  # its last line is in before a restart clears them
            self._reader = None


@dataclass
class Lan:
    hub: str
    netns: dict[str, str]
    work: Path
    nodes: list[NodeProc] = field(default_factory=list)

    def node(self, key: str, name: str, *, port: int = 8884, ttl: int = 120,
             check_s: float = 15) -> NodeProc:
        node = NodeProc(name=name, netns=self.netns[key], port=port, fp=FPS[key],
                        area=AREAS[key], ttl=ttl, check_s=check_s,
                        log_path=self.work / f"{name}.log")
        self.nodes.append(node)
        return node

    def hub_run(self, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.hub, *cmd, timeout=timeout)


@pytest.fixture(scope="module")
def lan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lan]:
    require(os.geteuid() == 0, "network namespaces need root")
    require_binary("ip", "/usr/sbin/ip", "/sbin/ip", "/bin/ip")
    tag = uuid.uuid4().hex[:8]
    hub = f"bart-mdns-hub-{tag}"
    netns = {key: f"bart-mdns-{key}-{tag}" for key in NODE_IPS}
    made: list[str] = []
    lan: Lan | None = None
    try:
        for ns in (hub, *netns.values()):
            result = run("ip", "netns", "add", ns, check=False)
            require(result.returncode == 0,
                    f"cannot create a network namespace: {result.stderr.strip()}")
            made.append(ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", hub, "address", "add", f"{HUB_IP}/24", "dev", "br0")
        run("ip", "-n", hub, "link", "set", "br0", "up")
        for key, ns in netns.items():
            port = f"v{key}"
            run("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port,
                "netns", hub)
            run("ip", "-n", hub, "link", "set", port, "master", "br0")
            run("ip", "-n", hub, "link", "set", port, "up")
            run("ip", "-n", ns, "address", "add", f"{NODE_IPS[key]}/24", "dev", "eth0")
            run("ip", "-n", ns, "link", "set", "eth0", "up")
        lan = Lan(hub=hub, netns=netns, work=tmp_path_factory.mktemp("mdns-netns"))
        yield lan
    finally:
        if lan is not None:
            for node in lan.nodes:
                node.stop(signal.SIGKILL)
        for ns in made:
            subprocess.run(["ip", "netns", "delete", ns], check=False, timeout=30)


@pytest.fixture(scope="module")
def pair(lan: Lan) -> Iterator[tuple[NodeProc, NodeProc]]:
    """Nodes a and b, running for the module."""
    tag = uuid.uuid4().hex[:6]
    a = lan.node("a", f"escamp-zandloper-{tag}", port=8884, check_s=1)
    b = lan.node("b", f"leidschenveen-{tag}", port=18884, check_s=1)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.stop()
        b.stop()


def test_nodes_on_two_hosts_find_each_other(pair: tuple[NodeProc, NodeProc]) -> None:
    a, b = pair
    a.wait_peers(lambda peers: b.name in peers, 10)
    b.wait_peers(lambda peers: a.name in peers, 10)
    seen_by_a = [line["peers"] for line in a.lines if "peers" in line][-1]
    seen_by_b = [line["peers"] for line in b.lines if "peers" in line][-1]
    found = {k: v for k, v in seen_by_a[b.name].items() if k != "last_seen"}
    assert found == {"name": b.name, "area": "LDV-02", "port": 18884, "fp": FPS["b"],
                     "proto": 1, "addresses": [NODE_IPS["b"]]}
    assert seen_by_b[a.name]["addresses"] == [NODE_IPS["a"]]
    assert seen_by_b[a.name]["port"] == 8884 and seen_by_b[a.name]["area"] == "ESC-01"
    assert a.name not in seen_by_a and b.name not in seen_by_b


def test_dig_reads_each_nodes_records(lan: Lan, pair: tuple[NodeProc, NodeProc]) -> None:
    dig = require_binary("dig", "/usr/bin/dig")
    for node, key in zip(pair, ("a", "b"), strict=True):
        ip = NODE_IPS[key]

        def ask(qname: str, qtype: str, ip: str = ip) -> list[str]:
            out = lan.hub_run(dig, f"@{ip}", "-p", "5353", "+short", "+time=2", "+tries=3",
                              qname, qtype).stdout
            return out.splitlines()

        full = service_name(node.name)
        assert ask(SERVICE_TYPE, "PTR") == [full]
        txt = ask(full, "TXT")
        assert len(txt) == 1
        assert txt[0].split(" ") == [f'"node={node.name}"', f'"area={AREAS[key]}"',
                                     f'"port={node.port}"', f'"fp={FPS[key]}"', '"proto=1"']
        srv = ask(full, "SRV")
        assert srv == [f"0 0 {node.port} {full}"]
        assert ask(full, "A") == [ip]


def test_a_multicast_query_from_a_third_host_is_answered_by_every_node(
        lan: Lan, pair: tuple[NodeProc, NodeProc]) -> None:
    a, b = pair
    out = lan.hub_run(sys.executable, "-c", QUERY_SCRIPT, SERVICE_TYPE, HUB_IP).stdout
    replies = json.loads(out)
    by_source = {r["from"]: bytes.fromhex(r["data"]) for r in replies}
    assert set(by_source) >= {NODE_IPS["a"], NODE_IPS["b"]}, replies
    for node, key in ((a, "a"), (b, "b")):
        data = by_source[NODE_IPS[key]]
        assert data[:2] == b"\x5a\x17"  # the query's id, echoed (legacy unicast)
        assert data[2] & 0x80  # a response
        label = node.name.encode()
        assert bytes([len(label)]) + label in data  # the PTR names this node


def test_a_second_node_with_a_name_already_taken_is_refused(
        pair: tuple[NodeProc, NodeProc], lan: Lan) -> None:
    a, b = pair
    twin = lan.node("d", a.name, port=9999)  # a cloned SD card, say
    twin.start(until="conflict")
    assert twin.proc is not None and twin.proc.wait(10) == 3
    assert "already advertises" in next(line["conflict"] for line in twin.lines
                                         if "conflict" in line)
    # The first keeps its name; its peer never saw the twin's advert.
    seen_by_b = [line["peers"] for line in b.lines if "peers" in line][-1]
    assert seen_by_b[a.name]["port"] == 8884
    assert all(peers.get(a.name, {}).get("port", 8884) == 8884
               for peers in (line["peers"] for line in b.lines if "peers" in line))


def test_a_node_that_leaves_is_lost_at_once_and_one_that_vanishes_after_its_ttl(
        pair: tuple[NodeProc, NodeProc], lan: Lan) -> None:
    a, _b = pair  # a checks its known adverts every second
    ttl = 4
    gone = lan.node("d", f"escamp-vonk-{uuid.uuid4().hex[:6]}", ttl=ttl, check_s=1)

    gone.start()
    a.wait_peers(lambda peers: gone.name in peers, 10)
    stopped = time.monotonic()
    gone.stop(signal.SIGTERM)  # closes: goodbye packets
    a.wait_peers(lambda peers: gone.name not in peers, 5)
    goodbye_s = time.monotonic() - stopped
    assert goodbye_s < 3

    gone.start()  # back again under the same name
    a.wait_peers(lambda peers: gone.name in peers, 10)
    killed = time.monotonic()
    gone.stop(signal.SIGKILL)  # power cut: no goodbye
    # Lost once its records expired (ttl) and it did not answer (3 s), at a check (1 s).
    a.wait_peers(lambda peers: gone.name not in peers, ttl + 1 + 3 + 6)
    vanished_s = time.monotonic() - killed
    assert vanished_s >= ttl * 0.8, vanished_s

    # Power back: its announcement (or the next check) brings it back, although
    # a's zeroconf still holds its old PTR record (kept for at least 1125 s).
    gone.start()
    back_s = a.wait_peers(lambda peers: gone.name in peers, 5)
    gone.stop(signal.SIGTERM)
    print(f"lost after a goodbye in {goodbye_s:.2f} s; without one (ttl {ttl} s, "
          f"check 1 s) in {vanished_s:.2f} s; found again {back_s:.2f} s after its start")
