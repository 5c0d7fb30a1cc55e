"""The hardware package on real GPIO pins (Raspberry Pi only; see README.md here).

Run on a Pi with ``pytest -m hardware tests/pi -v``. The default test run
excludes the ``hardware`` marker; off a Pi every test skips.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from hardware import (
    ButtonEvent,
    ButtonEventKind,
    LightState,
    PanicButton,
    PatternPlayer,
    StatusLight,
    is_raspberry_pi,
    pin_factory_for,
)

pytestmark = [
    pytest.mark.hardware,
    pytest.mark.skipif(not is_raspberry_pi(), reason="needs a Raspberry Pi with real GPIO pins"),
]

BUTTON = int(os.environ.get("BART_TEST_BUTTON_PIN", "17"))
LED = int(os.environ.get("BART_TEST_LED_PIN", "23"))
DRIVE = int(os.environ.get("BART_TEST_DRIVE_PIN", "24"))
BUZZER = int(os.environ["BART_TEST_BUZZER_PIN"]) if os.environ.get("BART_TEST_BUZZER_PIN") else None
WATCH_S = float(os.environ.get("BART_TEST_WATCH_S", "1.5"))
INTERACTIVE = os.environ.get("BART_TEST_INTERACTIVE") == "1"


class Events:
    """Callback target that records events and lets the test wait for them."""

    def __init__(self) -> None:
        self.items: list[tuple[ButtonEvent, float]] = []
        self.cond = threading.Condition()

    def __call__(self, event: ButtonEvent) -> None:
        with self.cond:
            self.items.append((event, time.monotonic()))
            self.cond.notify_all()

    def wait(self, count: int, timeout: float) -> list[ButtonEventKind]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.items) >= count, timeout)
            return [event.kind for event, _ in self.items]


@pytest.fixture(scope="module")
def factory() -> Iterator[Any]:
    f = pin_factory_for("auto")
    yield f
    f.close()


@pytest.fixture
def drive(factory: Any) -> Iterator[Any]:
    from gpiozero import DigitalOutputDevice

    out = DigitalOutputDevice(DRIVE, initial_value=True, pin_factory=factory)
    yield out
    out.close()


def button(factory: Any, events: Events, **kw: Any) -> PanicButton:
    args: dict[str, Any] = dict(hold_s=0.5, debounce_s=0.02, stuck_s=3.0, cooldown_s=0.0)
    args.update(kw)
    return PanicButton(BUTTON, button_id="bench", pin_factory=factory, on_alarm=events,
                       on_refresh=events, on_fault=events, on_fault_cleared=events, **args)


def require_loopback(b: PanicButton, drive: Any) -> None:
    drive.off()
    deadline = time.monotonic() + 0.5
    while not b.pressed and time.monotonic() < deadline:
        time.sleep(0.01)
    drive.on()
    if not b.pressed:
        pytest.skip(f"no loopback: wire 1 kΩ from GPIO{DRIVE} to GPIO{BUTTON} (tests/pi/README.md)")
    time.sleep(0.1)


def test_the_backend_is_lgpio(factory: Any) -> None:
    assert type(factory).__name__ == "LGPIOFactory"


def test_a_hold_on_real_pins_raises_one_alarm_on_time(factory: Any, drive: Any) -> None:
    events = Events()
    with button(factory, events) as b:
        require_loopback(b, drive)
        events.items.clear()
        drive.off()
        assert events.wait(1, timeout=3.0) == [ButtonEventKind.ALARM]
        event, seen = events.items[0]
        assert event.at - event.press_started == pytest.approx(0.5)  # type: ignore[operator]
        assert seen - event.at < 0.1, "alarm callback came late"
        drive.on()
        time.sleep(0.3)
        assert [e.kind for e, _ in events.items] == [ButtonEventKind.ALARM]


def test_short_presses_and_bounce_raise_nothing(factory: Any, drive: Any) -> None:
    events = Events()
    with button(factory, events) as b:
        require_loopback(b, drive)
        events.items.clear()
        drive.off()
        time.sleep(0.3)
        drive.on()
        for _ in range(100):  # a 5 ms bounce storm, longer than hold_s
            drive.toggle()
            time.sleep(0.005)
        drive.on()
        assert events.wait(1, timeout=1.0) == []


def test_a_line_low_at_start_is_one_fault(factory: Any, drive: Any) -> None:
    events = Events()
    drive.off()
    with button(factory, events) as b:
        if not b.pressed:
            pytest.skip(f"no loopback: wire 1 kΩ from GPIO{DRIVE} to GPIO{BUTTON}")
        time.sleep(1.0)
        assert events.wait(1, timeout=1.0) == [ButtonEventKind.FAULT]
        drive.on()
        assert events.wait(2, timeout=1.0) == [ButtonEventKind.FAULT,
                                               ButtonEventKind.FAULT_CLEARED]


def test_the_light_shows_every_pattern(factory: Any, capsys: pytest.CaptureFixture[str]) -> None:
    player = PatternPlayer()
    with StatusLight(LED, buzzer_pin=BUZZER, name="bench", pin_factory=factory) as light:
        led_pin = factory.pin(LED)
        light.set_state(LightState.FAULT)  # so that the first state (idle) starts afresh
        for state in LightState:
            with capsys.disabled():
                print(f"\n  light: {state.value} for {WATCH_S} s")
            start = time.monotonic()
            light.set_state(state)
            while time.monotonic() - start < WATCH_S:
                light.refresh()
                elapsed = time.monotonic() - start
                # The output pin reads back what the pure player says, except
                # within a few milliseconds of a phase edge.
                if not _near_edge(player, state, elapsed):
                    assert bool(led_pin.state) is player.output(state, elapsed).led, (
                        state, elapsed)
                time.sleep(0.02)


def _near_edge(player: PatternPlayer, state: LightState, elapsed: float) -> bool:
    wait = player.next_change(state, elapsed)
    since = player.next_change(state, max(0.0, elapsed - 0.01))
    return (wait is not None and wait < 0.01) or (since is not None and since < 0.01)


@pytest.mark.skipif(not INTERACTIVE, reason="set BART_TEST_INTERACTIVE=1 and run with -s")
def test_hold_the_real_button(factory: Any, capsys: pytest.CaptureFixture[str]) -> None:
    events = Events()
    with PanicButton(BUTTON, button_id="bench", pin_factory=factory, on_alarm=events,
                     on_refresh=events) as _:
        with capsys.disabled():
            print("\n  Hold the panic button for 2 seconds (30 s to do it) ...")
        assert events.wait(1, timeout=30.0) == [ButtonEventKind.ALARM]
