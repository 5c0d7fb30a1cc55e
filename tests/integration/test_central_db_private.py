"""Central's SQLite database holds residents' reports: it and its -wal and -shm
files are 0600 whatever the umask, and a file made 0644 by an earlier version is
tightened (as the node's store is: docs/threat-model.md)."""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

from central import db


def _modes(path: Path) -> dict[str, str]:
    return {p.name: oct(p.stat().st_mode & 0o777)
            for p in sorted(path.parent.glob(path.name + "*"))}


def test_central_sqlite_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "central.db"
    old = os.umask(0o022)
    try:
        db.upgrade(f"sqlite:///{path}")
        engine = db.make_engine(f"sqlite:///{path}")
        with engine.begin() as conn:  # a write: the -wal and -shm files exist now
            conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
            conn.execute(sa.text("INSERT INTO t VALUES (1)"))
        modes = _modes(path)
        assert set(modes) == {"central.db", "central.db-shm", "central.db-wal"}, modes
        assert set(modes.values()) == {"0o600"}, modes
        engine.dispose()
        # A database of an earlier version, 0644: tightened when central opens it.
        os.chmod(path, 0o644)
        db.make_engine(f"sqlite:///{path}").dispose()
        assert oct(path.stat().st_mode & 0o777) == "0o600"
    finally:
        os.umask(old)
