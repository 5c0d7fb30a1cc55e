"""The mesh radio's rendered files, read by the real programs that will read them
on a node: wpa_supplicant's own parser, systemd-analyze verify, systemd's
modules-load, and (where the kernel has it) batman-adv with the unit's own
``ip`` commands.

wpa_supplicant has no "check the config" switch. Started on a file it reads
and parses it completely (wpa_config_read: every line, every network block,
then the consistency checks such as "key_mgmt for mesh network should be open
or SAE") before it opens a driver; a parse error stops it with "Failed to read
or parse configuration". A file that parses goes on to the nl80211 driver and
stops there: the tests run it in a new, empty network namespace, where the
interface does not exist, so it never touches a radio. With ``-dd`` it prints
every value it parsed, which the tests compare with the settings.

What needs a radio cannot be checked here: that the adapter's driver does
mesh point mode, that SAE peering completes, and the link itself (see
docs/deploy.md, "Linking community centres", for the checks on a node).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_install_chroot import Chroot, chroot, firstboot  # noqa: F401 - chroot: a fixture

from node.config import NodeSettings
from node.hotspot import render_system, write_files
from node.meshradio import MODULES_CONF, UNIT_FILE, WPA_CONF, MeshRadioSettings, render_mesh_radio
from tests.support.base import require, require_binary

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "install.sh"

VARIANTS: dict[str, dict[str, object]] = {
    "defaults": {"address": "10.99.0.7/16", "passphrase": "buurthuizen samen 2024"},
    "5ghz-utf8-tricky-passphrase": {
        "interface": "wlx00c0ca", "mesh_id": "Wijk Escamp ✓ mesh", "channel": 36,
        "country": "BE", "address": "172.20.3.4/22",
        # What wpa_supplicant's line reader treats specially, except '"'
        # (refused by the settings: see test_a_double_quote_would_cut_the_password).
        "passphrase": " #1 it's a \\back\\slash, trailing space "},
}


def settings(variant: str) -> MeshRadioSettings:
    return MeshRadioSettings(**VARIANTS[variant])  # type: ignore[arg-type]


def render(tmp_path: Path, mr: MeshRadioSettings, name: str = "escamp-west") -> Path:
    root = tmp_path / "root"
    for path, text in render_mesh_radio(mr, name).items():
        target = root / str(path).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return root


# ------------------------------------------------------------- wpa_supplicant

def wpa_parse(conf: Path, interface: str) -> tuple[bool, str]:
    """(parsed, output) of wpa_supplicant -dd on ``conf``, in an empty network namespace."""
    exe = require_binary("wpa_supplicant", "/usr/sbin/wpa_supplicant", "/sbin/wpa_supplicant")
    unshare = require_binary("unshare", "/usr/bin/unshare")
    result = subprocess.run([unshare, "--net", exe, "-dd", "-D", "nl80211", "-i", interface,
                             "-c", str(conf)], capture_output=True, text=True, timeout=30)
    out = result.stdout + result.stderr
    require("unshare failed" not in out and "Operation not permitted" not in out,
            f"cannot make a network namespace (needs root, as in CI): {out[-300:]}")
    assert f"Reading configuration file '{conf}'" in out, out  # it read our file
    parsed = "Failed to read or parse configuration" not in out
    if parsed:
        # Without the interface it must stop at the driver, never run.
        assert result.returncode != 0, out
        assert "Failed to initialize driver" in out or "nl80211" in out, out
    return parsed, out


def hexdump_ascii(out: str, field: str) -> tuple[int, str]:
    """Length and text of a value wpa_supplicant -dd printed as a hexdump."""
    m = re.search(rf"^{field} - hexdump_ascii\(len=(\d+)\):\n((?:     .*\n)*)", out, re.M)
    assert m, out
    hex_bytes = re.findall(r"(?<= )[0-9a-f]{2}(?= )", " ".join(
        line[:55] for line in m.group(2).splitlines()) + " ")
    return int(m.group(1)), bytes.fromhex("".join(hex_bytes)).decode("utf-8", "replace")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_wpa_supplicant_parses_the_rendered_mesh_point(tmp_path: Path, variant: str) -> None:
    mr = settings(variant)
    parsed, out = wpa_parse(render(tmp_path, mr) / str(WPA_CONF).lstrip("/"), mr.interface)
    assert parsed, out
    # What it parsed, as it says it: an 802.11s mesh point with SAE and PMF, on
    # our frequency, without 802.11s forwarding.
    for line in ("mode=5 (0x5)", f"frequency={mr.frequency} ", "key_mgmt: 0x400",
                 "ieee80211w=2 (0x2)", "mesh_fwding=0 (0x0)", "disable_ht40=1 (0x1)",
                 f"country='{mr.country}'", "user_mpm=1"):
        assert line in out, line
    assert hexdump_ascii(out, "ssid") == (len(mr.mesh_id.encode()), mr.mesh_id)
    # The password is not printed, only its length: every character arrived.
    m = re.search(r"^sae_password - hexdump_ascii\(len=(\d+)\): \[REMOVED\]", out, re.M)
    assert m and int(m.group(1)) == len(mr.passphrase), out


@pytest.mark.parametrize(("change", "message"), [
    (("mode=5", "mode=9"), "failed to parse mode"),
    (("key_mgmt=SAE", "key_mgmt=WPA-PSK"), "key_mgmt for mesh network should be open or SAE"),
    (("mesh_fwding=0", "mesh_fwding=0\n\tnot_a_field=1"), "unknown network field"),
])
def test_wpa_supplicant_check_catches_a_broken_file(tmp_path: Path, change: tuple[str, str],
                                                    message: str) -> None:
    conf = render(tmp_path, settings("defaults")) / str(WPA_CONF).lstrip("/")
    assert change[0] in conf.read_text()
    conf.write_text(conf.read_text().replace(*change))
    parsed, out = wpa_parse(conf, "wlan1")
    assert not parsed and message in out, out


def test_a_double_quote_would_cut_the_password(tmp_path: Path) -> None:
    """Why MeshRadioSettings refuses '"': wpa_supplicant reads '#' after a second '"'
    as a comment, and silently keeps one character of this password."""
    conf = render(tmp_path, settings("defaults")) / str(WPA_CONF).lstrip("/")
    conf.write_text(re.sub(r'sae_password=".*"', 'sae_password="a"#bcdefgh"', conf.read_text()))
    parsed, out = wpa_parse(conf, "wlan1")
    assert parsed and "sae_password - hexdump_ascii(len=1)" in out, out


# -------------------------------------------------------------------- systemd

def test_units_verify_clean_with_the_mesh_radio(tmp_path: Path) -> None:
    """systemd-analyze verify: the unit's keys, its ordering against the node's
    units, and that its programs exist (wpa_supplicant, ip, modprobe)."""
    exe = require_binary("systemd-analyze", "/usr/bin/systemd-analyze")
    for prog in ("wpa_supplicant", "ip", "modprobe"):
        require(Path(f"/usr/sbin/{prog}").exists(), f"{prog} is not installed "
                "(run ./install.sh --dev)")

    class WithMeshRadio(NodeSettings):
        mesh_radio: MeshRadioSettings | None = None

    bart = shutil.which("bart") or str(Path(sys.executable).parent / "bart")
    s = WithMeshRadio(data_dir=Path("/var/lib/bart"), name="n1", area="ESC-01",
                      mesh_radio=settings("defaults"))
    write_files(render_system(s, bart=Path(bart), hotspot=False), tmp_path)
    unit_dir = tmp_path / "etc/systemd/system"
    units = sorted(str(p) for p in unit_dir.glob("*.service"))
    assert str(unit_dir / UNIT_FILE.name) in units
    result = subprocess.run([exe, "verify", *units], capture_output=True, text=True,
                            timeout=60, cwd=unit_dir)
    # verify only warns (exit 0) on an unknown key: any output at all is a finding.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr)


def test_systemd_verify_catches_a_broken_mesh_unit(tmp_path: Path) -> None:
    exe = require_binary("systemd-analyze", "/usr/bin/systemd-analyze")
    unit = render(tmp_path, settings("defaults")) / str(UNIT_FILE).lstrip("/")
    unit.write_text(unit.read_text().replace("ExecStart=/usr/sbin/wpa_supplicant",
                                             "ExecStart=/usr/sbin/wpa_supplicant-nope")
                    .replace("RestartSec=", "RestartSecs="))
    result = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60, cwd=unit.parent)
    out = result.stdout + result.stderr
    assert "Unknown key" in out and "wpa_supplicant-nope is not executable" in out, out


def test_modules_load_names_batman_adv_and_survives_its_absence(tmp_path: Path) -> None:
    """systemd-modules-load reads the rendered file as it does at boot. On a kernel
    with batman-adv the module is loaded afterwards; on one without it (this
    container, a chroot's host) the boot goes on: exit 0 and one clear line."""
    exe = require_binary("systemd-modules-load", "/lib/systemd/systemd-modules-load",
                         "/usr/lib/systemd/systemd-modules-load")
    conf = render(tmp_path, settings("defaults")) / str(MODULES_CONF).lstrip("/")
    result = subprocess.run([exe, str(conf)], capture_output=True, text=True, timeout=60)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    if Path("/sys/module/batman_adv").is_dir():
        assert not out.strip(), out
    else:
        assert "'batman-adv'" in out, out  # the module by name, from our file
        assert "Failed" in out or "not found" in out, out


# ------------------------------------------------------- batman-adv (kernel)

IP = "/usr/sbin/ip"


def ns_run(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([IP, "netns", "exec", ns, *argv], capture_output=True, text=True,
                            timeout=30)
    if check:
        assert result.returncode == 0, f"{shlex.join(argv)}: {result.stderr}"
    return result


@pytest.fixture
def two_nodes() -> Iterator[tuple[str, str]]:
    """Two network namespaces joined by a veth pair, each end named wlan1: the
    802.11s link stands in for a cable, so batman-adv runs as on two nodes."""
    require_binary("ip", IP)
    names = [f"bart-mr-{uuid.uuid4().hex[:6]}-{i}" for i in (1, 2)]
    for n in names:
        made = subprocess.run([IP, "netns", "add", n], capture_output=True, text=True)
        require(made.returncode == 0, f"cannot create a network namespace: {made.stderr}")
    try:
        probe = ns_run(names[0], IP, "link", "add", "name", "bat0", "type", "batadv",
                       check=False)
        if probe.returncode != 0:
            # A kernel feature, not a package: install.sh --dev cannot add it, and
            # containers and some CI kernels lack it. The rest of this file still runs.
            pytest.skip(f"this kernel has no batman-adv ({probe.stderr.strip()}): "
                        "the unit's ip commands were not run")
        ns_run(names[0], IP, "link", "delete", "bat0")
        subprocess.run([IP, "link", "add", "wlan1", "netns", names[0], "type", "veth",
                        "peer", "name", "wlan1", "netns", names[1]], check=True)
        yield names[0], names[1]
    finally:
        for n in names:
            subprocess.run([IP, "netns", "delete", n], check=False)


def unit_ip_commands(unit: str, key: str) -> list[tuple[bool, list[str]]]:
    """The unit's ``ip`` command lines for ``key`` as (may fail, argv)."""
    out = []
    for line in unit.splitlines():
        if line.startswith(f"{key}="):
            cmd = line.split("=", 1)[1]
            may_fail = cmd.startswith("-")
            argv = shlex.split(cmd.lstrip("-"))
            if argv[0] == IP:
                out.append((may_fail, argv))
    return out


def start(ns: str, unit: str) -> None:
    """The unit's start, as systemd runs it, without modprobe and wpa_supplicant
    (which would bring the link up: done here by hand)."""
    for may_fail, argv in unit_ip_commands(unit, "ExecStartPre"):
        ns_run(ns, *argv, check=not may_fail)
    ns_run(ns, IP, "link", "set", "dev", "wlan1", "up")


def link(ns: str, dev: str) -> str:
    return ns_run(ns, IP, "-o", "link", "show", "dev", dev).stdout


@pytest.mark.hardware  # batman-adv is in the Raspberry Pi OS kernel, not in every CI kernel
def test_batman_adv_over_the_units_commands(tmp_path: Path, two_nodes: tuple[str, str]) -> None:
    a, b = two_nodes
    batctl = require_binary("batctl", "/usr/sbin/batctl")
    units = {}
    for ns, addr, mac in ((a, "10.99.0.1/16", "02:ba:0a:63:00:01"),
                          (b, "10.99.0.2/16", "02:ba:0a:63:00:02")):
        mr = MeshRadioSettings(address=addr, passphrase="buurthuizen samen")  # type: ignore[arg-type]
        units[ns] = render_mesh_radio(mr, "n1")[UNIT_FILE]
        start(ns, units[ns])
        assert "master bat0" in link(ns, "wlan1") and "mtu 1532" in link(ns, "wlan1")
        bat0 = link(ns, "bat0")
        # bat0 keeps 1500: the 32 bytes batman-adv adds fit in wlan1's 1532.
        assert "mtu 1500" in bat0 and "UP" in bat0 and mac in bat0, bat0
    # batman-adv finds the other node (OGMs once a second): batctl n on A lists
    # B's wlan1 (its own MAC is only in the header line).
    b_mac = re.search(r"link/ether (\S+)", link(b, "wlan1"))
    assert b_mac
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        neigh = ns_run(a, batctl, "meshif", "bat0", "neighbors").stdout
        if b_mac.group(1) in neigh:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"no batman-adv neighbour {b_mac.group(1)}: {neigh}")
    # ... and IPv4 goes through bat0, as the nodes' mesh sessions (port 8884) will.
    server = subprocess.Popen(
        [IP, "netns", "exec", b, sys.executable, "-c",
         "import socket; s = socket.create_server(('10.99.0.2', 8884)); c, _ = s.accept(); "
         "c.sendall(b'bart'); c.close()"])
    try:
        got = b""
        while time.monotonic() < deadline + 10 and got != b"bart":
            r = ns_run(a, sys.executable, "-c",
                       "import socket, sys; c = socket.create_connection(('10.99.0.2', 8884), 2);"
                       " sys.stdout.write(c.recv(4).decode())", check=False)
            got = r.stdout.encode()
            time.sleep(0.5)
        assert got == b"bart"
    finally:
        server.kill()
        server.wait()
    # Stop, then start again: the same bat0 (the leftover is deleted first).
    for may_fail, argv in unit_ip_commands(units[a], "ExecStopPost"):
        ns_run(a, *argv, check=not may_fail)
    assert ns_run(a, IP, "link", "show", "dev", "bat0", check=False).returncode != 0
    start(a, units[a])
    start(a, units[a])  # a restart without the stop (a crash): still fine
    assert "02:ba:0a:63:00:01" in link(a, "bat0")


# ------------------------------------------------------------------ install.sh

@pytest.mark.parametrize(("args", "message"), [
    (["--mesh-radio"], "--mesh-radio needs the Wi-Fi interface"),
    (["--mesh-radio", "wlan-1"], "not 'wlan-1'"),
    (["--mesh-radio=", "--hotspot"], "not ''"),
    (["--mesh-radio", "--hotspot"], "not '--hotspot'"),
    (["--dev", "--mesh-radio", "wlan1"], "--dev touches no network settings"),
    (["--uninstall", "--mesh-radio", "wlan1"], "--uninstall cannot be combined"),
])
def test_install_sh_refuses_a_bad_mesh_radio_flag_before_any_work(args: list[str],
                                                                   message: str) -> None:
    result = subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "==>" not in result.stdout  # nothing was done


def test_install_sh_help_documents_the_flag() -> None:
    result = subprocess.run(["bash", str(INSTALL), "--help"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0 and "--mesh-radio IFACE" in result.stdout


FILLED_IN = {"# [mesh_radio]": "[mesh_radio]", '# interface = "wlan1"': 'interface = "wlan1"',
             '# address = "10.99.0.N/16"': 'address = "10.99.0.12/16"',
             '# passphrase = "the mesh\'s passphrase, 8-63 characters"':
             'passphrase = "buurthuizen samen 2024"'}


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.xdist_group("chroot")  # with test_install_chroot's: one worker, one at a time
def test_install_sh_mesh_radio_on_fresh_bookworm(chroot: Chroot) -> None:  # noqa: F811
    """install.sh --mesh-radio in a fresh Debian bookworm root (see test_install_chroot):
    the tools, the node.toml table to fill in (never an incomplete one), idempotence,
    then — once filled in — the rendered files, the unit enabled on the adapter's
    device, systemd-analyze verify there, and --uninstall."""
    box = chroot
    root = box.root
    etc = root / "etc/systemd/system"
    unit = etc / "bart-meshradio.service"

    # -- before the node exists: the tools, and what to do next; no network file
    first = box.run("bash", "/opt/bart/install.sh", "--hotspot", "--mesh-radio", "wlan1",
                    timeout=1500)
    out = first.stdout + first.stderr
    for pkg in ("wpasupplicant", "batctl", "iw", "kmod", "rfkill"):
        assert "install ok installed" in box.run(
            "dpkg-query", "-W", "-f=${Status}", pkg).stdout, pkg
    assert "no interface wlan1 now" in out, out[-3000:]
    assert "the mesh radio: no node in /var/lib/bart yet" in out, out[-3000:]
    # The chroot has no /sys and no /lib/modules of the running kernel.
    assert "has no batman-adv module" in out, out[-3000:]
    assert not unit.exists() and not (root / "etc/bart/meshradio-wpa_supplicant.conf").exists()

    # -- the node exists: a commented-out table is added, once; the node still loads
    (root / "boot/firmware").mkdir(parents=True, exist_ok=True)
    shutil.copy(root / "opt/bart/firmware-config/bart-node.env.example",
                root / "boot/firmware/bart-node.env")
    firstboot(box)
    toml = root / "var/lib/bart/node.toml"
    owner = toml.stat().st_uid
    added = box.run("bash", "/opt/bart/install.sh", "--hotspot", "--mesh-radio", "wlan1")
    assert "[mesh_radio] added to /var/lib/bart/node.toml, commented out" in added.stdout
    assert "the mesh radio: fill in [mesh_radio]" in added.stdout
    text = toml.read_text()
    assert text.count("# [mesh_radio]") == 1 and toml.stat().st_uid == owner
    assert not unit.exists()
    doctor = box.run("setpriv", "--reuid=bart", "--regid=bart", "--clear-groups",
                     "/opt/bart/.venv/bin/bart", "node", "doctor", "--offline", "--json",
                     "--data-dir", "/var/lib/bart", check=False)
    assert '"node"' in doctor.stdout and doctor.returncode in (0, 1), doctor.stderr
    again = box.run("bash", "/opt/bart/install.sh", "--hotspot", "--mesh-radio", "wlan1")
    assert "nothing to do" in again.stdout, again.stdout[-3000:]
    assert toml.read_text() == text

    # -- filled in: rendered, checked and enabled (also without the flag from now on)
    for old, new in FILLED_IN.items():
        assert old in text, old
        text = text.replace(old, new)
    toml.write_text(text)
    done = box.run("bash", "/opt/bart/install.sh", "--hotspot", "--mesh-radio", "wlan1")
    assert "wrote /etc/systemd/system/bart-meshradio.service" in done.stdout, done.stdout
    assert "bart-meshradio.service enabled" in done.stdout, done.stdout
    wants = etc / "sys-subsystem-net-devices-wlan1.device.wants/bart-meshradio.service"
    assert wants.is_symlink()
    wpa = root / "etc/bart/meshradio-wpa_supplicant.conf"
    assert oct(wpa.stat().st_mode & 0o777) == "0o600" and "mode=5" in wpa.read_text()
    assert (root / "etc/modules-load.d/bart-batman-adv.conf").is_file()
    assert (root / "etc/NetworkManager/conf.d/bart-meshradio.conf").is_file()
    verify = box.run("systemd-analyze", "verify", "/etc/systemd/system/bart-meshradio.service",
                     check=False)
    assert verify.returncode == 0 and not (verify.stdout + verify.stderr).strip(), (
        verify.stdout + verify.stderr)
    kept = box.run("bash", "/opt/bart/install.sh", "--hotspot")
    assert "nothing to do" in kept.stdout and wants.is_symlink(), kept.stdout[-3000:]

    # -- uninstall removes the mesh radio with the rest
    box.run("bash", "/opt/bart/install.sh", "--uninstall")
    assert not unit.exists() and not wants.exists() and not wpa.exists()
    assert not (root / "etc/modules-load.d/bart-batman-adv.conf").exists()
