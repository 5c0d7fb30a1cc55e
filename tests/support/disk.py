"""A disk that fills: a real tmpfs (mounting one needs root; CI runs the tests as root)."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.base import require, require_binary


def fill_disk(disk: Path) -> Path:
    """Take every free byte of ``disk`` (a tmpfs); the file to delete to free it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):  # unbuffered: every byte written is on the disk
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


@contextmanager
def tmpfs(disk: Path, size: str = "64m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` on the empty directory ``disk``; unmounted afterwards."""
    mount = require_binary("mount", "/usr/bin/mount", "/bin/mount")
    done = subprocess.run([mount, "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                           str(disk)], capture_output=True, text=True, check=False)
    require(done.returncode == 0, f"cannot mount a tmpfs (not root?): {done.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
