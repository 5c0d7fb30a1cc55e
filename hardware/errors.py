"""Exceptions of the hardware layer: one root, specific subclasses."""

from __future__ import annotations

__all__ = [
    "BackendMissingError",
    "ConfigError",
    "DeviceClosedError",
    "HardwareError",
    "PinUnavailableError",
]


class HardwareError(Exception):
    """Root of every error raised by the ``hardware`` package."""


class ConfigError(HardwareError, ValueError):
    """A timing, pin number, pin map or light state is invalid."""


class PinUnavailableError(HardwareError):
    """gpiozero could not claim a pin (in use, not a GPIO, no pull-up, no PWM)."""


class BackendMissingError(HardwareError):
    """On a Raspberry Pi, but gpiozero's pin backend (lgpio) is not installed."""


class DeviceClosedError(HardwareError):
    """The button or light was used after ``close()``."""
