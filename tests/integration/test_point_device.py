"""A point device (separate process, mock pins) and its node over MQTT with TLS.

The point keeps an alarm while its node is down, shows "not delivered", and
delivers it exactly once when the node is back.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.base import free_port
from tests.support.node import NodeProcess, configure, init_node, stop_and_check

BART = str(Path(sys.executable).parent / "bart")

POINT_TOML = """
[[meeting_points]]
id = "vliegerpad"
name = "Ingang Zuiderpark Vliegerpad"

[[meeting_points.panic_buttons]]
id = "vliegerpad-paal"
device = "point"
button_pin = 22
led_pin = 25
"""


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (httpx.HTTPError, OSError, KeyError):
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


class Proc:
    def __init__(self, *args: str) -> None:
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return -9


@pytest.fixture
def setup(tmp_path: Path, mosquitto_bin: str) -> Iterator[dict[str, Any]]:
    node = init_node(tmp_path, mosquitto_bin, name="punt-test")
    configure(node, f'gpio = "mock"\nhold_s = 0.5\ncooldown_s = 0.0\npoint_port = {free_port()}',
              POINT_TOML)
    data = node.data_dir
    bundle = tmp_path / "point.json"
    added = subprocess.run([BART, "node", "point", "add", "vliegerpad", "--host", "127.0.0.1",
                            "--out", str(bundle), "--data-dir", str(data)],
                           capture_output=True, text=True)
    assert added.returncode == 0, added.stderr
    assert oct(bundle.stat().st_mode)[-3:] == "600"
    control = free_port()
    point = Proc(BART, "point", "run", "--config", str(bundle), "--gpio", "mock",
                 "--control-port", str(control), "--data-dir", str(tmp_path / "point"))
    env = {"base": node.base_url, "control": f"http://127.0.0.1:{control}",
           "node": node, "point": point, "db": node.db_path}
    node.start()
    point.start()
    env["bundle"] = json.loads(bundle.read_text())
    env["tmp"] = tmp_path
    wait_for(lambda: state(env), 15)  # up, with its signal handlers in place
    try:
        yield env
    finally:
        point_code = point.stop()
        if node.proc is not None and node.proc.poll() is None:
            stop_and_check(node)
        assert point_code == 0


def state(env: dict[str, Any]) -> dict[str, Any]:
    reply = httpx.get(env["control"] + "/state", timeout=1)
    return json.loads(reply.content)


def button_alarms(env: dict[str, Any]) -> list[dict[str, Any]]:
    alerts = httpx.get(env["base"] + "/api/v1/alerts", timeout=2).json()["alerts"]
    return [a for a in alerts if a["button"] == "vliegerpad-paal"]


@pytest.mark.timeout(90)
def test_point_alarm_survives_node_outage_and_arrives_once(setup: dict[str, Any]) -> None:
    env = setup
    wait_for(lambda: state(env)["connected"], 15)
    assert httpx.post(env["control"] + "/press/vliegerpad-paal").status_code == 202
    wait_for(lambda: len(button_alarms(env)) == 1)
    wait_for(lambda: state(env)["lights"]["vliegerpad-paal"] == "stored")
    assert state(env)["pending"] == []

    assert env["node"].stop() == 0  # the node and its broker are gone
    wait_for(lambda: not state(env)["connected"])
    assert httpx.post(env["control"] + "/press/vliegerpad-paal").status_code == 202
    pending = wait_for(lambda: state(env)["pending"])
    assert len(pending) == 1
    assert state(env)["lights"]["vliegerpad-paal"] == "not_delivered"
    time.sleep(3)  # the device keeps retrying while the node is away
    assert state(env)["pending"] == pending

    env["node"].start()
    wait_for(lambda: state(env)["pending"] == [], 20)
    wait_for(lambda: state(env)["lights"]["vliegerpad-paal"] == "stored")
    time.sleep(2.5)  # a late re-delivery would show up as a third alarm
    assert len(button_alarms(env)) == 2
    with sqlite3.connect(f"file:{env['db']}?mode=ro", uri=True) as db:
        assert db.execute("SELECT COUNT(*) FROM point_presses").fetchone()[0] == 2
        assert db.execute("SELECT COUNT(DISTINCT press_id) FROM point_presses").fetchone()[0] == 2


def test_point_credentials_cannot_publish_alerts(setup: dict[str, Any]) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    bundle = setup["bundle"]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="intruder",
                         protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set(bundle["username"], bundle["password"])
    ca = setup["tmp"] / "ca.pem"
    ca.write_text(bundle["ca_pem"])
    client.tls_set(ca_certs=str(ca))
    codes: dict[int, int] = {}
    client.on_publish = lambda _c, _u, mid, reason, _p: codes.__setitem__(mid, reason.value)
    client.connect(bundle["host"], bundle["port"])
    client.loop_start()
    try:
        wait_for(client.is_connected)
        denied = client.publish("bart/v1/punt-test/public/alert", b"{}", qos=1).mid
        allowed = client.publish("bart/v1/punt-test/points/vliegerpad/press", b"{}", qos=1).mid
        wait_for(lambda: denied in codes and allowed in codes)
        assert codes[denied] == 0x87  # not authorized: no point credential raises alerts
        assert codes[allowed] == 0  # (the node then refuses "{}" as a malformed press)
    finally:
        client.loop_stop()
        client.disconnect()
    assert button_alarms(setup) == []


def test_tls_listener_takes_only_point_users(setup: dict[str, Any]) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    bundle = setup["bundle"]
    secrets = json.loads((setup["db"].parent / "secrets" / "mqtt.json").read_text())
    ca = setup["tmp"] / "ca.pem"
    ca.write_text(bundle["ca_pem"])
    results: list[bool] = []
    for user, password in (("bart-node", secrets["service_password"]),
                           ("integration", secrets["integration_password"])):
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"x-{user}",
                             protocol=MQTTProtocolVersion.MQTTv5)
        client.username_pw_set(user, password)
        client.tls_set(ca_certs=str(ca))
        codes: list[Any] = []
        client.on_connect = lambda _c, _u, _f, reason, _p: codes.append(reason)
        client.connect(bundle["host"], bundle["port"])
        client.loop_start()
        try:
            wait_for(lambda: codes)
            results.append(codes[0].is_failure)
        finally:
            client.loop_stop()
            client.disconnect()
    assert results == [True, True]  # the node's own accounts cannot log in from Wi-Fi


def _point_login_refused(bundle: dict[str, Any], ca: Path) -> bool:
    """Whether the point device's credentials are refused by the node's broker now
    (a failed CONNACK, or no TLS listener left to connect to)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"old-{uuid.uuid4().hex[:6]}",
                         protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set(bundle["username"], bundle["password"])
    client.tls_set(ca_certs=str(ca))
    codes: list[Any] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: codes.append(reason)
    try:
        client.connect(bundle["host"], bundle["port"])
    except OSError:
        return True  # the listener is gone: nobody logs in there
    client.loop_start()
    try:
        wait_for(lambda: codes, 10)
        return bool(codes[0].is_failure)
    finally:
        client.loop_stop()
        client.disconnect()


@pytest.mark.timeout(90)
def test_a_removed_point_device_is_locked_out_of_the_running_node(
        setup: dict[str, Any]) -> None:
    """docs/cli.md: ``bart node point remove NAME`` withdraws its credentials; the
    running node restarts its broker with the users left (docs/threat-model.md)."""
    bundle = setup["bundle"]
    ca = setup["tmp"] / "ca-removed.pem"
    ca.write_text(bundle["ca_pem"])
    assert not _point_login_refused(bundle, ca)  # registered: it may log in
    node: NodeProcess = setup["node"]
    removed = subprocess.run([BART, "node", "point", "remove", "vliegerpad", "--data-dir",
                              str(node.data_dir)], capture_output=True, text=True)
    assert removed.returncode == 0, removed.stderr
    assert "can no longer connect" in removed.stdout
    wait_for(lambda: _point_login_refused(bundle, ca), 30)
    # The node itself goes on: its own client is back on the restarted broker.
    wait_for(lambda: httpx.get(setup["base"] + "/healthz", timeout=2).json()["broker"]
             ["connected"], 20)
