"""Node settings: a TOML file in the data directory, ``BART_…`` environment
variables, and command-line flags, in increasing order of precedence.

``bart node init`` writes ``node.toml`` and the secrets; ``bart node run``
reads them. Every setting is documented in ``docs/configuration.md`` (a test
checks this).
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import tomllib
import unicodedata
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import SettingsConfigDict

from common.ratelimit import check_trusted_proxies
from common.settings import FileSettings
from sync.bodies import AREA, SLUG

from .errors import ConfigError, NotInitialised
from .meshradio import MeshRadioSettings

CONFIG_FILE = "node.toml"
SECRETS_FILE = "secrets/mqtt.json"


def node_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a node's name (in words, with a name that can), or None.

    The one rule for every place a node name is taken (``bart node init``, ``bart
    central enroll-code``, ``node.toml``); it is ``sync.bodies.SLUG``, which events,
    enrolment requests and rosters check on the wire.

    >>> node_name_problem("escamp-west") is None
    True
    >>> node_name_problem("Buurthuis Één")[-18:]
    'e.g. buurthuis-een'
    """
    if SLUG.fullmatch(name):
        return None
    plain = unicodedata.normalize("NFKD", name.lower())
    like = "-".join("".join(c if c.isascii() and c.isalnum() else " "
                            for c in plain if not unicodedata.combining(c)).split())
    like = like[:63].strip("-") or "escamp-west"
    return (f"{name!r} is not a node name: use lower-case letters, digits and '-' (not "
            f"first or last), at most 63, e.g. {like}")


def check_node_name(name: str) -> str:
    """``name`` when it can be a node's name; ConfigError saying why not."""
    problem = node_name_problem(name)
    if problem is not None:
        raise ConfigError(problem)
    return name


class PanicButtonConfig(BaseModel):
    """A panic button at a meeting point (pins are BCM numbers)."""

    id: str = Field(pattern=SLUG.pattern)
    device: Literal["hub", "point"] = "hub"
    button_pin: int = Field(ge=0, le=27)
    led_pin: int = Field(ge=0, le=27)
    buzzer_pin: int | None = Field(default=None, ge=0, le=27)


class MeetingPoint(BaseModel):
    """A neighbourhood meeting point served by this node."""

    id: str = Field(pattern=SLUG.pattern)
    name: str = Field(min_length=1, max_length=80)
    description: str = Field(default="", max_length=300)
    panic_buttons: list[PanicButtonConfig] = Field(default_factory=list, max_length=8)


class HotspotSettings(BaseModel):
    """The node's Wi-Fi hotspot (``[hotspot]`` in node.toml): hostapd, dnsmasq, nftables.

    Rendered into system files by ``node.hotspot``; see docs/configuration.md.
    """

    model_config = ConfigDict(extra="forbid")

    # No hyphens: the name is also part of a systemd device unit name.
    interface: str = Field(default="wlan0", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.]{0,14}$")
    address: ipaddress.IPv4Interface = ipaddress.IPv4Interface("10.42.0.1/24")
    ssid: str = Field(default="Bart", min_length=1)
    channel: int = Field(default=6, ge=1, le=13)
    country: str = Field(default="NL", pattern=r"^[A-Z]{2}$")
    wpa_passphrase: str | None = None
    dhcp_range: tuple[ipaddress.IPv4Address, ipaddress.IPv4Address] | None = None
    lease_time_s: int = Field(default=3600, ge=120, le=7 * 86_400)
    https_url: str | None = Field(default=None, max_length=255)

    @field_validator("address")
    @classmethod
    def _usable_address(cls, value: ipaddress.IPv4Interface) -> ipaddress.IPv4Interface:
        net = value.network
        if not 8 <= net.prefixlen <= 29:
            raise ValueError(f"hotspot address {value}: prefix must be /8 to /29")
        if value.ip in (net.network_address, net.broadcast_address):
            raise ValueError(f"hotspot address {value}: that is the network or broadcast "
                             "address, not a host address")
        return value

    @field_validator("ssid")
    @classmethod
    def _ssid(cls, value: str) -> str:
        if len(value.encode("utf-8")) > 32:
            raise ValueError("ssid: at most 32 bytes (UTF-8)")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("ssid: no control characters")
        return value

    @field_validator("wpa_passphrase")
    @classmethod
    def _passphrase(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not 8 <= len(value) <= 63:
            raise ValueError("wpa_passphrase: 8 to 63 characters (WPA2), "
                             "or leave it out for an open network")
        if any(not 32 <= ord(c) <= 126 for c in value):
            raise ValueError("wpa_passphrase: printable ASCII characters only")
        return value

    @field_validator("https_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("https://") or len(value) <= len("https://"):
            raise ValueError("https_url: must start with https:// (RFC 8908 requires HTTPS)")
        if any(c.isspace() or c in "\"'?#" for c in value):
            raise ValueError("https_url: no spaces, quotes, query or fragment")
        return value

    @model_validator(mode="after")
    def _range(self) -> HotspotSettings:
        net = self.address.network
        if self.dhcp_range is None:
            # Leave the first hosts for the node and fixed devices, and a few at the top.
            size = net.num_addresses
            low, high = (10, 5) if size >= 64 else (2, 1)
            self.dhcp_range = (net.network_address + low, net.broadcast_address - high)
            if low <= int(self.address.ip) - int(net.network_address) <= size - 1 - high:
                raise ValueError(f"hotspot address {self.address} lies in the default DHCP "
                                 "range: set hotspot.dhcp_range explicitly")
            return self
        start, end = self.dhcp_range
        for ip in (start, end):
            if ip not in net or ip in (net.network_address, net.broadcast_address):
                raise ValueError(f"dhcp_range: {ip} is not a host address of {net}")
        if int(start) > int(end):
            raise ValueError(f"dhcp_range: {start} comes after {end}")
        if int(start) <= int(self.address.ip) <= int(end):
            raise ValueError(f"dhcp_range: {start}-{end} contains the node's own address "
                             f"{self.address.ip}")
        return self


class MeshPeer(BaseModel):
    """A peer reached by address, for routed networks where mDNS does not pass."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:_-]+$")
    port: int = Field(default=8884, ge=1, le=65535)


class MeshSettings(BaseModel):
    """The neighbourhood mesh (``[mesh]`` in node.toml; docs/mesh.md)."""

    model_config = ConfigDict(extra="forbid")

    #: Mosquitto's mutual-TLS mesh listener; 0 turns the mesh off.
    port: int = Field(default=8884, ge=0, le=65535)
    host: str = Field(default="0.0.0.0", max_length=253)  # noqa: S104 - peers reach it
    #: Advertise and browse with mDNS (DNS-SD ``_bart-mesh._tcp``).
    discovery: bool = True
    #: Network interfaces (names such as eth0, or addresses) mDNS uses; empty: all.
    interfaces: list[str] = Field(default_factory=list, max_length=16)
    #: Most hops a live event travels.
    hop_limit: int = Field(default=4, ge=1, le=16)
    #: Seconds between vector exchanges on every session (anti-entropy).
    sync_s: float = Field(default=60.0, ge=1.0, le=3600.0)
    #: Seconds between attempts to reach a peer that does not answer (upper bound).
    retry_max_s: float = Field(default=30.0, ge=1.0, le=3600.0)
    #: Public events of one origin (central's excepted) this node takes from others
    #: per minute, sustained: its live bucket's and its catch-up bucket's refill.
    origin_rate_per_min: float = Field(default=30.0, ge=0.1, le=60_000.0)
    #: ... at once, live (relayed, or on the local Mosquitto): the live bucket's depth.
    origin_burst: int = Field(default=60, ge=1, le=1_000_000)
    #: ... at once by catch-up: the catch-up bucket's depth (2 x a 10,000-event partition).
    catchup_burst: int = Field(default=20_000, ge=1, le=10_000_000)
    peers: list[MeshPeer] = Field(default_factory=list, max_length=64)


class NodeSettings(FileSettings):
    """Everything a node needs to run. See docs/configuration.md."""

    model_config = SettingsConfigDict(env_prefix="BART_", extra="forbid")

    data_dir: Path = Path("/var/lib/bart")
    name: str = Field(default="", max_length=63)
    display_name: str = Field(default="", max_length=80)
    area: str = Field(default="", pattern=r"^$|" + AREA.pattern)
    meeting_points: list[MeetingPoint] = Field(default_factory=list, max_length=64)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=1, le=65535)
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(default=1883, ge=1, le=65535)
    mosquitto_binary: str = "mosquitto"
    timezone: str = "Europe/Amsterdam"
    max_request_bytes: int = Field(default=16_384, ge=1024, le=1_048_576)
    reports_per_minute: int = Field(default=20, ge=0, le=10_000)
    min_free_disk_mb: int = Field(default=100, ge=0)
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    gpio: Literal["auto", "mock", "off"] = "auto"
    demo: bool = False
    hold_s: float = Field(default=2.0, ge=0.5, le=10.0)
    cooldown_s: float = Field(default=60.0, ge=0.0, le=3600.0)
    point_port: int = Field(default=8883, ge=0, le=65535)
    point_host: str = Field(default="", max_length=253)
    uplink_batch_max: int = Field(default=1000, ge=1, le=5000)
    uplink_max_age_s: float = Field(default=2.0, ge=0.0, le=3600.0)
    uplink_poll_s: float = Field(default=30.0, ge=1.0, le=3600.0)
    uplink_alarm_poll_s: float = Field(default=1.0, ge=0.2, le=60.0)
    uplink_alarm_watch_s: float = Field(default=900.0, ge=10.0, le=86_400.0)
    uplink_backoff_max_s: float = Field(default=300.0, ge=1.0, le=86_400.0)
    retention_days: int = Field(default=90, ge=1, le=3650)
    hotspot: HotspotSettings = Field(default_factory=HotspotSettings)
    captive_grace_s: float = Field(default=3600.0, ge=0.0, le=7 * 86400.0)
    # How long residents still see an alert after it was resolved (then it leaves the home page).
    resolved_alert_keep_s: float = Field(default=1800.0, ge=0.0, le=7 * 86400.0)
    mesh: MeshSettings = Field(default_factory=MeshSettings)
    mesh_radio: MeshRadioSettings | None = None
    # Prometheus /metrics on a listener of its own (docs/metrics.md); 0: not served.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_host: str = Field(default="127.0.0.1", max_length=253)
    # Addresses or networks whose X-Forwarded-For is believed (a reverse proxy in front
    # of the portal); empty: none, the connection's own address counts (issue 17).
    trusted_proxies: list[str] = Field(default_factory=list, max_length=64)

    @field_validator("name")
    @classmethod
    def _node_name(cls, value: str) -> str:
        problem = node_name_problem(value) if value else None
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: list[str]) -> list[str]:
        return check_trusted_proxies(value)

    @field_validator("meeting_points")
    @classmethod
    def _unique_points(cls, value: list[MeetingPoint]) -> list[MeetingPoint]:
        ids = [p.id for p in value]
        if len(ids) != len(set(ids)):
            raise ValueError("meeting point ids must be unique")
        return value

    @property
    def db_path(self) -> Path:
        """The node's SQLite store."""
        return self.data_dir / "node.db"

    @property
    def keys_dir(self) -> Path:
        """Where the node's private keys live (0700 directory, 0600 files)."""
        return self.data_dir / "keys"

    @property
    def tls_dir(self) -> Path:
        """The node's own CA and TLS certificate for point devices."""
        return self.data_dir / "tls"

    @property
    def broker_dir(self) -> Path:
        """Mosquitto's rendered config, password and ACL files and its state."""
        return self.data_dir / "broker"

    @classmethod
    def load(cls, data_dir: Path, **overrides: Any) -> NodeSettings:
        """Read ``data_dir/node.toml``, then environment, then ``overrides``."""
        path = data_dir / CONFIG_FILE
        if not path.exists():
            raise NotInitialised(
                f"no node in {data_dir} (run: bart node init --name NAME --area AREA "
                f"--data-dir {data_dir})"
            )
        try:
            file_values = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        env_keys = {k[5:].lower() for k in os.environ if k.startswith("BART_")}
        values = {k: v for k, v in file_values.items() if k not in env_keys}
        mesh_port = overrides.pop("mesh_port", None)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if mesh_port is not None:  # bart node run --mesh-port
            values["mesh"] = {**values.get("mesh", {}), "port": mesh_port}
        values["data_dir"] = data_dir
        try:
            settings = cls(**values)
        except ValidationError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        if not settings.name or not settings.area:
            raise ConfigError(f"{path}: name and area are required")
        return settings


def render_toml(values: dict[str, Any]) -> str:
    """Write a flat settings mapping (plus meeting points) as TOML."""
    lines = ["# Bart node settings. See docs/configuration.md for every key.", ""]
    points = values.pop("meeting_points", [])
    mesh = values.pop("mesh", None)
    for key, value in values.items():
        lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")
    if mesh:
        lines += ["", "[mesh]"]
        lines += [f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in mesh.items()
                  if k != "peers"]
        for peer in mesh.get("peers", []):
            lines += ["", "[[mesh.peers]]"]
            lines += [f"{k} = {json.dumps(v)}" for k, v in peer.items()]
    for point in points:
        buttons = point.get("panic_buttons", [])
        lines += ["", "[[meeting_points]]"]
        lines += [f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in point.items()
                  if k != "panic_buttons"]
        for button in buttons:
            lines += ["", "[[meeting_points.panic_buttons]]"]
            lines += [f"{k} = {json.dumps(v)}" for k, v in button.items() if v is not None]
    return "\n".join(lines) + "\n"


def write_secrets(data_dir: Path) -> dict[str, str]:
    """Create the MQTT passwords once (0600); return the existing ones later."""
    path = data_dir / SECRETS_FILE
    if path.exists():
        return load_secrets(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    values = {
        "service_password": secrets.token_urlsafe(24),
        "integration_password": secrets.token_urlsafe(24),
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)
    return values


def load_secrets(data_dir: Path) -> dict[str, str]:
    """Read the MQTT passwords, refusing a file others can read."""
    path = data_dir / SECRETS_FILE
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise NotInitialised(f"{path} is missing (run bart node init)") from exc
    if mode & 0o077:
        raise ConfigError(f"{path} must be mode 0600 (fix: chmod 600 {path})")
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(f"{path} is malformed")
    return data
