"""The mesh radio: a second Wi-Fi adapter that links community centres.

A node may have a USB Wi-Fi adapter besides the hotspot's radio. It joins an
IEEE 802.11s mesh (encrypted with SAE) and batman-adv routes over it as
``bat0``: every node on the mesh is then on one layer-2 network, so the
neighbourhood mesh (docs/mesh.md) finds its peers by mDNS as on a LAN.

``MeshRadioSettings`` is the ``[mesh_radio]`` table of node.toml.
``render_mesh_radio`` is pure: settings in, system files (path → text) out,
from the templates in ``firmware-config/mesh-radio/``; ``node.hotspot``
writes them with the node's other system files (``bart node system render``).
``record_interface`` is the one piece of I/O: ``install.sh --mesh-radio``
uses it to put a ``[mesh_radio]`` table, for the operator to fill in, into
node.toml.

Example::

    mr = MeshRadioSettings(interface="wlan1", address="10.99.0.7/16",
                           passphrase="only the coordinators know this")
    for path, text in render_mesh_radio(mr, "escamp-west").items():
        print(path, len(text))
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError

if TYPE_CHECKING:  # node.config imports this module: no import cycle at run time
    import jinja2

    from .config import HotspotSettings

__all__ = [
    "BATMAN_ADV_OVERHEAD",
    "BAT_IFACE",
    "BAT_MTU",
    "MESH_MTU",
    "MODULES_CONF",
    "NM_CONF",
    "SECRET_FILES",
    "TEMPLATES",
    "TEMPLATE_MARK",
    "UNIT",
    "UNIT_FILE",
    "WPA_CONF",
    "MeshRadioSettings",
    "RecordResult",
    "channel_frequency",
    "hotspot_conflicts",
    "record_interface",
    "render_mesh_radio",
]

TEMPLATES = Path(__file__).resolve().parents[1] / "firmware-config" / "mesh-radio"

UNIT = "bart-meshradio.service"
UNIT_FILE = PurePosixPath("/etc/systemd/system") / UNIT
WPA_CONF = PurePosixPath("/etc/bart/meshradio-wpa_supplicant.conf")
MODULES_CONF = PurePosixPath("/etc/modules-load.d/bart-batman-adv.conf")
NM_CONF = PurePosixPath("/etc/NetworkManager/conf.d/bart-meshradio.conf")
# Files that hold the mesh passphrase: root only.
SECRET_FILES = frozenset({WPA_CONF})

BAT_IFACE = "bat0"
# batman-adv puts its own header and a second Ethernet header in front of
# every frame it carries: at most 18 bytes (the 4-address unicast header,
# the largest of batadv_unicast/unicast_4addr/bcast) + 14 (ETH_HLEN) = 32,
# batadv_max_header_len() in net/batman-adv/main.c. For bat0 to carry
# ordinary 1500-byte frames whole, the mesh interface needs 1500 + 32 = 1532;
# below that batman-adv fragments every large frame (it works, slower: it
# logs "The MTU of interface … is too small … Setting the MTU to 1532 would
# solve the problem").
BAT_MTU = 1500
BATMAN_ADV_OVERHEAD = 32
MESH_MTU = BAT_MTU + BATMAN_ADV_OVERHEAD

HEADER = ("Rendered by `bart node system render` from the node's [mesh_radio] "
          "settings (docs/deploy.md); local edits are overwritten.")

# The same names as the hotspot's interface: no hyphen, because the name is
# also part of a systemd device unit's name.
_IFACE = r"^[A-Za-z0-9_][A-Za-z0-9_.]{0,14}$"
_CHANNELS_24 = range(1, 14)
# 5 GHz channels without radar detection (DFS). 52-144 need DFS, which
# mesh mode on USB adapters almost never supports: the mesh would not start.
_CHANNELS_5 = (36, 40, 44, 48, 149, 153, 157, 161, 165)
_PRIVATE = tuple(ipaddress.IPv4Network(n)
                 for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


def channel_frequency(channel: int) -> int:
    """Centre frequency in MHz of a 2.4 GHz (1-13) or 5 GHz channel (wpa_supplicant's
    ``frequency=``)."""
    if channel in _CHANNELS_24:
        return 2407 + 5 * channel
    if 32 <= channel <= 177:
        return 5000 + 5 * channel
    raise ValueError(f"channel {channel}: not a 2.4 GHz (1-13) or 5 GHz channel")


class MeshRadioSettings(BaseModel):
    """The mesh radio (``[mesh_radio]`` in node.toml): 802.11s + SAE + batman-adv.

    Every node of one mesh has the same ``mesh_id``, ``channel``, ``country``
    and ``passphrase``, and its own ``address``. See docs/deploy.md,
    "Linking community centres".
    """

    # The passphrase must not appear in an error message (install.sh's output,
    # the journal): pydantic would quote the input otherwise.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    #: The USB adapter's interface (its driver must support mesh point mode).
    interface: str = Field(default="wlan1", pattern=_IFACE)
    #: 802.11s mesh ID, the same on every node (1-32 bytes UTF-8).
    mesh_id: str = Field(default="bart-mesh", min_length=1)
    #: 2.4 GHz channel 1 by default: 100 mW outdoors is allowed in the EU
    #: (5150-5350 MHz is meant for indoors, 5470-5725 MHz needs radar detection,
    #: 5725-5875 MHz allows 25 mW), it reaches further per milliwatt and
    #: through trees, and most USB adapters with mesh point support are
    #: 2.4 GHz only. Not 12 or 13: adapters whose EEPROM says "US" may not
    #: transmit there. 1 is as far from the hotspot's default 6 as 11 is.
    channel: int = 1
    #: Regulatory country (ISO 3166 alpha-2); the same as the hotspot's.
    country: str = Field(default="NL", pattern=r"^[A-Z]{2}$")
    #: SAE password of the mesh, the same on every node. Required: an open
    #: mesh would let anyone in range inject frames into the nodes' network.
    passphrase: str = Field(repr=False)
    #: This node's address on bat0, e.g. 10.99.0.7/16; a different one on every node.
    address: ipaddress.IPv4Interface

    @field_validator("interface")
    @classmethod
    def _interface(cls, value: str) -> str:
        if value in (BAT_IFACE, "lo"):
            raise ValueError(f"interface: {value} cannot be the mesh radio "
                             "(the Wi-Fi adapter's interface, e.g. wlan1)")
        return value

    @field_validator("mesh_id")
    @classmethod
    def _mesh_id(cls, value: str) -> str:
        if len(value.encode("utf-8")) > 32:
            raise ValueError("mesh_id: at most 32 bytes (UTF-8)")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("mesh_id: no control characters")
        return value

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: int) -> int:
        if value in _CHANNELS_24 or value in _CHANNELS_5:
            return value
        if 52 <= value <= 144:
            raise ValueError(f"channel {value} needs radar detection (DFS), which mesh "
                             "mode on USB adapters almost never supports: use 1-13, "
                             "36-48 or 149-165")
        raise ValueError(f"channel {value}: use a 2.4 GHz channel 1-13 or a 5 GHz "
                         "channel 36, 40, 44, 48 or 149-165")

    @field_validator("passphrase")
    @classmethod
    def _passphrase(cls, value: str) -> str:
        if not 8 <= len(value) <= 63:
            raise ValueError(f"passphrase: 8 to 63 characters, not {len(value)} (an open "
                             "mesh would let anyone in range into the nodes' network)")
        if any(not 32 <= ord(c) <= 126 for c in value):
            raise ValueError("passphrase: printable ASCII characters only")
        if '"' in value:
            # wpa_supplicant reads a '#' after a second '"' as a comment: the
            # password would be cut short without a word.
            raise ValueError('passphrase: no double quote (")')
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: ipaddress.IPv4Interface) -> ipaddress.IPv4Interface:
        net = value.network
        if not 8 <= net.prefixlen <= 30:
            raise ValueError(f"address {value}: prefix must be /8 to /30 (e.g. 10.99.0.7/16)")
        if value.ip in (net.network_address, net.broadcast_address):
            raise ValueError(f"address {value}: that is the network or broadcast address, "
                             "not a host address")
        if not any(net.subnet_of(p) for p in _PRIVATE):
            raise ValueError(f"address {value}: use a private network (10/8, 172.16/12, "
                             "192.168/16), e.g. 10.99.0.7/16")
        return value

    @property
    def frequency(self) -> int:
        """The channel's centre frequency in MHz."""
        return channel_frequency(self.channel)


def hotspot_conflicts(mesh: MeshRadioSettings, hotspot: HotspotSettings) -> list[str]:
    """Why this mesh radio cannot run beside this hotspot in one node (empty: it can)."""
    problems = []
    if mesh.interface == hotspot.interface:
        problems.append(f"mesh_radio.interface {mesh.interface} is the hotspot's interface: "
                        "the mesh needs a second Wi-Fi adapter")
    if mesh.country != hotspot.country:
        # The kernel has one regulatory domain; hostapd and wpa_supplicant would
        # each set their own, in turn.
        problems.append(f"mesh_radio.country {mesh.country} differs from hotspot.country "
                        f"{hotspot.country}")
    if mesh.channel in _CHANNELS_24 and abs(mesh.channel - hotspot.channel) < 5:
        problems.append(f"mesh_radio.channel {mesh.channel} overlaps the hotspot's channel "
                        f"{hotspot.channel}: two radios in one box need 2.4 GHz channels at "
                        "least 5 apart (e.g. 1 and 6), or a 5 GHz channel for the mesh")
    if mesh.address.network.overlaps(hotspot.address.network):
        problems.append(f"mesh_radio.address {mesh.address} overlaps the hotspot's network "
                        f"{hotspot.address.network}")
    return problems


def _environment(templates: Path) -> jinja2.Environment:
    if not templates.is_dir():
        raise ConfigError(f"templates not found: {templates} (firmware-config/mesh-radio/ "
                          "of the bart repository)")
    import jinja2  # only when rendering (a running node's config does not need it)

    # Config files, not HTML; every value is validated by MeshRadioSettings.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
        trim_blocks=True, lstrip_blocks=True, autoescape=False)  # noqa: S701


def _bat_mac(address: ipaddress.IPv4Interface) -> str:
    """A stable MAC address for bat0: locally administered, from the node's address.

    batman-adv would give bat0 a random one each time it is made; peers then
    keep answering for the old one (ARP, batman-adv's distributed ARP table)
    for minutes after a restart. The addresses are distinct, so these are too.
    """
    return "02:ba:" + ":".join(f"{b:02x}" for b in address.ip.packed)


def render_mesh_radio(settings: MeshRadioSettings, node_name: str, *,
                      templates: Path = TEMPLATES) -> dict[PurePosixPath, str]:
    """The mesh radio's system files, path → text (pure apart from reading templates).

    The wpa_supplicant file (``WPA_CONF``) holds the passphrase: write it
    mode 0600 (``SECRET_FILES``).
    """
    if node_name and not re.fullmatch(r"[a-z0-9-]{1,63}", node_name):
        raise ConfigError(f"node name {node_name!r}: letters, digits and hyphens only")
    env = _environment(templates)
    context = {
        "header": HEADER,
        "node_name": node_name or "(not yet named)",
        "mr": settings,
        "mesh_id_hex": settings.mesh_id.encode("utf-8").hex(),
        "frequency": settings.frequency,
        "band": "2.4 GHz" if settings.channel in _CHANNELS_24 else "5 GHz",
        "bat": BAT_IFACE,
        "bat_mac": _bat_mac(settings.address),
        "bat_mtu": BAT_MTU,
        "mesh_mtu": MESH_MTU,
        "overhead": BATMAN_ADV_OVERHEAD,
        "wpa_conf": WPA_CONF,
        "repo": Path(__file__).resolve().parents[1],
    }

    def render(template: str) -> str:
        return env.get_template(template).render(context)

    return {
        WPA_CONF: render("wpa_supplicant.conf.jinja"),
        UNIT_FILE: render("bart-meshradio.service.jinja"),
        MODULES_CONF: render("modules-load.conf.jinja"),
        NM_CONF: render("NetworkManager-bart-meshradio.conf.jinja"),
    }


# ------------------------------------------------------------------ install.sh

# The first line of the block record_interface() appends; it finds it again.
TEMPLATE_MARK = "# Mesh radio, added by install.sh --mesh-radio"


@dataclass(frozen=True)
class RecordResult:
    """What ``record_interface`` found or did, and what to tell the operator."""

    status: Literal["configured", "added", "waiting", "no-node"]
    message: str


def record_interface(config: Path, interface: str, *,
                     templates: Path = TEMPLATES) -> RecordResult:
    """Make sure node.toml (``config``) has a mesh radio on ``interface``, or say what is missing.

    - a complete ``[mesh_radio]`` table on this interface: ``configured``;
    - none yet: a commented-out table with this interface is appended for the
      operator to fill in (address, passphrase) — ``added``; once it is
      there, ``waiting`` (nothing is appended twice);
    - no node.toml yet: ``no-node``.

    A node.toml is never given an incomplete table: the node would not start.
    Raises ``ConfigError`` for a table that names another interface or is invalid.
    """
    if not re.fullmatch(_IFACE, interface):
        raise ConfigError(f"interface {interface!r}: letters, digits, '_' and '.', "
                          "at most 15 (e.g. wlan1)")
    if not config.is_file():
        return RecordResult("no-node", f"no node in {config.parent} yet: make it first (first "
                            "boot, or bart node init), then run install.sh --mesh-radio "
                            f"{interface} again")
    text = config.read_text(encoding="utf-8")
    try:
        table = tomllib.loads(text).get("mesh_radio")
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config}: {exc}") from exc
    if table is not None:
        if not isinstance(table, dict):
            raise ConfigError(f"{config}: mesh_radio must be a table ([mesh_radio])")
        named = table.get("interface", MeshRadioSettings.model_fields["interface"].default)
        if named != interface:
            raise ConfigError(f"{config}: [mesh_radio] has interface = {named!r}, not "
                              f"{interface!r}: change one of them")
        try:
            MeshRadioSettings(**table)
        except ValidationError as exc:
            raise ConfigError(f"{config}: [mesh_radio]: {exc}") from exc
        return RecordResult("configured", f"mesh radio on {interface} ({config})")
    fill_in = (f"fill in [mesh_radio] at the end of {config} (address: this node's own, "
               "from the coordinator's list; passphrase: the mesh's), remove the '# ' "
               f"before its lines, then run install.sh --mesh-radio {interface} again")
    if TEMPLATE_MARK in text:
        return RecordResult("waiting", fill_in)
    block = _environment(templates).get_template("node-toml.jinja").render(
        mark=TEMPLATE_MARK, interface=interface,
        defaults=MeshRadioSettings.model_fields)
    with config.open("a", encoding="utf-8") as fh:  # appending keeps owner and mode
        fh.write(("" if text.endswith("\n") or not text else "\n") + block)
    return RecordResult("added", fill_in)
