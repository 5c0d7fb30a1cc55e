"""``bart node backup|restore``, ``bart central backup|restore`` and ``bart central
retention``: the commands of keeping data safe, and of keeping it no longer than
needed (docs/backup.md, docs/privacy.md).

The work is done by node/backup.py, central/backup.py and central/retention.py;
this only reads the flags, the passphrase, and says what happened.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Final

from .errors import CommandError, Unavailable

#: The environment variable that may hold a backup's passphrase.
PASSPHRASE_ENV: Final = "BART_BACKUP_PASSPHRASE"  # noqa: S105 - a variable name
#: A passphrase file larger than this is not a passphrase file.
MAX_PASSPHRASE_FILE: Final = 4096


def _version() -> str:
    try:
        return version("bart")
    except PackageNotFoundError:  # pragma: no cover
        return "0+source"


def passphrase(args: argparse.Namespace) -> str | None:
    """The passphrase from ``--passphrase-file`` or $BART_BACKUP_PASSPHRASE, or None.

    Once one is asked for, it is used or the command fails: never a silent
    unencrypted backup.
    """
    path = getattr(args, "passphrase_file", None)
    if path:
        file = Path(path)
        try:
            if file.stat().st_size > MAX_PASSPHRASE_FILE:
                raise CommandError(f"{file} is too large to be a passphrase file",
                                   "put the passphrase alone on its first line")
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CommandError(f"the passphrase file {file} does not exist",
                               "check --passphrase-file") from None
        except UnicodeDecodeError:
            raise CommandError(f"{file} is not a text file",
                               "put the passphrase alone on its first line") from None
        value = text.splitlines()[0].strip() if text.strip() else ""
        if not value:
            raise CommandError(f"the passphrase file {file} is empty",
                               "put the passphrase on its first line")
        return value
    env = os.environ.get(PASSPHRASE_ENV)
    if env is not None:
        if not env.strip():
            raise CommandError(f"${PASSPHRASE_ENV} is set but empty",
                               "set it to the passphrase, or unset it for a backup "
                               "without encryption")
        return env.strip()
    return None


def _archive_errors(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; an archive's own error becomes a command error in the same words."""
    from common.archive import ArchiveError

    try:
        return fn()
    except ArchiveError as exc:
        raise CommandError(str(exc)) from exc


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def _secret_note(encrypted: bool) -> str:
    if encrypted:
        return ("  encrypted with the passphrase; keep the passphrase apart from the file "
                "(without it the backup cannot be restored)")
    return ("  NOT encrypted: it holds the private keys. Keep it where only the operators "
            f"can read it, or set {PASSPHRASE_ENV} / --passphrase-file (docs/backup.md)")


# -- node ----------------------------------------------------------------------------------


def cmd_node_backup(args: argparse.Namespace) -> int:
    from node.backup import backup_node
    from node.setup import default_data_dir

    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    secret = passphrase(args)
    info = _archive_errors(lambda: backup_node(data_dir, Path(args.file), passphrase=secret,
                                               version=_version()))
    m = info.manifest
    heads = ", ".join(f"{k} {v}" for k, v in sorted(m["heads"].items())) or "none yet"
    print(f"Backup of node {m['name']} written to {args.file} ({_size(info.size)}, "
          f"{info.seconds:.1f} s): {m['events']} events, own seqs {heads}")
    print(f"  key fingerprint: {m['fingerprint']}")
    print(_secret_note(secret is not None))
    return 0


def cmd_node_restore(args: argparse.Namespace) -> int:
    from node.backup import restore_node
    from node.setup import default_data_dir

    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    secret = passphrase(args)
    info = _archive_errors(lambda: restore_node(Path(args.file), data_dir, passphrase=secret,
                                                offline=args.offline))
    m = info.manifest
    taken = dt.datetime.fromtimestamp(m["created_ms"] / 1000, dt.UTC).strftime(
        "%Y-%m-%d %H:%M UTC")
    print(f"Node {m['name']} (area {m['area']}) restored into {data_dir} from the backup of "
          f"{taken} ({info.seconds:.1f} s)")
    print(f"  key fingerprint: {m['fingerprint']} (the same identity as before)")
    if args.offline:
        print("  offline: central was not asked which seqs it holds; see docs/backup.md")
    elif info.caught_up is None:
        print("  not enrolled with a central: its seqs go on from the backup's")
    elif not info.caught_up:
        print("  central holds nothing newer than the backup: seqs go on from the backup's")
    for stream, (ours, central) in sorted((info.caught_up or {}).items()):
        print(f"  {stream} events {ours + 1}-{central} were made after the backup; central "
              f"holds them (not this node): its next {stream} event is {central + 1}")
    print(f"  start it with: bart node run --data-dir {data_dir}")
    return 0


def add_node_parsers(node: Any, data_dir_flag: Callable[[argparse.ArgumentParser], None]
                     ) -> None:
    """Register ``bart node backup`` and ``bart node restore``."""
    p = node.add_parser("backup", help="write a backup of this node (keys, settings, store) "
                        "to a file; the node may be running")
    p.add_argument("file", metavar="FILE", help="the backup file to write (mode 0600)")
    _passphrase_flag(p)
    data_dir_flag(p)
    p.set_defaults(func=cmd_node_backup)
    p = node.add_parser("restore", help="restore a node from a backup file into an empty "
                        "data directory")
    p.add_argument("file", metavar="FILE", help="the backup file")
    p.add_argument("--offline", action="store_true", help="do not ask central which of the "
                   "node's seqs it holds already (docs/backup.md: the risk)")
    _passphrase_flag(p)
    data_dir_flag(p)
    p.set_defaults(func=cmd_node_restore)


def _passphrase_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--passphrase-file", help="encrypt/decrypt with the passphrase on this "
                   f"file's first line (or set ${PASSPHRASE_ENV})")


# -- central -------------------------------------------------------------------------------


def _reachable(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; PostgreSQL out of reach is said as such (exit 3: try again later)."""
    from central.backup import DatabaseUnreachable

    try:
        return _archive_errors(fn)
    except DatabaseUnreachable as exc:
        raise Unavailable(str(exc), "start it (sudo systemctl start postgresql) or give the "
                          "right --database-url") from exc


def cmd_central_backup(args: argparse.Namespace) -> int:
    from central.backup import backup_central

    from .central_cli import central_dir

    secret = passphrase(args)
    info = _reachable(lambda: backup_central(
        central_dir(args), Path(args.file), database_url=args.database_url,
        passphrase=secret, version=_version()))
    m = info.manifest
    counts = ", ".join(f"{v} {k}" for k, v in m["counts"].items())
    print(f"Backup of {m['origin']} ({m['database']['backend']}) written to {args.file} "
          f"({_size(info.size)}, {info.seconds:.1f} s): {counts}")
    print(_secret_note(secret is not None))
    return 0


def cmd_central_restore(args: argparse.Namespace) -> int:
    from central.backup import restore_central

    from .central_cli import central_dir

    data_dir = central_dir(args)
    secret = passphrase(args)
    info = _reachable(lambda: restore_central(
        Path(args.file), data_dir, database_url=args.database_url, passphrase=secret))
    m = info.manifest
    print(f"Central {m['origin']} restored into {data_dir} ({info.seconds:.1f} s)")
    print(f"  start it with: bart central run --data-dir {data_dir}"
          + (" --database-url …" if args.database_url else ""))
    return 0


def cmd_central_retention(args: argparse.Namespace) -> int:
    from central.retention import anonymise_report, run_retention

    from .central_cli import _cli_user, _engine, _load

    if not (args.apply or args.dry_run or args.report):
        raise CommandError("say what to do: --dry-run (count only) or --apply (anonymise), "
                           "or --report ID for one report",
                           "bart central retention --dry-run first, then --apply")
    central = _load(args)
    if args.report:
        try:
            report_id, had_contact = anonymise_report(_engine(central), args.report.strip(),
                                                      by=_cli_user())
        except LookupError as exc:
            raise CommandError(str(exc), "copy the id or receipt code from the report's "
                               "page") from None
        print(f"Report {report_id} anonymised" + (" (its contact details removed too)"
                                                  if had_contact else "")
              + "; written to the audit log")
        return 0
    result = run_retention(_engine(central), central.settings.retention_days,
                           apply=args.apply, by=_cli_user())
    verb = "anonymised" if args.apply else "would be anonymised (dry run, nothing changed)"
    print(f"Reports handled more than {result.days} days ago (before {result.cutoff_text}): "
          f"{result.reports} {verb}; {result.contacts} of them with contact details")
    if result.open_older:
        print(f"  {result.open_older} reports from before then are not handled yet: they are "
              "kept until a desk closes them")
    return 0


def add_central_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``bart central backup``, ``restore`` and ``retention``."""
    p = sub.add_parser("backup", help="write a backup of central (keys, settings, database) "
                       "to a file; central may be running")
    p.add_argument("file", metavar="FILE", help="the backup file to write (mode 0600)")
    _passphrase_flag(p)
    common(p)
    p.set_defaults(func=cmd_central_backup)
    p = sub.add_parser("restore", help="restore central from a backup file into an empty data "
                       "directory and an empty database")
    p.add_argument("file", metavar="FILE", help="the backup file")
    _passphrase_flag(p)
    common(p)
    p.set_defaults(func=cmd_central_restore)
    p = sub.add_parser("retention", help="anonymise contact details and free text of reports "
                       "handled longer ago than retention_days")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--dry-run", action="store_true", help="only count what would change")
    what.add_argument("--apply", action="store_true", help="anonymise now (audit logged)")
    what.add_argument("--report", metavar="ID", help="anonymise this one report now, whatever "
                      "its state or age (a resident's request): its id or receipt code")
    common(p)
    p.set_defaults(func=cmd_central_retention)
