"""The node's system files: hotspot (hostapd, dnsmasq, nftables), systemd units,
journald settings, the first-boot unit and the mesh radio's files
(``node.meshradio``), rendered from its settings.

The templates live in ``firmware-config/`` (data only); this module fills them
in. ``render_system`` is pure: settings in, files (path, text, mode) out.
``write_files`` puts them under a destination root and says which changed;
``bart node system render`` and ``install.sh`` use both.

Example::

    files = render_system(NodeSettings(data_dir=Path("/var/lib/bart")),
                          bart=Path("/opt/bart/.venv/bin/bart"), hotspot=True)
    for f, changed in write_files(files, Path("/")):
        print(f.path, "changed" if changed else "unchanged")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import jinja2

from common.files import write_atomic

from .config import NodeSettings
from .errors import ConfigError
from .meshradio import SECRET_FILES, hotspot_conflicts, render_mesh_radio

__all__ = [
    "BOOT_ENV",
    "CAPTIVE_API_PATH",
    "DNSMASQ_CONF",
    "HOSTAPD_CONF",
    "NFTABLES_FILE",
    "TEMPLATES",
    "SystemFile",
    "render_system",
    "write_files",
]

TEMPLATES = Path(__file__).resolve().parents[1] / "firmware-config"

ETC = PurePosixPath("/etc/bart")
HOSTAPD_CONF = ETC / "hostapd.conf"
DNSMASQ_CONF = ETC / "dnsmasq.conf"
NFTABLES_FILE = ETC / "nftables.nft"
UNIT_DIR = PurePosixPath("/etc/systemd/system")
JOURNALD_CONF = PurePosixPath("/etc/systemd/journald.conf.d/bart.conf")
NM_CONF = PurePosixPath("/etc/NetworkManager/conf.d/bart-hotspot.conf")
# Raspberry Pi OS mounts the SD card's FAT boot partition here: a volunteer
# can write this file from any laptop before the first boot.
BOOT_ENV = PurePosixPath("/boot/firmware/bart-node.env")

NODE_UNITS = ("bart-node.service", "bart-firstboot.service")
HOTSPOT_UNITS = ("bart-firewall.service", "bart-hostapd.service", "bart-dnsmasq.service")

# The portal's RFC 8908 API (node/portal, docs/http-api.md), offered by DHCP
# option 114 under the node's HTTPS address.
CAPTIVE_API_PATH = "/api/v1/captive"

HEADER = ("Rendered by `bart node system render` from the node's settings "
          "(docs/deploy.md); local edits are overwritten.")


@dataclass(frozen=True)
class SystemFile:
    """One rendered file: where it goes (absolute), its text and its mode."""

    path: PurePosixPath
    text: str
    mode: int = 0o644


def _environment(templates: Path) -> jinja2.Environment:
    if not templates.is_dir():
        raise ConfigError(f"templates not found: {templates} (firmware-config/ of the "
                          "bart repository; bart must be installed from a checkout)")
    # Config files, not HTML: escaping would corrupt them. Every value that goes
    # in is validated by the settings (no newlines, quotes or control characters).
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
        trim_blocks=True, lstrip_blocks=True, autoescape=False)  # noqa: S701


def render_system(settings: NodeSettings, *, bart: Path, hotspot: bool = True,
                  user: str = "bart", boot_env: PurePosixPath = BOOT_ENV,
                  templates: Path = TEMPLATES, journald: bool = True) -> list[SystemFile]:
    """Every system file of a node, from its settings (pure apart from reading templates).

    ``bart`` is the absolute path of the ``bart`` command the units run;
    ``hotspot`` adds hostapd, dnsmasq, nftables, their units and the
    NetworkManager drop-in; ``journald=False`` leaves out the journald drop-in
    (install.sh off a Raspberry Pi without a hotspot: a laptop that only tries
    the demo keeps its own logging). A ``[mesh_radio]`` in the settings adds
    the mesh radio's files (``node.meshradio``).
    """
    if not bart.is_absolute():
        raise ConfigError(f"the bart command must be an absolute path, not {bart}")
    if not settings.data_dir.is_absolute():
        raise ConfigError(f"data_dir must be an absolute path, not {settings.data_dir}")
    for value, what in ((str(bart), "bart path"), (str(settings.data_dir), "data_dir")):
        if any(c.isspace() or c in "\"'\\%$;" for c in value):
            raise ConfigError(f"{what} {value!r}: no spaces, quotes, '%', '$' or ';' "
                              "(it is written into systemd units)")
    env = _environment(templates)
    hs = settings.hotspot
    assert hs.dhcp_range is not None  # filled in by the settings' validator
    home = bart.parts[1] if len(bart.parts) > 1 else ""
    context = {
        "header": HEADER,
        "hs": hs,
        "hotspot": hotspot,
        "user": user,
        "bart": bart,
        "repo": bart.parents[2] if len(bart.parents) > 2 else bart.parent,
        "data_dir": settings.data_dir,
        "boot_env": boot_env,
        "http_port": settings.http_port,
        "point_port": settings.point_port,
        "bind_low_port": settings.http_port < 1024,
        # The service must still read a virtual environment kept under /home.
        "protect_home": "read-only" if home in ("home", "root") else "yes",
        "ssid_hex": hs.ssid.encode("utf-8").hex(),
        "ssid_utf8": not hs.ssid.isascii(),
        "captive_api_url": (hs.https_url.rstrip("/") + CAPTIVE_API_PATH
                            if hs.https_url else None),
        "range_start": hs.dhcp_range[0],
        "range_end": hs.dhcp_range[1],
        "device_unit": hs.interface,
        "dest": {"hostapd": HOSTAPD_CONF, "dnsmasq": DNSMASQ_CONF,
                 "nftables": NFTABLES_FILE},
    }

    def render(template: str) -> str:
        return env.get_template(template).render(context)

    files = [SystemFile(UNIT_DIR / unit, render(f"systemd/{unit}.j2")) for unit in NODE_UNITS]
    if journald:
        files.append(SystemFile(JOURNALD_CONF, render("journald-bart.conf.j2")))
    if hotspot:
        files += [SystemFile(UNIT_DIR / unit, render(f"systemd/{unit}.j2"))
                  for unit in HOTSPOT_UNITS]
        # A WPA2 passphrase is a secret: root only.
        files.append(SystemFile(HOSTAPD_CONF, render("hostapd.conf.j2"),
                                0o600 if hs.wpa_passphrase else 0o644))
        files.append(SystemFile(DNSMASQ_CONF, render("dnsmasq.conf.j2")))
        files.append(SystemFile(NFTABLES_FILE, render("nftables.nft.j2")))
        files.append(SystemFile(NM_CONF, render("NetworkManager-bart.conf.j2")))
    # getattr: the field may not be in NodeSettings yet (then None).
    mesh_radio = settings.mesh_radio
    if mesh_radio is not None:
        if hotspot and (problems := hotspot_conflicts(mesh_radio, hs)):
            raise ConfigError("; ".join(problems))
        files += [SystemFile(path, text, 0o600 if path in SECRET_FILES else 0o644)
                  for path, text in render_mesh_radio(mesh_radio, settings.name).items()]
    return files


def write_files(files: list[SystemFile], dest: Path) -> list[tuple[SystemFile, bool]]:
    """Write each file under ``dest`` (atomically, with its mode); report which changed.

    A file whose text and mode are already right is not touched, so running
    this again changes nothing (and ``install.sh`` restarts nothing).
    """
    results = []
    for f in files:
        target = dest / f.path.relative_to("/")
        data = f.text.encode("utf-8")
        try:
            same = target.read_bytes() == data and (target.stat().st_mode & 0o7777) == f.mode
        except FileNotFoundError:
            same = False
        if not same:
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, data, mode=f.mode)
        results.append((f, not same))
    return results
