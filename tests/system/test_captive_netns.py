"""The captive portal end to end, without Wi-Fi hardware.

Two network namespaces stand in for a phone and the node, joined by a veth
pair whose node end is called ``wlan0`` (the hotspot's default interface).
In the node namespace run, exactly as rendered from the node's settings by
``node.hotspot.render_system``: nftables (``table inet bart``) and dnsmasq
(DHCP and "every name is the node"); the node's address is set as the
``bart-hostapd`` unit sets it. A real node (``bart node run``, with its own
Mosquitto) listens on its portal port, which nftables makes port 80 for the
phone. The phone gets its address and DNS server by DHCP (busybox
``udhcpc``), resolves the probe hosts through the node, and ``curl`` asks
each OS's probe URL:

1. before the portal was opened, every probe gets ``302`` to the portal;
2. the phone follows the redirect, as its sign-in sheet does, and gets the
   portal page;
3. then every probe gets its OS's "online" answer;
4. a port other than 80 is refused, even the portal's own port when asked
   directly.

``bart node doctor``'s checks run inside the node namespace as well.

Needs root (namespaces, nftables). Namespaces, processes and the phone's
``/etc/netns`` resolver file are removed by the fixture's finalizer, names
are unique per run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from node.config import NodeSettings
from node.hotspot import DNSMASQ_CONF, NFTABLES_FILE, render_system, write_files
from tests.support.base import bart_command, require, require_binary
from tests.support.netns import run
from tests.support.node import (
    START_TIMEOUT_S,
    NodeProcess,
    configure,
    finish,
    init_node,
)

pytestmark = pytest.mark.timeout(240)

NODE_IP = "10.42.0.1"
PORTAL = f"http://{NODE_IP}/"
APPLE_SUCCESS = b"<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>\n"

#: Each OS's probe URL and the answer that means "online" (status, body).
PROBES: dict[str, tuple[int, bytes]] = {
    "http://connectivitycheck.gstatic.com/generate_204": (204, b""),
    "http://clients3.google.com/generate_204": (204, b""),
    "http://www.google.com/gen_204": (204, b""),
    "http://captive.apple.com/hotspot-detect.html": (200, APPLE_SUCCESS),
    "http://www.apple.com/library/test/success.html": (200, APPLE_SUCCESS),
    "http://www.msftconnecttest.com/connecttest.txt": (200, b"Microsoft Connect Test"),
    "http://www.msftncsi.com/ncsi.txt": (200, b"Microsoft NCSI"),
    "http://detectportal.firefox.com/success.txt": (200, b"success\n"),
    "http://detectportal.firefox.com/canonical.html":
        (200, b'<meta http-equiv="refresh" '
              b'content="0;url=https://support.mozilla.org/kb/captive-portal"/>'),
    "http://nmcheck.gnome.org/check_network_status.txt": (200, b"NetworkManager is online\n"),
    "http://network-test.debian.org/nm": (200, b"NetworkManager is online\n"),
}

# busybox udhcpc calls this with the lease in its environment: apply it as a
# phone's network stack would, and write down what the DHCP server said.
UDHCPC_SCRIPT = """\
#!/bin/sh
case "$1" in
    deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
    bound|renew)
        ip -4 addr flush dev "$interface"
        ip addr add "$ip/$mask" dev "$interface"
        [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
        printf '%s\\n' "ip=$ip" "mask=$mask" "router=$router" "dns=$dns" > "$LEASE_OUT"
        ;;
esac
exit 0
"""


@dataclass
class NamespacedNode(NodeProcess):
    """``bart node run`` inside a network namespace (``ip netns exec``)."""

    netns: str = ""

    def start(self, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, *bart_command(), "node", "run",
                 "--data-dir", str(self.data_dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env(), start_new_session=True)
        finally:
            log.close()
        result: dict[str, Any] = self.wait_healthy(timeout)
        return result

    def health(self) -> dict[str, Any]:
        out = run("ip", "netns", "exec", self.netns, "curl", "-s", "--max-time", "5",
                  f"http://127.0.0.1:{self.http_port}/healthz").stdout
        data: dict[str, Any] = json.loads(out)
        return data


@dataclass
class Hotspot:
    node_ns: str
    phone_ns: str
    node: NamespacedNode
    settings: NodeSettings
    root: Path
    lease: dict[str, str]
    work: Path

    def phone(self, *cmd: str, timeout: float = 30,
              check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.phone_ns, *cmd, timeout=timeout, check=check)

    def curl(self, url: str, *extra: str) -> tuple[int, int, dict[str, str], bytes]:
        """curl from the phone: (exit code, HTTP status, headers, body)."""
        head, body = self.work / "head.txt", self.work / "body.bin"
        for f in (head, body):
            f.unlink(missing_ok=True)
        result = self.phone("curl", "-sS", "--noproxy", "*", "--max-time", "8",
                            "-D", str(head), "-o", str(body), "-w", "%{http_code}",
                            *extra, url, timeout=30, check=False)
        headers: dict[str, str] = {}
        if head.exists():
            for line in head.read_text(errors="replace").splitlines():
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
        status = int(result.stdout.strip() or 0)
        return result.returncode, status, headers, body.read_bytes() if body.exists() else b""


def _kill_group(proc: subprocess.Popen[Any] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.fixture(scope="module")
def hotspot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hotspot]:
    require(os.geteuid() == 0, "network namespaces and nftables need root")
    for name in ("ip", "dnsmasq", "nft", "busybox", "curl"):
        require_binary(name, f"/usr/sbin/{name}", f"/sbin/{name}", f"/bin/{name}")
    mosquitto = require_binary("mosquitto", "/usr/sbin/mosquitto")
    base = tmp_path_factory.mktemp("captive-netns")
    tag = uuid.uuid4().hex[:8]
    node_ns, phone_ns = f"bart-node-{tag}", f"bart-phone-{tag}"
    netns_etc = Path("/etc/netns") / phone_ns
    made: list[str] = []
    dnsmasq: subprocess.Popen[str] | None = None
    node: NamespacedNode | None = None
    ok = False
    try:
        for ns in (node_ns, phone_ns):
            result = run("ip", "netns", "add", ns, check=False)
            require(result.returncode == 0,
                    f"cannot create a network namespace: {result.stderr.strip()}")
            made.append(ns)

        plain = init_node(base, mosquitto)
        configure(plain, 'http_host = "0.0.0.0"')
        node = NamespacedNode(**{f.name: getattr(plain, f.name)
                                 for f in dataclasses.fields(NodeProcess)},
                              netns=node_ns)
        settings = NodeSettings.load(node.data_dir)
        hs = settings.hotspot
        assert hs.interface == "wlan0" and str(hs.address) == f"{NODE_IP}/24"

        # The "Wi-Fi": a veth pair made straight into the two namespaces.
        run("ip", "link", "add", hs.interface, "netns", node_ns, "type", "veth",
            "peer", "name", "eth0", "netns", phone_ns)
        for ns in (node_ns, phone_ns):
            run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        # What bart-hostapd.service does before hostapd starts.
        run("ip", "netns", "exec", node_ns, "ip", "address", "replace", str(hs.address),
            "dev", hs.interface)
        run("ip", "netns", "exec", node_ns, "ip", "link", "set", hs.interface, "up")
        run("ip", "netns", "exec", phone_ns, "ip", "link", "set", "eth0", "up")

        # The node's system files, rendered from its settings as install.sh does.
        root = base / "root"
        write_files(render_system(settings, bart=Path(bart_command()[0]).absolute(),
                                  hotspot=True), root)
        run("ip", "netns", "exec", node_ns, "nft", "-f",
            str(root / str(NFTABLES_FILE).lstrip("/")))
        # dnsmasq keeps its leases in /run/bart-dnsmasq (systemd's RuntimeDirectory):
        # here a private /run in the namespace's own mount namespace stands in for it.
        run_dir = base / "run"
        (run_dir / "bart-dnsmasq").mkdir(parents=True)
        dnsmasq_log = (base / "dnsmasq.log").open("w")
        dnsmasq = subprocess.Popen(
            ["ip", "netns", "exec", node_ns, "sh", "-c",
             'mount --bind "$1" /run && exec dnsmasq --keep-in-foreground --conf-file="$2"',
             "sh", str(run_dir), str(root / str(DNSMASQ_CONF).lstrip("/"))],
            stdout=dnsmasq_log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        dnsmasq_log.close()

        node.start()

        # The phone joins: DHCP gives it an address, a router and a DNS server.
        script = base / "udhcpc.sh"
        script.write_text(UDHCPC_SCRIPT)
        script.chmod(0o755)
        lease_file = base / "lease.txt"
        result = subprocess.run(
            ["ip", "netns", "exec", phone_ns, "busybox", "udhcpc", "-i", "eth0", "-f", "-q",
             "-n", "-t", "10", "-T", "1", "-s", str(script)],
            capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "LEASE_OUT": str(lease_file)})
        assert result.returncode == 0 and lease_file.exists(), (
            f"no DHCP lease: {result.stdout}{result.stderr}\n--- dnsmasq ---\n"
            f"{(base / 'dnsmasq.log').read_text()}")
        lease = dict(line.split("=", 1) for line in lease_file.read_text().splitlines())
        # The phone's resolver is the DNS server DHCP named (ip netns exec mounts it).
        netns_etc.mkdir(parents=True)
        (netns_etc / "resolv.conf").write_text(
            "".join(f"nameserver {d}\n" for d in lease["dns"].split()))

        yield Hotspot(node_ns, phone_ns, node, settings, root, lease, base)
        ok = True
    finally:
        if node is not None:
            finish(node, ok)
        _kill_group(dnsmasq)
        shutil.rmtree(netns_etc, ignore_errors=True)
        for ns in made:
            subprocess.run(["ip", "netns", "delete", ns], check=False, timeout=30)


def test_the_phone_gets_its_address_and_dns_from_the_node(hotspot: Hotspot) -> None:
    hs = hotspot.settings.hotspot
    assert hs.dhcp_range is not None
    start, end = hs.dhcp_range
    ip = hotspot.lease["ip"]
    assert start <= ipaddress.IPv4Address(ip) <= end
    assert hotspot.lease["mask"] == "24"
    assert hotspot.lease["router"].split() == [NODE_IP]
    assert hotspot.lease["dns"].split() == [NODE_IP]
    addr = hotspot.phone("ip", "-o", "-4", "addr", "show", "dev", "eth0").stdout
    assert f"{ip}/24" in addr
    # Every name resolves to the node, through the phone's own resolver.
    for name in ("connectivitycheck.gstatic.com", "captive.apple.com", "nu.nl",
                 f"x{uuid.uuid4().hex[:6]}.example.com"):
        found = hotspot.phone("getent", "ahostsv4", name).stdout.split()
        assert found and found[0] == NODE_IP, (name, found)


def test_probes_lead_to_the_portal_then_say_online(hotspot: Hotspot) -> None:
    # 1. Not yet opened: every probe and any other address is sent to the portal.
    for url in [*PROBES, "http://www.msftconnecttest.com/redirect", "http://nu.nl/nieuws"]:
        code, status, headers, _ = hotspot.curl(url)
        assert (code, status) == (0, 302), (url, code, status)
        assert headers["location"] == PORTAL, url
        assert headers["cache-control"] == "no-store", url

    # 2. The sign-in sheet follows the redirect and shows the portal.
    code, status, headers, body = hotspot.curl("http://captive.apple.com/hotspot-detect.html",
                                               "-L")
    assert (code, status) == (0, 200)
    assert headers["content-type"].startswith("text/html")
    assert b'lang="nl"' in body and b"/report" in body and b'href="/klaar"' in body
    code, status, headers, _ = hotspot.curl("http://connectivitycheck.gstatic.com/generate_204")
    assert (code, status) == (0, 302)  # still reading: the sheet must stay open
    code, status, headers, _ = hotspot.curl(PORTAL + "klaar")  # the resident taps "Klaar"
    assert (code, status, headers["location"]) == (0, 303, "/")

    # 3. From now on the probes say "online" (for this phone).
    for url, (want_status, want_body) in PROBES.items():
        code, status, _headers, body = hotspot.curl(url)
        assert (code, status, body) == (0, want_status, want_body), url
    code, status, headers, _ = hotspot.curl("http://nu.nl/")
    assert (status, headers.get("location")) == (302, PORTAL)  # still no internet
    code, status, headers, body = hotspot.curl(f"http://{NODE_IP}/api/v1/captive")
    assert headers["content-type"] == "application/captive+json"
    assert json.loads(body)["captive"] is False


def test_other_ports_from_the_phone_are_refused(hotspot: Hotspot) -> None:
    port = hotspot.settings.http_port
    # The portal's own port, asked directly, is refused although the node listens
    # on it: only port 80 (redirected by nftables) is open to phones.
    started = time.monotonic()
    code, _status, _headers, _body = hotspot.curl(f"http://{NODE_IP}:{port}/")
    assert code == 7, f"curl exit {code}: expected 'connection refused'"
    assert time.monotonic() - started < 5, "refused at once (TCP reset), not dropped"
    for other in (hotspot.settings.mqtt_port, 22, 443):
        code, _status, _headers, _body = hotspot.curl(f"http://{NODE_IP}:{other}/")
        assert code == 7, (other, code)
    # Port 80 still works.
    assert hotspot.curl(f"http://{NODE_IP}/healthz")[1] == 200


def test_doctor_finds_the_hotspot_healthy(hotspot: Hotspot) -> None:
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from node.config import NodeSettings
        from node.doctor import Doctor
        settings = NodeSettings.load(Path({str(hotspot.node.data_dir)!r}))
        doctor = Doctor(data_dir=settings.data_dir, settings=settings,
                        root=Path({str(hotspot.root)!r}))
        print(doctor.run().as_json())
    """)
    out = run("ip", "netns", "exec", hotspot.node_ns, sys.executable, "-c", script,
              timeout=60).stdout
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    for name in ("node", "keys", "hotspot interface", "hotspot address", "hotspot DNS",
                 "portal", f"port {hotspot.settings.http_port}"):
        assert checks[name]["status"] == "ok", checks[name]
    assert checks["hotspot DNS"]["detail"] == f"any name answers {NODE_IP}"
