"""Atomic file writes that survive a crash or a power cut (stdlib only).

The one copy behind every "write a temporary file, then rename" of node and
central. A reader sees the old file or the new one, never half of one, and
once :func:`write_atomic` returns the new file is on disk: the data is fsynced
before the rename, and the directory after it (without that, a power cut can
lose the rename itself and bring the old file back, or none at all).

>>> import tempfile, pathlib
>>> target = pathlib.Path(tempfile.mkdtemp()) / "roster.json"
>>> write_atomic(target, b'{"serial": 1}', mode=0o644)
>>> target.read_bytes(), oct(target.stat().st_mode & 0o777)
(b'{"serial": 1}', '0o644')
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make the entries of ``directory`` (a rename, a new file) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600,
                 owner: tuple[int, int] | None = None) -> None:
    """Replace ``path`` with ``data``, atomically and durably, with file ``mode``.

    The temporary file is made in the same directory (a rename is atomic only
    within one file system) under a unique name (two writers never share
    one), gets exactly ``mode`` (not reduced by the umask) and ``owner`` (uid,
    gid) before any data is in it, and is removed again if anything fails
    before the rename.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        try:
            os.fchmod(fd, mode)
            if owner is not None:
                os.fchown(fd, *owner)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def private_database(path: str | os.PathLike[str]) -> None:
    """Make the SQLite file ``path`` readable by this account alone (0600), whatever
    the umask, creating it empty when missing; tighten one (and its -wal and -shm
    files) made with a wider mode by an earlier version. Node and central
    databases hold residents' reports and contact details. SQLite gives the -wal
    and -shm files it creates the database file's mode.

    >>> import tempfile, pathlib
    >>> db = pathlib.Path(tempfile.mkdtemp()) / "central.db"
    >>> private_database(db)
    >>> oct(db.stat().st_mode & 0o777), db.stat().st_size
    ('0o600', 0)
    """
    path = Path(path)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists() and side.stat().st_mode & 0o077:
                os.chmod(side, 0o600)
