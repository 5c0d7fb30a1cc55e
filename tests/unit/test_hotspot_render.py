"""node.hotspot renders the node's system files from its settings (pure)."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
from pydantic import ValidationError

from node.config import HotspotSettings, NodeSettings
from node.errors import ConfigError
from node.hotspot import (
    DNSMASQ_CONF,
    HOSTAPD_CONF,
    NFTABLES_FILE,
    SystemFile,
    render_system,
    write_files,
)

BART = Path("/opt/bart/.venv/bin/bart")


def settings(**hotspot: object) -> NodeSettings:
    return NodeSettings(data_dir=Path("/var/lib/bart"), name="escamp-west", area="ESC-01",
                        hotspot=HotspotSettings(**hotspot))  # type: ignore[arg-type]


def files(s: NodeSettings | None = None, **kw: object) -> dict[str, SystemFile]:
    return {str(f.path): f for f in render_system(s or settings(), bart=BART, **kw)}  # type: ignore[arg-type]


def lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def test_defaults() -> None:
    hs = HotspotSettings()
    assert hs.interface == "wlan0"
    assert hs.address == ipaddress.IPv4Interface("10.42.0.1/24")
    assert hs.dhcp_range == (ipaddress.IPv4Address("10.42.0.10"),
                             ipaddress.IPv4Address("10.42.0.250"))
    assert hs.wpa_passphrase is None and hs.https_url is None


def test_node_mode_renders_units_and_journald_only() -> None:
    out = files(hotspot=False)
    assert sorted(out) == ["/etc/systemd/journald.conf.d/bart.conf",
                           "/etc/systemd/system/bart-firstboot.service",
                           "/etc/systemd/system/bart-node.service"]


def test_without_journald_a_laptop_keeps_its_logging() -> None:
    # install.sh off a Raspberry Pi without --hotspot (someone trying the demo).
    out = files(hotspot=False, journald=False)
    assert sorted(out) == ["/etc/systemd/system/bart-firstboot.service",
                           "/etc/systemd/system/bart-node.service"]


def test_hotspot_mode_adds_hostapd_dnsmasq_nftables() -> None:
    out = files()
    for path in (HOSTAPD_CONF, DNSMASQ_CONF, NFTABLES_FILE):
        assert str(path) in out
    for unit in ("bart-firewall", "bart-hostapd", "bart-dnsmasq"):
        assert f"/etc/systemd/system/{unit}.service" in out
    assert "/etc/NetworkManager/conf.d/bart-hotspot.conf" in out
    assert "unmanaged-devices=interface-name:wlan0" in out[
        "/etc/NetworkManager/conf.d/bart-hotspot.conf"].text


def test_open_network_by_default() -> None:
    conf = lines(files()[str(HOSTAPD_CONF)].text)
    assert "wpa=0" in conf
    assert not any(ln.startswith("wpa_passphrase") for ln in conf)
    assert files()[str(HOSTAPD_CONF)].mode == 0o644
    assert "interface=wlan0" in conf and "channel=6" in conf and "country_code=NL" in conf
    assert "ap_isolate=1" in conf
    assert f"ssid2={b'Bart'.hex()}" in conf


def test_wpa2_passphrase_makes_a_root_only_file() -> None:
    f = files(settings(wpa_passphrase="geheim-buurthuis 12"))[str(HOSTAPD_CONF)]
    conf = lines(f.text)
    assert {"wpa=2", "wpa_key_mgmt=WPA-PSK", "rsn_pairwise=CCMP",
            "wpa_passphrase=geheim-buurthuis 12"} <= set(conf)
    assert f.mode == 0o600


def test_utf8_ssid_with_spaces_in_hex() -> None:
    conf = lines(files(settings(ssid="Buurthuis Café"))[str(HOSTAPD_CONF)].text)
    assert f"ssid2={'Buurthuis Café'.encode().hex()}" in conf
    assert "utf8_ssid=1" in conf


@pytest.mark.parametrize("bad", [
    {"wpa_passphrase": "kort"},
    {"wpa_passphrase": "x" * 64},
    {"wpa_passphrase": "caf\u00e9-caf\u00e9-caf\u00e9"},
    {"ssid": ""},
    {"ssid": "x" * 33},
    {"ssid": "two\nlines"},
    {"channel": 14},
    {"channel": 0},
    {"country": "nl"},
    {"interface": "wlan0; rm"},
    {"interface": "wlan-0"},
    {"address": "10.42.0.0/24"},
    {"address": "10.42.0.255/24"},
    {"address": "10.42.0.1/31"},
    {"address": "10.42.0.100/24"},
    {"dhcp_range": ["10.42.0.1", "10.42.0.50"]},
    {"dhcp_range": ["10.42.0.90", "10.42.0.50"]},
    {"dhcp_range": ["10.43.0.10", "10.43.0.50"]},
    {"lease_time_s": 60},
    {"https_url": "http://portal.example/api"},
    {"https_url": "https://portal.example/a b"},
    {"https_url": "https://portal.example/?x=1"},
    {"unknown_key": 1},
])
def test_bad_settings_are_refused_with_a_reason(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as info:
        HotspotSettings(**bad)  # type: ignore[arg-type]
    assert str(info.value)


def test_settings_from_toml(tmp_path: Path) -> None:
    (tmp_path / "node.toml").write_text(
        'name = "n1"\narea = "ESC-01"\n\n[hotspot]\nssid = "Buurt"\nchannel = 11\n'
        'address = "192.168.50.1/24"\ndhcp_range = ["192.168.50.100", "192.168.50.199"]\n')
    s = NodeSettings.load(tmp_path)
    conf = files(s)[str(DNSMASQ_CONF)].text
    assert "dhcp-range=wlan0,192.168.50.100,192.168.50.199,255.255.255.0,3600" in conf
    assert "address=/#/192.168.50.1" in conf
    assert "channel=11" in files(s)[str(HOSTAPD_CONF)].text


def test_bad_toml_hotspot_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "node.toml").write_text(
        'name = "n1"\narea = "ESC-01"\n[hotspot]\nwpa_passphrase = "short"\n')
    with pytest.raises(ConfigError, match="wpa_passphrase"):
        NodeSettings.load(tmp_path)


def test_dnsmasq_answers_every_name_with_the_node() -> None:
    conf = lines(files()[str(DNSMASQ_CONF)].text)
    assert "address=/#/10.42.0.1" in conf
    assert "interface=wlan0" in conf and "no-resolv" in conf
    assert "dhcp-range=wlan0,10.42.0.10,10.42.0.250,255.255.255.0,3600" in conf
    assert not any(",114," in ln for ln in conf)  # no HTTPS: no RFC 8910 option
    assert "dhcp-leasefile=/run/bart-dnsmasq/leases" in conf  # not on the SD card


def test_dhcp_option_114_only_with_https() -> None:
    url = "https://escamp-west.bart.example/"
    conf = lines(files(settings(https_url=url))[str(DNSMASQ_CONF)].text)
    assert 'dhcp-option=wlan0,114,"https://escamp-west.bart.example/api/v1/captive"' in conf


def test_nftables_own_table_never_flushes_the_ruleset() -> None:
    text = files()[str(NFTABLES_FILE)].text
    assert "flush ruleset" not in text
    assert "table inet bart {" in text
    assert "delete table inet bart" in text
    assert 'iifname "wlan0" tcp dport 80 redirect to :8080' in text
    assert "tcp dport 8080 ct status dnat accept" in text
    assert "tcp dport 8883 accept" in text  # point devices
    assert "reject with icmpx admin-prohibited" in text


def test_nftables_without_point_devices() -> None:
    s = settings()
    s = s.model_copy(update={"point_port": 0})
    assert "8883" not in files(s)[str(NFTABLES_FILE)].text


def test_node_unit_is_hardened_and_runs_as_bart() -> None:
    unit = lines(files()["/etc/systemd/system/bart-node.service"].text)
    for want in ("User=bart", "Restart=always", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "ReadWritePaths=/var/lib/bart", "PrivateTmp=yes", "ProtectHome=yes",
                 "CapabilityBoundingSet=",
                 "ExecStart=/opt/bart/.venv/bin/bart node run --data-dir /var/lib/bart",
                 "ConditionPathExists=/var/lib/bart/node.toml"):
        assert want in unit, want


def test_node_unit_binding_port_80_gets_only_that_capability() -> None:
    s = settings().model_copy(update={"http_port": 80})
    unit = lines(files(s)["/etc/systemd/system/bart-node.service"].text)
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in unit
    assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE" in unit


def test_venv_under_home_is_reachable_read_only() -> None:
    out = render_system(settings(), bart=Path("/home/pi/bart/.venv/bin/bart"), hotspot=False)
    assert "ProtectHome=read-only" in out[0].text


def test_firstboot_generates_keys_on_the_device_once() -> None:
    unit = lines(files()["/etc/systemd/system/bart-firstboot.service"].text)
    assert "ConditionPathExists=!/var/lib/bart/keys/signing.key" in unit
    assert "ConditionPathExists=/boot/firmware/bart-node.env" in unit
    assert any(ln.startswith("ExecStart=/opt/bart/.venv/bin/bart node init --data-dir "
                             "/var/lib/bart --name ${BART_NODE_NAME}") for ln in unit)
    assert "Type=oneshot" in unit


def test_journald_spares_the_sd_card() -> None:
    conf = lines(files()["/etc/systemd/journald.conf.d/bart.conf"].text)
    assert "Storage=volatile" in conf and "ForwardToSyslog=no" in conf


@pytest.mark.parametrize("bart", ["bart", "/opt/my bart/bin/bart", "/opt/bart%i/bin/bart"])
def test_unsafe_paths_are_refused(bart: str) -> None:
    with pytest.raises(ConfigError):
        render_system(settings(), bart=Path(bart))


def test_missing_templates_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="templates not found"):
        render_system(settings(), bart=BART, templates=tmp_path / "nope")


def test_write_files_is_idempotent(tmp_path: Path) -> None:
    out = render_system(settings(wpa_passphrase="geheim-buurthuis"), bart=BART)
    assert all(changed for _, changed in write_files(out, tmp_path))
    assert not any(changed for _, changed in write_files(out, tmp_path))
    hostapd = tmp_path / "etc/bart/hostapd.conf"
    assert hostapd.stat().st_mode & 0o777 == 0o600
    hostapd.chmod(0o644)  # a wrong mode is repaired
    changed = {str(f.path) for f, c in write_files(out, tmp_path) if c}
    assert changed == {str(HOSTAPD_CONF)}
    assert hostapd.stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.rglob(".*.*"))  # no temporary files left


def test_every_template_is_used() -> None:
    from node.hotspot import TEMPLATES

    used = {PurePosixPath(p).name for p in files()}
    templates = {p.name.removesuffix(".j2") for p in TEMPLATES.rglob("*.j2")}
    assert templates == {
        "bart-node.service", "bart-firstboot.service", "bart-firewall.service",
        "bart-hostapd.service", "bart-dnsmasq.service", "hostapd.conf", "dnsmasq.conf",
        "nftables.nft", "journald-bart.conf", "NetworkManager-bart.conf"}
    assert {"hostapd.conf", "dnsmasq.conf", "nftables.nft"} <= used


def test_option_114_names_the_portals_rfc8908_api() -> None:
    from node.hotspot import CAPTIVE_API_PATH
    from node.portal.captive import API_PATH

    assert CAPTIVE_API_PATH == API_PATH


def test_every_system_file_is_documented() -> None:
    docs = Path(__file__).parents[2] / "docs"
    deploy = (docs / "deploy.md").read_text()
    config = (docs / "configuration.md").read_text()
    for path in files():
        name = PurePosixPath(path).name
        assert path in deploy or name in deploy, f"{path} missing from docs/deploy.md"
        assert path in config or name in config, f"{path} missing from docs/configuration.md"
    for key in HotspotSettings.model_fields:
        assert f"| `hotspot.{key}` |" in config, f"hotspot.{key} missing from configuration.md"


def test_readme_deploy_section_links_the_guide() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Deploy a node on a Raspberry Pi", 1)[1].split("\n## ", 1)[0]
    assert "docs/deploy.md" in section
    assert "install.sh --hotspot" in section


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    bart = Path(sys.executable).parent / "bart"  # the console script, as install.sh runs it
    return subprocess.run([str(bart), "node", "system", "render", *args],
                          capture_output=True, text=True, timeout=60)


def test_cli_renders_then_changes_nothing(tmp_path: Path) -> None:
    args = ("--dest", str(tmp_path / "root"), "--hotspot", "--data-dir", str(tmp_path / "data"),
            "--bart", str(BART))
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "rendering the default settings" in first.stdout  # no node yet
    assert first.stdout.count("\nchanged /") == 10
    second = run_cli(*args)
    assert second.returncode == 0 and "changed /" not in second.stdout.replace("unchanged", "")
    assert (tmp_path / "root/etc/bart/nftables.nft").is_file()


def test_cli_refuses_bad_hotspot_settings_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "node.toml").write_text(
        'name = "n1"\narea = "ESC-01"\n[hotspot]\nwpa_passphrase = "kort"\n')
    result = run_cli("--dest", str(tmp_path / "root"), "--hotspot",
                     "--data-dir", str(tmp_path), "--bart", str(BART))
    assert result.returncode == 1
    assert result.stderr.startswith("bart: ") and "8 to 63 characters" in result.stderr
    assert not (tmp_path / "root").exists()  # nothing written
