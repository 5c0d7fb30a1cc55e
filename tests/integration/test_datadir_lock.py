"""One ``bart node run`` / ``bart central run`` per data directory (issue 17).

A second run on the same directory — even on other ports, where the port
checks cannot see it — is refused with exit 3 and the running one's pid,
and leaves the running one alone: its MQTT client stays connected (before,
the second node said "is up" and knocked the first one's client off, same
client id). The lock dies with its process: after SIGKILL a restart works.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from common.datadir import LOCK_FILE, DataDirLocked, lock_data_dir, read_holder
from tests.support.base import bart_command, free_port, wait_until
from tests.support.central import init_central_process
from tests.support.node import NodeProcess


def run_again(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*bart_command(), *args], capture_output=True, text=True,
                          env=env, timeout=60, check=False)


@pytest.mark.timeout(180)
def test_second_node_run_on_the_same_data_dir_is_refused(fresh_node: NodeProcess) -> None:
    node = fresh_node
    assert node.proc is not None
    before = node.health()
    # Other ports: nothing but the lock can tell that this directory is in use.
    again = run_again("node", "run", "--data-dir", str(node.data_dir),
                      "--http-port", str(free_port()), "--mqtt-port", str(free_port()),
                      env=node.env())
    assert again.returncode == 3, (again.returncode, again.stdout, again.stderr)
    err = again.stderr
    assert f"node {node.name} is running already" in err, err
    assert f"pid {node.proc.pid}" in err, err
    assert "bart node run" in err and f"127.0.0.1:{node.http_port}" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
    assert "is up" not in again.stdout + err
    # The running node was not disturbed: still connected, no broker restart.
    time.sleep(1.0)
    after = node.health()
    assert after["status"] == "ok" and after["broker"]["connected"], after
    assert after["broker"]["restarts"] == before["broker"]["restarts"]
    assert node.proc.poll() is None
    holder = read_holder(node.data_dir)
    assert holder.pid == node.proc.pid and holder.command == "bart node run"


@pytest.mark.timeout(180)
def test_the_lock_dies_with_its_node(fresh_node: NodeProcess) -> None:
    node = fresh_node
    assert (node.data_dir / LOCK_FILE).exists()
    node.kill()  # SIGKILL: no clean-up ran, the lock file stays
    assert (node.data_dir / LOCK_FILE).exists()
    lock_data_dir(node.data_dir, "test").close()  # the kernel released it
    node.start()
    with pytest.raises(DataDirLocked):
        lock_data_dir(node.data_dir, "test")


@pytest.mark.timeout(180)
def test_second_central_run_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    central = init_central_process(tmp_path)
    central.start()
    try:
        assert central.proc is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("BART_")}
        again = run_again("central", "run", "--data-dir", str(central.data_dir),
                          "--http-port", str(free_port()), env=env)
        assert again.returncode == 3, (again.returncode, again.stdout, again.stderr)
        err = again.stderr
        assert "central is running already" in err, err
        assert f"pid {central.proc.pid}" in err and "bart central run" in err, err
        assert f"127.0.0.1:{central.http_port}" in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
        assert central.proc.poll() is None
        assert wait_until(lambda: central.proc is not None and central.proc.poll() is None,
                          1.0)
    finally:
        assert central.stop() == 0
    # Stopped cleanly: the lock is free again.
    lock_data_dir(central.data_dir, "test").close()

