"""The node's Mosquitto dies with its node, and an orphan never serves a new run (issue 17).

Before: Mosquitto leads its own session, so ``kill -9`` of the node left it
running with the old configuration; the next run's broker failed with
"Address already in use" while the readiness probe, answered by the orphan,
logged "answers on port …". Here, on real processes:

- SIGKILL of the node's main process only (the broker is in its own session,
  untouched): the broker is gone within seconds (parent-death signal);
- a broker of an earlier run that did outlive its node (started here without
  the signal, named by the pid file as a run leaves it) is ended at start;
- after each, the restarted node serves its *new* configuration: a password
  changed between the runs is accepted by the broker;
- a stranger answering MQTT on the broker's port is not taken for our child.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from broker import BrokerProcess, BrokerSettings, BrokerStartError, MqttUser, probe
from broker.probe import holds_port
from broker.process import PID_NAME
from tests.support.base import free_port, require_binary, wait_until
from tests.support.node import NodeProcess, init_node, stop_and_check
from tests.support.processes import mosquitto_pids_for

#: Honest bound under load (2 shared cores): measured well under a second quiet.
GONE_WITHIN_S = 5.0


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def new_integration_password(node: NodeProcess, value: str) -> None:
    path = node.data_dir / "secrets" / "mqtt.json"
    creds = json.loads(path.read_text())
    creds["integration_password"] = value
    path.write_text(json.dumps(creds))


def broker_pid(node: NodeProcess) -> int:
    pids = wait_until(lambda: mosquitto_pids_for(node.data_dir), 10.0,
                      message="the node's mosquitto")
    assert len(pids) == 1, pids
    return int(pids[0])


def answers_with(node: NodeProcess, password: str) -> bool:
    return probe("127.0.0.1", node.mqtt_port, "integration", password, timeout=2.0) == 0


@pytest.mark.timeout(240)
def test_broker_dies_with_its_node_and_an_orphan_is_ended(tmp_path: Path) -> None:
    mosquitto = require_binary("mosquitto", "/usr/sbin/mosquitto")
    node = init_node(tmp_path, mosquitto)
    try:
        node.start()
        assert node.proc is not None
        first = broker_pid(node)
        assert holds_port(first, node.mqtt_port)
        conf = Path(Path(f"/proc/{first}/cmdline").read_bytes().split(b"\0")[2].decode())

        # 1. SIGKILL of the node's own process, not its group: the broker must follow.
        os.kill(node.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        node.proc.wait(10)
        wait_until(lambda: gone(first), GONE_WITHIN_S, 0.01,
                   message=f"mosquitto[{first}] gone after its node's SIGKILL")
        took = time.monotonic() - killed
        print(f"\norphan broker gone {took * 1000:.0f} ms after the node's SIGKILL")

        new_integration_password(node, "second-run-secret")
        node.start()
        second = broker_pid(node)
        assert second != first
        assert answers_with(node, "second-run-secret")  # the new config is served
        assert f"mosquitto[{second}] answers on port {node.mqtt_port}" in node.log_tail(200)

        # 2. A broker of an earlier run that outlived its node (no parent-death
        # signal: started here, in a session of its own), named by the pid file.
        os.kill(node.proc.pid, signal.SIGKILL)
        node.proc.wait(10)
        wait_until(lambda: gone(second), GONE_WITHIN_S, 0.01, message="second broker gone")
        orphan = subprocess.Popen([mosquitto, "-c", str(conf)], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  cwd=conf.parent, start_new_session=True)
        try:
            (conf.parent / PID_NAME).write_text(f"{orphan.pid}\n")
            wait_until(lambda: answers_with(node, "second-run-secret"), 10.0,
                       message="the orphan answers with the old config")
            new_integration_password(node, "third-run-secret")
            node.start()
            assert orphan.wait(10) is not None  # ended by the new run
            third = broker_pid(node)
            assert third != orphan.pid
            assert answers_with(node, "third-run-secret")
            assert probe("127.0.0.1", node.mqtt_port, "integration", "second-run-secret",
                         timeout=2.0) != 0  # the old config is not served
            log = node.log_tail(300)
            assert f"mosquitto[{orphan.pid}] of an earlier run still serves" in log
            assert not re.search(r"Address already in use", log), log
        finally:
            if orphan.poll() is None:
                orphan.kill()
                orphan.wait(10)
        stop_and_check(node)
        assert not (conf.parent / PID_NAME).exists()  # a clean stop leaves no pid file
    finally:
        if (node.proc is not None and node.proc.poll() is None) \
                or mosquitto_pids_for(node.data_dir):
            node.kill()  # the node's group and every mosquitto of its data dir


@pytest.mark.timeout(60)
def test_a_stranger_on_the_port_is_not_our_broker(tmp_path: Path) -> None:
    mosquitto = require_binary("mosquitto", "/usr/sbin/mosquitto")
    port = free_port()
    stranger_conf = tmp_path / "stranger.conf"
    stranger_conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    stranger = subprocess.Popen([mosquitto, "-c", str(stranger_conf)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # It accepts anyone: without the ownership check, its CONNACK was "ready".
        wait_until(lambda: probe("127.0.0.1", port, "node", "x", timeout=1.0) == 0, 10.0)
        settings = BrokerSettings(state_dir=tmp_path / "mqtt", port=port,
                                  users=(MqttUser("node", "node-secret", "service"),))
        broker = BrokerProcess(settings, mosquitto)
        with pytest.raises(BrokerStartError) as info:
            broker.start(timeout=10)
        assert f"port {port}" in str(info.value)
        assert broker.pid is None
        assert stranger.poll() is None  # a stranger is never ended: only our own orphans
    finally:
        stranger.terminate()
        stranger.wait(10)
