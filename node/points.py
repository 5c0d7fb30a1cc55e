"""Point devices of a node: credentials the node issues, and their set-up file.

``bart node point add NAME`` registers the point device of meeting point
``NAME``: a random MQTT password (its own broker user, which may only publish
its presses and read its light state), and a set-up file for the device with
the node's address, the TLS CA certificate and the buttons' pins. The running
node notices the change and restarts its broker with the new user.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from pathlib import Path
from typing import Any

from broker import MqttUser
from common.files import write_atomic

from .config import NodeSettings
from .errors import ConfigError
from .tls import ensure_tls

POINTS_FILE = "secrets/points.json"


def _path(settings: NodeSettings) -> Path:
    return settings.data_dir / POINTS_FILE


def load_points(settings: NodeSettings) -> dict[str, dict[str, Any]]:
    """Registered point devices: name → {password, created}."""
    path = _path(settings)
    if not path.exists():
        return {}
    if path.stat().st_mode & 0o077:
        raise ConfigError(f"{path} must be mode 0600 (fix: chmod 600 {path})")
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is malformed")
    return data


def _save(settings: NodeSettings, points: dict[str, dict[str, Any]]) -> None:
    path = _path(settings)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, json.dumps(points).encode(), mode=0o600)


def point_user(name: str) -> str:
    """The broker user name of point device ``name``."""
    return f"point-{name}"


def point_users(settings: NodeSettings) -> tuple[MqttUser, ...]:
    """Broker users of every registered point device."""
    return tuple(MqttUser(point_user(name), entry["password"], "point", point=name)
                 for name, entry in sorted(load_points(settings).items()))


def point_buttons(settings: NodeSettings, name: str) -> list[dict[str, Any]]:
    """The point-device buttons of meeting point ``name``."""
    for mp in settings.meeting_points:
        if mp.id == name:
            return [b.model_dump() for b in mp.panic_buttons if b.device == "point"]
    return []


def add_point(settings: NodeSettings, name: str, *, host: str | None = None,
              out: Path | None = None) -> Path:
    """Register point device ``name`` and write its set-up file (0600); return its path."""
    buttons = point_buttons(settings, name)
    if not buttons:
        raise ConfigError(f"meeting point {name!r} has no buttons with device = \"point\" "
                          "in node.toml")
    if settings.point_port == 0:
        raise ConfigError("point_port is 0: this node takes no point devices")
    points = load_points(settings)
    if name in points:
        raise ConfigError(f"point device {name!r} exists; remove it first to issue new "
                          "credentials")
    password = secrets.token_urlsafe(24)
    address = host or settings.point_host or socket.gethostname()
    tls = ensure_tls(settings.tls_dir, settings.name, (address,))
    points[name] = {"password": password}
    _save(settings, points)
    bundle = {
        "node": settings.name, "point": name, "host": address, "port": settings.point_port,
        "username": point_user(name), "password": password, "hold_s": settings.hold_s,
        "cooldown_s": settings.cooldown_s, "ca_pem": tls.ca_cert.read_text(),
        "buttons": buttons,
    }
    path = out or settings.data_dir / f"point-{name}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(bundle, fh, indent=2)
    return path


def remove_point(settings: NodeSettings, name: str) -> None:
    """Withdraw a point device's credentials."""
    points = load_points(settings)
    if points.pop(name, None) is None:
        raise ConfigError(f"no point device {name!r}")
    _save(settings, points)
