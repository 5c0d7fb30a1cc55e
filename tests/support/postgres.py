"""A real PostgreSQL server in a temporary directory, on a free port.

Used by the ``postgres_server`` fixture of ``tests/conftest.py`` and by
``bench/central_sync.py``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.support.base import free_port, require

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PostgresServer:
    """A real PostgreSQL server in a temporary directory, on a free port.

    PostgreSQL refuses to run as root, so as root the cluster belongs to the
    ``postgres`` account that Debian's package creates.
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "pgdata"
        self.port = free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                require(False, "PostgreSQL's postgres account is missing (./install.sh --dev)")
            self.user = "postgres"

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        if self.user:
            shutil.chown(self.base, self.user, self.user)
            self.base.chmod(0o755)
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "bart", "-A", "trust",
                  "--no-sync", "-E", "UTF8", "--locale=C.UTF-8")
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", "-l",
                  str(self.data / "server.log"), "-o",
                  f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data} "
                  "-c max_connections=200 -c fsync=on", "start")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://bart@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def database_for(self, test_name: str) -> str:
        """A fresh, empty database named after ``test_name`` (and unique)."""
        name = re.sub(r"[^a-z0-9_]", "_", test_name.lower())[:40]
        return self.create_database(f"t_{name}_{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def postgres_running() -> Iterator[PostgresServer]:
    """A started server, stopped and removed afterwards (skips/fails when not installed)."""
    require((PG_BIN / "initdb").exists(), "PostgreSQL 15 is not installed (./install.sh --dev)")
    # Not under pytest's tmp dir: that is 0700 root, where postgres cannot enter.
    base = Path(tempfile.mkdtemp(prefix="bart-pg-"))
    server = PostgresServer(base)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
