"""``bart``: command-line front door. The only code importing node and central.

Every command and flag here is documented in docs/cli.md (a test checks it).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import urllib.error
import urllib.request
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from node.errors import NodeError
from sync import SyncError

EXIT_USAGE = 2


def _version() -> str:
    try:
        return version("bart")
    except PackageNotFoundError:  # pragma: no cover
        return "0+source"


def _data_dir(args: argparse.Namespace) -> Path:
    from node.setup import default_data_dir

    return Path(args.data_dir) if args.data_dir else default_data_dir()


def cmd_node_init(args: argparse.Namespace) -> int:
    from node.setup import init_node

    settings, keys = init_node(
        _data_dir(args), name=args.name, area=args.area, display_name=args.display_name or "",
        http_host=args.http_host, http_port=args.http_port, mqtt_port=args.mqtt_port)
    print(f"Node {settings.name} (area {settings.area}) created in {settings.data_dir}")
    print(f"  signing key fingerprint: {keys.fingerprint}")
    print(f"  start it with: bart node run --data-dir {settings.data_dir}")
    return 0


def cmd_node_run(args: argparse.Namespace) -> int:
    from node.config import NodeSettings
    from node.server import serve

    settings = NodeSettings.load(_data_dir(args), http_host=args.http_host,
                                 http_port=args.http_port, mqtt_port=args.mqtt_port)
    _logging(settings.log_level)
    serve(settings)
    return 0


def cmd_keys_show(args: argparse.Namespace) -> int:
    from node.config import NodeSettings
    from sync import KeyPair
    from sync.keys import b64

    settings = NodeSettings.load(_data_dir(args))
    keys = KeyPair.load(settings.keys_dir)
    print(f"node:            {settings.name}")
    print(f"fingerprint:     {keys.fingerprint}")
    print(f"signing key:     {b64(keys.signing_public)}")
    print(f"encryption key:  {b64(keys.encryption_public)}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from node.config import NodeSettings

    settings = NodeSettings.load(_data_dir(args))
    wildcard = settings.http_host in ("0.0.0.0", "::")  # noqa: S104 - comparing, not binding
    host = "127.0.0.1" if wildcard else settings.http_host
    url = f"http://{host}:{settings.http_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            health = json.load(resp)
    except urllib.error.HTTPError as exc:
        health = json.load(exc)
    except OSError as exc:
        print(f"node {settings.name}: not running ({url}: {exc})")
        return 1
    print(json.dumps(health, indent=2))
    return 0 if health.get("status") == "ok" else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    _logging("WARNING" if not args.verbose else "INFO")
    return run_demo(data_dir=Path(args.data_dir) if args.data_dir else None,
                    http_port=args.http_port, mqtt_port=args.mqtt_port)


def _logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree (also used by the docs test)."""
    parser = argparse.ArgumentParser(prog="bart", description=(
        "Bart: offline-first neighbourhood safety nodes. See docs/cli.md."))
    parser.add_argument("--version", action="version", version=f"bart {_version()}")
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def data_dir_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", help="node data directory (default: $BART_DATA_DIR, "
                       "/var/lib/bart as root, else ~/.local/share/bart)")

    def port_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--http-host", help="address the portal listens on")
        p.add_argument("--http-port", type=int, help="portal port")
        p.add_argument("--mqtt-port", type=int, help="local Mosquitto port")

    node = top.add_parser("node", help="run and manage this node").add_subparsers(
        dest="node_command", required=True, metavar="NODE_COMMAND")
    init = node.add_parser("init", help="create keys and settings for a new node")
    init.add_argument("--name", required=True, help="node name: a slug such as escamp-west")
    init.add_argument("--area", required=True, help="area code such as ESC-01")
    init.add_argument("--display-name", help="name residents see")
    data_dir_flag(init)
    port_flags(init)
    init.set_defaults(func=cmd_node_init)
    run = node.add_parser("run", help="run the node: Mosquitto, store and portal")
    data_dir_flag(run)
    port_flags(run)
    run.set_defaults(func=cmd_node_run)

    keys = top.add_parser("keys", help="show this node's keys").add_subparsers(
        dest="keys_command", required=True, metavar="KEYS_COMMAND")
    show = keys.add_parser("show", help="print node id, public keys and fingerprint")
    data_dir_flag(show)
    show.set_defaults(func=cmd_keys_show)

    status = top.add_parser("status", help="health of the running node")
    data_dir_flag(status)
    status.set_defaults(func=cmd_status)

    demo = top.add_parser("demo", help="run a demo node on free local ports")
    demo.add_argument("--data-dir", help="keep demo data here (default: a temporary dir)")
    demo.add_argument("--http-port", type=int, default=0, help="portal port (default: free)")
    demo.add_argument("--mqtt-port", type=int, default=0, help="Mosquitto port (default: free)")
    demo.add_argument("--verbose", action="store_true", help="log what the node does")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bart`` console script."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (NodeError, SyncError) as exc:
        print(f"bart: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
