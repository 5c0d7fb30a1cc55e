"""The rendered hotspot files at work, without Wi-Fi hardware: a "node" and a
"phone" network namespace joined by a veth pair whose node end is called
wlan0. Real dnsmasq with the rendered dnsmasq.conf hands out the address and
answers DNS; the rendered nftables ruleset is loaded in the node namespace.

What listens on the portal port here is a plain HTTP server: these tests are
about addresses, names and the firewall; the portal's own answers to the
phones' probes are tested with the portal (node/portal).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from node.config import NodeSettings
from node.hotspot import render_system, write_files
from tests.support.base import require, require_binary

pytestmark = pytest.mark.timeout(120)

NODE_IP = "10.42.0.1"
PHONE_IP = "10.42.0.77"  # a fixed address for the checks that do not test DHCP


@dataclass
class Hotspot:
    node: str
    phone: str
    ip: str
    conf: Path
    procs: list[subprocess.Popen[bytes]]
    extra_netns: list[str]

    def phone_py(self, code: str, timeout: float = 30) -> dict[str, object]:
        """Run Python in the phone's namespace; it prints one JSON object."""
        result = subprocess.run([self.ip, "netns", "exec", self.phone, sys.executable, "-c",
                                 textwrap.dedent(code)], capture_output=True, text=True,
                                timeout=timeout)
        assert result.returncode == 0, result.stderr
        data: dict[str, object] = json.loads(result.stdout)
        return data

    def serve(self, port: int) -> None:
        """A TCP listener on the node (HTTP on the portal port)."""
        proc = subprocess.Popen([self.ip, "netns", "exec", self.node, sys.executable, "-m",
                                 "http.server", str(port), "--bind", "0.0.0.0"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)


def sh(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True, text=True, timeout=30)


@pytest.fixture
def hotspot(tmp_path: Path) -> Iterator[Hotspot]:
    ip = require_binary("ip", "/usr/sbin/ip", "/sbin/ip")
    nft = require_binary("nft", "/usr/sbin/nft")
    dnsmasq = require_binary("dnsmasq", "/usr/sbin/dnsmasq")
    tag = uuid.uuid4().hex[:6]
    node, phone = f"bart-node-{tag}", f"bart-phone-{tag}"
    made = subprocess.run([ip, "netns", "add", node], capture_output=True, text=True)
    require(made.returncode == 0, f"cannot create a network namespace: {made.stderr.strip()}")
    box = Hotspot(node, phone, ip, tmp_path / "etc/bart/dnsmasq.conf", [], [])
    try:
        sh(ip, "netns", "add", phone)
        sh(ip, "link", "add", "wlan0", "netns", node, "type", "veth", "peer", "name", "eth0",
           "netns", phone)
        for ns, dev in ((node, "wlan0"), (phone, "eth0"), (node, "lo"), (phone, "lo")):
            sh(ip, "-n", ns, "link", "set", dev, "up")
        sh(ip, "-n", node, "address", "add", f"{NODE_IP}/24", "dev", "wlan0")
        settings = NodeSettings(data_dir=Path("/var/lib/bart"), name="n1", area="ESC-01")
        write_files(render_system(settings, bart=Path("/opt/bart/.venv/bin/bart")), tmp_path)
        # the lease file's place (/run/bart-dnsmasq) is made by systemd; here, the tmp dir
        text = box.conf.read_text()
        assert "dhcp-leasefile=/run/bart-dnsmasq/leases" in text
        box.conf.write_text(text.replace("/run/bart-dnsmasq/leases", str(tmp_path / "leases")))
        sh(ip, "netns", "exec", node, nft, "-f", str(tmp_path / "etc/bart/nftables.nft"))
        proc = subprocess.Popen([ip, "netns", "exec", node, dnsmasq, "--keep-in-foreground",
                                 f"--conf-file={box.conf}", "--log-queries"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        box.procs.append(proc)
        time.sleep(0.5)
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        yield box
    finally:
        for p in box.procs:
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for ns in (*box.extra_netns, phone, node):
            subprocess.run([ip, "netns", "delete", ns], capture_output=True)


def test_phone_gets_an_address_by_dhcp(hotspot: Hotspot) -> None:
    busybox = require_binary("busybox", "/usr/bin/busybox", "/bin/busybox")
    result = subprocess.run([hotspot.ip, "netns", "exec", hotspot.phone, busybox, "udhcpc",
                             "-i", "eth0", "-n", "-q", "-f", "-s", "/bin/true", "-t", "5",
                             "-T", "1"], capture_output=True, text=True, timeout=30)
    out = result.stdout + result.stderr
    match = re.search(r"lease of (10\.42\.0\.(\d+)) obtained from 10\.42\.0\.1, lease time 3600",
                      out)
    assert match, out
    assert 10 <= int(match.group(2)) <= 250


def with_phone_address(hotspot: Hotspot) -> None:
    sh(hotspot.ip, "-n", hotspot.phone, "address", "add", f"{PHONE_IP}/24", "dev", "eth0")
    sh(hotspot.ip, "-n", hotspot.phone, "route", "add", "default", "via", NODE_IP)


DNS_QUERY = """
    import json, random, socket, struct

    def ask(server, name, qtype):
        qid = random.randrange(65536)
        q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
        q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0"
        q += struct.pack(">HH", qtype, 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.sendto(q, (server, 53))
        data, _ = s.recvfrom(512)
        rcode, answers = data[3] & 0x0F, struct.unpack(">H", data[6:8])[0]
        ip = ".".join(str(b) for b in data[-4:]) if answers and qtype == 1 else None
        return {"rcode": rcode, "answers": answers, "ip": ip}

    out = {}
    for server in ("10.42.0.1", "8.8.8.8"):
        for name in ("connectivitycheck.gstatic.com", "captive.apple.com",
                     "www.msftconnecttest.com", "no-such-name.example"):
            out[f"{server} {name} A"] = ask(server, name, 1)
    out["AAAA"] = ask("10.42.0.1", "connectivitycheck.gstatic.com", 28)
    print(json.dumps(out))
"""


def test_every_name_answers_the_node_even_from_another_resolver(hotspot: Hotspot) -> None:
    with_phone_address(hotspot)
    answers = hotspot.phone_py(DNS_QUERY)
    aaaa = answers.pop("AAAA")
    for key, answer in answers.items():
        assert answer == {"rcode": 0, "answers": 1, "ip": NODE_IP}, key
    # no IPv6 address and no REFUSED: the phone uses IPv4 without waiting
    assert aaaa == {"rcode": 0, "answers": 0, "ip": None}


TCP_PROBE = """
    import json, socket

    def connect(host, port):
        s = socket.socket()
        s.settimeout(3)
        try:
            s.connect((host, port))
            if port in (80, 8080):
                s.sendall(b"GET / HTTP/1.0\\r\\nHost: connectivitycheck.gstatic.com\\r\\n\\r\\n")
                return s.recv(64).decode(errors="replace").split("\\r\\n")[0]
            return "open"
        except ConnectionRefusedError:
            return "refused"
        except OSError as exc:
            return type(exc).__name__ + ":" + str(exc.errno)
        finally:
            s.close()

    print(json.dumps({f"{h}:{p}": connect(h, p) for h, p in [
        ("10.42.0.1", 80), ("93.184.216.34", 80), ("10.42.0.1", 8080),
        ("10.42.0.1", 8883), ("10.42.0.1", 22), ("10.42.0.1", 1883),
        ("93.184.216.34", 443)]}))
"""


def test_port_80_anywhere_reaches_the_portal_and_the_rest_is_refused(hotspot: Hotspot) -> None:
    with_phone_address(hotspot)
    hotspot.serve(8080)  # the portal's port (http_port)
    hotspot.serve(8883)  # the point devices' broker port
    hotspot.serve(1883)  # the node's own Mosquitto: never from the hotspot
    hotspot.serve(22)
    # a node with an uplink that forwards (someone enabled it): still no way out for
    # phones. The uplink leads to a namespace that answers nothing: without the
    # firewall the connection would time out there.
    ip, node, wan = hotspot.ip, hotspot.node, f"{hotspot.node}-wan"
    sh(ip, "netns", "add", wan)
    hotspot.extra_netns.append(wan)
    sh(ip, "link", "add", "uplink0", "netns", node, "type", "veth", "peer", "name", "eth0",
       "netns", wan)
    for ns, dev, addr in ((node, "uplink0", "192.0.2.1/24"), (wan, "eth0", "192.0.2.254/24")):
        sh(ip, "-n", ns, "link", "set", dev, "up")
        sh(ip, "-n", ns, "address", "add", addr, "dev", dev)
    sh(ip, "-n", node, "route", "add", "default", "via", "192.0.2.254")
    sh(ip, "netns", "exec", node, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    time.sleep(0.5)
    seen = hotspot.phone_py(TCP_PROBE)
    assert str(seen["10.42.0.1:80"]).startswith("HTTP/1.0 200"), seen
    assert str(seen["93.184.216.34:80"]).startswith("HTTP/1.0 200"), seen
    assert seen["10.42.0.1:8883"] == "open", seen
    assert seen["10.42.0.1:8080"] == "refused", seen  # only by way of port 80
    assert seen["10.42.0.1:22"] == "refused", seen
    assert seen["10.42.0.1:1883"] == "refused", seen
    # forwarded traffic is rejected at once (ICMP admin-prohibited), not left to time out
    assert seen["93.184.216.34:443"] == "OSError:113", seen  # EHOSTUNREACH
