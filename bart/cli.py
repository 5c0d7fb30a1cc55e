"""``bart``: command-line front door. The only code importing node and central.

Every command and flag here is documented in docs/cli.md (a test checks it).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
import urllib.error
import urllib.request
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.datadir import DataDirError, DataDirLock, DataDirLocked, lock_data_dir

from .backup_cli import add_node_parsers as add_backup_parsers
from .central_cli import add_central_parsers
from .errors import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CommandError,
    Unavailable,
    explain,
    require_free_port,
    split_debug,
)
from .mesh_cli import add_parsers as add_mesh_parsers

if TYPE_CHECKING:
    from node.config import NodeSettings

__all__ = ["EXIT_USAGE", "build_parser", "main"]


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
        http_host=args.http_host, http_port=args.http_port, mqtt_port=args.mqtt_port,
        mesh={"port": args.mesh_port} if args.mesh_port is not None else None)
    print(f"Node {settings.name} (area {settings.area}) created in {settings.data_dir}")
    print(f"  signing key fingerprint: {keys.fingerprint}")
    print(f"  start it with: bart node run --data-dir {settings.data_dir}")
    return 0


def cmd_node_doctor(args: argparse.Namespace) -> int:
    from node.doctor import diagnose

    report = diagnose(_data_dir(args), offline=args.offline)
    print(report.as_json() if args.json else report.text())
    return 0 if report.ok else 1


RUNNING_NODE_FIX = ("stop it first (sudo systemctl stop bart-node, or Ctrl-C where it runs); "
                    "bart status shows how it is")


def cmd_node_run(args: argparse.Namespace) -> int:
    from broker import BrokerStartError
    from broker.process import end_stale_broker
    from node.config import NodeSettings
    from node.server import serve

    settings = NodeSettings.load(_data_dir(args), http_host=args.http_host,
                                 http_port=args.http_port, mqtt_port=args.mqtt_port,
                                 mesh_port=args.mesh_port, metrics_port=args.metrics_port)
    # Before anything starts (and logs that the node is up): this node running
    # already, or another program on its ports, is said here in words.
    lock = hold_data_dir(settings.data_dir, "bart node run", f"portal {_portal(settings)}",
                         name=f"node {settings.name}", fix=RUNNING_NODE_FIX)
    # With the lock held, a Mosquitto serving this node's config is an orphan of an
    # earlier run (its node killed before the broker could follow): ended here,
    # before the port check would blame "another program" for its port.
    try:
        end_stale_broker(settings.broker_dir)
    except BrokerStartError as exc:
        raise Unavailable(str(exc), "end it by hand (kill -9 PID), then start again") from None
    health = node_health(settings, timeout=1.0)
    if health is not None and health.get("node") == settings.name:
        raise Unavailable(f"node {settings.name} is running already ({_portal(settings)})",
                          RUNNING_NODE_FIX)
    require_free_port(settings.http_host, settings.http_port, "the portal", "--http-port",
                      "http_port in node.toml")
    require_free_port(settings.mqtt_host, settings.mqtt_port, "the node's Mosquitto",
                      "--mqtt-port", "mqtt_port in node.toml")
    if settings.metrics_port:
        require_free_port(settings.metrics_host, settings.metrics_port, "the metrics listener",
                          "--metrics-port", "metrics_port in node.toml")
    _logging(settings.log_level, node=True)
    try:
        serve(settings)
    except SystemExit as exc:  # uvicorn's own exit when its start fails (logged above)
        if exc.code in (0, None):
            raise
        raise Unavailable(f"node {settings.name} stopped while starting: the log lines "
                          "above say why (e.g. a port taken meanwhile)",
                          "correct that, then start it again") from exc
    finally:
        lock.close()
    return 0


def hold_data_dir(data_dir: Path, command: str, detail: str, *, name: str,
                  fix: str) -> DataDirLock:
    """This process's lock on ``data_dir`` (common/datadir.py), held until it exits;
    Unavailable (exit 3) naming the process that holds it already."""
    try:
        lock = lock_data_dir(data_dir, command)
    except DataDirLocked as exc:
        raise Unavailable(f"{name} is running already: {exc.path} is in use by "
                          f"{exc.holder.describe()}", fix) from None
    except DataDirError as exc:
        raise CommandError(str(exc), "check the data directory's owner and mode") from None
    lock.note(detail)
    return lock


def _portal(settings: NodeSettings, path: str = "/") -> str:
    wildcard = settings.http_host in ("0.0.0.0", "::")  # noqa: S104 - comparing, not binding
    host = "127.0.0.1" if wildcard else settings.http_host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.http_port}{path}"


def node_health(settings: NodeSettings, timeout: float = 5.0) -> dict[str, Any] | None:
    """The running node's ``/healthz`` (also with 503), or None when nothing answers."""
    try:
        with urllib.request.urlopen(_portal(settings, "/healthz"),  # noqa: S310 - http only
                                    timeout=timeout) as resp:
            data = json.load(resp)
    except urllib.error.HTTPError as exc:
        try:
            data = json.load(exc)
        except ValueError:
            return None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def not_running(settings: NodeSettings) -> Unavailable:
    """The words for a node that does not answer on its portal."""
    return Unavailable(
        f"node {settings.name} is not running: nothing answers on {_portal(settings)}",
        f"start it: bart node run --data-dir {settings.data_dir} (a node installed with "
        "install.sh --node: sudo systemctl start bart-node)")


def cmd_system_render(args: argparse.Namespace) -> int:
    from node.config import CONFIG_FILE, NodeSettings
    from node.hotspot import render_system, write_files

    data_dir = _data_dir(args)
    if (data_dir / CONFIG_FILE).exists():
        settings = NodeSettings.load(data_dir)
    else:  # before first boot: the defaults, rendered again once the node exists
        print(f"no node in {data_dir} yet: rendering the default settings")
        settings = NodeSettings(data_dir=data_dir)
    bart = Path(args.bart) if args.bart else Path(sys.argv[0]).absolute()
    files = render_system(settings, bart=bart, hotspot=args.hotspot, user=args.user,
                          journald=not args.no_journald)
    for f, changed in write_files(files, Path(args.dest)):
        print(f"{'changed' if changed else 'unchanged'} {f.path}")
    return 0


def _node_settings(args: argparse.Namespace) -> NodeSettings:
    from node.config import NodeSettings

    return NodeSettings.load(_data_dir(args))


def cmd_team_add(args: argparse.Namespace) -> int:
    from node.team import TEAM_DB, TeamAccounts

    settings = _node_settings(args)
    with TeamAccounts(settings.data_dir / TEAM_DB) as team:
        password = team.add(args.name)
    print(f"Team member {args.name} added. One-time password (shown once):\n\n    {password}\n")
    print("They log in at /team on the node's Wi-Fi and then choose their own password.")
    return 0


def cmd_team_remove(args: argparse.Namespace) -> int:
    from node.team import TEAM_DB, TeamAccounts

    settings = _node_settings(args)
    with TeamAccounts(settings.data_dir / TEAM_DB) as team:
        team.remove(args.name)
    print(f"Team member {args.name} removed; their sessions have ended.")
    return 0


def cmd_team_list(args: argparse.Namespace) -> int:
    import datetime as dt

    from node.team import TEAM_DB, TeamAccounts

    def when(ms: int | None) -> str:
        return dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M") if ms else "never"

    settings = _node_settings(args)
    with TeamAccounts(settings.data_dir / TEAM_DB) as team:
        members = team.list()
    if not members:
        print("No team members yet (add one: bart node team add NAME).")
    for m in members:
        flags = " (must choose a password)" if m.must_change else ""
        flags += " (locked)" if m.locked_until else ""
        print(f"{m.name:<30} last login {when(m.last_login)}{flags}")
    return 0


def cmd_point_add(args: argparse.Namespace) -> int:
    from node.points import add_point

    settings = _node_settings(args)
    path = add_point(settings, args.name, host=args.host,
                     out=Path(args.out) if args.out else None)
    print(f"Point device {args.name} registered. Its set-up file (keep it secret, mode 0600):")
    print(f"    {path}")
    print("Copy it to the point device and run there: bart point run --config FILE")
    return 0


def cmd_point_remove(args: argparse.Namespace) -> int:
    from node.points import remove_point

    remove_point(_node_settings(args), args.name)
    print(f"Point device {args.name} removed; it can no longer connect.")
    return 0


def cmd_point_list(args: argparse.Namespace) -> int:
    from node.points import load_points, point_buttons

    settings = _node_settings(args)
    points = load_points(settings)
    if not points:
        print("No point devices yet (add one: bart node point add MEETING_POINT).")
    for name in sorted(points):
        buttons = ", ".join(b["id"] for b in point_buttons(settings, name))
        print(f"{name:<30} buttons: {buttons or '(none configured)'}")
    return 0


def cmd_point_run(args: argparse.Namespace) -> int:
    from point.runner import run_point

    _logging("INFO" if args.verbose else "WARNING")
    return run_point(Path(args.config), Path(args.data_dir) if args.data_dir else None,
                     gpio=args.gpio, control_port=args.control_port)


def cmd_node_enroll(args: argparse.Namespace) -> int:
    from .central_cli import cmd_node_enroll as enroll

    return enroll(args, _data_dir(args))


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
    health = node_health(settings)
    if health is None:
        raise not_running(settings)
    print(json.dumps(health, indent=2))
    return 0 if health.get("status") == "ok" else 1


def cmd_demo(args: argparse.Namespace) -> int:
    command = getattr(args, "demo_command", None)
    if command == "press":
        from .demo_control import press

        return press(args.button, args.url)
    if command == "uplink":
        from .demo_control import uplink

        return uplink(args.node, args.action, args.url)
    if command == "link":
        from .demo_control import link

        return link(args.a, args.b, args.action)
    from .demo import run_demo

    _logging("WARNING" if not args.verbose else "INFO", node=True)
    return run_demo(data_dir=Path(args.data_dir) if args.data_dir else None,
                    http_port=args.http_port, mqtt_port=args.mqtt_port,
                    central_port=args.central_port, verbose=args.verbose)


def _logging(level: str, *, node: bool = False) -> None:
    """Log to stderr at ``level``; for a running node also quiet the libraries it
    uses (node/logs.py: no Bart module changes another library's logger at import)."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if node:
        from node.logs import tame_libraries

        tame_libraries()


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree (also used by the docs test)."""
    parser = argparse.ArgumentParser(prog="bart", description=(
        "Bart: offline-first neighbourhood safety nodes. See docs/cli.md."))
    parser.add_argument("--version", action="version", version=f"bart {_version()}")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, also print the traceback (any command, anywhere)")
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def data_dir_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", help="node data directory (default: $BART_DATA_DIR, "
                       "/var/lib/bart as root, else ~/.local/share/bart)")

    def port_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--http-host", help="address the portal listens on")
        p.add_argument("--http-port", type=int, help="portal port")
        p.add_argument("--mqtt-port", type=int, help="local Mosquitto port")
        p.add_argument("--mesh-port", type=int, help="Mosquitto's mesh listener port (0: off)")

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
    run.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port "
                     "(metrics_host, 127.0.0.1 by default; 0: off)")
    run.set_defaults(func=cmd_node_run)
    doctor = node.add_parser("doctor", help="check this node and its hotspot; says how to fix "
                             "each problem")
    doctor.add_argument("--offline", action="store_true",
                        help="leave out the network checks (DNS answers, uplink)")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    data_dir_flag(doctor)
    doctor.set_defaults(func=cmd_node_doctor)

    team = node.add_parser("team", help="prevention-team accounts").add_subparsers(
        dest="team_command", required=True, metavar="TEAM_COMMAND")
    for verb, func, text in (("add", cmd_team_add, "add a member; prints a one-time password"),
                             ("remove", cmd_team_remove, "remove a member, end sessions")):
        p = team.add_parser(verb, help=text)
        p.add_argument("name", help="the member's name as shown on the team page")
        data_dir_flag(p)
        p.set_defaults(func=func)
    p = team.add_parser("list", help="list team members")
    data_dir_flag(p)
    p.set_defaults(func=cmd_team_list)

    system = node.add_parser("system", help="this node's system files").add_subparsers(
        dest="system_command", required=True, metavar="SYSTEM_COMMAND")
    p = system.add_parser("render", help="write systemd units, journald and hotspot configs")
    p.add_argument("--dest", required=True, help="root to write under (/ on the node)")
    p.add_argument("--hotspot", action="store_true",
                   help="also hostapd, dnsmasq, nftables and their units")
    p.add_argument("--bart", help="absolute path of the bart command the units run "
                   "(default: this one)")
    p.add_argument("--user", default="bart", help="account the node runs as (default: bart)")
    p.add_argument("--no-journald", action="store_true",
                   help="leave out the journald drop-in (logs in RAM for SD cards)")
    data_dir_flag(p)
    p.set_defaults(func=cmd_system_render)

    points = node.add_parser("point", help="point devices at meeting points").add_subparsers(
        dest="point_command", required=True, metavar="POINT_COMMAND")
    p = points.add_parser("add", help="issue credentials and a set-up file for a point device")
    p.add_argument("name", help="the meeting point id whose buttons the device serves")
    p.add_argument("--host", help="address the device uses to reach this node")
    p.add_argument("--out", help="where to write the set-up file")
    data_dir_flag(p)
    p.set_defaults(func=cmd_point_add)
    p = points.add_parser("remove", help="withdraw a point device's credentials")
    p.add_argument("name", help="the point device (meeting point id)")
    data_dir_flag(p)
    p.set_defaults(func=cmd_point_remove)
    p = points.add_parser("list", help="list point devices")
    data_dir_flag(p)
    p.set_defaults(func=cmd_point_list)

    point = top.add_parser("point", help="run a point device (Pi Zero at a meeting point)")
    point_sub = point.add_subparsers(dest="point_device_command", required=True,
                                     metavar="POINT_COMMAND")
    p = point_sub.add_parser("run", help="run the buttons, lights and outbox of one point")
    p.add_argument("--config", required=True, help="set-up file from bart node point add")
    p.add_argument("--data-dir", help="where the outbox lives (default: next to --config)")
    p.add_argument("--gpio", choices=("auto", "mock"), default="auto",
                   help="real pins on a Pi (auto) or gpiozero mock pins")
    p.add_argument("--control-port", type=int,
                   help="demo only: local port that accepts POST /press/BUTTON")
    p.add_argument("--verbose", action="store_true", help="log what the device does")
    p.set_defaults(func=cmd_point_run)

    enroll = node.add_parser("enroll", help="join a central: online with a code, or by files")
    enroll.add_argument("url", nargs="?", help="central's URL, e.g. https://bart.example.nl")
    enroll.add_argument("--code", help="one-time code from bart central enroll-code")
    enroll.add_argument("--bundle", help="offline: the bundle file from central")
    enroll.add_argument("--request-out", help="offline: write this node's request to a file")
    data_dir_flag(enroll)
    enroll.set_defaults(func=cmd_node_enroll)
    add_mesh_parsers(node, data_dir_flag)
    add_backup_parsers(node, data_dir_flag)

    add_central_parsers(top)

    keys = top.add_parser("keys", help="show this node's keys").add_subparsers(
        dest="keys_command", required=True, metavar="KEYS_COMMAND")
    show = keys.add_parser("show", help="print node id, public keys and fingerprint")
    data_dir_flag(show)
    show.set_defaults(func=cmd_keys_show)

    status = top.add_parser("status", help="health of the running node")
    data_dir_flag(status)
    status.set_defaults(func=cmd_status)

    demo = top.add_parser("demo", help="run central and three demo nodes on free local ports")
    demo.add_argument("--data-dir", help="keep demo data here (default: a temporary dir)")
    demo.add_argument("--http-port", type=int, default=0,
                      help="portal port of the first node; the others get the next ones "
                      "(default: free ports)")
    demo.add_argument("--mqtt-port", type=int, default=0,
                      help="Mosquitto port of the first node; the others get the next ones "
                      "(default: free ports)")
    demo.add_argument("--central-port", type=int, default=0,
                      help="central's port when the demo is created (default: free)")
    demo.add_argument("--verbose", action="store_true", help="log what the nodes do")
    demo.set_defaults(func=cmd_demo)
    demo_sub = demo.add_subparsers(dest="demo_command", metavar="DEMO_COMMAND")
    p = demo_sub.add_parser("press", help="hold a simulated panic button of the running demo")
    p.add_argument("button", help="button id, e.g. klimboom-hek (see /demo)")
    p.add_argument("--url", help="the node's portal URL (default: the running demo's node "
                   "with this button)")
    p.set_defaults(func=cmd_demo)
    p = demo_sub.add_parser("uplink", help="cut or restore a demo node's uplink to central")
    p.add_argument("node", help="node name (e.g. escamp-zandloper) or number (1, 2, 3)")
    p.add_argument("action", choices=("cut", "restore"), help="cut or restore")
    p.add_argument("--url", help="the node's portal URL (default: from the running demo)")
    p.set_defaults(func=cmd_demo)
    p = demo_sub.add_parser("link", help="cut or heal the mesh link between two demo nodes")
    p.add_argument("a", metavar="A", help="node name or number (1, 2, 3)")
    p.add_argument("b", metavar="B", help="the other node's name or number")
    p.add_argument("action", choices=("cut", "heal"), help="cut or heal")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bart`` console script: errors become words (bart.errors)."""
    argv, debug = split_debug(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # the boundary: every error is said in words here
        if debug:
            traceback.print_exc()
        told = explain(exc, args)
        print(told.text(), file=sys.stderr)
        return told.code
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
