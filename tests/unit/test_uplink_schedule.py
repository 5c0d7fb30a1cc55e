"""The uplink's schedule (node/uplink.py) and the node's clock (node/clock.py), pure,
with injected clocks (issue 17): no wall-clock jump puts an attempt further away
than the poll interval; stamps never go back, never before 2024; a wrong wall
clock is a finding.
"""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from node.clock import TOLERANCE_MS, NodeClock
from node.uplink import UplinkSchedule, backoff_s
from sync.event import MIN_TS

DAY_S = 86_400.0
NOW_MS = 1_796_000_000_000  # 2026-12


def schedule() -> UplinkSchedule:
    return UplinkSchedule(batch_max=100, max_age_s=2.0)


def test_first_attempt_is_at_once_then_every_poll() -> None:
    sched = schedule()
    assert sched.wait_s(500.0, waiting=0, stamped_age_s=0.0, urgent=False, poll_s=30.0) == 0.0
    sched.sent(500.0, backlog_left=0)
    assert sched.wait_s(510.0, waiting=0, stamped_age_s=0.0, urgent=False, poll_s=30.0) == 20.0
    assert sched.wait_s(530.0, waiting=0, stamped_age_s=0.0, urgent=False, poll_s=30.0) == 0.0


def test_events_from_a_clock_three_days_back_wait_max_age_not_three_days() -> None:
    """The case of the issue: the wall clock jumped back 3 days after the last poll.
    The events written since carry stamps 3 days "younger" than the last exchange."""
    sched = schedule()
    sched.sent(1_000.0, backlog_left=0)
    # nothing waits: the next poll is the poll interval away, whatever the wall clock says
    wait = sched.wait_s(1_001.0, waiting=0, stamped_age_s=-3 * DAY_S, urgent=False,
                        poll_s=30.0)
    assert wait == 29.0
    # a report stamped by the jumped clock: sent after max_age on the monotonic clock
    wait = sched.wait_s(1_002.0, waiting=1, stamped_age_s=-3 * DAY_S, urgent=False,
                        poll_s=30.0)
    assert wait == 2.0
    assert sched.wait_s(1_004.0, waiting=1, stamped_age_s=-3 * DAY_S, urgent=False,
                        poll_s=30.0) == 0.0


def test_old_stamps_after_a_restart_go_at_once_full_and_urgent_batches_too() -> None:
    sched = schedule()
    sched.sent(0.0, 0)
    assert sched.wait_s(1.0, waiting=5, stamped_age_s=3_600.0, urgent=False,
                        poll_s=30.0) == 0.0
    sched = schedule()
    sched.sent(0.0, 0)
    assert sched.wait_s(0.1, waiting=100, stamped_age_s=0.0, urgent=False, poll_s=30.0) == 0.0
    assert sched.wait_s(0.1, waiting=1, stamped_age_s=0.0, urgent=True, poll_s=30.0) == 0.0


@given(st.floats(-10 * DAY_S, 10 * DAY_S), st.integers(0, 1_000),
       st.floats(0.0, 10_000.0), st.floats(1.0, 3_600.0), st.booleans())
def test_no_stamp_puts_an_attempt_beyond_the_poll_interval(
        stamped_age_s: float, waiting: int, elapsed: float, poll_s: float,
        urgent: bool) -> None:
    sched = schedule()
    sched.sent(100.0, 0)
    wait = sched.wait_s(100.0 + elapsed, waiting=waiting, stamped_age_s=stamped_age_s,
                        urgent=urgent, poll_s=poll_s)
    assert 0.0 <= wait <= poll_s
    if waiting:
        assert wait <= sched.max_age_s


def test_prune_at_first_success_then_hourly() -> None:
    sched = schedule()
    assert sched.prune_due(10.0)
    assert not sched.prune_due(10.0 + 3_599.0)
    assert sched.prune_due(10.0 + 3_600.0)


def test_backoff_grows_with_full_jitter_up_to_its_cap() -> None:
    rng = random.Random(17)
    for failures in range(1, 30):
        value = backoff_s(failures, 300.0, rng.uniform)
        assert 1.0 <= value <= min(300.0, 2.0 ** failures)


# -- the node's clock ---------------------------------------------------------------


class Clocks:
    """An adjustable wall clock (ms) and monotonic clock (s)."""

    def __init__(self, wall_ms: int) -> None:
        self.wall = wall_ms
        self.mono = 50.0

    def advance(self, seconds: float) -> None:
        self.wall += int(seconds * 1000)
        self.mono += seconds

    def node_clock(self) -> NodeClock:
        return NodeClock(wall_ms=lambda: self.wall, mono=lambda: self.mono)


def test_a_right_clock_is_used_as_it_is() -> None:
    clocks = Clocks(NOW_MS)
    clock = clocks.node_clock()
    clock.observe_floor(NOW_MS - 5_000)
    assert clock.now_ms() == NOW_MS
    assert clock.finding() is None
    assert clock.health()["ok"] is True and clock.health()["source"] == "wall"


def test_a_clock_in_2023_stamps_from_the_newest_stored_event_on() -> None:
    clocks = Clocks(1_685_620_800_000)  # 2023-06-01: a Pi without RTC and NTP
    clock = clocks.node_clock()
    clock.observe_floor(NOW_MS)
    first = clock.now_ms()
    clocks.advance(10.0)
    second = clock.now_ms()
    assert first >= NOW_MS and second == first + 10_000  # time goes on, from the floor
    finding = clock.finding()
    assert finding is not None and "2023-06-01" in finding and "before 2024" in finding
    assert clock.health()["source"] == "floor"


def test_without_any_event_the_stamps_start_in_2024_never_before() -> None:
    clocks = Clocks(1_000_000_000_000)  # 2001
    clock = clocks.node_clock()
    assert clock.now_ms() >= MIN_TS


def test_central_s_signed_time_wins_over_a_wall_clock_three_days_back() -> None:
    clocks = Clocks(NOW_MS)
    clock = clocks.node_clock()
    assert clock.observe_central(NOW_MS)
    clocks.wall -= int(3 * DAY_S * 1000)  # the wall clock jumps back
    clocks.advance(1.0)
    assert clock.now_ms() == NOW_MS + 1_000
    finding = clock.finding()
    assert finding is not None and "3 days behind" in finding


def test_stamps_never_go_back() -> None:
    clocks = Clocks(NOW_MS + int(3 * DAY_S * 1000))  # ran 3 days ahead…
    clock = clocks.node_clock()
    ahead = clock.now_ms()
    clocks.wall = NOW_MS  # …and NTP corrected it
    for _ in range(3):
        clocks.advance(1.0)
        assert clock.now_ms() >= ahead


def test_a_replayed_old_answer_of_central_is_not_taken_as_the_time() -> None:
    clocks = Clocks(NOW_MS)
    clock = clocks.node_clock()
    clock.observe_floor(NOW_MS)
    assert not clock.observe_central(NOW_MS - TOLERANCE_MS - 60_000)
    assert clock.now_ms() == NOW_MS
