"""HoldDetector: debounce, hold-to-alarm, cool-down, stuck line — on explicit times."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardware import ButtonEvent, ButtonEventKind, ConfigError, HoldDetector

ALARM, REFRESH = ButtonEventKind.ALARM, ButtonEventKind.REFRESH
FAULT, CLEARED = ButtonEventKind.FAULT, ButtonEventKind.FAULT_CLEARED

PROPERTY = settings(derandomize=True, database=None, deadline=None, max_examples=300,
                    suppress_health_check=[HealthCheck.too_slow])


def kinds(events: list[ButtonEvent]) -> list[ButtonEventKind]:
    return [e.kind for e in events]


def run(detector: HoldDetector, timeline: list[tuple[float, bool | None]]) -> list[ButtonEvent]:
    """Feed ``(time, level)`` edges and ``(time, None)`` ticks in order; collect events."""
    events: list[ButtonEvent] = []
    for now, level in timeline:
        events += detector.tick(now) if level is None else detector.update(level, now)
    return events


def ticks(start: float, stop: float, step: float = 0.01) -> list[tuple[float, bool | None]]:
    n = round((stop - start) / step)
    return [(start + i * step, None) for i in range(n + 1)]


# -- plain presses ------------------------------------------------------------


def test_short_press_is_nothing() -> None:
    d = HoldDetector()
    assert d.start(False, 0.0) == []
    assert run(d, [(1.0, True), *ticks(1.0, 2.9), (2.9, False), *ticks(2.9, 100.0, 0.5)]) == []
    assert not d.pressed and not d.faulted


def test_hold_of_exactly_hold_s_is_one_alarm_at_the_deadline() -> None:
    d = HoldDetector()
    d.start(False, 0.0)
    assert d.update(True, 1.0) == []
    assert d.tick(2.999) == []
    assert d.next_deadline() == 3.0
    events = d.tick(3.0)
    assert events == [ButtonEvent(ALARM, 3.0, 1.0)]
    assert d.tick(10.0) == [] and d.update(False, 10.0) == [] and d.tick(20.0) == []


def test_pending_hold_tells_what_a_settled_press_will_give_and_when() -> None:
    d = HoldDetector(hold_s=2.0, debounce_s=0.05, cooldown_s=60.0)
    d.start(False, 0.0)
    assert d.pending_hold() is None
    d.update(True, 1.0)
    assert d.pending_hold() is None  # not settled: may be bounce
    d.tick(1.05)
    assert d.pending_hold() == ButtonEvent(ALARM, 3.0, 1.0)
    assert d.tick(3.0) == [ButtonEvent(ALARM, 3.0, 1.0)]
    assert d.pending_hold() is None  # had its alarm
    run(d, [(4.0, False), (4.1, None), (10.0, True), (10.05, None)])
    assert d.pending_hold() == ButtonEvent(REFRESH, 12.0, 10.0)  # inside the cool-down
    run(d, [(11.0, False), (11.1, None)])
    assert d.pending_hold() is None  # released before the deadline
    d.reset_cooldown()
    run(d, [(20.0, True), (20.05, None)])
    assert d.pending_hold() == ButtonEvent(ALARM, 22.0, 20.0)
    run(d, [(22.0, None), (50.0, None)])  # stuck: alarm, then fault
    assert d.faulted and d.pending_hold() is None
    stuck = HoldDetector()
    stuck.start(True, 0.0)
    assert stuck.pending_hold() is None  # active at start-up: a fault, never an alarm


def test_release_just_before_hold_s_is_nothing() -> None:
    d = HoldDetector()
    assert run(d, [(0.0, True), *ticks(0.0, 1.99), (1.99, False), *ticks(1.99, 5.0)]) == []


def test_hold_without_ticks_is_reported_at_release_with_its_true_time() -> None:
    d = HoldDetector()
    d.start(False, 0.0)
    d.update(True, 0.0)
    assert d.update(False, 2.5) == [ButtonEvent(ALARM, 2.0, 0.0)]


def test_one_alarm_per_press_however_long_below_stuck_s() -> None:
    d = HoldDetector()
    events = run(d, [(0.0, True), *ticks(0.0, 29.0, 0.1), (29.0, False), *ticks(29.0, 31.0)])
    assert kinds(events) == [ALARM]


def test_update_before_start_starts_released_and_idle_has_no_deadline() -> None:
    d = HoldDetector()
    assert d.next_deadline() is None
    assert d.update(False, 5.0) == [] and d.next_deadline() is None
    assert d.update(True, 6.0) == []
    assert d.next_deadline() == pytest.approx(6.05)  # debounce pending
    d.tick(6.05)
    assert d.pressed and d.next_deadline() == 8.0


def test_zero_debounce_settles_at_once() -> None:
    d = HoldDetector(debounce_s=0.0)
    d.start(False, 0.0)
    d.update(True, 0.0)
    assert d.pressed
    assert kinds(d.tick(2.0)) == [ALARM]


def test_clock_going_backwards_is_treated_as_standing_still() -> None:
    d = HoldDetector()
    d.start(False, 10.0)
    d.update(True, 10.0)
    assert d.tick(5.0) == []
    assert kinds(d.tick(12.0)) == [ALARM]


@pytest.mark.parametrize("kw", [dict(hold_s=0.0), dict(debounce_s=2.0), dict(stuck_s=1.0),
                                dict(cooldown_s=-1.0), dict(hold_s=float("nan")),
                                dict(stuck_s=float("inf"))])
def test_bad_timings_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        HoldDetector(**kw)
    with pytest.raises(ValueError):  # ConfigError is a ValueError too
        HoldDetector(**kw)


# -- bounce ---------------------------------------------------------------------


def test_bounce_at_press_counts_the_hold_from_the_last_edge() -> None:
    d = HoldDetector()
    d.start(False, 0.0)
    burst = [(0.0, True), (0.01, False), (0.02, True), (0.035, False), (0.04, True)]
    assert run(d, [*burst, *ticks(0.04, 2.03)]) == []
    assert d.tick(2.04) == [ButtonEvent(ALARM, 2.04, 0.04)]


def test_short_release_glitch_during_a_hold_does_not_restart_it() -> None:
    d = HoldDetector()
    events = run(d, [(0.0, True), *ticks(0.0, 1.0), (1.0, False), (1.03, True),
                     *ticks(1.03, 2.5)])
    assert events == [ButtonEvent(ALARM, 2.0, 0.0)]


def test_glitch_spanning_the_deadline_waits_for_the_verdict() -> None:
    # Released at 1.99 (bounce?), deadline 2.0 passes while the release is
    # unconfirmed: no alarm yet. Pressed again at 2.02: it was bounce, alarm at 2.0.
    d = HoldDetector()
    d.start(False, 0.0)
    d.update(True, 0.0)
    d.tick(1.0)
    assert d.update(False, 1.99) == []
    assert d.tick(2.01) == []
    assert d.update(True, 2.02) == [ButtonEvent(ALARM, 2.0, 0.0)]
    # Same, but the release is real: confirmed at 2.04, no alarm ever.
    d = HoldDetector()
    assert run(d, [(0.0, True), *ticks(0.0, 1.0), (1.99, False), *ticks(1.99, 10.0)]) == []


@PROPERTY
@given(gaps=st.lists(st.floats(0.0005, 0.0495), min_size=1, max_size=400),
       tick_every=st.sampled_from([None, 0.003, 0.02]))
def test_a_bounce_storm_never_alarms(gaps: list[float], tick_every: float | None) -> None:
    """Toggles closer together than debounce_s, for as long as they last: never an event."""
    d = HoldDetector(hold_s=2.0, debounce_s=0.05)
    d.start(False, 0.0)
    now, level, events = 0.0, False, []
    for gap in gaps:
        if tick_every is not None:
            t = now + tick_every
            while t < now + gap:
                events += d.tick(t)
                t += tick_every
        now += gap
        level = not level
        events += d.update(level, now)
    events += d.update(False, now + 0.001)  # storm ends released
    events += d.tick(now + 100.0)
    assert events == []
    assert not d.pressed


@st.composite
def noisy_press(draw: st.DrawFn) -> tuple[list[tuple[float, bool | None]], float, float]:
    """A real press with bounce at both ends and short glitches in the middle.

    Returns the timeline, the press edge (last rising edge of the opening
    burst) and the release edge (last falling edge of the closing burst: the
    line was active until then).
    """
    timeline: list[tuple[float, bool | None]] = []
    now, level, edge = 1.0, False, 1.0
    for gap in draw(st.lists(st.floats(0.001, 0.045), max_size=8)):  # opening burst
        level = not level
        timeline.append((now, level))
        edge, now = now, now + gap
    if not level:
        timeline.append((now, True))
        edge = now
    press_edge = edge
    length = draw(st.floats(0.2, 6.0))
    first_release = press_edge + length
    last = press_edge + 0.06  # glitches only once the press has settled
    for frac in sorted(draw(st.lists(st.floats(0.0, 1.0), max_size=5))):
        start = press_edge + 0.06 + frac * (length - 0.1)
        end = start + draw(st.floats(0.001, 0.045))
        if start > last and end < first_release - 0.001:
            timeline += [(start, False), (end, True)]
            last = end
    now, level = first_release, True
    for gap in draw(st.lists(st.floats(0.001, 0.045), max_size=8)):  # closing burst
        level = not level
        timeline.append((now, level))
        edge, now = now, now + gap
    if level:
        timeline.append((now, False))
        edge = now
    release_edge = edge
    for t in draw(st.lists(st.floats(0.0, 8.0), max_size=60)):  # ticks, anywhere
        timeline.append((t, None))
    timeline.sort(key=lambda item: (item[0], item[1] is None))
    timeline.append((release_edge + 100.0, None))
    return timeline, press_edge, release_edge


@PROPERTY
@given(case=noisy_press())
def test_a_noisy_press_alarms_once_iff_held_long_enough(
        case: tuple[list[tuple[float, bool | None]], float, float]) -> None:
    timeline, press_edge, release_edge = case
    events = run(HoldDetector(hold_s=2.0, debounce_s=0.05), timeline)
    held = release_edge - press_edge
    if held >= 2.0 + 1e-9:
        assert events == [ButtonEvent(ALARM, press_edge + 2.0, press_edge)]
    elif held <= 2.0 - 1e-9:
        assert events == []


@PROPERTY
@given(case=noisy_press())
def test_pending_hold_foretells_the_alarm_exactly(
        case: tuple[list[tuple[float, bool | None]], float, float]) -> None:
    timeline, _, _ = case
    d = HoldDetector(hold_s=2.0, debounce_s=0.05)
    foretold: ButtonEvent | None = None  # after the previous step
    settled = alarmed = False  # ... a press had settled / had its alarm
    for now, level in timeline:
        events = d.tick(now) if level is None else d.update(level, now)
        for event in events:
            if event.kind in (ALARM, REFRESH):
                if settled and not alarmed:  # a step saw the press before its deadline
                    assert event == foretold
                alarmed = True
        if not d.pressed:
            alarmed = False
        settled = d.pressed
        foretold = d.pending_hold()


@PROPERTY
@given(case=noisy_press())
def test_tick_rate_does_not_change_what_is_reported(
        case: tuple[list[tuple[float, bool | None]], float, float]) -> None:
    timeline, _, _ = case
    edges_only = [item for item in timeline if item[1] is not None] + [timeline[-1]]
    assert run(HoldDetector(), edges_only) == run(HoldDetector(), timeline)


# -- stuck lines ------------------------------------------------------------------


def test_stuck_at_start_is_one_fault_and_never_an_alarm() -> None:
    d = HoldDetector()
    assert d.start(True, 0.0) == [ButtonEvent(FAULT, 0.0)]
    assert d.faulted and d.pressed
    assert d.next_deadline() is None  # nothing to tick for while stuck
    noise = [(5.0, False), (5.01, True), (9.0, False), (9.02, True)]  # bounce while stuck
    assert run(d, [*ticks(0.0, 4.0, 0.1), *noise, *ticks(9.02, 399.02, 1.0)]) == []
    assert d.faulted
    assert d.update(False, 400.0) == []
    assert d.tick(400.06) == [ButtonEvent(CLEARED, 400.05)]
    assert not d.faulted
    # After the fault, the button works normally again.
    assert kinds(run(d, [(401.0, True), *ticks(401.0, 403.5)])) == [ALARM]


def test_stuck_later_is_alarm_at_hold_then_one_fault_at_stuck_s() -> None:
    d = HoldDetector(stuck_s=30.0)
    events = run(d, [(0.0, True), *ticks(0.0, 120.0, 0.25)])
    assert events == [ButtonEvent(ALARM, 2.0, 0.0), ButtonEvent(FAULT, 30.0, 0.0)]
    assert d.faulted
    assert run(d, [(120.0, False), *ticks(120.0, 121.0)]) == [ButtonEvent(CLEARED, 120.05)]


def test_stuck_later_without_ticks_reports_everything_in_order_at_release() -> None:
    d = HoldDetector()
    d.update(True, 0.0)
    assert d.update(False, 50.0) == [ButtonEvent(ALARM, 2.0, 0.0), ButtonEvent(FAULT, 30.0, 0.0)]
    assert d.tick(51.0) == [ButtonEvent(CLEARED, 50.05)]


def test_fault_cleared_needs_a_debounced_release() -> None:
    d = HoldDetector()
    d.start(True, 0.0)
    assert run(d, [(10.0, False), (10.02, True), *ticks(10.02, 11.0)]) == []
    assert d.faulted


# -- cool-down ----------------------------------------------------------------------


def hold(d: HoldDetector, at: float, length: float = 2.5) -> list[ButtonEventKind]:
    return kinds(run(d, [(at, True), *ticks(at, at + length, 0.05), (at + length, False),
                         *ticks(at + length, at + length + 0.2, 0.05)]))


def test_holds_within_the_cool_down_refresh_the_alarm() -> None:
    d = HoldDetector(cooldown_s=60.0)
    assert hold(d, 0.0) == [ALARM]  # alarm at 2
    assert hold(d, 20.0) == [REFRESH]  # at 22: 20 s after the alarm
    assert hold(d, 75.0) == [REFRESH]  # at 77: 55 s after the refresh (window slides)
    assert hold(d, 137.0) == [ALARM]  # at 139: 62 s after the last refresh


def test_reset_cooldown_makes_the_next_hold_a_new_alarm() -> None:
    d = HoldDetector()
    assert hold(d, 0.0) == [ALARM]
    d.reset_cooldown()  # e.g. the team resolved it
    assert hold(d, 10.0) == [ALARM]


def test_short_presses_do_not_extend_the_cool_down() -> None:
    d = HoldDetector(cooldown_s=60.0)
    assert hold(d, 0.0) == [ALARM]
    for start in range(10, 70, 10):
        assert hold(d, float(start), 1.0) == []
    assert hold(d, 70.0) == [ALARM]  # at 72: 70 s after the alarm


def test_hold_after_a_stuck_fault_within_cool_down_is_a_refresh() -> None:
    d = HoldDetector()
    assert kinds(run(d, [(0.0, True), *ticks(0.0, 40.0, 0.5), (40.0, False),
                         *ticks(40.0, 40.5)])) == [ALARM, FAULT, CLEARED]
    assert hold(d, 41.0) == [REFRESH]
