"""``bart central …`` and ``bart node enroll``: the commands of the central issue.

Kept apart from cli.py so that the parser there only registers them. Every
command and flag is documented in docs/cli.md (a test checks it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from .backup_cli import add_central_parsers as add_backup_parsers
from .errors import CommandError, Unavailable, require_free_port


def central_dir(args: argparse.Namespace) -> Path:
    """The central data directory: --data-dir, $BART_CENTRAL_DIR, or a default."""
    if getattr(args, "data_dir", None):
        return Path(args.data_dir)
    if os.environ.get("BART_CENTRAL_DIR"):
        return Path(os.environ["BART_CENTRAL_DIR"])
    if os.geteuid() == 0:
        return Path("/var/lib/bart-central")
    return Path.home() / ".local" / "share" / "bart-central"


def _check_url(url: str | None) -> None:
    """Central runs on SQLite or PostgreSQL (psycopg 3): say so before a driver is missed."""
    if url and not url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
        raise CommandError(f"--database-url {url.split('://', 1)[0]}://… is not a database "
                           "central can use (SQLite or PostgreSQL)",
                           "give --database-url postgresql://USER@HOST/DATABASE, or leave "
                           "it out for the SQLite file in the data directory")


def _load(args: argparse.Namespace) -> Any:
    from central.identity import load_central

    _check_url(getattr(args, "database_url", None))
    return load_central(central_dir(args), database_url=getattr(args, "database_url", None))


def _engine(central: Any) -> Any:
    from central.db import make_engine, upgrade

    upgrade(central.database_url)
    return make_engine(central.database_url)


def cmd_central_init(args: argparse.Namespace) -> int:
    from central.config import CentralSettings
    from central.db import upgrade
    from central.identity import init_central

    values: dict[str, Any] = {"name": args.name}
    for key in ("database_url", "public_url", "http_host", "http_port"):
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    settings = CentralSettings(**values)
    if args.database_url:  # before any file is made: a retry must not find half a central
        _check_url(args.database_url)
        _check_database(args.database_url)
    central = init_central(central_dir(args), settings)
    upgrade(central.database_url)
    print(f"Central {central.origin} created in {central.data_dir}")
    print(f"  signing key fingerprint: {central.keys.fingerprint}")
    print(f"  encryption key id:       {central.kid}")
    print(f"  database:                {_redact(central.database_url)}")
    print(f"  start it with: bart central run --data-dir {central.data_dir}")
    return 0


def _check_database(url: str) -> None:
    """Connect once to ``url``: an error (bart.errors says it in words) when it cannot."""
    from central.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()


def cmd_central_run(args: argparse.Namespace) -> int:
    """Check everything, then serve: in this process with one worker; with more,
    this process becomes their small supervisor (central/supervise.py)."""
    from central.db import upgrade
    from central.projector import claim_for
    from central.triage import router_for

    from .cli import hold_data_dir

    central = _load(args)
    host = args.http_host or central.settings.http_host
    port = args.http_port or central.settings.http_port
    # One central run per data directory (its lock lives as long as this process).
    lock = hold_data_dir(central.data_dir, "bart central run", f"http://{host}:{port}/",
                         name="central", fix="stop that one first (Ctrl-C where it runs, or "
                         "sudo systemctl stop bart-central), or use another --data-dir")
    proxies = central.settings.trusted_proxies
    if args.trusted_proxy:
        from common.ratelimit import check_trusted_proxies

        try:
            proxies = check_trusted_proxies(args.trusted_proxy)
        except ValueError as exc:
            raise CommandError(str(exc).replace("trusted_proxies:", "--trusted-proxy:"),
                               "give an IP address (127.0.0.1) or a network (10.0.0.0/8) "
                               "of the reverse proxy in front of central") from None
    # Before anything starts: a port in use is said here, not by uvicorn half-way.
    require_free_port(host, port, "central", "--http-port", "http_port in central.toml")
    if args.metrics_port:
        require_free_port(args.metrics_host, args.metrics_port, "central's metrics listener",
                          "--metrics-port", "no other setting")
    upgrade(central.database_url)
    os.environ["BART_CENTRAL_DIR"] = str(central.data_dir)
    if args.database_url:
        os.environ["BART_CENTRAL_DATABASE_URL"] = args.database_url
    print(f"Bart central {central.origin} on http://{host}:{port}/ "
          f"({args.workers} worker{'s' if args.workers > 1 else ''}, "
          f"database {_redact(central.database_url)})", flush=True)
    # Triage runs beside the HTTP workers, off the ingest path (central/projector.py).
    # Edited rules are checked here, so that bad ones stop the start, not the projector;
    # and a database of another central (other keys) is refused before anything runs.
    router_for(central.data_dir)
    claim_for(central.data_dir, args.database_url or None)
    if args.workers > 1:
        from central.supervise import exec_supervisor

        listener = _listen(host, port)
        exec_supervisor(workers=args.workers, listen_fd=listener.fileno(),
                        lock_fd=_lock_fd(lock), host=host, port=port,
                        trusted_proxies=proxies, metrics_host=args.metrics_host,
                        metrics_port=args.metrics_port, origin=central.origin,
                        database_url=central.database_url)
    return _serve_here(args, central, host, port, proxies, lock)


def _lock_fd(lock: Any) -> int:
    """The file descriptor holding the data directory's lock, to hand over across exec.

    (common.datadir.DataDirLock keeps it private; it is the lock as long as it is open.)
    """
    fd: int = lock._fd
    return fd


def _listen(host: str, port: int) -> Any:
    """The listening socket the workers share (bound as uvicorn binds: SO_REUSEADDR)."""
    import socket

    from .errors import port_problem

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)  # uvicorn's backlog: connections wait here while workers start
    except OSError as exc:  # taken since the check above
        sock.close()
        raise port_problem(exc, host, port, "central", "--http-port",
                           "http_port in central.toml") from exc
    return sock


def _serve_here(args: argparse.Namespace, central: Any, host: str, port: int,
                proxies: list[str], lock: Any) -> int:
    """``--workers 1``: serve in this process, the projector in a child beside it."""
    from central.server import serve
    from central.supervise import ProjectorWatch

    projector = ProjectorWatch(central.origin, central.database_url)
    projector.start()
    metrics = None
    try:
        if args.metrics_port:  # served by this process, apart from the HTTP server's loop
            from central.metrics import CentralMetrics

            metrics = CentralMetrics(central.database_url, args.metrics_host, args.metrics_port,
                                     projectors=projector.pids)
            print(f"Metrics on http://{args.metrics_host}:{args.metrics_port}/metrics",
                  flush=True)
        serve(host, port, proxies)
    except SystemExit as exc:  # uvicorn's own exit when its start fails (logged above)
        if exc.code in (0, None):
            raise
        raise Unavailable("central stopped while starting: the log lines above say why "
                          "(e.g. its port taken meanwhile)",
                          "correct that, then start it again") from exc
    finally:
        if metrics is not None:
            metrics.close()
        projector.stop()
        lock.close()
    return 0


def cmd_central_triage(args: argparse.Namespace) -> int:
    from central.db import upgrade
    from central.projector import run_foreground
    from central.triage import router_for

    central = _load(args)
    upgrade(central.database_url)
    router_for(central.data_dir)  # edited rules checked before anything runs
    print(f"Bart central {central.origin}: routing new reports (projector); Ctrl-C stops",
          flush=True)
    run_foreground(central.data_dir, args.database_url or None)
    return 0


def cmd_central_enroll_code(args: argparse.Namespace) -> int:
    from central.enrol import issue_code
    from node.config import check_node_name

    check_node_name(args.node)  # the rule bart node init applies to the same name
    central = _load(args)
    code, expires = issue_code(_engine(central), central, args.node, args.area)
    when = dt.datetime.fromtimestamp(expires / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"Enrolment code for node {args.node} (area {args.area}): {code}")
    print(f"  valid once, until {when}. On the node run:")
    print(f"  bart node enroll {central.settings.public_url} --code {code}")
    return 0


def cmd_central_enroll_bundle(args: argparse.Namespace) -> int:
    from central.enrol import enrol_bundle
    from sync.canonical import parse_json
    from sync.enrolment import parse_request
    from sync.keys import fingerprint

    central = _load(args)
    req = parse_request(parse_json(Path(args.request).read_bytes(), 16 * 1024),
                        need_code=False)
    answer = enrol_bundle(_engine(central), central, req, args.area)
    out = Path(args.out)
    out.write_text(json.dumps(answer, indent=1))
    print(f"Node {req.node} enrolled in area {args.area}; bundle written to {out}")
    print(f"  node key fingerprint (compare with the node's `bart keys show`): "
          f"{fingerprint(req.signing_pub)}")
    print(f"  central fingerprint (the node prints it when it reads the bundle): "
          f"{central.keys.fingerprint}")
    print(f"  on the node: bart node enroll --bundle {out.name}")
    return 0


def cmd_central_revoke(args: argparse.Namespace) -> int:
    from central.enrol import revoke
    from node.config import check_node_name

    check_node_name(args.node)
    central = _load(args)
    signed = revoke(_engine(central), central, args.node)
    print(f"Node {args.node} revoked; roster serial {signed['doc']['serial']} goes out with "
          "the next sync replies.")
    return 0


def cmd_central_nodes(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from central import db

    central = _load(args)
    with _engine(central).connect() as conn:
        rows = conn.execute(sa.select(db.nodes).order_by(db.nodes.c.name)).all()
    if not rows:
        print("No nodes enrolled yet (bart central enroll-code --node NAME --area AREA).")
    for r in rows:
        state = "revoked" if r.revoked_at else "active"
        seen = (dt.datetime.fromtimestamp(r.last_seen / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")
                if r.last_seen else "never")
        print(f"{r.name:<28} {r.area:<10} {state:<8} last seen {seen}  batch {r.last_batch_seq}"
              f"  backlog {r.backlog if r.backlog is not None else '?'}")
    return 0


def _staff_accounts(args: argparse.Namespace) -> Any:
    from central.staff.accounts import StaffAccounts

    return StaffAccounts(_engine(_load(args)))


def _cli_user() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"[:40]
    except (KeyError, OSError):  # no name for this uid (a container)
        return "cli"


def cmd_central_staff_add(args: argparse.Namespace) -> int:
    otp = _staff_accounts(args).add(args.name, args.role, by=_cli_user())
    print(f"Staff account {args.name!r} ({args.role}) created.")
    print(f"  one-time password: {otp}")
    print("  shown once: hand it over in person. At the first login at /staff/login the "
          "new member chooses a personal password.")
    return 0


def cmd_central_staff_remove(args: argparse.Namespace) -> int:
    _staff_accounts(args).remove(args.name, by=_cli_user())
    print(f"Staff account {args.name!r} removed; its sessions have ended.")
    return 0


def cmd_central_staff_reset(args: argparse.Namespace) -> int:
    otp = _staff_accounts(args).reset(args.name, by=_cli_user())
    print(f"New one-time password for {args.name!r}: {otp}")
    print("  its sessions have ended; at the next login a personal password is chosen.")
    return 0


def cmd_central_staff_list(args: argparse.Namespace) -> int:
    members = _staff_accounts(args).members()
    if not members:
        print("No staff accounts yet (bart central staff add NAME --role ROLE).")
    for m in members:
        last = (dt.datetime.fromtimestamp(m.last_login / 1000, dt.UTC).strftime(
            "%Y-%m-%d %H:%M UTC") if m.last_login else "never")
        state = "must choose a password" if m.must_change else "active"
        print(f"{m.name:<30} {m.role:<13} {state:<24} last login {last}")
    return 0


def cmd_node_enroll(args: argparse.Namespace, data_dir: Path) -> int:
    from node.config import NodeSettings
    from node.enrol import enrol_online, load_bundle, write_request

    settings = NodeSettings.load(data_dir)
    if args.request_out:
        path = write_request(settings, Path(args.request_out))
        print(f"Enrolment request written to {path}. Carry it to central and run there:")
        print(f"  bart central enroll-bundle --request {path.name} --area {settings.area} "
              f"--out {settings.name}-bundle.json")
        return 0
    if args.bundle:
        info = load_bundle(settings, Path(args.bundle))
    elif args.url and args.code:
        info = enrol_online(settings, args.url, args.code)
    else:
        print("bart node enroll: give CENTRAL_URL --code CODE, or --bundle FILE, "
              "or --request-out FILE", file=sys.stderr)
        return 2
    print(f"Node {settings.name} enrolled with {info['origin']} (area {info['area']}).")
    print(f"  central fingerprint: {info['fingerprint']}")
    print(f"  central URL:         {info['url']}")
    print("  restart the node to start the uplink (systemctl restart bart-node).")
    return 0


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://…@{rest.split('@', 1)[1]}"
    return url


def add_central_parsers(top: Any) -> None:
    """Register ``bart central …``."""
    central = top.add_parser("central", help="run and manage a central server")
    sub = central.add_subparsers(dest="central_command", required=True,
                                 metavar="CENTRAL_COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", help="central data directory (default: "
                       "$BART_CENTRAL_DIR, /var/lib/bart-central as root, else "
                       "~/.local/share/bart-central)")
        p.add_argument("--database-url", help="database URL (default: the SQLite file in "
                       "the data directory; postgresql://… in production)")

    p = sub.add_parser("init", help="create central's keys, CA, settings and database")
    p.add_argument("--name", default="central", help="central's name (origin central-NAME)")
    p.add_argument("--public-url", help="URL nodes use to reach central")
    p.add_argument("--http-host", help="address to listen on")
    p.add_argument("--http-port", type=int, help="port to listen on")
    common(p)
    p.set_defaults(func=cmd_central_init)

    p = sub.add_parser("run", help="serve ingest, enrolment, staff pages and feeds")
    p.add_argument("--http-host", help="address to listen on")
    p.add_argument("--http-port", type=int, help="port to listen on")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--metrics-port", type=int, default=0,
                   help="serve Prometheus /metrics on this port (default 0: off)")
    p.add_argument("--metrics-host", default="127.0.0.1",
                   help="address of the metrics listener (default 127.0.0.1)")
    p.add_argument("--trusted-proxy", action="append", metavar="ADDR",
                   help="believe X-Forwarded-For from this address or network (CIDR); "
                   "repeatable; replaces trusted_proxies in central.toml (default: none)")
    common(p)
    p.set_defaults(func=cmd_central_run)

    p = sub.add_parser("triage", help="route new reports (the projector) in the foreground; "
                       "`run` starts one itself, this is for central served another way")
    common(p)
    p.set_defaults(func=cmd_central_triage)

    p = sub.add_parser("enroll-code", help="print a one-time enrolment code for a node")
    p.add_argument("--node", required=True, help="the node's name")
    p.add_argument("--area", required=True, help="the node's area code")
    common(p)
    p.set_defaults(func=cmd_central_enroll_code)

    p = sub.add_parser("enroll-bundle", help="enrol a node offline from its request file")
    p.add_argument("--request", required=True, help="file from bart node enroll --request-out")
    p.add_argument("--area", required=True, help="the node's area code")
    p.add_argument("--out", required=True, help="bundle file to carry back to the node")
    common(p)
    p.set_defaults(func=cmd_central_enroll_bundle)

    p = sub.add_parser("revoke", help="revoke a node (stolen, retired)")
    p.add_argument("node", help="the node's name")
    common(p)
    p.set_defaults(func=cmd_central_revoke)

    p = sub.add_parser("nodes", help="list enrolled nodes and their health")
    common(p)
    p.set_defaults(func=cmd_central_nodes)
    add_backup_parsers(sub, common)


    staff = sub.add_parser("staff", help="staff accounts for the staff pages")
    staff_sub = staff.add_subparsers(dest="staff_command", required=True,
                                     metavar="STAFF_COMMAND")
    p = staff_sub.add_parser("add", help="create a staff account; prints a one-time password")
    p.add_argument("name", help="the member's name (letters, digits, spaces, - and .)")
    p.add_argument("--role", required=True, choices=("police", "municipality", "admin"),
                   help="police and municipality see their own desk; admin sees everything")
    common(p)
    p.set_defaults(func=cmd_central_staff_add)

    p = staff_sub.add_parser("remove", help="delete a staff account and end its sessions")
    p.add_argument("name", help="the member's name")
    common(p)
    p.set_defaults(func=cmd_central_staff_remove)

    p = staff_sub.add_parser("reset", help="new one-time password for a forgotten password")
    p.add_argument("name", help="the member's name")
    common(p)
    p.set_defaults(func=cmd_central_staff_reset)

    p = staff_sub.add_parser("list", help="list staff accounts, roles and last logins")
    common(p)
    p.set_defaults(func=cmd_central_staff_list)
