"""The status light (and buzzer) beside a panic button.

The thin I/O shell around :class:`hardware.patterns.PatternPlayer`: it keeps
the current state and when it began, asks the pure player what to show on the
injected clock, and drives gpiozero ``LED`` / ``RGBLED`` / ``Buzzer`` devices
from one named daemon thread. Patterns are data: :data:`hardware.PATTERNS`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from gpiozero import LED, RGBLED, Buzzer, GPIOZeroError

from hardware.errors import ConfigError, DeviceClosedError, PinUnavailableError
from hardware.patterns import PATTERNS, LightOutput, LightState, Pattern, PatternPlayer

__all__ = ["PATTERNS", "LightState", "PatternPlayer", "StatusLight"]

log = logging.getLogger(__name__)

_MIN_WAIT_S = 0.001  # never spin, even on a clock that stands still


class StatusLight:
    """An LED (single-colour and/or RGB) and an optional buzzer showing a state.

    ``led_pin`` drives a plain LED (on/off); ``rgb_pins=(r, g, b)`` drives an
    RGB LED (PWM, a colour per state); give either or both. ``buzzer_pin``
    drives an *active* buzzer (it sounds when powered) through a transistor.
    Setting the state it already shows does nothing (no repeated beeps);
    ``resolved`` turns back into ``idle`` after ``resolved_s``.

    One daemon thread, ``status-light-<name>``, changes the pins exactly when
    the pattern says (at most ``tick_s`` apart, which only matters when the
    clock jumps, as a test's fake clock does). :meth:`refresh` applies the
    pattern for the clock's current time at once, from any thread.

    Example with mock pins and a clock you move by hand::

        >>> from gpiozero.pins.mock import MockFactory
        >>> from hardware import StatusLight
        >>> now = [0.0]
        >>> factory = MockFactory()
        >>> with StatusLight(23, name="klimboom-hek", pin_factory=factory,
        ...                  clock=lambda: now[0]) as light:
        ...     light.set_state("stored")        # 0.5 s on, 0.5 s off
        ...     now[0] = 0.75
        ...     _ = light.refresh()
        ...     light.state.value, factory.pin(23).state
        ('stored', False)
    """

    def __init__(self, led_pin: int | str | None, *, buzzer_pin: int | str | None = None,
                 rgb_pins: tuple[int | str, int | str, int | str] | None = None,
                 name: str = "light", pin_factory: Any = None,
                 clock: Callable[[], float] = time.monotonic,
                 patterns: Mapping[LightState, Pattern] = PATTERNS, resolved_s: float = 30.0,
                 initial: LightState | str = LightState.IDLE, tick_s: float = 0.25) -> None:
        """Claim the pins and start showing ``initial``.

        Raises ConfigError for a bad state, pattern set or timing, and
        PinUnavailableError when gpiozero cannot claim a pin (an RGB LED needs
        PWM-capable pins; with mock pins use ``MockFactory(pin_class=MockPWMPin)``
        as :func:`hardware.pin_factory_for` does).
        """
        if led_pin is None and rgb_pins is None:
            raise ConfigError("a status light needs led_pin, rgb_pins or both")
        if not 0 < tick_s <= 5.0:
            raise ConfigError(f"tick_s must be in (0, 5], not {tick_s!r}")
        self._player = PatternPlayer(patterns, resolved_s=resolved_s)
        self.name = name
        self._clock = clock
        self._tick_s = tick_s
        self._state = _coerce(initial)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._shown: LightOutput | None = None
        self._led: Any = None
        self._rgb: Any = None
        self._buzzer: Any = None
        try:
            if led_pin is not None:
                self._led = LED(led_pin, pin_factory=pin_factory)
            if rgb_pins is not None:
                self._rgb = RGBLED(*rgb_pins, pwm=True, pin_factory=pin_factory)
            if buzzer_pin is not None:
                self._buzzer = Buzzer(buzzer_pin, pin_factory=pin_factory)
        except GPIOZeroError as exc:
            self._close_devices()
            raise PinUnavailableError(f"status light {name}: {exc}") from exc
        self._since = clock()
        self.refresh()
        self._thread = threading.Thread(target=self._run, name=f"status-light-{name}",
                                        daemon=True)
        self._thread.start()

    @property
    def state(self) -> LightState:
        """The state shown now (``resolved`` reads as ``idle`` once it timed out)."""
        with self._lock:
            shown, _ = self._player.resolve(self._state, self._clock() - self._since)
            return shown

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._closed

    def set_state(self, state: LightState | str) -> None:
        """Show ``state`` from now on; no-op when it is already shown.

        Thread-safe; raises ConfigError for an unknown state and
        DeviceClosedError after :meth:`close`.
        """
        new = _coerce(state)
        with self._lock:
            if self._closed:
                raise DeviceClosedError(f"status light {self.name} is closed")
            now = self._clock()
            shown, _ = self._player.resolve(self._state, now - self._since)
            if shown is new:
                return
            self._state, self._since = new, now
            self._apply_locked(now)
        log.info("status light %s: %s", self.name, new.value)
        self._wake.set()

    def refresh(self) -> float | None:
        """Put the pins where the pattern says for the clock's current time.

        Returns the seconds until the next change (None: none due).
        """
        with self._lock:
            if self._closed:
                return None
            return self._apply_locked(self._clock())

    def close(self) -> None:
        """Stop the thread, switch everything off, release the pins. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
        self._close_devices()

    def __enter__(self) -> StatusLight:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<StatusLight {self.name!r} {self._state.value}{' closed' if self._closed else ''}>"

    # -- internals -----------------------------------------------------------

    def _apply_locked(self, now: float) -> float | None:
        elapsed = now - self._since
        shown, since = self._player.resolve(self._state, elapsed)
        if shown is not self._state:  # resolved timed out: idle from then on
            self._state, self._since = shown, now - since
            elapsed = since
        out = self._player.output(self._state, elapsed)
        if out != self._shown:
            try:
                if self._led is not None:
                    self._led.value = out.led
                if self._rgb is not None:
                    self._rgb.value = out.colour
                if self._buzzer is not None:
                    self._buzzer.value = out.buzzer
                self._shown = out
            except GPIOZeroError:
                log.exception("status light %s: cannot set its pins", self.name)
        return self._player.next_change(self._state, elapsed)

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = self.refresh()
            self._wake.wait(None if wait is None else min(self._tick_s, max(_MIN_WAIT_S, wait)))
            self._wake.clear()

    def _close_devices(self) -> None:
        for device in (self._led, self._rgb, self._buzzer):
            if device is None:
                continue
            try:
                device.off()
                device.close()
            except GPIOZeroError:
                log.exception("status light %s: error while closing a pin", self.name)


def _coerce(state: LightState | str) -> LightState:
    try:
        return LightState(state)
    except ValueError:
        known = ", ".join(s.value for s in LightState)
        raise ConfigError(f"unknown light state {state!r} (known: {known})") from None
