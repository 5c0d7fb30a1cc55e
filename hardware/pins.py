"""Pin map: which button and light sit on which BCM pin, and which pin factory.

``load_buttons`` reads the ``[[nodes.meeting_points]]`` /
``[[nodes.meeting_points.panic_buttons]]`` tables of a node's configuration
(``bart/demo_data/demo-neighbourhood.toml`` shows the shape);
``pin_factory_for`` picks gpiozero's real backend on a Raspberry Pi and mock
pins everywhere else.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from hardware.errors import BackendMissingError, ConfigError, PinUnavailableError

__all__ = [
    "ButtonSpec",
    "DeviceKind",
    "check_buttons",
    "is_raspberry_pi",
    "load_buttons",
    "load_node_buttons",
    "pin_factory_for",
    "pin_warnings",
]

log = logging.getLogger(__name__)

DeviceKind = Literal["hub", "point"]
_DEVICE_KINDS: tuple[str, ...] = get_args(DeviceKind)

MIN_BCM, MAX_BCM = 0, 27
"""GPIO numbers on the 40-pin header of every Raspberry Pi with one."""

_SHARED_PINS: Mapping[int, str] = {
    0: "ID_SD (HAT identification EEPROM; also used by the PoE+ HAT)",
    1: "ID_SC (HAT identification EEPROM; also used by the PoE+ HAT)",
    2: "I2C1 SDA (UPS HAT battery gauge; fixed 1.8 kΩ pull-up)",
    3: "I2C1 SCL (UPS HAT battery gauge; fixed 1.8 kΩ pull-up)",
    14: "UART TXD (serial console)",
    15: "UART RXD (serial console)",
}
"""Pins that work, but that HATs or the serial console Bart recommends may need."""

_MODEL_PATH = Path("/proc/device-tree/model")

LGPIO_MISSING = ("gpiozero's pin backend lgpio is not installed on this Raspberry Pi: "
                 "install python3-lgpio from the Raspberry Pi archive "
                 "(sudo apt install python3-lgpio) and use a virtual environment with "
                 "--system-site-packages; install.sh does this")


@dataclass(frozen=True, slots=True)
class ButtonSpec:
    """One panic button and the light beside it, as configured.

    Pins are BCM numbers on the device the button is wired to: the node's own
    header for ``device="hub"``, the point device at the meeting point for
    ``device="point"`` (buttons of one meeting point share its point device).
    """

    id: str
    meeting_point: str
    device: DeviceKind
    button_pin: int
    led_pin: int
    buzzer_pin: int | None = None
    area: str | None = None
    meeting_point_name: str | None = None

    def __post_init__(self) -> None:
        if not self.id or not self.meeting_point:
            raise ConfigError("a panic button needs an id and a meeting point")
        if self.device not in _DEVICE_KINDS:
            raise ConfigError(f"button {self.id}: device must be 'hub' or 'point', "
                              f"not {self.device!r}")
        for field, pin in self.pins.items():
            if isinstance(pin, bool) or not isinstance(pin, int) or not MIN_BCM <= pin <= MAX_BCM:
                raise ConfigError(f"button {self.id}: {field} must be a BCM number "
                                  f"{MIN_BCM}–{MAX_BCM}, not {pin!r}")
        used = list(self.pins.values())
        if len(set(used)) != len(used):
            raise ConfigError(f"button {self.id}: one pin used twice ({self.pins})")

    @property
    def pins(self) -> dict[str, int]:
        """The pins in use, by role (``button_pin``, ``led_pin``, ``buzzer_pin``)."""
        out = {"button_pin": self.button_pin, "led_pin": self.led_pin}
        if self.buzzer_pin is not None:
            out["buzzer_pin"] = self.buzzer_pin
        return out

    @property
    def device_key(self) -> tuple[str, ...]:
        """Which physical device's header the pins are on: the hub, or one point device."""
        return ("hub",) if self.device == "hub" else ("point", self.meeting_point)


def pin_warnings(spec: ButtonSpec) -> list[str]:
    """Pins of ``spec`` that a HAT or the serial console may also want."""
    return [f"button {spec.id}: {role} {pin} is {_SHARED_PINS[pin]}"
            for role, pin in spec.pins.items() if pin in _SHARED_PINS]


def load_buttons(meeting_points: Iterable[Mapping[str, Any]], *,
                 area: str | None = None) -> list[ButtonSpec]:
    """Buttons of a node's ``meeting_points`` list (as parsed from TOML).

    Each meeting point is ``{"id", "name"?, "area"?, "panic_buttons": [...]}``
    and each button ``{"id", "device", "button_pin", "led_pin", "buzzer_pin"?}``.
    The meeting point's id (and name, and area, else ``area``) go on its
    buttons. Raises ConfigError for a bad entry, a button id used twice, or a
    pin used twice on one device; logs a warning for pins HATs may need.
    """
    specs: list[ButtonSpec] = []
    for mp in meeting_points:
        mp_id = mp.get("id")
        if not isinstance(mp_id, str):
            raise ConfigError(f"meeting point without an id: {dict(mp)!r}")
        for raw in mp.get("panic_buttons", ()):
            if not isinstance(raw, Mapping):
                raise ConfigError(f"meeting point {mp_id}: a button must be a table, not {raw!r}")
            unknown = set(raw) - {"id", "device", "button_pin", "led_pin", "buzzer_pin"}
            if unknown:
                raise ConfigError(f"meeting point {mp_id}: unknown button key(s) "
                                  f"{', '.join(sorted(unknown))}")
            try:
                spec = ButtonSpec(id=raw["id"], meeting_point=mp_id, device=raw["device"],
                                  button_pin=raw["button_pin"], led_pin=raw["led_pin"],
                                  buzzer_pin=raw.get("buzzer_pin"),
                                  area=mp.get("area", area), meeting_point_name=mp.get("name"))
            except KeyError as exc:
                raise ConfigError(
                    f"meeting point {mp_id}: a button lacks {exc.args[0]!r}") from None
            specs.append(spec)
    check_buttons(specs)
    for spec in specs:
        for warning in pin_warnings(spec):
            log.warning("%s", warning)
    return specs


def load_node_buttons(node: Mapping[str, Any]) -> list[ButtonSpec]:
    """Buttons of one ``[[nodes]]`` table: its meeting points, area from ``area_code``."""
    area = node.get("area_code")
    return load_buttons(node.get("meeting_points", ()),
                        area=area if isinstance(area, str) else None)


def check_buttons(specs: Sequence[ButtonSpec]) -> None:
    """Raise ConfigError for a duplicate button id or a pin used twice on one device."""
    ids: set[str] = set()
    owners: dict[tuple[tuple[str, ...], int], str] = {}
    for spec in specs:
        if spec.id in ids:
            raise ConfigError(f"button id {spec.id} used twice")
        ids.add(spec.id)
        for role, pin in spec.pins.items():
            owner = owners.setdefault((spec.device_key, pin), f"{spec.id} {role}")
            if owner != f"{spec.id} {role}":
                where = "the node" if spec.device == "hub" else f"point {spec.meeting_point}"
                raise ConfigError(f"pin {pin} on {where} used twice: {owner} and "
                                  f"{spec.id} {role}")


def is_raspberry_pi(model_path: Path = _MODEL_PATH) -> bool:
    """True when the device tree names a Raspberry Pi."""
    try:
        return "raspberry pi" in model_path.read_bytes().decode("ascii", "replace").lower()
    except OSError:
        return False


def pin_factory_for(mode: Literal["auto", "mock"] = "auto", *,
                    model_path: Path = _MODEL_PATH) -> Any:
    """The gpiozero pin factory to pass as ``pin_factory=`` to every device.

    ``"mock"``, or ``"auto"`` off a Raspberry Pi (CI, laptops, the demo):
    a fresh ``MockFactory`` with PWM-capable mock pins (an RGB LED works too).
    ``"auto"`` on a Pi: gpiozero's lgpio factory (the only backend on a
    Pi 5); BackendMissingError with what to install when lgpio is missing.
    """
    if mode not in ("auto", "mock"):
        raise ConfigError(f"pin factory mode must be 'auto' or 'mock', not {mode!r}")
    if mode == "mock" or not is_raspberry_pi(model_path):
        from gpiozero.pins.mock import MockFactory, MockPWMPin

        if mode == "auto":
            log.info("not a Raspberry Pi: panic buttons and lights use mock pins")
        return MockFactory(pin_class=MockPWMPin)
    try:
        from gpiozero.pins.lgpio import LGPIOFactory  # imports lgpio itself
    except ImportError as exc:
        raise BackendMissingError(LGPIO_MISSING) from exc
    try:
        return LGPIOFactory()
    except Exception as exc:  # lgpio raises its own error type, or OSError
        raise PinUnavailableError(f"cannot open the GPIO chip with lgpio: {exc} "
                                  "(is the user in the 'gpio' group?)") from exc
