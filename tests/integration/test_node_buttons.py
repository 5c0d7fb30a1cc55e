"""Wired panic buttons on a real node: mock pin held → alarm stored → shown → light."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import configure, init_node, stop_and_check

BART = str(Path(sys.executable).parent / "bart")

BUTTONS_TOML = """
[[meeting_points]]
id = "klimboom"
name = "Speeltuin De Klimboom"

[[meeting_points.panic_buttons]]
id = "klimboom-hek"
device = "hub"
button_pin = 17
led_pin = 23
"""


@pytest.fixture
def button_node(tmp_path: Path, mosquitto_bin: str) -> Iterator[str]:
    node = init_node(tmp_path, mosquitto_bin)
    configure(node, 'gpio = "mock"\ndemo = true\nhold_s = 0.5\npoint_port = 0', BUTTONS_TOML)
    node.start()
    try:
        yield node.base_url
    finally:
        stop_and_check(node)


def _wait(predicate, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


@pytest.mark.timeout(60)
def test_hold_raises_one_alarm_and_light_shows_stored(button_node: str) -> None:
    buttons = httpx.get(button_node + "/demo/buttons").json()["buttons"]
    assert buttons == [{"id": "klimboom-hek", "meeting_point": "klimboom", "device": "hub",
                        "light": "idle"}]
    assert httpx.post(button_node + "/demo/press/klimboom-hek").status_code == 202

    def alarms() -> list[dict]:
        return [a for a in httpx.get(button_node + "/api/v1/alerts").json()["alerts"]
                if a["source"] == "button"]

    found = _wait(alarms)
    assert len(found) == 1
    alarm = found[0]
    assert alarm["button"] == "klimboom-hek" and alarm["place_name"] == "Speeltuin De Klimboom"
    assert alarm["severity"] == "extreme" and alarm["verified"] is True
    light = _wait(lambda: httpx.get(button_node + "/demo/buttons").json()["buttons"][0]["light"]
                  == "stored")
    assert light
    # A second hold within the cool-down repeats the alarm; it raises no new one.
    assert httpx.post(button_node + "/demo/press/klimboom-hek").status_code == 202
    time.sleep(1.2)
    assert len(alarms()) == 1
    assert httpx.post(button_node + "/demo/press/no-such-button").status_code == 404


@pytest.mark.timeout(60)
def test_the_alarm_is_signed_during_the_hold_and_stored_at_its_deadline(
        tmp_path: Path, mosquitto_bin: str) -> None:
    # In-process node (real Mosquitto, store, HTTP server): its button service's
    # prepared alarm is visible, so the test can follow it from press to store.
    import threading

    from conftest import free_port

    from node.server import NodeServer, uvicorn_config
    from node.setup import init_node as setup_node

    settings, _ = setup_node(
        tmp_path / "node", name="hold-node", area="ESC-01", http_port=free_port(),
        mqtt_port=free_port(), gpio="mock", hold_s=0.5, cooldown_s=0.0, point_port=0,
        meeting_points=[{"id": "klimboom", "name": "Speeltuin", "panic_buttons": [
            {"id": "klimboom-hek", "device": "hub", "button_pin": 17, "led_pin": 23}]}])
    server = NodeServer(uvicorn_config(settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert _wait(lambda: server.started, 20)
        app = server.config.loaded_app
        while not hasattr(app, "state"):
            app = app.app
        runtime = app.state.runtime
        service, store = runtime.buttons, runtime.store
        pin = service.factory.pin(17)

        def alarms() -> list[Any]:
            return [e for e in store.recent("alert") if e.body.get("button") == "klimboom-hek"]

        # A press released before hold_s: prepared during the hold, dropped unused.
        pin.drive_low()
        assert _wait(lambda: "klimboom-hek" in service._prepared)
        pin.drive_high()
        short, _ = service._prepared["klimboom-hek"]
        time.sleep(0.8)
        assert alarms() == []
        # A hold: the alarm made at the start of the hold is the one stored.
        pin.drive_low()
        assert _wait(lambda: service._prepared.get("klimboom-hek", (short,))[0] != short)
        _, prepared = service._prepared["klimboom-hek"]
        stored = _wait(alarms)
        pin.drive_high()
        assert [e.id for e in stored] == [prepared.id]
        assert stored[0] == prepared and stored[0].verify(store.keys.signing_public) is None
        assert "klimboom-hek" not in service._prepared
    finally:
        server.should_exit = True
        thread.join(20)
    assert not thread.is_alive()
