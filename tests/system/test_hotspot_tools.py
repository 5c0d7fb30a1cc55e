"""The rendered hotspot files, checked by the real tools that will read them:
dnsmasq --test, nft -c (in a throwaway network namespace), hostapd's own
parser, and systemd-analyze verify for the units.

Each checker is first shown a broken file, so a pass means the tool really
parsed ours (and not that the check cannot fail).

hostapd has no "check the config" switch. Run on a file, it parses it
completely (hostapd_config_read: every line, then the consistency checks)
before it touches a driver or radio; a parse error stops it with "N errors
found in configuration file" / "Failed to set up interface with FILE". A file
that parses goes on to the driver (nl80211) and fails there, without a radio,
with "Failed to initialize driver" or an interface error. So: a run that
reaches the driver means the file parsed.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.config import HotspotSettings, NodeSettings
from node.hotspot import render_system, write_files
from tests.support.base import require, require_binary

BART = Path("/opt/bart/.venv/bin/bart")

VARIANTS = {
    "defaults": {},
    "wpa2-https-utf8": {"ssid": "Buurthuis Café De Kleine Wereld"[:32],
                        "wpa_passphrase": "geheim buurthuis 12!", "channel": 11,
                        "country": "BE", "address": "192.168.50.1/24",
                        "dhcp_range": ["192.168.50.100", "192.168.50.199"],
                        "https_url": "https://escamp-west.bart.example"},
    "small-net": {"interface": "ap0", "address": "172.20.1.1/28", "lease_time_s": 120},
}


def render(tmp_path: Path, variant: str, **node: object) -> Path:
    s = NodeSettings(data_dir=Path("/var/lib/bart"), name="n1", area="ESC-01",
                     hotspot=HotspotSettings(**VARIANTS[variant]),  # type: ignore[arg-type]
                     **node)  # type: ignore[arg-type]
    root = tmp_path / variant
    write_files(render_system(s, bart=BART, hotspot=True), root)
    return root


@pytest.fixture
def netns() -> Iterator[str]:
    """A throwaway network namespace, so nft checks never touch the host's ruleset."""
    ip = require_binary("ip", "/usr/sbin/ip", "/sbin/ip")
    name = f"bart-t-{uuid.uuid4().hex[:8]}"
    made = subprocess.run([ip, "netns", "add", name], capture_output=True, text=True)
    require(made.returncode == 0, f"cannot create a network namespace: {made.stderr.strip()}")
    try:
        yield name
    finally:
        subprocess.run([ip, "netns", "delete", name], check=False)


# ------------------------------------------------------------------- dnsmasq

def dnsmasq_test(path: Path) -> subprocess.CompletedProcess[str]:
    exe = require_binary("dnsmasq", "/usr/sbin/dnsmasq")
    return subprocess.run([exe, "--test", "-C", str(path)], capture_output=True, text=True,
                          timeout=30)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_dnsmasq_accepts_the_rendered_config(tmp_path: Path, variant: str) -> None:
    result = dnsmasq_test(render(tmp_path, variant) / "etc/bart/dnsmasq.conf")
    assert result.returncode == 0, result.stderr
    assert "syntax check OK" in result.stdout + result.stderr


def test_dnsmasq_check_catches_a_broken_config(tmp_path: Path) -> None:
    conf = render(tmp_path, "defaults") / "etc/bart/dnsmasq.conf"
    conf.write_text(conf.read_text() + "dhcp-range=wlan0,10.42.0.300,10.42.0.2,1h\n")
    result = dnsmasq_test(conf)
    assert result.returncode != 0
    assert "bad dhcp-range" in result.stderr


# ------------------------------------------------------------------ nftables

def nft_check(netns: str, path: Path) -> subprocess.CompletedProcess[str]:
    ip = require_binary("ip", "/usr/sbin/ip", "/sbin/ip")
    nft = require_binary("nft", "/usr/sbin/nft")
    return subprocess.run([ip, "netns", "exec", netns, nft, "-c", "-f", str(path)],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_nft_accepts_the_rendered_ruleset(tmp_path: Path, netns: str, variant: str) -> None:
    result = nft_check(netns, render(tmp_path, variant) / "etc/bart/nftables.nft")
    assert result.returncode == 0, result.stderr


def test_nft_ruleset_with_portal_on_port_80(tmp_path: Path, netns: str) -> None:
    root = render(tmp_path, "defaults", http_port=80, point_port=0)
    result = nft_check(netns, root / "etc/bart/nftables.nft")
    assert result.returncode == 0, result.stderr


def test_nft_ruleset_loads_twice_and_leaves_other_tables(tmp_path: Path, netns: str) -> None:
    """Really loaded (in the namespace): reloading replaces only `table inet bart`."""
    ip = require_binary("ip", "/usr/sbin/ip", "/sbin/ip")
    nft = require_binary("nft", "/usr/sbin/nft")
    path = render(tmp_path, "defaults") / "etc/bart/nftables.nft"

    def ns(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([ip, "netns", "exec", netns, nft, *args], capture_output=True,
                              text=True, timeout=30)

    assert ns("add", "table", "inet", "uplink").returncode == 0
    for _ in range(2):
        loaded = ns("-f", str(path))
        assert loaded.returncode == 0, loaded.stderr
    tables = ns("list", "tables").stdout.split("\n")
    assert "table inet uplink" in tables and "table inet bart" in tables
    assert ns("delete", "table", "inet", "bart").returncode == 0
    assert "table inet uplink" in ns("list", "tables").stdout


def test_nft_check_catches_a_broken_ruleset(tmp_path: Path, netns: str) -> None:
    path = render(tmp_path, "defaults") / "etc/bart/nftables.nft"
    path.write_text(path.read_text().replace("tcp dport 53 accept", "tcp dport fifty accept"))
    result = nft_check(netns, path)
    assert result.returncode != 0
    assert "Error" in result.stderr


# ------------------------------------------------------------------- hostapd

def hostapd_parse(path: Path) -> tuple[bool, str]:
    """(parsed, output) — see the module docstring for how the two cases differ."""
    exe = require_binary("hostapd", "/usr/sbin/hostapd")
    result = subprocess.run([exe, "-dd", str(path)], capture_output=True, text=True,
                            timeout=30)
    out = result.stdout + result.stderr
    assert f"Configuration file: {path}" in out, out  # it read our file
    parse_failed = ("errors found in configuration file" in out
                    or f"Failed to set up interface with {path}" in out)
    reached_driver = any(m in out for m in ("Failed to initialize driver", "nl80211:",
                                            "Could not read interface"))
    if not parse_failed:
        # Without a radio it must stop at the driver; if it ever runs, stop counts as wrong.
        assert result.returncode != 0, out
        assert reached_driver, out
    return not parse_failed, out


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_hostapd_parses_the_rendered_config(tmp_path: Path, variant: str) -> None:
    parsed, out = hostapd_parse(render(tmp_path, variant) / "etc/bart/hostapd.conf")
    assert parsed, out


@pytest.mark.parametrize(("change", "message"), [
    (("wpa=0", "wpa=0\nhw_mode=q"), "unknown hw_mode"),
    (("wpa=0", "wpa=0\nnot_a_hostapd_key=1"), "unknown configuration item"),
    (("wpa_passphrase=geheim buurthuis 12!", "wpa_passphrase=short"), "passphrase"),
])
def test_hostapd_check_catches_a_broken_config(tmp_path: Path, change: tuple[str, str],
                                               message: str) -> None:
    variant = "wpa2-https-utf8" if "passphrase" in message else "defaults"
    path = render(tmp_path, variant) / "etc/bart/hostapd.conf"
    assert change[0] in path.read_text()
    path.write_text(path.read_text().replace(*change))
    parsed, out = hostapd_parse(path)
    assert not parsed
    assert message in out.lower() or message in out


# ------------------------------------------------------------------- systemd

def verify_units(unit_dir: Path) -> subprocess.CompletedProcess[str]:
    exe = require_binary("systemd-analyze", "/usr/bin/systemd-analyze")
    units = sorted(str(p) for p in unit_dir.glob("*.service"))
    return subprocess.run([exe, "verify", *units], capture_output=True, text=True, timeout=60,
                          cwd=unit_dir)


def test_systemd_units_verify_clean(tmp_path: Path) -> None:
    # The units name the real executables; verify checks that they exist, so point
    # them at ones that do on this machine (the bart command is ours).
    import shutil

    for exe in ("nft", "hostapd", "dnsmasq", "ip"):
        require(shutil.which(exe) is not None or Path(f"/usr/sbin/{exe}").exists(),
                f"{exe} is not installed (run ./install.sh --dev)")
    bart = shutil.which("bart") or str(Path(__import__("sys").executable).parent / "bart")
    s = NodeSettings(data_dir=Path("/var/lib/bart"), name="n1", area="ESC-01")
    write_files(render_system(s, bart=Path(bart), hotspot=True), tmp_path)
    unit_dir = tmp_path / "etc/systemd/system"
    result = verify_units(unit_dir)
    # verify only warns (exit 0) on an unknown key: any output at all is a finding.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr)


def test_systemd_verify_catches_a_bad_key(tmp_path: Path) -> None:
    (tmp_path / "bad.service").write_text(
        "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\nProtectSystm=strict\n")
    result = verify_units(tmp_path)
    assert "Unknown key" in result.stdout + result.stderr


def test_node_unit_exposure_stays_low(tmp_path: Path) -> None:
    """systemd's own hardening score for bart-node.service (0 best, 10 worst)."""
    exe = require_binary("systemd-analyze", "/usr/bin/systemd-analyze")
    s = NodeSettings(data_dir=Path("/var/lib/bart"), name="n1", area="ESC-01")
    write_files(render_system(s, bart=BART, hotspot=False), tmp_path)
    unit = tmp_path / "etc/systemd/system/bart-node.service"
    result = subprocess.run([exe, "security", "--offline=yes", "--threshold=35", str(unit)],
                            capture_output=True, text=True, timeout=60)
    level = re.search(r"Overall exposure level for bart-node.service: ([\d.]+)",
                      result.stdout)
    assert level, result.stdout + result.stderr
    assert result.returncode == 0 and float(level.group(1)) <= 3.5, result.stdout[-2000:]
