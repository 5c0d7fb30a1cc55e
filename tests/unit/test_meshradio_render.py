"""node.meshradio: the mesh radio's settings and the system files rendered from them."""

from __future__ import annotations

import ipaddress
import stat
import tomllib
from pathlib import Path, PurePosixPath

import pytest
from pydantic import ValidationError

from node.config import HotspotSettings, NodeSettings
from node.errors import ConfigError
from node.hotspot import SystemFile, render_system, write_files
from node.meshradio import (
    MESH_MTU,
    MODULES_CONF,
    NM_CONF,
    TEMPLATE_MARK,
    UNIT_FILE,
    WPA_CONF,
    MeshRadioSettings,
    channel_frequency,
    hotspot_conflicts,
    record_interface,
    render_mesh_radio,
)

BART = Path("/opt/bart/.venv/bin/bart")
SECRET = "buurthuizen # 'samen' 2024"


def mesh(**kw: object) -> MeshRadioSettings:
    values: dict[str, object] = {"address": "10.99.0.7/16", "passphrase": SECRET, **kw}
    return MeshRadioSettings(**values)  # type: ignore[arg-type]


class WithMeshRadio(NodeSettings):
    """NodeSettings with the ``mesh_radio`` field node.config gains (see node.meshradio)."""

    mesh_radio: MeshRadioSettings | None = None


def node(mr: MeshRadioSettings | None = None, **hotspot: object) -> WithMeshRadio:
    return WithMeshRadio(data_dir=Path("/var/lib/bart"), name="escamp-west", area="ESC-01",
                         hotspot=HotspotSettings(**hotspot),  # type: ignore[arg-type]
                         mesh_radio=mr)


def lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def files(mr: MeshRadioSettings | None = None, name: str = "escamp-west") -> dict[str, str]:
    return {str(p): t for p, t in render_mesh_radio(mr or mesh(), name).items()}


# ------------------------------------------------------------------ settings

def test_defaults_and_what_is_required() -> None:
    mr = mesh()
    assert (mr.interface, mr.mesh_id, mr.channel, mr.country) == ("wlan1", "bart-mesh", 1, "NL")
    assert mr.frequency == 2412
    with pytest.raises(ValidationError) as exc:
        MeshRadioSettings()  # type: ignore[call-arg]
    missing = {e["loc"][0] for e in exc.value.errors() if e["type"] == "missing"}
    # No default passphrase (an open mesh lets anyone in) and no default address
    # (every node needs its own).
    assert missing == {"passphrase", "address"}


@pytest.mark.parametrize(("channel", "mhz"), [(1, 2412), (6, 2437), (13, 2472), (36, 5180),
                                              (48, 5240), (149, 5745), (165, 5825)])
def test_channel_frequency(channel: int, mhz: int) -> None:
    assert channel_frequency(channel) == mhz
    assert mesh(channel=channel).frequency == mhz


@pytest.mark.parametrize(("field", "value", "message"), [
    ("passphrase", "seven77", "8 to 63 characters, not 7"),
    ("passphrase", "x" * 64, "8 to 63 characters, not 64"),
    ("passphrase", "geheim-café", "printable ASCII"),
    ("passphrase", "geheim\tbuurthuis", "printable ASCII"),
    ("passphrase", 'a"#bcdefgh', "no double quote"),
    ("address", "10.99.0.0/16", "network or broadcast"),
    ("address", "10.99.255.255/16", "network or broadcast"),
    ("address", "10.99.0.7/31", "prefix must be /8 to /30"),
    ("address", "10.99.0.7/32", "prefix must be /8 to /30"),
    ("address", "8.8.8.8/24", "private network"),
    ("address", "10.99.0.7", "prefix must be /8 to /30"),
    ("channel", 14, "2.4 GHz channel 1-13"),
    ("channel", 0, "2.4 GHz channel 1-13"),
    ("channel", 52, "radar detection (DFS)"),
    ("channel", 100, "radar detection (DFS)"),
    ("mesh_id", "", "at least 1 character"),
    ("mesh_id", "é" * 17, "at most 32 bytes"),
    ("mesh_id", "bart\nmesh", "no control characters"),
    ("interface", "wlan-1", "should match pattern"),
    ("interface", "wlan1; reboot", "should match pattern"),
    ("interface", "a" * 16, "should match pattern"),
    ("interface", "bat0", "cannot be the mesh radio"),
    ("country", "nl", "should match pattern"),
    ("ssid", "Bart", "Extra inputs are not permitted"),
])
def test_invalid_settings_are_refused_with_the_reason(field: str, value: object,
                                                      message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        mesh(**{field: value})
    assert field in str(exc.value) and message in str(exc.value)


def test_the_passphrase_never_appears_in_errors_or_repr() -> None:
    with pytest.raises(ValidationError) as exc:
        mesh(passphrase="secret\x01secret", channel=99)
    assert "secret" not in str(exc.value)
    assert SECRET not in repr(mesh()) and SECRET not in str(mesh())


def test_utf8_mesh_id_of_32_bytes_is_fine() -> None:
    assert mesh(mesh_id="é" * 16).mesh_id == "é" * 16


# ------------------------------------------------------------------ rendering

def test_renders_four_files() -> None:
    assert sorted(files()) == sorted(str(p) for p in (WPA_CONF, UNIT_FILE, MODULES_CONF,
                                                      NM_CONF))
    assert str(UNIT_FILE) == "/etc/systemd/system/bart-meshradio.service"


def test_wpa_supplicant_is_an_sae_mesh_point_without_80211s_forwarding() -> None:
    conf = lines(files()[str(WPA_CONF)])
    for line in ("mode=5", "key_mgmt=SAE", "ieee80211w=2", "mesh_fwding=0", "frequency=2412",
                 "country=NL", "user_mpm=1", "disable_ht40=1",
                 "ctrl_interface=/run/bart-meshradio",
                 f"ssid={b'bart-mesh'.hex()}", f'sae_password="{SECRET}"'):
        assert line in conf, line
    # Exactly one network block, and no open-mesh fallback.
    assert conf.count("network={") == 1 and "key_mgmt=NONE" not in conf
    assert not any(ln.startswith("psk=") for ln in conf)


def test_values_land_where_they_should() -> None:
    mr = mesh(interface="wlx00c0ca", mesh_id="Wijk Escamp ✓", channel=36, country="BE",
              address="172.20.3.4/22")
    out = files(mr)
    conf = lines(out[str(WPA_CONF)])
    assert f"ssid={'Wijk Escamp ✓'.encode().hex()}" in conf
    assert "frequency=5180" in conf and "country=BE" in conf
    unit = out[str(UNIT_FILE)]
    assert f"ExecStart=/usr/sbin/wpa_supplicant -D nl80211 -i wlx00c0ca -c {WPA_CONF}" in unit
    assert "BindsTo=sys-subsystem-net-devices-wlx00c0ca.device" in unit
    assert "WantedBy=sys-subsystem-net-devices-wlx00c0ca.device" in unit
    assert "ExecStartPre=/usr/sbin/ip address replace 172.20.3.4/22 dev bat0" in unit
    assert "ExecStartPre=/usr/sbin/ip link set dev wlx00c0ca master bat0" in unit
    assert ("ExecStartPre=/usr/sbin/ip link add name bat0 address 02:ba:ac:14:03:04 "
            "type batadv") in unit
    nm = lines(out[str(NM_CONF)])
    assert nm == ["[keyfile]", "unmanaged-devices+=interface-name:wlx00c0ca;interface-name:bat0"]


def test_mtu_leaves_room_for_batman_adv_headers() -> None:
    # bat0 carries 1500-byte frames; batman-adv adds at most 32 bytes
    # (unicast 4addr header 18 + Ethernet 14).
    assert MESH_MTU == 1532
    unit = files()[str(UNIT_FILE)]
    assert "ExecStartPre=-/usr/sbin/ip link set dev wlan1 mtu 1532" in unit


def test_unit_order_builds_bat0_before_wpa_supplicant_and_cleans_up() -> None:
    unit = files()[str(UNIT_FILE)]
    steps = [ln for ln in unit.splitlines() if ln.startswith(("ExecStart", "ExecStop"))]
    order = ["modprobe batman-adv", "ip link delete dev bat0", "type batadv", "mtu 1532",
             "master bat0", "ip address replace", "dev bat0 up", "wpa_supplicant",
             "ExecStopPost=-/usr/sbin/ip link delete dev bat0"]
    found = [next(i for i, s in enumerate(steps) if part in s) for part in order]
    assert found == sorted(found), steps
    assert "Before=bart-node.service" in unit


def test_modules_load_batman_adv() -> None:
    assert lines(files()[str(MODULES_CONF)]) == ["batman-adv"]


def test_bat0_mac_is_stable_unicast_and_local_per_address() -> None:
    def mac(address: str) -> str:
        unit = files(mesh(address=address))[str(UNIT_FILE)]
        return unit.split("ip link add name bat0 address ")[1].split()[0]

    a, b = mac("10.99.0.7/16"), mac("10.99.0.8/16")
    assert a != b and a == mac("10.99.0.7/16")
    first = int(a.split(":")[0], 16)
    assert first & 0b10 and not first & 0b01  # locally administered, unicast


def test_a_bad_node_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="letters, digits and hyphens"):
        render_mesh_radio(mesh(), "west\nExecStart=/bin/sh")
    assert "(not yet named)" in files(name="")[str(UNIT_FILE)]


# ------------------------------------------------- bart node system render

def test_system_render_adds_the_mesh_radio_with_the_passphrase_root_only() -> None:
    out = {str(f.path): f for f in render_system(node(mesh()), bart=BART, hotspot=True)}
    assert {str(p) for p in (WPA_CONF, UNIT_FILE, MODULES_CONF, NM_CONF)} <= set(out)
    assert out[str(WPA_CONF)].mode == 0o600
    assert out[str(UNIT_FILE)].mode == 0o644
    # The hotspot's own NetworkManager drop-in is still there, and loads first.
    hotspot_nm = "/etc/NetworkManager/conf.d/bart-hotspot.conf"
    assert hotspot_nm in out and hotspot_nm < str(NM_CONF)


def test_system_render_without_a_mesh_radio_renders_none_of_it() -> None:
    for settings in (node(None), NodeSettings(data_dir=Path("/var/lib/bart"))):
        out = {str(f.path) for f in render_system(settings, bart=BART, hotspot=True)}
        assert not {str(p) for p in (WPA_CONF, UNIT_FILE, MODULES_CONF, NM_CONF)} & out


@pytest.mark.parametrize(("mr", "hotspot", "message"), [
    ({"interface": "wlan0"}, {}, "the hotspot's interface"),
    ({"channel": 4}, {"channel": 6}, "overlaps the hotspot's channel 6"),
    ({"channel": 13}, {"channel": 11}, "at least 5 apart"),
    ({"country": "BE"}, {}, "differs from hotspot.country NL"),
    ({"address": "10.42.0.2/16"}, {}, "overlaps the hotspot's network 10.42.0.0/24"),
])
def test_system_render_refuses_a_mesh_radio_that_clashes_with_the_hotspot(
        mr: dict[str, object], hotspot: dict[str, object], message: str) -> None:
    settings = node(mesh(**mr), **hotspot)
    assert any(message in p for p in hotspot_conflicts(mesh(**mr), settings.hotspot))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        render_system(settings, bart=BART, hotspot=True)
    # Without the hotspot, the same radio is fine (e.g. a relay node on wlan0).
    render_system(settings, bart=BART, hotspot=False)


def test_no_conflicts_by_default_and_on_5ghz() -> None:
    assert hotspot_conflicts(mesh(), HotspotSettings()) == []
    assert hotspot_conflicts(mesh(channel=36), HotspotSettings(channel=1)) == []


def test_writing_twice_changes_nothing(tmp_path: Path) -> None:
    rendered = render_system(node(mesh()), bart=BART, hotspot=False)
    assert all(changed for _, changed in write_files(rendered, tmp_path))
    assert not any(changed for _, changed in write_files(rendered, tmp_path))
    wpa = tmp_path / str(WPA_CONF).lstrip("/")
    assert stat.S_IMODE(wpa.stat().st_mode) == 0o600


# ------------------------------------------------- install.sh --mesh-radio

def node_toml(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "node.toml"
    path.write_text('name = "escamp-west"\narea = "ESC-01"\n\n[hotspot]\nchannel = 6\n' + extra)
    return path


def test_record_without_a_node_says_make_it_first(tmp_path: Path) -> None:
    result = record_interface(tmp_path / "node.toml", "wlan1")
    assert result.status == "no-node" and "bart node init" in result.message
    assert not (tmp_path / "node.toml").exists()


def test_record_adds_a_commented_table_once_and_the_node_still_loads(tmp_path: Path) -> None:
    path = node_toml(tmp_path)
    before = path.read_text()
    added = record_interface(path, "wlx00c0ca")
    assert added.status == "added" and "address" in added.message
    text = path.read_text()
    assert text.startswith(before) and TEMPLATE_MARK in text
    assert "mesh_radio" not in tomllib.loads(text)  # all commented out
    NodeSettings.load(tmp_path)  # the node still starts
    again = record_interface(path, "wlx00c0ca")
    assert again.status == "waiting" and path.read_text() == text


def test_record_the_filled_in_table_is_what_the_settings_accept(tmp_path: Path) -> None:
    path = node_toml(tmp_path)
    record_interface(path, "wlan1")
    filled = []
    for line in path.read_text().splitlines():
        if line.startswith("# [mesh_radio]") or (line.startswith("# ") and " = " in line):
            line = line[2:]
        filled.append(line.replace("10.99.0.N/16", "10.99.0.12/16")
                      .replace("the mesh's passphrase, 8-63 characters", SECRET))
    path.write_text("\n".join(filled) + "\n")
    table = tomllib.loads(path.read_text())["mesh_radio"]
    mr = MeshRadioSettings(**table)
    assert (mr.interface, mr.address) == ("wlan1", ipaddress.IPv4Interface("10.99.0.12/16"))
    assert (mr.mesh_id, mr.channel, mr.country) == ("bart-mesh", 1, "NL")
    assert record_interface(path, "wlan1").status == "configured"
    # Still valid TOML for the whole node, and the table stays last.
    assert tomllib.loads(path.read_text())["hotspot"] == {"channel": 6}


def test_record_refuses_another_interface_or_an_invalid_table(tmp_path: Path) -> None:
    path = node_toml(tmp_path, '\n[mesh_radio]\ninterface = "wlan2"\naddress = "10.99.0.3/16"\n'
                                f'passphrase = "{SECRET}"\n')
    with pytest.raises(ConfigError, match="'wlan2', not 'wlan1'"):
        record_interface(path, "wlan1")
    path = node_toml(tmp_path, '\n[mesh_radio]\naddress = "10.99.0.3/16"\n'
                                'passphrase = "tooshort"\n')
    assert record_interface(path, "wlan1").status == "configured"
    path = node_toml(tmp_path, '\n[mesh_radio]\naddress = "10.99.0.3/16"\n'
                                'passphrase = "short"\n')
    with pytest.raises(ConfigError, match="8 to 63 characters") as exc:
        record_interface(path, "wlan1")
    assert "'short'" not in str(exc.value)
    with pytest.raises(ConfigError, match="letters, digits"):
        record_interface(path, "wlan1 --hotspot")


def test_record_appends_after_a_last_line_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('name = "n1"\narea = "ESC-01"')
    record_interface(path, "wlan1")
    assert tomllib.loads(path.read_text()) == {"name": "n1", "area": "ESC-01"}


def test_system_file_paths_are_absolute() -> None:
    for f in render_system(node(mesh()), bart=BART, hotspot=True):
        assert isinstance(f, SystemFile) and f.path.is_absolute()
        assert isinstance(f.path, PurePosixPath)


# ----------------------------------------------------------------------- docs

def test_every_template_is_used() -> None:
    from node.meshradio import TEMPLATES

    assert {p.name for p in TEMPLATES.iterdir() if p.suffix == ".jinja"} == {
        "wpa_supplicant.conf.jinja", "bart-meshradio.service.jinja", "modules-load.conf.jinja",
        "NetworkManager-bart-meshradio.conf.jinja", "node-toml.jinja"}


def test_files_settings_and_checks_are_documented() -> None:
    deploy = (Path(__file__).parents[2] / "docs" / "deploy.md").read_text()
    section = deploy.split("\n## Linking community centres\n", 1)[1].split("\n## ", 1)[0]
    for path in files():
        assert f"`{path}`" in section, f"{path} missing from docs/deploy.md"
    for key in MeshRadioSettings.model_fields:
        assert f"| `{key}` |" in section, f"mesh_radio.{key} missing from docs/deploy.md"
    for text in ("install.sh --hotspot --mesh-radio wlan1", "[[mesh.peers]]", "8884/TCP",
                 "iw list", "* mesh point", "batctl n", "batctl o", "station dump",
                 "MTU", "1532", "unmanaged-devices+="):
        assert text in section, text
