"""PanicButton on gpiozero mock pins and a fake clock: the real shell, no sleeps for timing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator

import pytest
from gpiozero.pins.mock import MockFactory, MockPin

from hardware import (
    ButtonEvent,
    ButtonEventKind,
    ConfigError,
    DeviceClosedError,
    PanicButton,
    PinUnavailableError,
)

ALARM, REFRESH = ButtonEventKind.ALARM, ButtonEventKind.REFRESH
FAULT, CLEARED = ButtonEventKind.FAULT, ButtonEventKind.FAULT_CLEARED
PIN = 17
QUIET_S = 0.1  # real time for "nothing happens": 20 ticks of the button's thread


class FakeClock:
    """A clock that moves only when the test says so."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


class Recorder:
    """Collects callback events and the thread each one arrived on."""

    def __init__(self) -> None:
        self.events: list[ButtonEvent] = []
        self.threads: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, event: ButtonEvent) -> None:
        with self._cond:
            self.events.append(event)
            self.threads.append(threading.current_thread().name)
            self._cond.notify_all()

    def kinds(self) -> list[ButtonEventKind]:
        with self._cond:
            return [e.kind for e in self.events]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ButtonEventKind]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.events) >= count, timeout), (
                f"expected {count} event(s), got {self.events}")
        return self.kinds()

    def quiet(self, seconds: float = QUIET_S) -> list[ButtonEventKind]:
        """Wait a little real time and return what arrived (for 'nothing happens')."""
        with self._cond:
            self._cond.wait(seconds)
        return self.kinds()


class StuckLowPin(MockPin):
    """A mock pin whose line stays low when the pull-up is switched on (a jammed button)."""

    def _set_pull(self, value: str) -> None:
        self._pull = value


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    yield
    names = [t.name for t in threading.enumerate() if t.name.startswith("panic-button-")]
    assert names == [], f"threads left running: {names}"


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.reset()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def make(factory: MockFactory, clock: FakeClock, rec: Recorder) -> Iterator[
        Callable[..., PanicButton]]:
    made: list[PanicButton] = []

    def _make(**kw: object) -> PanicButton:
        args: dict[str, object] = dict(button_id="klimboom-hek", pin_factory=factory,
                                       clock=clock, tick_s=0.005, on_alarm=rec, on_refresh=rec,
                                       on_fault=rec, on_fault_cleared=rec)
        args.update(kw)
        button = PanicButton(args.pop("pin", PIN), **args)  # type: ignore[arg-type]
        made.append(button)
        return button

    yield _make
    for button in made:
        button.close()


def press(factory: MockFactory) -> None:
    factory.pin(PIN).drive_low()  # the button pulls the line to ground


def release(factory: MockFactory) -> None:
    factory.pin(PIN).drive_high()


def test_hold_of_two_seconds_raises_one_alarm_on_the_buttons_thread(
        make: Callable[..., PanicButton], factory: MockFactory, clock: FakeClock,
        rec: Recorder) -> None:
    button = make()
    assert not button.pressed
    press(factory)
    clock.advance(1.75)  # binary-exact steps: the deadline is met exactly
    assert rec.quiet() == []
    assert button.pressed
    clock.advance(0.25)
    assert rec.wait_for(1) == [ALARM]
    event = rec.events[0]
    assert event.button_id == "klimboom-hek"
    assert event.at == pytest.approx(102.0) and event.press_started == pytest.approx(100.0)
    assert rec.threads == ["panic-button-klimboom-hek"]
    clock.advance(5.0)
    release(factory)
    clock.advance(1.0)
    assert rec.quiet() == [ALARM]  # one alarm per press


def test_on_hold_announces_the_coming_alarm_once_per_settled_press(
        make: Callable[..., PanicButton], factory: MockFactory, clock: FakeClock,
        rec: Recorder) -> None:
    holds = Recorder()
    make(on_hold=holds)
    press(factory)
    assert holds.quiet() == []  # not settled: could be bounce
    clock.advance(0.25)
    assert holds.wait_for(1) == [ALARM] and rec.kinds() == []
    hold = holds.events[0]
    assert hold.at == pytest.approx(102.0) and hold.press_started == pytest.approx(100.0)
    assert hold.button_id == "klimboom-hek"
    assert holds.threads == ["panic-button-klimboom-hek"]
    clock.advance(0.5)
    assert holds.quiet() == [ALARM]  # once per press
    clock.advance(1.25)
    assert rec.wait_for(1) == [ALARM] and rec.events[0].at == hold.at
    release(factory)
    clock.advance(1.0)
    press(factory)  # within the cool-down: the hold will refresh
    clock.advance(0.25)
    assert holds.wait_for(2) == [ALARM, REFRESH]
    release(factory)  # released early: announced, but nothing follows
    clock.advance(10.0)
    assert rec.quiet() == [ALARM] and holds.kinds() == [ALARM, REFRESH]


def test_on_hold_abandoned_once_for_a_press_released_before_its_hold(
        make: Callable[..., PanicButton], factory: MockFactory, clock: FakeClock,
        rec: Recorder) -> None:
    holds, abandoned = Recorder(), Recorder()
    make(on_hold=holds, on_hold_abandoned=abandoned)
    press(factory)
    clock.advance(0.25)
    assert holds.wait_for(1) == [ALARM]
    release(factory)  # bounce: shorter than the debounce, the hold goes on
    press(factory)
    clock.advance(0.5)
    assert abandoned.quiet() == []
    release(factory)  # a real release, 0.75 s into a 2 s hold
    clock.advance(0.25)
    assert abandoned.wait_for(1) == [ALARM]
    assert abandoned.events[0].at == holds.events[0].at
    assert abandoned.threads == ["panic-button-klimboom-hek"]
    clock.advance(5.0)
    assert abandoned.quiet() == [ALARM] and rec.kinds() == []  # once, and no alarm
    # A press that completes its hold is never abandoned, also when released after.
    press(factory)
    clock.advance(0.25)
    assert holds.wait_for(2) == [ALARM, ALARM]
    clock.advance(2.0)
    assert rec.wait_for(1) == [ALARM]
    release(factory)
    clock.advance(1.0)
    assert abandoned.quiet() == [ALARM]


def test_with_a_real_clock_the_alarm_comes_at_its_deadline_never_before(
        factory: MockFactory) -> None:
    # The thread wakes early and spins the last ms before a hold completes.
    import time

    seen: list[tuple[float, ButtonEvent]] = []
    done = threading.Event()

    def alarm(event: ButtonEvent) -> None:
        seen.append((time.monotonic(), event))
        done.set()

    with PanicButton(PIN, button_id="klimboom-hek", pin_factory=factory, hold_s=0.1,
                     debounce_s=0.01, cooldown_s=0.0, on_alarm=alarm):
        for _ in range(5):
            done.clear()
            press(factory)
            assert done.wait(5)
            release(factory)
            time.sleep(0.05)
    assert len(seen) == 5
    for called, event in seen:
        assert event.kind is ALARM and event.press_started is not None
        assert event.at == pytest.approx(event.press_started + 0.1)
        assert event.at <= called < event.at + 0.5


def test_the_spin_before_a_deadline_is_once_and_short_on_a_clock_that_stands_still(
        make: Callable[..., PanicButton], factory: MockFactory, clock: FakeClock,
        rec: Recorder) -> None:
    calls = [0]

    def counting() -> float:
        calls[0] += 1
        return clock()

    make(clock=counting)
    press(factory)
    clock.advance(1.999)  # settled; parked 1 ms before the deadline, for good
    rec.quiet(0.05)
    calls[0] = 0
    assert rec.quiet(0.3) == []
    # One spin (≤ 4 ms), then waits of 1 ms with a few reads each: ~500 reads
    # in 0.3 s here. A spin before every wait read it ~7,000 times.
    assert calls[0] < 2_000, calls[0]
    clock.advance(0.001)
    assert rec.wait_for(1) == [ALARM]


def test_short_press_raises_nothing(make: Callable[..., PanicButton], factory: MockFactory,
                                    clock: FakeClock, rec: Recorder) -> None:
    make()
    press(factory)
    clock.advance(1.5)
    release(factory)
    clock.advance(10.0)
    assert rec.quiet() == []


def test_bounce_on_mock_pins_restarts_nothing_but_the_press_edge(
        make: Callable[..., PanicButton], factory: MockFactory, clock: FakeClock,
        rec: Recorder) -> None:
    make()
    step = 1 / 128  # ~8 ms contact bounce, binary-exact
    for _ in range(40):
        press(factory)
        clock.advance(step)
        release(factory)
        clock.advance(step)
    assert rec.quiet() == []
    press(factory)  # now a real hold, from t = 100.625
    clock.advance(1.0)
    release(factory)  # 16 ms glitch mid-hold
    clock.advance(2 * step)
    press(factory)
    clock.advance(1.0 - 2 * step)
    assert rec.wait_for(1) == [ALARM]
    assert rec.events[0].press_started == 100.625
    assert rec.events[0].at == 102.625


def test_stuck_at_start_is_one_fault_then_cleared_on_release(
        make: Callable[..., PanicButton], factory: MockFactory, clock: FakeClock,
        rec: Recorder) -> None:
    factory.pin(PIN, pin_class=StuckLowPin)
    button = make()
    assert rec.wait_for(1) == [FAULT]
    assert button.faulted
    clock.advance(120.0)
    assert rec.quiet() == [FAULT]  # no alarm, no second fault
    release(factory)
    clock.advance(0.05)
    assert rec.wait_for(2) == [FAULT, CLEARED]
    assert not button.faulted


def test_stuck_later_is_alarm_then_one_fault(make: Callable[..., PanicButton],
                                             factory: MockFactory, clock: FakeClock,
                                             rec: Recorder) -> None:
    make(stuck_s=10.0)
    press(factory)
    clock.advance(2.0)
    assert rec.wait_for(1) == [ALARM]
    clock.advance(8.0)
    assert rec.wait_for(2) == [ALARM, FAULT]
    clock.advance(100.0)
    assert rec.quiet() == [ALARM, FAULT]
    release(factory)
    clock.advance(0.05)
    assert rec.wait_for(3) == [ALARM, FAULT, CLEARED]


def test_second_hold_in_cool_down_refreshes_and_reset_makes_a_new_alarm(
        make: Callable[..., PanicButton], factory: MockFactory, clock: FakeClock,
        rec: Recorder) -> None:
    button = make(cooldown_s=60.0)

    def hold(count: int) -> list[ButtonEventKind]:
        press(factory)
        clock.advance(2.0)
        kinds = rec.wait_for(count)
        release(factory)
        clock.advance(1.0)
        return kinds

    assert hold(1) == [ALARM]
    clock.advance(10.0)
    assert hold(2) == [ALARM, REFRESH]
    button.reset_cooldown()
    assert hold(3) == [ALARM, REFRESH, ALARM]


def test_a_failing_callback_is_logged_and_the_button_keeps_working(
        make: Callable[..., PanicButton], factory: MockFactory, clock: FakeClock,
        rec: Recorder, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[ButtonEvent] = []
    second = threading.Event()

    def bad(event: ButtonEvent) -> None:
        calls.append(event)
        if len(calls) == 2:
            second.set()
        raise RuntimeError("consumer bug")

    make(on_alarm=bad, cooldown_s=0.0)
    press(factory)
    clock.advance(2.0)
    release(factory)
    clock.advance(1.0)
    press(factory)
    clock.advance(2.0)
    assert second.wait(5)
    assert "alarm callback failed" in caplog.text


def test_callbacks_reach_asyncio_through_call_soon_threadsafe(
        make: Callable[..., PanicButton], factory: MockFactory, clock: FakeClock) -> None:
    async def main() -> ButtonEvent:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[ButtonEvent] = asyncio.Queue()
        make(on_alarm=lambda event: loop.call_soon_threadsafe(queue.put_nowait, event))
        press(factory)
        clock.advance(2.0)
        return await asyncio.wait_for(queue.get(), timeout=5)

    assert asyncio.run(main()).kind is ALARM


def test_close_is_idempotent_stops_the_thread_and_frees_the_pin(
        factory: MockFactory, clock: FakeClock, rec: Recorder) -> None:
    with PanicButton(PIN, button_id="b1", pin_factory=factory, clock=clock,
                     on_alarm=rec) as button:
        assert any(t.name == "panic-button-b1" for t in threading.enumerate())
        assert "b1" in repr(button)
    assert button.closed
    button.close()
    press(factory)  # edges after close are ignored
    clock.advance(5.0)
    assert rec.quiet() == []
    with pytest.raises(DeviceClosedError):
        button.reset_cooldown()
    PanicButton(PIN, button_id="b2", pin_factory=factory, clock=clock).close()  # pin is free


def test_close_from_inside_a_callback(make: Callable[..., PanicButton], factory: MockFactory,
                                      clock: FakeClock) -> None:
    done = threading.Event()
    holder: list[PanicButton] = []

    def on_alarm(event: ButtonEvent) -> None:
        holder[0].close()
        done.set()

    holder.append(make(on_alarm=on_alarm))
    press(factory)
    clock.advance(2.0)
    assert done.wait(5)
    assert holder[0].closed
    for thread in threading.enumerate():
        if thread.name == "panic-button-klimboom-hek":
            thread.join(5)


def test_a_pin_in_use_and_bad_settings_are_clear_errors(make: Callable[..., PanicButton],
                                                        factory: MockFactory) -> None:
    make()
    with pytest.raises(PinUnavailableError, match=r"klimboom-2.*pin 17"):
        PanicButton(PIN, button_id="klimboom-2", pin_factory=factory)
    with pytest.raises(ConfigError):
        PanicButton(18, button_id="x", pin_factory=factory, hold_s=0.01, debounce_s=0.05)
    with pytest.raises(ConfigError):
        PanicButton(18, button_id="", pin_factory=factory)
    with pytest.raises(ConfigError):
        PanicButton(18, button_id="x", pin_factory=factory, tick_s=0.0)
    PanicButton(18, button_id="x", pin_factory=factory).close()  # refused ones left pin 18 free
