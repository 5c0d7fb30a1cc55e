"""Which signing keys this node trusts, by origin.

For now: the node itself, plus ``peers.toml`` in the data directory
(``[peers.<origin>] signing_key = "<base64>"``), written by the operator or a
test. The central-signed roster (a later issue) becomes the source of this
mapping; callers only ever see :meth:`TrustedKeys.lookup`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from sync.bodies import SLUG
from sync.keys import unb64

from .errors import ConfigError

PEERS_FILE = "peers.toml"


class TrustedKeys:
    """Origin → Ed25519 public key."""

    def __init__(self, keys: dict[str, bytes]) -> None:
        self._keys = dict(keys)

    @classmethod
    def load(cls, data_dir: Path, own_origin: str, own_key: bytes) -> TrustedKeys:
        """Own key plus the peers file, if any."""
        keys = {own_origin: own_key}
        path = data_dir / PEERS_FILE
        if path.exists():
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: {exc}") from exc
            for origin, entry in data.get("peers", {}).items():
                if not SLUG.fullmatch(origin) or not isinstance(entry, dict):
                    raise ConfigError(f"{path}: bad peer entry {origin!r}")
                if origin == own_origin:
                    raise ConfigError(f"{path}: a peer may not use this node's own name")
                keys[origin] = unb64(str(entry.get("signing_key", "")), 32,
                                     f"{path}: peers.{origin}.signing_key")
        return cls(keys)

    def lookup(self, origin: str) -> bytes | None:
        """The key of ``origin``, or None when it is not trusted."""
        return self._keys.get(origin)

    def __contains__(self, origin: str) -> bool:
        return origin in self._keys
