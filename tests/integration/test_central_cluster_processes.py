"""The processes of ``bart central run --workers 2`` (central/supervise.py).

A real central: the supervisor (the ``bart central run`` process, after its
checks) runs two HTTP workers and the projector as its children; a worker or
the projector that is killed comes back, SIGHUP replaces the workers one by one
while central keeps answering, SIGTERM and Ctrl-C (SIGINT to the whole process
group) stop every process with exit 0, and a worker that cannot start stops
central with exit 3 and words instead of restarting for ever.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.base import wait_until
from tests.support.central import CentralProcess, init_central_process
from tests.support.processes import live_processes

WORKER = b"central.worker\0http"
PROJECTOR = b"central.worker\0projector"


def children(parent: int, kind: bytes) -> list[int]:
    """Live children of ``parent`` whose command line holds ``kind``."""
    return sorted(pid for pid, cmdline, ppid in live_processes()
                  if ppid == parent and kind in cmdline)


def gone(pids: list[int]) -> bool:
    return not any(pid in {p for p, _, _ in live_processes()} for pid in pids)


@pytest.fixture
def central(tmp_path: Path) -> Iterator[CentralProcess]:
    proc = init_central_process(tmp_path, workers=2)
    proc.start()
    try:
        yield proc
    finally:
        proc.kill()


@pytest.mark.timeout(180)
def test_killed_children_come_back_and_sigterm_stops_them_all(central: CentralProcess) -> None:
    assert central.proc is not None
    me = central.proc.pid
    workers = wait_until(lambda: len(children(me, WORKER)) == 2 and children(me, WORKER),
                         30.0, message="two workers")
    projector = wait_until(lambda: children(me, PROJECTOR), 30.0, message="the projector")
    assert len(projector) == 1
    os.kill(workers[0], signal.SIGKILL)
    again = wait_until(lambda: (len(children(me, WORKER)) == 2
                                and workers[0] not in children(me, WORKER)
                                and children(me, WORKER)), 15.0, message="a new worker")
    os.kill(projector[0], signal.SIGKILL)
    new_projector = wait_until(lambda: [p for p in children(me, PROJECTOR) if p != projector[0]],
                               15.0, message="a new projector")
    # Both workers serve (the kernel spreads connections over the shared socket).
    for _ in range(20):
        assert httpx.get(f"{central.url}/healthz", timeout=5.0).status_code == 200
    log = central.log_tail(200)
    assert re.search(r"worker \d exited with -9", log) and "projector exited with -9" in log, log
    everyone = [me, *again, *new_projector]
    assert central.stop() == 0
    wait_until(lambda: gone(everyone), 10.0, message="every process of central gone")


@pytest.mark.timeout(180)
def test_sighup_replaces_the_workers_while_central_keeps_answering(
        central: CentralProcess) -> None:
    assert central.proc is not None
    me = central.proc.pid
    before = wait_until(lambda: len(children(me, WORKER)) == 2 and children(me, WORKER),
                        30.0, message="two workers")
    projector = children(me, PROJECTOR)
    os.kill(me, signal.SIGHUP)
    answered = 0

    def replaced() -> bool:
        nonlocal answered
        assert httpx.get(f"{central.url}/healthz", timeout=5.0).status_code == 200
        answered += 1
        now = children(me, WORKER)
        return len(now) == 2 and not set(now) & set(before)

    wait_until(replaced, 60.0, 0.05, "two new workers in place of the old ones")
    assert answered > 1
    assert children(me, PROJECTOR) == projector  # the projector stays
    assert central.stop() == 0


@pytest.mark.timeout(180)
def test_ctrl_c_stops_every_process_with_exit_0(central: CentralProcess) -> None:
    assert central.proc is not None
    me = central.proc.pid
    kids = wait_until(lambda: len(children(me, WORKER)) == 2 and children(me, PROJECTOR)
                      and children(me, WORKER) + children(me, PROJECTOR), 30.0,
                      message="workers and projector")
    os.killpg(me, signal.SIGINT)  # what Ctrl-C in a terminal sends
    assert central.proc.wait(20) == 0, central.log_tail()
    wait_until(lambda: gone(kids), 10.0, message="every process of central gone")
    assert "Traceback" not in central.log_tail(200), central.log_tail(200)


@pytest.mark.timeout(120)
def test_a_worker_that_cannot_start_stops_central_with_exit_3(tmp_path: Path) -> None:
    """The supervisor given a listening "socket" that is not one: each worker fails
    before it serves, and central stops with words, not a restart loop."""
    central = init_central_process(tmp_path, workers=2)
    not_a_socket = os.open(tmp_path / "not-a-socket", os.O_RDWR | os.O_CREAT)
    lock = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BART_")}
    env["BART_CENTRAL_DIR"] = str(central.data_dir)
    env["BART_CENTRAL_RUN_DATABASE_URL"] = f"sqlite:///{central.data_dir / 'central.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "central.supervise", "--workers", "2",
         "--listen-fd", str(not_a_socket), "--lock-fd", str(lock), "--host", "127.0.0.1",
         "--port", str(central.http_port), "--origin", "central-haaglanden"],
        pass_fds=(not_a_socket, lock), env=env, capture_output=True, text=True, timeout=90,
        check=False)
    assert result.returncode == 3, result.stderr
    assert "bart: central stopped while starting: worker" in result.stderr, result.stderr
    assert "before it served" in result.stderr and "fix: " in result.stderr, result.stderr
    assert "restarting" not in result.stderr, result.stderr
