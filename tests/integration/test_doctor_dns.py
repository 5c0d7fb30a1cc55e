"""``bart node doctor``'s DNS check against a real dnsmasq on loopback.

dnsmasq answers every name with one address (``address=/#/…``), as the
hotspot's does; the doctor must accept its own address and refuse any
other answer, or none.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.config import HotspotSettings, NodeSettings
from node.dnsquery import DnsError, query_a
from node.doctor import Doctor
from node.hotspot import HOSTAPD_CONF
from tests.support.base import require_binary

pytestmark = pytest.mark.timeout(60)


def udp_free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_dnsmasq(answer: str) -> tuple[subprocess.Popen[str], int]:
    """dnsmasq on a free loopback port (it binds UDP and TCP: a free UDP port
    may be taken for TCP by another test, then it tries another port)."""
    exe = require_binary("dnsmasq", "/usr/sbin/dnsmasq")
    for _ in range(5):
        port = udp_free_port()
        proc = subprocess.Popen(
            [exe, "--keep-in-foreground", "--conf-file=/dev/null", f"--port={port}",
             "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
             f"--address=/#/{answer}", "--pid-file=", "--log-facility=-"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                query_a("127.0.0.1", "ready.example.com", port=port, timeout=0.2, attempts=1)
                return proc, port
            except DnsError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    out = proc.communicate()[0]
                    if "Address already in use" in out:
                        break  # another port
                    raise AssertionError(f"dnsmasq did not start: {out}") from None
    raise AssertionError("dnsmasq found no free port in five tries")


@pytest.fixture
def dnsmasq() -> Iterator[int]:
    proc, port = start_dnsmasq("127.0.0.1")
    yield port
    proc.terminate()
    proc.wait(10)


def doctor(tmp_path: Path, port: int) -> Doctor:
    settings = NodeSettings(data_dir=tmp_path / "node", name="n1", area="ESC-01",
                            hotspot=HotspotSettings(address="127.0.0.1/8"))  # type: ignore[arg-type]
    conf = tmp_path / "root" / str(HOSTAPD_CONF).lstrip("/")
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("interface=lo\n")
    return Doctor(data_dir=settings.data_dir, settings=settings, root=tmp_path / "root",
                  dns_port=port, timeout=1.0)


def test_dnsmasq_that_answers_the_node_address_passes(tmp_path: Path, dnsmasq: int) -> None:
    check = doctor(tmp_path, dnsmasq).check_dns()
    assert (check.status, check.detail) == ("ok", "any name answers 127.0.0.1")


def test_a_dns_server_that_answers_elsewhere_fails(tmp_path: Path) -> None:
    proc, port = start_dnsmasq("10.9.9.9")
    try:
        check = doctor(tmp_path, port).check_dns()
    finally:
        proc.terminate()
        proc.wait(10)
    assert check.status == "fail"
    assert "answers ['10.9.9.9'], not 127.0.0.1" in check.detail
    assert "bart-dnsmasq" in check.fix


def test_no_dns_server_fails_with_the_restart_command(tmp_path: Path) -> None:
    check = doctor(tmp_path, udp_free_port()).check_dns()
    assert check.status == "fail" and "systemctl restart bart-dnsmasq" in check.fix
    offline = doctor(tmp_path, udp_free_port())
    offline.offline = True
    assert offline.check_dns().status == "skip"

