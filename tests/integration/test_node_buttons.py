"""Wired panic buttons on a real node: mock pin held → alarm stored → shown → light."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

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
