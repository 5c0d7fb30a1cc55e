"""A panic button on a GPIO pin: gpiozero edges fed into :class:`HoldDetector`.

The thin I/O shell around the pure detector in :mod:`hardware.hold`: a
gpiozero ``DigitalInputDevice`` with the internal pull-up (the button pulls
the line to ground: active-low), edge callbacks that feed the detector with
the injected clock, and one named daemon thread that ticks the detector while
a deadline is pending and calls the consumer's callbacks.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from gpiozero import DigitalInputDevice, GPIOZeroError

from hardware.errors import ConfigError, DeviceClosedError, PinUnavailableError
from hardware.hold import ButtonEvent, ButtonEventKind, HoldDetector

__all__ = ["ButtonCallback", "ButtonEvent", "ButtonEventKind", "HoldDetector", "PanicButton"]

log = logging.getLogger(__name__)

_MIN_WAIT_S = 0.001  # never spin, even on a clock that stands still
_PR_SET_TIMERSLACK = 29  # linux/prctl.h
#: The button's thread wakes this long before a hold completes and stays on the
#: CPU until it does: the alarm's path then starts on a CPU that is awake. One
#: core for 2 ms per hold. Measured (bench/button.py, 1,000 holds): hold
#: deadline → callback p50 0.21 → 0.10 ms, p99 0.46 → 0.22 ms.
_SPIN_BEFORE_HOLD_S = 0.002


def _precise_timers() -> None:
    """Let this thread's timed waits end on time (Linux), not up to 50 µs late.

    Linux groups timer expiries within a thread's "timer slack" (50 µs by
    default) to save wake-ups; the wait that ends a hold is the one wait on an
    alarm's path, and one wake-up per hold costs nothing. Measured once in
    bench/button.py (200 holds): hold deadline → callback p50 0.21 → 0.16 ms;
    the whole path's p99 stays within its run-to-run spread. Elsewhere (or if
    prctl is missing) this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except (OSError, AttributeError):  # no libc symbol: keep the default slack
        pass

ButtonCallback = Callable[[ButtonEvent], None]
"""Called with the event, on the button's own thread (``panic-button-<id>``)."""


class PanicButton:
    """A hold-to-alarm panic button on one BCM pin, active-low with pull-up.

    Callbacks (``on_alarm``, ``on_refresh``, ``on_fault``, ``on_fault_cleared``)
    are called one at a time, in order, on the button's daemon thread named
    ``panic-button-<button_id>`` — never on the caller's thread or on
    gpiozero's. An asyncio consumer must hand over with
    ``loop.call_soon_threadsafe(...)``; a callback that raises is logged and
    the button keeps working. A callback must not block for long: it delays
    the next event of this button.

    ``on_hold`` is called once per press, as soon as the press has settled
    (after the debounce), with the ALARM or REFRESH it will give if it lasts
    (``at`` is when): time to prepare what does not depend on the moment the
    hold completes. When that press ends without it (released before ``at``),
    ``on_hold_abandoned`` is called once with the same event — the only call
    such a release gives.

    ``tick_s`` caps how long the thread waits between checks while a deadline
    is pending; with a real clock it wakes exactly at the deadline, so it only
    matters for clocks that jump (tests). Idle, the thread sleeps until an edge.

    Example with mock pins and a clock you move by hand::

        >>> import threading
        >>> from gpiozero.pins.mock import MockFactory
        >>> from hardware import PanicButton
        >>> now = [0.0]
        >>> fired = threading.Event()
        >>> factory = MockFactory()
        >>> with PanicButton(17, button_id="klimboom-hek", pin_factory=factory,
        ...                  clock=lambda: now[0], tick_s=0.005,
        ...                  on_alarm=lambda event: fired.set()) as button:
        ...     factory.pin(17).drive_low()      # pressed: pulled to ground
        ...     now[0] = 2.0                     # held for 2 s
        ...     fired.wait(timeout=5)
        ...     factory.pin(17).drive_high()     # released
        True
    """

    def __init__(self, pin: int | str, *, button_id: str, hold_s: float = 2.0,
                 debounce_s: float = 0.05, cooldown_s: float = 60.0, stuck_s: float = 30.0,
                 pin_factory: Any = None, clock: Callable[[], float] = time.monotonic,
                 tick_s: float = 0.02,
                 on_alarm: ButtonCallback | None = None,
                 on_refresh: ButtonCallback | None = None,
                 on_fault: ButtonCallback | None = None,
                 on_fault_cleared: ButtonCallback | None = None,
                 on_hold: ButtonCallback | None = None,
                 on_hold_abandoned: ButtonCallback | None = None) -> None:
        """Claim the pin, read its level at start-up and start the thread.

        ``pin`` is a BCM number (or a gpiozero pin name). ``pin_factory=None``
        uses gpiozero's default; Bart passes :func:`hardware.pin_factory_for`.
        Raises ConfigError for bad timings, PinUnavailableError when gpiozero
        cannot claim the pin.
        """
        if not button_id:
            raise ConfigError("button_id must not be empty")
        if not 0 < tick_s <= 1.0:
            raise ConfigError(f"tick_s must be in (0, 1], not {tick_s!r}")
        self._detector = HoldDetector(hold_s=hold_s, debounce_s=debounce_s,
                                      cooldown_s=cooldown_s, stuck_s=stuck_s)
        self.button_id = button_id
        self._clock = clock
        self._tick_s = tick_s
        self._callbacks: dict[ButtonEventKind, ButtonCallback | None] = {
            ButtonEventKind.ALARM: on_alarm,
            ButtonEventKind.REFRESH: on_refresh,
            ButtonEventKind.FAULT: on_fault,
            ButtonEventKind.FAULT_CLEARED: on_fault_cleared,
        }
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pending: list[ButtonEvent] = []
        self._on_hold = on_hold
        self._on_hold_abandoned = on_hold_abandoned
        self._announced: float | None = None  # press edge of the hold last announced
        self._open_hold: ButtonEvent | None = None  # announced, neither given nor abandoned
        self._spun_for: float | None = None  # hold deadline last spun towards
        self._closed = False
        try:
            self._device = DigitalInputDevice(pin, pull_up=True, bounce_time=None,
                                              pin_factory=pin_factory)
        except GPIOZeroError as exc:
            raise PinUnavailableError(f"button {button_id}: cannot use pin {pin}: {exc}") from exc
        self.pin = pin
        with self._lock:
            # Callbacks first, level second, both under the lock: an edge in
            # between waits for the lock and is applied after start().
            self._device.when_activated = self._on_pressed
            self._device.when_deactivated = self._on_released
            self._pending += self._detector.start(bool(self._device.is_active), clock())
        if self._pending:
            log.warning("panic button %s: line active at start-up (stuck or held)", button_id)
        self._thread = threading.Thread(target=self._run, name=f"panic-button-{button_id}",
                                        daemon=True)
        self._thread.start()

    # -- public state ------------------------------------------------------

    @property
    def pressed(self) -> bool:
        """Debounced level: True while the button is held."""
        with self._lock:
            return self._detector.pressed

    @property
    def faulted(self) -> bool:
        """True between a FAULT and its FAULT_CLEARED."""
        with self._lock:
            return self._detector.faulted

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._closed

    def reset_cooldown(self) -> None:
        """End the incident (e.g. the alarm was resolved): next hold is a new ALARM."""
        with self._lock:
            if self._closed:
                raise DeviceClosedError(f"button {self.button_id} is closed")
            self._detector.reset_cooldown()

    def close(self) -> None:
        """Stop the thread and release the pin. Idempotent; safe from a callback."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
        try:
            self._device.when_activated = None
            self._device.when_deactivated = None
            self._device.close()
        except GPIOZeroError:  # closing must not fail a shutdown
            log.exception("panic button %s: error while closing its pin", self.button_id)

    def __enter__(self) -> PanicButton:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("pressed" if self._detector.pressed else "idle")
        return f"<PanicButton {self.button_id!r} pin={self.pin!r} {state}>"

    # -- gpiozero's thread -------------------------------------------------

    def _on_pressed(self) -> None:
        self._edge(True)

    def _on_released(self) -> None:
        self._edge(False)

    def _edge(self, pressed: bool) -> None:
        with self._lock:
            if self._closed:
                return
            self._pending += self._detector.update(pressed, self._clock())
        self._wake.set()

    # -- our thread ----------------------------------------------------------

    def _run(self) -> None:
        _precise_timers()
        while not self._stop.is_set():
            with self._lock:
                now = self._clock()
                self._pending += self._detector.tick(now)
                events, self._pending = self._pending, []
                deadline = self._detector.next_deadline()
                coming = self._detector.pending_hold()
                announce = coming is not None and coming.press_started != self._announced
                abandoned = self._settle_open_hold(events, coming)
                if coming is not None and announce:
                    self._announced = coming.press_started
                    self._open_hold = coming
            for event in events:
                self._dispatch(event)
            if abandoned is not None and self._on_hold_abandoned is not None:
                self._call(self._on_hold_abandoned, abandoned, "hold abandoned")
            if coming is not None and announce and self._on_hold is not None:
                self._call(self._on_hold, coming, "hold")
            if deadline is None:
                self._wake.wait()
            else:
                left = deadline - self._clock()
                if coming is not None and coming.at == deadline and left > _SPIN_BEFORE_HOLD_S:
                    left -= _SPIN_BEFORE_HOLD_S  # wake early, then spin to the deadline
                elif (coming is not None and coming.at == deadline
                      and deadline != self._spun_for):
                    self._spun_for = deadline  # once: a clock may stand still (tests)
                    if self._spin(deadline):
                        continue
                self._wake.wait(min(self._tick_s, max(_MIN_WAIT_S, left)))
            self._wake.clear()

    def _settle_open_hold(self, events: list[ButtonEvent],
                          coming: ButtonEvent | None) -> ButtonEvent | None:
        """The announced hold that ended without its ALARM/REFRESH, if one did (locked)."""
        held = self._open_hold
        if held is None:
            return None
        if any(e.press_started == held.press_started
               and e.kind in (ButtonEventKind.ALARM, ButtonEventKind.REFRESH) for e in events):
            self._open_hold = None  # given
            return None
        if coming is not None and coming.press_started == held.press_started:
            return None  # still being held
        self._open_hold = None
        return held

    def _spin(self, deadline: float) -> bool:
        """Stay on the CPU until ``deadline`` (a hold's, at most a few ms away).

        False when an edge came first or the clock did not get there in twice
        the spin time (a test's clock that stands still): then wait as usual.
        """
        give_up = time.perf_counter() + 2 * _SPIN_BEFORE_HOLD_S
        while self._clock() < deadline:
            if self._wake.is_set() or time.perf_counter() > give_up:
                return False
            time.sleep(0)  # lets other threads have the GIL
        return True

    def _dispatch(self, event: ButtonEvent) -> None:
        callback = self._callbacks[event.kind]
        if callback is not None:
            self._call(callback, event, event.kind.value)
        # Logged after the callback: a log line (formatting, a write to journald's
        # pipe that may block) must not stand between a hold and its alarm.
        log.info("panic button %s: %s", self.button_id, event.kind.value)

    def _call(self, callback: ButtonCallback, event: ButtonEvent, what: str) -> None:
        event = ButtonEvent(event.kind, event.at, event.press_started, self.button_id)
        try:
            callback(event)
        except Exception:
            log.exception("panic button %s: %s callback failed", self.button_id, what)
