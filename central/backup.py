"""``bart central backup`` / ``bart central restore``: central's data directory and
database in one file.

The data directory (keys, CA, CAP signing key, ``central.toml``, ``areas.toml``,
edited triage rules) is copied as it is; the database is taken while central
runs: a SQLite file with SQLite's online backup API (one consistent snapshot),
PostgreSQL with ``pg_dump --format=custom`` (one transaction: consistent too).
The snapshot is packed by :mod:`common.archive` (0600, encrypted when a
passphrase is given).

A restore goes only into a new or empty data directory and a database without
tables; ``pg_restore`` loads a PostgreSQL dump, then the schema is upgraded to
this version's (Alembic), so a backup of an older Bart can be restored by a
newer one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from common import archive as archives

from . import db
from .errors import CentralError
from .identity import CONFIG_FILE, load_central

__all__ = ["CentralBackupError", "CentralBackupInfo", "DatabaseUnreachable", "backup_central",
           "restore_central"]

KIND: Final = "central"
DUMP: Final = "database.pgdump"
SQLITE: Final = "database.sqlite"
#: pg_dump / pg_restore get this long before they are stopped.
PG_TIMEOUT_S: Final = 6 * 3600


class CentralBackupError(CentralError):
    """Central's backup cannot be made or restored; the message says why and what to do."""


class DatabaseUnreachable(CentralBackupError):
    """pg_dump or pg_restore cannot reach the PostgreSQL server (it may later)."""


class CentralBackupInfo(archives.BackupInfo):
    """What a central backup holds (its manifest), and the figures of making or
    restoring it."""


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                                reverse=True):
            return str(candidate)
        raise CentralBackupError(f"{name} is not installed; it comes with PostgreSQL's client "
                                 "tools: sudo apt install postgresql-client")
    return found


def _pg_args(url: URL) -> tuple[list[str], dict[str, str]]:
    """Connection flags for pg_dump/pg_restore, and the environment that carries the
    password (never on the command line, where every user of the machine sees it)."""
    args = ["--dbname", url.database or ""]
    if url.host:
        args += ["--host", url.host]
    if url.port:
        args += ["--port", str(url.port)]
    if url.username:
        args += ["--username", url.username]
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    for key in ("sslmode", "sslrootcert", "sslcert", "sslkey"):  # e.g. ?sslmode=require
        value = url.query.get(key)
        if value is not None:
            env["PG" + key.upper()] = value if isinstance(value, str) else value[0]
    return args, env


def _run(cmd: list[str], env: dict[str, str], what: str) -> None:
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True,
                              timeout=PG_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise CentralBackupError(f"{what} took longer than {PG_TIMEOUT_S // 3600} hours and "
                                 "was stopped") from None
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        said = "; ".join(line.removeprefix(f"{Path(cmd[0]).name}: ").removeprefix("error: ")
                         for line in lines[:2])
        if "could not connect" in said or "Connection refused" in said or (
                "connection to server" in said and "failed" in said):
            first = lines[0].removeprefix(f"{Path(cmd[0]).name}: ").removeprefix("error: ")
            raise DatabaseUnreachable(f"{what} cannot reach PostgreSQL: {first}")
        raise CentralBackupError(f"{what} failed: {said or f'exit {done.returncode}'}")


def _is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def backup_central(data_dir: Path, out: Path, *, database_url: str | None = None,
                   passphrase: str | None = None, version: str = "") -> CentralBackupInfo:
    """Write a backup of the central in ``data_dir`` (and its database) to ``out``."""
    started = time.monotonic()
    central = load_central(data_dir, database_url=database_url)
    archives.check_output(out, data_dir)
    url = make_url(central.database_url)
    staging = Path(tempfile.mkdtemp(prefix=".bart-backup-", dir=out.absolute().parent))
    try:
        tree = staging / "data"
        tree.mkdir(mode=0o700)
        db_file = Path(url.database or "") if _is_sqlite(url) else None
        inside = db_file is not None and db_file.resolve().is_relative_to(data_dir.resolve())
        skip = frozenset({str(db_file.resolve().relative_to(data_dir.resolve()))}
                         if inside and db_file is not None else set())
        archives.snapshot_dir(data_dir, tree, skip=skip)
        if db_file is not None:
            if not db_file.exists():
                raise CentralBackupError(f"central's database {db_file} does not exist")
            archives.copy_sqlite(db_file, staging / SQLITE)
            database: dict[str, Any] = {"backend": "sqlite", "file": SQLITE}
        else:
            args, env = _pg_args(url)
            _run([_pg_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges",
                  "--file", str(staging / DUMP), *args], env, "pg_dump")
            os.chmod(staging / DUMP, 0o600)
            database = {"backend": "postgresql", "file": DUMP}
        counts = _counts(central.database_url)
        manifest = {"v": 1, "kind": KIND, "name": central.settings.name,
                    "origin": central.origin, "fingerprint": central.keys.fingerprint,
                    "created_ms": time.time_ns() // 1_000_000, "bart": version,
                    "database": database, "counts": counts}
        archives.write_manifest(staging, manifest)
        archives.pack(staging, out, passphrase=passphrase)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return CentralBackupInfo(manifest, out.stat().st_size, time.monotonic() - started)


def _counts(url: str) -> dict[str, int]:
    """Rows of the main tables, to compare after a restore."""
    engine = db.make_engine(url)
    try:
        with db.reading(engine) as conn:
            return {t.name: int(conn.execute(sa.select(sa.func.count()).select_from(t))
                                .scalar_one())
                    for t in (db.nodes, db.events, db.batches, db.reports)}
    finally:
        engine.dispose()


def _require_empty_database(url: str) -> None:
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
    finally:
        engine.dispose()
    if tables:
        raise CentralBackupError(
            f"the database {make_url(url).render_as_string(hide_password=True)} already has "
            f"tables ({', '.join(sorted(tables)[:4])}{', …' if len(tables) > 4 else ''}): a "
            "restore goes only into an empty database, so that nothing is overwritten; "
            "create a new one (createdb) and give it with --database-url")


def restore_central(archive: Path, data_dir: Path, *, database_url: str | None = None,
                    passphrase: str | None = None) -> CentralBackupInfo:
    """Restore the central backup ``archive`` into the new or empty ``data_dir``, its
    database into ``database_url`` (default: the backup's SQLite file in ``data_dir``,
    or the PostgreSQL URL in the backup's central.toml)."""
    started = time.monotonic()
    with archives.restoring(archive, data_dir, KIND,
                            passphrase=passphrase) as (staging, manifest):
        tree = staging / "data"
        if not (tree / CONFIG_FILE).is_file():
            raise CentralBackupError("the backup has no central.toml: it is not a whole "
                                     "central")
        # Loads the keys, CA and settings: a damaged tree fails here, before anything lands.
        restored = load_central(tree, database_url=database_url)
        database = manifest.get("database") or {}
        target = make_url(database_url or restored.settings.database_url
                          or f"sqlite:///{data_dir.absolute() / 'central.db'}")
        if database.get("backend") == "postgresql":
            if _is_sqlite(target):
                raise CentralBackupError("the backup holds a PostgreSQL database: give the "
                                         "empty PostgreSQL database to restore it into with "
                                         "--database-url postgresql://USER@HOST/DATABASE")
            _require_empty_database(target.render_as_string(hide_password=False))
            args, env = _pg_args(target)
            _run([_pg_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
                  "--single-transaction", *args, str(staging / DUMP)], env, "pg_restore")
            archives.move_into(tree, data_dir)
        elif database.get("backend") == "sqlite":
            archives.check_sqlite(staging / SQLITE)
            if not _is_sqlite(target):
                _require_empty_database(target.render_as_string(hide_password=False))
                raise CentralBackupError("the backup holds a SQLite database; restore it "
                                         "without --database-url (moving a central from "
                                         "SQLite to PostgreSQL is not a restore)")
            dest = Path(target.database or "")
            if dest.exists():
                raise CentralBackupError(f"{dest} exists already: a restore does not "
                                         "overwrite a database; move it aside first")
            archives.move_into(tree, data_dir)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(staging / SQLITE, dest)
        else:
            raise CentralBackupError("the backup names no database it holds (damaged?)")
        db.upgrade(target.render_as_string(hide_password=False))
    return CentralBackupInfo(manifest, archive.stat().st_size, time.monotonic() - started)
