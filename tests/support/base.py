"""The real components a test needs, found or refused, and small waiting helpers.

A missing real component (Mosquitto, Chromium, PostgreSQL) skips a test on a
developer machine with the reason, and FAILS it when ``CI=true``: CI must
never pass by skipping (STYLE.md rule 18).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip (locally) or fail (in CI) when a real component is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required component missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def require_binary(name: str, *candidates: str) -> str:
    """Path of an executable, or skip/fail with a clear reason."""
    for cand in (name, *candidates):
        found = shutil.which(cand) or (cand if os.path.isabs(cand) and os.access(cand, os.X_OK)
                                       else None)
        if found:
            return found
    require(False, f"{name} is not installed (run ./install.sh --dev)")
    raise AssertionError("unreachable")


#: Ports the tests' servers take: below the kernel's ephemeral range (32768-60999 on
#: Debian), where every outgoing connection of every process takes its local port, and
#: one slice per pytest-xdist worker, so that a port chosen a moment before its server
#: binds it is not taken in between by another worker or a client socket.
PORTS_FROM, PORTS_PER_WORKER = 20_000, 3_000


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago, from this worker's slice."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    low = PORTS_FROM + (index % 4) * PORTS_PER_WORKER
    for _ in range(500):
        port = random.randrange(low, low + PORTS_PER_WORKER)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port in {low}-{low + PORTS_PER_WORKER - 1}")


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05,
               message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
        except Exception as exc:
            value, last_exc = None, exc
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} not reached within {timeout:.1f}s"
                                 + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


def bart_command() -> list[str]:
    """The ``bart`` console script of the running interpreter's environment."""
    script = Path(sys.executable).with_name("bart")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "bart.cli"]


def log_tail(path: Path, lines: int = 60) -> str:
    """The last ``lines`` lines of a process log, for failure messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
