"""``bart node trust …`` and ``bart node mesh``: whom the mesh trusts, and how it is.

Before a central exists, two nodes mesh after each took the other's identity
file: ``bart node trust export > mine.json`` on one, ``bart node trust add
mine.json`` on the other (and the other way round). The roster replaces these
entries once the nodes enrol.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from node.errors import ConfigError

from .errors import CommandError

if TYPE_CHECKING:
    from node.config import NodeSettings


def cmd_trust_export(settings: NodeSettings, out: str | None) -> int:
    """Write this node's identity file (stdout, or ``out``)."""
    from node.mesh.identity import node_ca_pem
    from node.trust import export_identity
    from sync import KeyPair

    keys = KeyPair.load(settings.keys_dir)
    text = export_identity(settings.name, settings.area, keys.signing_public,
                           node_ca_pem(settings))
    if out:
        Path(out).write_text(text, encoding="utf-8")
        print(f"identity of {settings.name} written to {out} (fingerprint {keys.fingerprint})")
    else:
        sys.stdout.write(text)
    return 0


def cmd_trust_add(settings: NodeSettings, path: str) -> int:
    """Trust the node of an identity file (for the mesh, until a roster exists)."""
    from node.trust import add_peer, parse_identity
    from sync.keys import fingerprint

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    peer = parse_identity(text)
    changed = add_peer(settings.data_dir, settings.name, peer)
    fp = fingerprint(peer.signing_key)
    if changed:
        print(f"trusted {peer.name} (area {peer.area}, fingerprint {fp}); compare the "
              "fingerprint with `bart keys show` on that node. Restart this node to mesh.")
    else:
        print(f"{peer.name} was trusted already (fingerprint {fp})")
    return 0


def cmd_trust_list(settings: NodeSettings) -> int:
    """The nodes trusted by identity file."""
    from node.trust import load_peers
    from sync.keys import fingerprint

    peers = load_peers(settings.data_dir, settings.name)
    if not peers:
        print("no peers trusted by identity file (enrolled nodes use central's roster)")
    for peer in peers.values():
        print(f"{peer.name}\t{peer.area}\t{fingerprint(peer.signing_key)}")
    return 0


def cmd_mesh(settings: NodeSettings) -> int:
    """Print the running node's ``/api/v1/mesh``."""
    from .cli import _portal, not_running

    url = _portal(settings, "/api/v1/mesh")
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - http only
            view = json.load(resp)
    except urllib.error.HTTPError as exc:
        raise CommandError(f"node {settings.name} answers {url} with {exc.code} "
                           f"{exc.reason}", "see its log (journalctl -u bart-node -n 50)"
                           ) from exc
    except OSError as exc:
        raise not_running(settings) from exc
    if not view.get("enabled"):
        print(f"node {settings.name}: mesh off ({view.get('why', '')})")
        return 0
    peers = view.get("peers", [])
    print(f"node {settings.name}: {len(peers)} peer(s) connected")
    for p in peers:
        lacks = sum(p.get("lacks", {}).values())
        rtt = p.get("rtt_ms")
        print(f"  {p['name']:<28} {p.get('how', ''):<9} rtt {rtt if rtt is not None else '?'} ms"
              f"  lacks {lacks} event(s)")
    return 0


def add_parsers(node: argparse._SubParsersAction[argparse.ArgumentParser],
                data_dir_flag: object) -> None:
    """Register ``bart node trust …`` and ``bart node mesh``."""
    assert callable(data_dir_flag)
    trust = node.add_parser("trust", help="nodes this node meshes with before it has a roster"
                            ).add_subparsers(dest="trust_command", required=True,
                                             metavar="TRUST_COMMAND")
    p = trust.add_parser("export", help="write this node's identity file for another node")
    p.add_argument("--out", help="file to write (default: standard output)")
    data_dir_flag(p)
    p.set_defaults(func=lambda a: cmd_trust_export(_settings(a), a.out))
    p = trust.add_parser("add", help="trust the node of an identity file")
    p.add_argument("file", help="identity file made by `bart node trust export`")
    data_dir_flag(p)
    p.set_defaults(func=lambda a: cmd_trust_add(_settings(a), a.file))
    p = trust.add_parser("list", help="nodes trusted by identity file")
    data_dir_flag(p)
    p.set_defaults(func=lambda a: cmd_trust_list(_settings(a)))
    p = node.add_parser("mesh", help="the running node's mesh peers and what they lack")
    data_dir_flag(p)
    p.set_defaults(func=lambda a: cmd_mesh(_settings(a)))


def _settings(args: argparse.Namespace) -> NodeSettings:
    from .cli import _node_settings

    return _node_settings(args)
