"""Physical layer: panic buttons, status lights and buzzers through gpiozero.

This package is the only code in Bart that imports gpiozero (DESIGN.md §2).
Its pure cores (:class:`HoldDetector`, :class:`PatternPlayer`, :data:`PATTERNS`)
take time and levels as values; :class:`PanicButton` and :class:`StatusLight`
are thin shells that drive real or mock pins from their own named daemon
threads. Wiring, parts and the bench test: ``docs/hardware/README.md``.

Callbacks of a :class:`PanicButton` run on its own thread: hand them over to
an asyncio loop with ``loop.call_soon_threadsafe``.
"""

from typing import TYPE_CHECKING, Any

from hardware.errors import (
    BackendMissingError,
    ConfigError,
    DeviceClosedError,
    HardwareError,
    PinUnavailableError,
)
from hardware.hold import ButtonEvent, ButtonEventKind, HoldDetector
from hardware.patterns import PATTERNS, LightOutput, LightState, Pattern, PatternPlayer, Rhythm
from hardware.pins import (
    ButtonSpec,
    DeviceKind,
    check_buttons,
    is_raspberry_pi,
    load_buttons,
    load_node_buttons,
    pin_factory_for,
    pin_warnings,
)

if TYPE_CHECKING:
    from hardware.button import ButtonCallback, PanicButton
    from hardware.light import StatusLight

#: Names whose modules import gpiozero: loaded on first use, so that a node
#: without wired buttons never imports gpiozero (issue 15, memory).
_LAZY = {"ButtonCallback": "hardware.button", "PanicButton": "hardware.button",
         "StatusLight": "hardware.light"}


def __getattr__(name: str) -> Any:
    """``PanicButton``, ``StatusLight`` and ``ButtonCallback``, imported when first asked for."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

__all__ = [
    "PATTERNS",
    "BackendMissingError",
    "ButtonCallback",
    "ButtonEvent",
    "ButtonEventKind",
    "ButtonSpec",
    "ConfigError",
    "DeviceClosedError",
    "DeviceKind",
    "HardwareError",
    "HoldDetector",
    "LightOutput",
    "LightState",
    "PanicButton",
    "Pattern",
    "PatternPlayer",
    "PinUnavailableError",
    "Rhythm",
    "StatusLight",
    "check_buttons",
    "is_raspberry_pi",
    "load_buttons",
    "load_node_buttons",
    "pin_factory_for",
    "pin_warnings",
]
