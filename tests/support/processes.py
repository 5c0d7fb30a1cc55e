"""Processes the tests start: every live process, Mosquitto by its data directory,
a process group stopped with a deadline."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.support.base import log_tail


def live_processes() -> Iterator[tuple[int, bytes, int]]:
    """(pid, command line, parent pid) of every live (non-zombie) process."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            yield int(entry.name), cmdline, int(fields[1])


def mosquitto_pids_for(data_dir: Path) -> list[int]:
    """Live mosquitto processes whose command line names ``data_dir``."""
    needle = str(data_dir.resolve()).encode()
    return [pid for pid, cmdline, _ in live_processes()
            if b"mosquitto" in cmdline.split(b"\0")[0] and needle in cmdline]


def kill_group(pid: int) -> None:
    """SIGKILL a process group (gone already is fine)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def terminate(proc: subprocess.Popen[bytes], timeout: float, kill: Callable[[], None],
              what: str, log_path: Path) -> int:
    """SIGTERM ``proc``'s group and wait; on a timeout ``kill()`` and fail. Exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill()
            raise AssertionError(f"{what} ignored SIGTERM for {timeout}s:\n"
                                 f"{log_tail(log_path)}") from None
    return int(proc.returncode)

