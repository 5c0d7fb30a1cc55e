"""One running program per data directory: a lock file held for the process's life.

``bart node run`` and ``bart central run`` take an exclusive ``flock`` on
``<data dir>/bart.lock`` before anything starts and keep it until they exit.
The kernel drops the lock when the process ends, however it ends (SIGKILL,
OOM killer): a stale lock file never blocks a restart. A second run on the
same directory finds the lock taken and is refused with the holder's words,
which the holder wrote into the file: its pid, its command and since when.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> with lock_data_dir(d, "bart node run") as first:
...     try:
...         lock_data_dir(d, "bart node run")
...     except DataDirLocked as exc:
...         exc.holder.pid == os.getpid()
True
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Self

LOCK_FILE: Final = "bart.lock"
#: What the holder writes into the lock file is read back at most this long.
_MAX_INFO: Final = 4096


class DataDirError(Exception):
    """The data directory cannot be used by this process."""


@dataclass(frozen=True)
class Holder:
    """Who holds a data directory, as the holder wrote it (pid 0: not said)."""

    pid: int
    command: str
    since: str
    detail: str = ""

    def describe(self) -> str:
        """In words, for a refusal."""
        who = f"{self.command or 'another bart'} (pid {self.pid or '?'}"
        who += f", since {self.since})" if self.since else ")"
        return f"{who}: {self.detail}" if self.detail else who


class DataDirLocked(DataDirError):
    """Another process holds the data directory's lock."""

    def __init__(self, path: Path, holder: Holder) -> None:
        super().__init__(f"{path} is in use by {holder.describe()}")
        self.path = path
        self.holder = holder


class DataDirLock:
    """An exclusive lock on a data directory; released by :meth:`close` or at exit.

    The file descriptor is not inherited by child processes (Python's default),
    so Mosquitto or the projector cannot keep a dead node's directory locked.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def note(self, detail: str) -> None:
        """Add ``detail`` (e.g. the portal's URL) to what a refused second run is told."""
        fd = self._fd
        if fd is None:
            return
        info = json.loads(_read(fd) or "{}")
        info["detail"] = detail[:300]
        _write(fd, info)

    def close(self) -> None:
        """Release the lock (idempotent); the file stays."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _read(fd: int) -> str:
    return os.pread(fd, _MAX_INFO, 0).decode("utf-8", "replace")


def _write(fd: int, info: dict[str, object]) -> None:
    data = json.dumps(info).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def read_holder(path: Path) -> Holder:
    """What the lock file of data directory ``path`` says about its holder."""
    try:
        info = json.loads((path / LOCK_FILE).read_text("utf-8", "replace")[:_MAX_INFO])
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict):
        info = {}
    pid = info.get("pid")
    return Holder(pid=pid if isinstance(pid, int) and pid > 0 else 0,
                  command=str(info.get("command", ""))[:100],
                  since=str(info.get("since", ""))[:40],
                  detail=str(info.get("detail", ""))[:300])


def lock_data_dir(path: Path, command: str) -> DataDirLock:
    """Take the data directory's lock for this process, or raise :class:`DataDirLocked`.

    ``command`` names this program for a refused second run ("bart node run").
    """
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirLocked(path, read_holder(path)) from None
    except OSError as exc:
        os.close(fd)
        raise DataDirError(f"cannot lock {path / LOCK_FILE}: {exc.strerror}") from exc
    _write(fd, {"pid": os.getpid(), "command": command,
                "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
    return DataDirLock(path, fd)
