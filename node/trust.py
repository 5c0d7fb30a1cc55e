"""Whom this node trusts: signing keys by origin, and which nodes may be mesh peers.

Three sources, in this order (DESIGN.md §5):

1. the node itself;
2. central, once enrolled (``central/enrolment.json``): its signing key
   verifies central's broadcasts; its **roster** lists the nodes that may be
   peers and the keys their events must verify against — revoked entries
   are no one;
3. before a roster exists, ``peers.toml`` in the data directory
   (``[peers.<origin>] signing_key = "<base64>"``, plus ``area`` and
   ``mesh_ca`` when written by ``bart node trust add``). A roster replaces it:
   from then on only roster members are peers.

Callers only use :meth:`TrustedKeys.lookup` (events) and
:meth:`TrustedKeys.peer` (mesh sessions).
"""

from __future__ import annotations

import base64
import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.files import write_atomic
from sync.bodies import AREA, SLUG
from sync.keys import b64, fingerprint, unb64
from sync.roster import Roster

from .errors import ConfigError

PEERS_FILE = "peers.toml"
#: Version tag of an exported identity file (``bart node trust export``).
IDENTITY_KIND = "bart-node-identity/v1"
MAX_IDENTITY_BYTES = 64 * 1024


@dataclass(frozen=True)
class TrustedPeer:
    """A node trusted before a roster exists."""

    name: str
    signing_key: bytes
    area: str = ""
    mesh_ca: str = ""  # PEM of the CA of its provisional mesh certificate


class TrustedKeys:
    """Origin → Ed25519 public key, and who may be a mesh peer."""

    def __init__(self, keys: dict[str, bytes], *, own: str = "",
                 peers: dict[str, TrustedPeer] | None = None) -> None:
        self._own = own
        self._keys = dict(keys)
        self._peers = dict(peers or {})
        self._roster: Roster | None = None
        self._roster_source: Callable[[], Roster | None] | None = None
        self.central: tuple[str, bytes] | None = None

    @classmethod
    def load(cls, data_dir: Path, own_origin: str, own_key: bytes) -> TrustedKeys:
        """Own key plus the peers file, if any."""
        peers = load_peers(data_dir, own_origin)
        keys = {own_origin: own_key} | {name: p.signing_key for name, p in peers.items()}
        return cls(keys, own=own_origin, peers=peers)

    def set_central(self, origin: str, signing_key: bytes) -> None:
        """Trust central's key for its own events (after enrolment)."""
        self.central = (origin, signing_key)

    def set_roster(self, roster: Roster | None) -> None:
        """Use ``roster`` (verified by the caller) from now on."""
        self._roster = roster
        self._roster_source = None

    def follow_roster(self, source: Callable[[], Roster | None]) -> None:
        """Always use the roster ``source()`` holds now (the uplink's newest, verified):
        a revocation counts from the moment the uplink took it."""
        self._roster_source = source

    @property
    def roster(self) -> Roster | None:
        """The roster in force (None: none yet)."""
        if self._roster_source is not None:
            return self._roster_source()
        return self._roster

    def lookup(self, origin: str) -> bytes | None:
        """The key of ``origin``, or None when it is not trusted."""
        if origin == self._own:
            return self._keys.get(origin)
        if self.central is not None and origin == self.central[0]:
            return self.central[1]
        if self.roster is not None:
            return self.roster.signing_key(origin)
        return self._keys.get(origin)

    def peer(self, name: str) -> bool:
        """Whether ``name`` may be a mesh peer now (a current roster member, or
        a trusted peer while there is no roster); never this node itself."""
        if name == self._own:
            return False
        if self.roster is not None:
            return self.roster.member(name) is not None
        return name in self._peers

    def why_not_peer(self, name: str) -> str:
        """A one-line reason why :meth:`peer` is False for ``name``."""
        if name == self._own:
            return "it uses this node's own name"
        if self.roster is not None:
            for entry in self.roster.nodes:
                if entry.name == name and entry.revoked is not None:
                    return "central revoked it"
            return "it is not in central's roster"
        return "it is not trusted (bart node trust add)"

    def area_of(self, name: str) -> str:
        """The area of a peer, as the roster or peers file says ("" if unknown)."""
        if self.roster is not None:
            entry = self.roster.member(name)
            return entry.area if entry else ""
        peer = self._peers.get(name)
        return peer.area if peer else ""

    def peer_cas(self) -> list[str]:
        """PEMs of trusted peers' mesh CAs (only while there is no roster)."""
        if self.roster is not None:
            return []
        return [p.mesh_ca for p in self._peers.values() if p.mesh_ca]

    def __contains__(self, origin: str) -> bool:
        return self.lookup(origin) is not None


def load_peers(data_dir: Path, own_origin: str) -> dict[str, TrustedPeer]:
    """The entries of ``peers.toml`` (none when it does not exist)."""
    path = data_dir / PEERS_FILE
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    out: dict[str, TrustedPeer] = {}
    for origin, entry in data.get("peers", {}).items():
        if not SLUG.fullmatch(origin) or not isinstance(entry, dict):
            raise ConfigError(f"{path}: bad peer entry {origin!r}")
        if origin == own_origin:
            raise ConfigError(f"{path}: a peer may not use this node's own name")
        key = unb64(str(entry.get("signing_key", "")), 32, f"{path}: peers.{origin}.signing_key")
        area = str(entry.get("area", ""))
        mesh_ca = str(entry.get("mesh_ca", ""))
        out[origin] = TrustedPeer(origin, key, area, mesh_ca)
    return out


def export_identity(name: str, area: str, signing_public: bytes, mesh_ca_pem: str) -> str:
    """This node's identity file for another node's ``bart node trust add``."""
    return json.dumps({"kind": IDENTITY_KIND, "name": name, "area": area,
                       "signing_pub": b64(signing_public),
                       "fingerprint": fingerprint(signing_public),
                       "mesh_ca": mesh_ca_pem}, indent=1) + "\n"


def parse_identity(text: str) -> TrustedPeer:
    """Check an identity file; raise :class:`ConfigError` with what is wrong."""
    if len(text.encode("utf-8")) > MAX_IDENTITY_BYTES:
        raise ConfigError("the identity file is too large to be one")
    try:
        data: Any = json.loads(text)
    except ValueError as exc:
        raise ConfigError("the identity file is not JSON (made by bart node trust export?)") \
            from exc
    if not isinstance(data, dict) or data.get("kind") != IDENTITY_KIND:
        raise ConfigError("this is not a node identity file (made by bart node trust export)")
    name, area = data.get("name"), data.get("area")
    if not isinstance(name, str) or not SLUG.fullmatch(name):
        raise ConfigError("the identity file's name is not a node name")
    if not isinstance(area, str) or not AREA.fullmatch(area):
        raise ConfigError("the identity file's area is not an area code")
    key = unb64(str(data.get("signing_pub", "")), 32, "the identity file's signing_pub")
    if data.get("fingerprint") != fingerprint(key):
        raise ConfigError("the identity file's fingerprint does not match its key")
    mesh_ca = data.get("mesh_ca", "")
    if not isinstance(mesh_ca, str) or (mesh_ca and "BEGIN CERTIFICATE" not in mesh_ca):
        raise ConfigError("the identity file's mesh_ca is not a PEM certificate")
    return TrustedPeer(name, key, area, mesh_ca)


def add_peer(data_dir: Path, own_origin: str, peer: TrustedPeer) -> bool:
    """Write ``peer`` into ``peers.toml``; False when it was there already, unchanged."""
    if peer.name == own_origin:
        raise ConfigError("that identity file is this node's own")
    peers = load_peers(data_dir, own_origin)
    if peers.get(peer.name) == peer:
        return False
    peers[peer.name] = peer
    lines = ["# Nodes this node trusts before it has central's roster.",
             "# Written by `bart node trust add`; the roster replaces this file.", ""]
    for p in peers.values():
        lines += [f"[peers.{p.name}]",
                  f"signing_key = {json.dumps(base64.b64encode(p.signing_key).decode())}",
                  f"area = {json.dumps(p.area)}",
                  f"mesh_ca = {json.dumps(p.mesh_ca)}", ""]
    write_atomic(data_dir / PEERS_FILE, "\n".join(lines).encode("utf-8"), mode=0o644)
    return True
