"""``bart node init``: create a node's data directory, keys and settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sync import KeyPair

from .config import CONFIG_FILE, NodeSettings, render_toml, write_secrets
from .errors import ConfigError


def default_data_dir() -> Path:
    """``$BART_DATA_DIR``, else /var/lib/bart for root, else ~/.local/share/bart."""
    if env := os.environ.get("BART_DATA_DIR"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/bart")
    return Path.home() / ".local/share/bart"


def init_node(data_dir: Path, *, name: str, area: str, display_name: str = "",
              meeting_points: list[dict[str, Any]] | None = None,
              **settings: Any) -> tuple[NodeSettings, KeyPair]:
    """Create keys (on this device, 0600), MQTT secrets and ``node.toml``.

    Refuses to touch a data directory that already holds a node, so that a
    node's identity is never replaced by accident.
    """
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    if (data_dir / CONFIG_FILE).exists() or KeyPair.exists(data_dir / "keys"):
        raise ConfigError(f"{data_dir} already holds a node; refusing to overwrite it")
    values: dict[str, Any] = {"name": name, "area": area,
                              "display_name": display_name or name}
    values.update({k: v for k, v in settings.items() if v is not None})
    values["meeting_points"] = meeting_points or []
    # Validate before writing anything.
    NodeSettings(data_dir=data_dir, **values)
    keys = KeyPair.generate()
    keys.save(data_dir / "keys")
    write_secrets(data_dir)
    (data_dir / CONFIG_FILE).write_text(render_toml(dict(values)), encoding="utf-8")
    return NodeSettings.load(data_dir), keys


