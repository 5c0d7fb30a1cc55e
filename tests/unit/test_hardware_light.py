"""Light patterns: the pure player, and StatusLight on mock pins with a fake clock."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware import (
    PATTERNS,
    ConfigError,
    DeviceClosedError,
    LightOutput,
    LightState,
    Pattern,
    PatternPlayer,
    PinUnavailableError,
    StatusLight,
)

LED_PIN, BUZZER_PIN, RGB = 23, 24, (5, 6, 13)


class FakeClock:
    def __init__(self, t: float = 50.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    yield
    names = [t.name for t in threading.enumerate() if t.name.startswith("status-light-")]
    assert names == [], f"threads left running: {names}"


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory(pin_class=MockPWMPin)
    yield f
    f.reset()


def midpoints(pattern: Pattern, cycles: int = 2) -> list[tuple[float, bool]]:
    """(time, led expected) in the middle of every on- and off-phase, over a few cycles."""
    out, t = [], 0.0
    for _ in range(cycles):
        for on, off in pattern.led:
            if on:
                out.append((t + on / 2, True))
            if off:
                out.append((t + on + off / 2, False))
            t += on + off
    return out


# -- the data -----------------------------------------------------------------


def test_every_state_has_a_distinct_pattern() -> None:
    assert set(PATTERNS) == set(LightState)
    rhythms = [p.led for p in PATTERNS.values()]
    assert len(set(rhythms)) == len(rhythms), "two states blink alike"
    colours = [p.colour for p in PATTERNS.values()]
    assert len(set(colours)) == len(colours), "two states share a colour"
    assert all(p.meaning for p in PATTERNS.values())


@pytest.mark.parametrize("state", list(LightState))
def test_no_pattern_flashes_more_than_three_times_a_second(state: LightState) -> None:
    player = PatternPlayer()
    step = 0.005
    levels = [player.output(state, i * step).led for i in range(int(12 / step))]
    rises = [i * step for i in range(1, len(levels)) if levels[i] and not levels[i - 1]]
    for i, t in enumerate(rises):
        assert len([r for r in rises[i:] if r < t + 1.0]) <= 3, f"{state} flashes too fast"


def test_bad_patterns_are_refused() -> None:
    with pytest.raises(ConfigError):
        Pattern(led=((0.5, -1.0),))
    with pytest.raises(ConfigError):
        Pattern(led=((0.0, 0.0),))
    with pytest.raises(ConfigError):
        Pattern(led=(), colour=(2.0, 0.0, 0.0))
    with pytest.raises(ConfigError, match="stored"):
        PatternPlayer({LightState.IDLE: PATTERNS[LightState.IDLE]})
    with pytest.raises(ConfigError):
        PatternPlayer(resolved_s=0.0)


# -- the pure player ------------------------------------------------------------


@pytest.mark.parametrize("state", list(LightState))
def test_player_follows_the_data(state: LightState) -> None:
    player = PatternPlayer(resolved_s=1000.0)
    for t, expected in midpoints(PATTERNS[state]):
        out = player.output(state, t)
        assert out.led is expected, (state, t)
        assert out.colour == (PATTERNS[state].colour if expected else (0.0, 0.0, 0.0))


def test_player_by_hand() -> None:
    p = PatternPlayer()
    led = lambda state, t: p.output(LightState(state), t).led  # noqa: E731
    assert [led("stored", t) for t in (0.25, 0.75, 1.25, 1.75)] == [True, False, True, False]
    assert [led("relayed", t) for t in (0.1, 0.3, 0.5, 0.7, 1.9, 2.1)] == [
        True, False, True, False, False, True]
    assert all(led("coming", t) for t in (0.0, 0.999, 1.0, 1234.5))
    assert [led("idle", t) for t in (0.05, 0.2, 4.95, 5.05)] == [True, False, False, True]
    assert [led("fault", t) for t in (0.1, 0.3, 0.5)] == [True, False, True]


def test_buzzer_plays_once_on_entering_a_state() -> None:
    p = PatternPlayer()
    buzz = [p.output(LightState.STORED, t).buzzer for t in (0.0, 0.25, 0.5, 0.75, 1.25, 60.0)]
    assert buzz == [True, True, False, False, False, False]
    coming = [p.output(LightState.COMING, t).buzzer for t in (0.1, 0.2, 0.3, 0.45, 0.55, 0.7)]
    assert coming == [True, False, True, False, True, False]
    assert not any(p.output(LightState.IDLE, t / 10).buzzer for t in range(100))
    assert not any(p.output(LightState.FAULT, t / 10).buzzer for t in range(100))


def test_resolved_becomes_idle_after_resolved_s() -> None:
    p = PatternPlayer(resolved_s=30.0)
    assert p.resolve(LightState.RESOLVED, 29.9) == (LightState.RESOLVED, 29.9)
    assert p.resolve(LightState.RESOLVED, 30.0) == (LightState.IDLE, 0.0)
    assert p.output(LightState.RESOLVED, 30.05) == p.output(LightState.IDLE, 0.05)
    assert p.next_change(LightState.RESOLVED, 29.0) == pytest.approx(1.0)
    assert p.resolve(LightState.STORED, 1e6) == (LightState.STORED, 1e6)


def test_steady_states_need_no_wake_ups() -> None:
    p = PatternPlayer()
    assert p.next_change(LightState.COMING, 0.1) == pytest.approx(0.05)  # first beep ends
    assert p.next_change(LightState.COMING, 10.0) is None


@settings(derandomize=True, database=None, deadline=None, max_examples=300)
@given(state=st.sampled_from(list(LightState)), elapsed=st.floats(0.0, 100.0),
       frac=st.floats(0.0, 0.999))
def test_output_holds_until_next_change(state: LightState, elapsed: float, frac: float) -> None:
    p = PatternPlayer(resolved_s=30.0)
    wait = p.next_change(state, elapsed)
    now = p.output(state, elapsed)
    later = elapsed + (10.0 if wait is None else wait) * frac
    if wait is None or wait * (1 - frac) > 1e-9:
        assert p.output(state, later) == now


# -- StatusLight on mock pins ----------------------------------------------------


@pytest.mark.parametrize("state", list(LightState))
def test_pins_follow_the_pattern_on_the_fake_clock(factory: MockFactory,
                                                   state: LightState) -> None:
    clock = FakeClock()
    player = PatternPlayer(resolved_s=1000.0)
    with StatusLight(LED_PIN, buzzer_pin=BUZZER_PIN, rgb_pins=RGB, name="t", clock=clock,
                     pin_factory=factory, resolved_s=1000.0) as light:
        start = clock.t = 60.0
        light.set_state(state)
        assert light.state is state
        for t, _ in [(0.0, None), *midpoints(PATTERNS[state])]:
            clock.t = start + t
            light.refresh()
            expected: LightOutput = player.output(state, clock.t - start)
            assert bool(factory.pin(LED_PIN).state) is expected.led, (state, t)
            assert bool(factory.pin(BUZZER_PIN).state) is expected.buzzer, (state, t)
            rgb = tuple(factory.pin(p).state for p in RGB)
            assert rgb == pytest.approx(expected.colour), (state, t)


def test_the_thread_drives_the_pins_without_refresh(factory: MockFactory) -> None:
    clock = FakeClock()
    pin = factory.pin(LED_PIN)
    with StatusLight(LED_PIN, name="klimboom-hek", clock=clock, pin_factory=factory,
                     tick_s=0.005, initial="stored") as light:
        assert any(t.name == "status-light-klimboom-hek" for t in threading.enumerate())
        assert light.state is LightState.STORED
        for t, expected in [(0.25, True), (0.75, False), (1.25, True)]:
            clock.t = 50.0 + t
            changed = threading.Event()
            for _ in range(1000):  # the thread looks at least every tick_s (5 ms)
                if bool(pin.state) is expected:
                    changed.set()
                    break
                changed.wait(0.005)
            assert changed.is_set(), t


def test_setting_the_shown_state_again_changes_nothing(factory: MockFactory) -> None:
    clock = FakeClock()
    with StatusLight(LED_PIN, buzzer_pin=BUZZER_PIN, clock=clock, pin_factory=factory) as light:
        light.set_state("stored")
        clock.t += 0.75
        light.refresh()
        assert not factory.pin(BUZZER_PIN).state
        light.set_state(LightState.STORED)  # a duplicate event: no second beep, no restart
        light.refresh()
        assert not factory.pin(BUZZER_PIN).state and not factory.pin(LED_PIN).state


def test_resolved_returns_to_idle(factory: MockFactory) -> None:
    clock = FakeClock()
    with StatusLight(LED_PIN, clock=clock, pin_factory=factory, resolved_s=10.0) as light:
        light.set_state("resolved")
        clock.t += 10.05
        assert light.state is LightState.IDLE
        light.refresh()
        assert factory.pin(LED_PIN).state  # idle's flash at 0.05 s
        light.set_state("idle")  # already shown: no restart
        clock.t += 0.1
        light.refresh()
        assert not factory.pin(LED_PIN).state


def test_close_switches_off_and_frees_pins(factory: MockFactory) -> None:
    clock = FakeClock()
    light = StatusLight(LED_PIN, buzzer_pin=BUZZER_PIN, clock=clock, pin_factory=factory,
                        initial=LightState.COMING)
    assert factory.pin(LED_PIN).state and factory.pin(BUZZER_PIN).state
    light.close()
    light.close()
    assert light.closed and "closed" in repr(light)
    assert not factory.pin(LED_PIN).state and not factory.pin(BUZZER_PIN).state
    assert light.refresh() is None
    with pytest.raises(DeviceClosedError):
        light.set_state("idle")
    StatusLight(LED_PIN, buzzer_pin=BUZZER_PIN, pin_factory=factory).close()


def test_clear_errors(factory: MockFactory) -> None:
    with pytest.raises(ConfigError):
        StatusLight(None, pin_factory=factory)
    with StatusLight(LED_PIN, pin_factory=factory) as light:
        with pytest.raises(ConfigError, match="not_delivered"):
            light.set_state("panic")
        with pytest.raises(PinUnavailableError):
            StatusLight(LED_PIN, pin_factory=factory)
    with pytest.raises(PinUnavailableError):  # an RGB LED needs PWM pins
        StatusLight(None, rgb_pins=RGB, pin_factory=MockFactory())
    StatusLight(None, rgb_pins=RGB, pin_factory=factory).close()  # nothing was left claimed
