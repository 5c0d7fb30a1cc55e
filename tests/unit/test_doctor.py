"""``bart node doctor`` (node/doctor.py) and its DNS client (node/dnsquery.py).

The doctor runs on a real node directory (``init_node``) and real files; the
places it looks at (``/sys/class/net``, the systemd runtime directory, the
root of the installed hotspot files) and its clock are pointed at a
temporary tree. Central is a real HTTP server on loopback. The DNS check
against a real dnsmasq is in tests/integration/test_doctor_dns.py and, on a
real hotspot in network namespaces, in tests/system/test_captive_netns.py.
"""

from __future__ import annotations

import datetime as dt
import doctest
import http.server
import json
import os
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bart.cli import main
from node import dnsquery
from node import doctor as doctor_module
from node.config import NodeSettings
from node.dnsquery import DnsError, build_query, parse_response
from node.doctor import Doctor, Report, diagnose
from node.hotspot import HOSTAPD_CONF
from node.setup import init_node

pytestmark = pytest.mark.timeout(60)

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def test_doctests() -> None:
    assert doctest.testmod(doctor_module).failed == 0
    assert doctest.testmod(dnsquery).failed == 0


# -- DNS codec -------------------------------------------------------------------


def answer(qid: int, name: str, *addresses: str, rcode: int = 0, pointer: bool = True) -> bytes:
    """A DNS response as a server would send it (answers use a name pointer)."""
    query = build_query(name, qid)
    header = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, len(addresses), 0, 0)
    body = query[12:]
    for address in addresses:
        owner = b"\xc0\x0c" if pointer else query[12:-4]
        body += owner + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(address)
    return header + body


def test_a_response_is_parsed() -> None:
    assert parse_response(answer(7, "x.example.com", "10.42.0.1"), 7) == ["10.42.0.1"]
    assert parse_response(answer(7, "x.example.com", "10.42.0.1", "10.42.0.2",
                                 pointer=False), 7) == ["10.42.0.1", "10.42.0.2"]
    assert parse_response(answer(7, "x.example.com"), 7) == []


@pytest.mark.parametrize(("data", "message"), [
    (b"\x00" * 5, "too short"),
    (answer(8, "a.b", "1.2.3.4"), "not an answer"),
    (answer(7, "a.b", rcode=3), "no such name"),
    (answer(7, "a.b", rcode=5), "refused"),
    (build_query("a.b", 7), "not an answer"),  # a query, not a response
    (answer(7, "a.b", "1.2.3.4")[:-2], "truncated"),
    (answer(7, "a.b")[:12] + b"\xc0", "truncated"),
])
def test_malformed_or_wrong_responses_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(DnsError, match=message):
        parse_response(data, 7)


def test_a_name_that_points_at_itself_is_refused() -> None:
    header = struct.pack("!HHHHHH", 7, 0x8180, 1, 0, 0, 0)
    looping = header + b"\x01a" * 200 + b"\x00\x00\x01\x00\x01"
    with pytest.raises(DnsError):
        parse_response(looping, 7)


@pytest.mark.parametrize("name", ["", "a..b", "x" * 64 + ".com", "a." * 130])
def test_bad_names_are_not_asked(name: str) -> None:
    with pytest.raises(ValueError, match="not a DNS name"):
        build_query(name, 1)


@given(st.binary(max_size=600))
def test_any_bytes_give_addresses_or_a_dns_error(data: bytes) -> None:
    try:
        result = parse_response(data, int.from_bytes(data[:2] or b"\0\0", "big"))
    except DnsError:
        return
    assert all(isinstance(a, str) for a in result)


def test_a_closed_port_is_a_dns_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DnsError):
        dnsquery.query_a("127.0.0.1", "x.example.com", port=port, timeout=0.5, attempts=1)


def test_a_stray_datagram_does_not_end_the_wait() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]

        def serve() -> None:
            data, peer = server.recvfrom(512)
            qid = struct.unpack("!H", data[:2])[0]
            server.sendto(answer((qid + 1) & 0xFFFF, "x.example.com", "9.9.9.9"), peer)
            server.sendto(answer(qid, "x.example.com", "10.42.0.1"), peer)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        got = dnsquery.query_a("127.0.0.1", "x.example.com", port=port, timeout=2.0,
                               attempts=1)
        thread.join(5)
    assert got == ["10.42.0.1"]


# -- the doctor ------------------------------------------------------------------


@pytest.fixture
def node(tmp_path: Path) -> NodeSettings:
    settings, _keys = init_node(tmp_path / "node", name="n1", area="ESC-01",
                                http_port=free_port(), mqtt_port=free_port(),
                                point_port=0)
    return settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def fake_sys(tmp_path: Path) -> Path:
    """A /sys/class/net with a loopback and a Wi-Fi interface named wlan1."""
    net = tmp_path / "sys-class-net"
    (net / "lo").mkdir(parents=True)
    (net / "lo" / "operstate").write_text("unknown\n")
    (net / "wlan1" / "wireless").mkdir(parents=True)
    (net / "wlan1" / "operstate").write_text("up\n")
    return net


def make_doctor(settings: NodeSettings | None, tmp_path: Path, fake_sys: Path,
                **over: object) -> Doctor:
    values: dict[str, object] = {
        "data_dir": settings.data_dir if settings else tmp_path / "none",
        "settings": settings, "offline": True, "sys_class_net": fake_sys,
        "systemd_run": tmp_path / "no-systemd", "root": tmp_path / "root",
        "clock": lambda: NOW, "timeout": 0.5}
    values.update(over)
    return Doctor(**values)  # type: ignore[arg-type]


def by_name(report: Report) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in json.loads(report.as_json())["checks"]}


def test_a_fresh_node_offline_in_a_chroot_is_fine(node: NodeSettings, tmp_path: Path,
                                                  fake_sys: Path) -> None:
    report = make_doctor(node, tmp_path, fake_sys).run()
    checks = by_name(report)
    assert report.ok, report.text()
    assert checks["node"]["status"] == "ok"
    assert checks["keys"]["status"] == "ok" and "mode 0600" in checks["keys"]["detail"]
    assert checks["services"]["status"] == "skip"
    assert checks["hotspot interface"]["status"] == "skip"
    assert checks["hotspot DNS"]["status"] == checks["uplink"]["status"] == "skip"
    assert checks["enrolment"]["status"] == "warn"
    assert "bart node enroll" in checks["enrolment"]["fix"]
    assert checks[f"port {node.http_port}"]["status"] == "ok"  # free for the node
    assert checks["portal"]["status"] == "skip"  # not running, and no systemd to run it


def test_no_node_yet_says_how_to_create_one(tmp_path: Path, fake_sys: Path) -> None:
    report = make_doctor(None, tmp_path, fake_sys).run()
    assert not report.ok
    check = by_name(report)["node"]
    assert check["status"] == "fail" and "bart node init" in check["fix"]


def test_a_broken_settings_file_is_named(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    (data_dir / "node.toml").write_text('name = "n1"\narea = "ESC-01"\nhttp_port = 99999\n')
    report = diagnose(data_dir, offline=True)
    check = by_name(report)["node"]
    assert check["status"] == "fail" and "http_port" in check["detail"]


def test_a_clock_in_the_past_fails(node: NodeSettings, tmp_path: Path, fake_sys: Path) -> None:
    early = make_doctor(node, tmp_path, fake_sys,
                        clock=lambda: dt.datetime(1970, 1, 1, tzinfo=dt.UTC)).run()
    assert by_name(early)["clock"]["status"] == "fail"
    assert "date -s" in by_name(early)["clock"]["fix"]
    before_install = make_doctor(node, tmp_path, fake_sys,
                                 not_before=NOW + dt.timedelta(days=2)).run()
    assert by_name(before_install)["clock"]["status"] == "fail"


def test_readable_or_missing_keys_fail_with_the_command_that_fixes_them(
        node: NodeSettings, tmp_path: Path, fake_sys: Path) -> None:
    key = node.keys_dir / "signing.key"
    key.chmod(0o644)
    check = by_name(make_doctor(node, tmp_path, fake_sys).run())["keys"]
    assert check["status"] == "fail"
    assert check["fix"] == f"make them private: sudo chmod 600 {key}"
    key.unlink()
    check = by_name(make_doctor(node, tmp_path, fake_sys).run())["keys"]
    assert check["status"] == "fail" and str(key) in check["detail"]


def test_too_little_disk_fails(node: NodeSettings, tmp_path: Path, fake_sys: Path) -> None:
    greedy = node.model_copy(update={"min_free_disk_mb": 10**9})
    check = by_name(make_doctor(greedy, tmp_path, fake_sys).run())["disk"]
    assert check["status"] == "fail" and "journalctl --vacuum-size" in check["fix"]


def install_hotspot(tmp_path: Path) -> None:
    conf = tmp_path / "root" / str(HOSTAPD_CONF).lstrip("/")
    conf.parent.mkdir(parents=True)
    conf.write_text("interface=wlan0\n")


def test_a_missing_wifi_interface_names_the_one_that_exists(
        node: NodeSettings, tmp_path: Path, fake_sys: Path) -> None:
    install_hotspot(tmp_path)
    check = by_name(make_doctor(node, tmp_path, fake_sys).run())["hotspot interface"]
    assert check["status"] == "fail" and "wlan0 does not exist" in check["detail"]
    assert "called wlan1" in check["fix"]
    (fake_sys / "wlan1" / "wireless").rmdir()
    check = by_name(make_doctor(node, tmp_path, fake_sys).run())["hotspot interface"]
    assert "rfkill" in check["fix"]


def test_an_interface_that_is_down_fails(node: NodeSettings, tmp_path: Path,
                                         fake_sys: Path) -> None:
    install_hotspot(tmp_path)
    wifi = node.model_copy(update={"hotspot": node.hotspot.model_copy(
        update={"interface": "wlan1"})})
    (fake_sys / "wlan1" / "operstate").write_text("down\n")
    check = by_name(make_doctor(wifi, tmp_path, fake_sys).run())["hotspot interface"]
    assert check["status"] == "fail" and "bart-hostapd" in check["fix"]


def test_a_port_taken_by_another_program_fails(node: NodeSettings, tmp_path: Path,
                                               fake_sys: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", node.mqtt_port))
        other.listen()
        check = by_name(make_doctor(node, tmp_path, fake_sys).run())[f"port {node.mqtt_port}"]
    assert check["status"] == "fail" and "ss -ltnp" in check["fix"]


class Central(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def central() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Central)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def enrol(settings: NodeSettings, url: str) -> None:
    path = settings.data_dir / "central" / "enrolment.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"origin": "central", "url": url, "node": settings.name}))


def test_enrolled_and_central_reachable(node: NodeSettings, tmp_path: Path, fake_sys: Path,
                                        central: str) -> None:
    enrol(node, central)
    checks = by_name(make_doctor(node, tmp_path, fake_sys, offline=False).run())
    assert checks["enrolment"]["status"] == "ok" and central in checks["enrolment"]["detail"]
    assert checks["uplink"] == {"name": "uplink", "status": "ok",
                                "detail": "central answers (HTTP 404)", "fix": ""}
    assert by_name(make_doctor(node, tmp_path, fake_sys).run())["uplink"]["status"] == "skip"


def test_central_unreachable_fails(node: NodeSettings, tmp_path: Path, fake_sys: Path) -> None:
    enrol(node, f"http://127.0.0.1:{free_port()}")
    check = by_name(make_doctor(node, tmp_path, fake_sys, offline=False).run())["uplink"]
    assert check["status"] == "fail" and "internet connection" in check["fix"]


@pytest.mark.parametrize("content", ["{", "[]", '{"url": "ftp://x"}', " " * 300_000])
def test_a_broken_enrolment_file_fails(node: NodeSettings, tmp_path: Path, fake_sys: Path,
                                       content: str) -> None:
    path = node.data_dir / "central" / "enrolment.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(content)
    assert by_name(make_doctor(node, tmp_path, fake_sys).run())["enrolment"]["status"] == "fail"


def test_the_command_prints_text_or_json_and_exits_1_on_a_problem(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["node", "doctor", "--offline", "--data-dir", str(tmp_path / "none")]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] node:" in out and "fix: create it" in out
    assert main(["node", "doctor", "--offline", "--json",
                 "--data-dir", str(tmp_path / "none")]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["checks"][0]["name"] == "node"


FAKE_SYSTEMCTL = """\
#!/bin/sh
# Stands in for systemctl (this machine runs no systemd): unit states by name.
for unit; do :; done
case "$unit" in
    bart-dnsmasq.service) printf 'ActiveState=failed\\nSubState=failed\\nLoadState=loaded\\n' ;;
    bart-hostapd.service) printf 'LoadState=not-found\\nActiveState=inactive\\nSubState=dead\\n' ;;
    dnsmasq.service) printf 'LoadState=loaded\\nActiveState=active\\nSubState=running\\n' ;;
    hostapd.service) printf 'LoadState=masked\\nActiveState=inactive\\nSubState=dead\\n' ;;
    *) printf 'LoadState=loaded\\nActiveState=active\\nSubState=running\\n' ;;
esac
"""


def test_units_are_checked_when_systemd_runs(node: NodeSettings, tmp_path: Path,
                                             fake_sys: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(FAKE_SYSTEMCTL)
    (bin_dir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    systemd_run = tmp_path / "run-systemd"
    systemd_run.mkdir()
    install_hotspot(tmp_path)
    checks = by_name(make_doctor(node, tmp_path, fake_sys, systemd_run=systemd_run).run())
    assert checks["bart-node.service"]["status"] == "ok"
    assert checks["bart-firewall.service"]["detail"] == "active (running)"
    failed = checks["bart-dnsmasq.service"]
    assert failed["status"] == "fail" and failed["detail"] == "failed (failed)"
    assert "journalctl -u bart-dnsmasq.service" in failed["fix"]
    missing = checks["bart-hostapd.service"]
    assert missing["detail"] == "not installed" and "install.sh --hotspot" in missing["fix"]
    assert checks["dnsmasq.service"]["fix"] == \
        "switch it off: sudo systemctl disable --now dnsmasq.service"
    assert "hostapd.service" not in checks
    # With systemd, a node that does not answer is a failure, not a skip.
    assert checks["portal"]["status"] == "fail"
    assert "systemctl enable --now bart-node" in checks["portal"]["fix"]
