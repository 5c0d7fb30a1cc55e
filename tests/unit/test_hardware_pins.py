"""Pin map from the node config, and the choice of pin factory."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from hardware import (
    BackendMissingError,
    ButtonSpec,
    ConfigError,
    is_raspberry_pi,
    load_buttons,
    load_node_buttons,
    pin_factory_for,
    pin_warnings,
)

DEMO = Path(__file__).parent.parent.parent / "bart" / "demo_data" / "demo-neighbourhood.toml"


def mp(mp_id: str, *buttons: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": mp_id, "name": mp_id.title(), "panic_buttons": list(buttons), **extra}


def btn(bid: str, device: str = "hub", button_pin: Any = 17, led_pin: Any = 23,
        **extra: Any) -> dict[str, Any]:
    return {"id": bid, "device": device, "button_pin": button_pin, "led_pin": led_pin, **extra}


def test_the_demo_neighbourhood_loads() -> None:
    nodes = tomllib.loads(DEMO.read_text())["nodes"]
    loaded = {node["name"]: load_node_buttons(node) for node in nodes}
    first = loaded["escamp-kleine-wereld"]
    assert [(b.id, b.meeting_point, b.device, b.button_pin, b.led_pin) for b in first] == [
        ("klimboom-hek", "klimboom", "hub", 17, 23),
        ("hinkelbaan-zuil", "hinkelbaan", "hub", 27, 24),
        ("vliegerpad-paal", "vliegerpad", "point", 22, 25),
    ]
    assert {b.area for b in first} == {"ESC-01"}
    assert first[0].meeting_point_name == "Speeltuin De Klimboom"
    assert first[0].buzzer_pin is None
    steiger = [b for b in loaded["ypenburg-propeller"] if b.meeting_point == "steiger"]
    assert len(steiger) == 2 and {b.device_key for b in steiger} == {("point", "steiger")}
    assert sum(len(v) for v in loaded.values()) == 11


def test_same_pins_are_fine_on_different_devices() -> None:
    specs = load_buttons([mp("a", btn("a1", "hub", 17, 23)),
                          mp("b", btn("b1", "point", 17, 23)),
                          mp("c", btn("c1", "point", 17, 23))], area="ESC-01")
    assert [s.area for s in specs] == ["ESC-01"] * 3


@pytest.mark.parametrize("points, message", [
    ([mp("a", btn("a1", "hub", 17, 23)), mp("b", btn("b1", "hub", 27, 17))],
     "pin 17 on the node used twice"),
    ([mp("s", btn("s1", "point", 17, 23), btn("s2", "point", 6, 23))],
     "pin 23 on point s used twice"),
    ([mp("a", btn("x", "hub", 17, 23)), mp("b", btn("x", "point", 5, 6))], "x used twice"),
    ([mp("a", btn("a1", "hub", 17, 17))], "one pin used twice"),
    ([mp("a", btn("a1", "hub", 17, 23, buzzer_pin=23))], "one pin used twice"),
    ([mp("a", btn("a1", "hub", 28, 23))], "button_pin must be a BCM number 0–27"),
    ([mp("a", btn("a1", "hub", 17, -1))], "led_pin must be"),
    ([mp("a", btn("a1", "hub", True, 23))], "button_pin must be"),
    ([mp("a", btn("a1", "hub", "17", 23))], "button_pin must be"),
    ([mp("a", btn("a1", "wall"))], "device must be 'hub' or 'point'"),
    ([mp("a", {"id": "a1", "device": "hub", "button_pin": 17})], "lacks 'led_pin'"),
    ([mp("a", btn("a1", colour="red"))], "unknown button key"),
    ([mp("a", "not a table")], "must be a table"),
    ([{"name": "no id", "panic_buttons": []}], "without an id"),
    ([mp("a", btn(""))], "needs an id"),
])
def test_bad_pin_maps_are_refused(points: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_buttons(points)


def test_pins_that_hats_want_are_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    specs = load_buttons([mp("a", btn("a1", "hub", 2, 14, buzzer_pin=24))])
    assert len(pin_warnings(specs[0])) == 2
    assert "button_pin 2 is I2C1 SDA" in caplog.text
    assert "led_pin 14 is UART TXD" in caplog.text
    assert pin_warnings(ButtonSpec("b", "m", "hub", 17, 23)) == []


def test_raspberry_pi_detection(tmp_path: Path) -> None:
    model = tmp_path / "model"
    assert not is_raspberry_pi(model)
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    assert is_raspberry_pi(model)
    model.write_bytes(b"Generic x86 board\x00")
    assert not is_raspberry_pi(model)


def test_mock_pins_off_a_pi_or_when_asked(tmp_path: Path) -> None:
    for factory in (pin_factory_for("mock"), pin_factory_for("auto", model_path=tmp_path / "x")):
        assert isinstance(factory, MockFactory) and factory.pin_class is MockPWMPin
    assert pin_factory_for("mock") is not pin_factory_for("mock")  # fresh pins each time
    with pytest.raises(ConfigError):
        pin_factory_for("lgpio")  # type: ignore[arg-type]


def test_a_pi_without_lgpio_says_what_to_install(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi Zero 2 W Rev 1.0\x00")
    monkeypatch.setitem(sys.modules, "lgpio", None)  # import lgpio -> ImportError
    monkeypatch.delitem(sys.modules, "gpiozero.pins.lgpio", raising=False)
    with pytest.raises(BackendMissingError, match=r"python3-lgpio.*Raspberry Pi archive") as err:
        pin_factory_for("auto", model_path=model)
    assert "install.sh" in str(err.value)
