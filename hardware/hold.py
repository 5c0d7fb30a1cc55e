"""Hold-to-alarm detection for a panic button: a pure state machine.

No gpiozero and no clock in here: the caller feeds the line level and the
time (``update(pressed, now)`` on every edge, ``tick(now)`` while a deadline is
pending) and gets events back as return values. Same inputs, same events.

Rules (DESIGN.md §9, issue 3):

* **Debounce.** A level counts only once it has been stable for
  ``debounce_s``. A press starts at the last rising edge of the burst that
  settled; a release shorter than ``debounce_s`` during a hold is bounce and
  does not restart the hold.
* **ALARM** once per press, when the debounced press has lasted ``hold_s``
  (measured from its edge). Shorter presses produce nothing.
* **REFRESH** instead of ALARM when the hold completes less than
  ``cooldown_s`` after the previous ALARM or REFRESH: the window slides, so a
  person holding the button every 30 s keeps refreshing one alarm rather than
  raising a new one. :meth:`HoldDetector.reset_cooldown` ends the incident
  (the node calls it when the alarm is resolved), so the next hold is a new
  ALARM.
* **FAULT** once when the line is active at start-up (no alarm then), or when
  a press lasts longer than ``stuck_s``. A stuck-later press has already
  produced its ALARM at ``hold_s`` — at that moment nobody can tell a person
  from a jammed button — and the FAULT follows at ``stuck_s``; the alarm is
  not withdrawn. While faulted nothing else is emitted.
* **FAULT_CLEARED** when the line is released (debounced) after a FAULT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from hardware.errors import ConfigError

__all__ = ["ButtonEvent", "ButtonEventKind", "HoldDetector"]


class ButtonEventKind(StrEnum):
    """What a panic button reports."""

    ALARM = "alarm"
    REFRESH = "refresh"
    FAULT = "fault"
    FAULT_CLEARED = "fault_cleared"


@dataclass(frozen=True, slots=True)
class ButtonEvent:
    """One event from a button.

    ``at`` is the earliest time (on the caller's clock) at which the event
    was true: for ALARM/REFRESH the press edge plus ``hold_s``, for FAULT the
    press edge plus ``stuck_s`` (or the start-up time), for FAULT_CLEARED the
    release edge plus ``debounce_s``. It can be earlier than the call that
    returned it when ticks were late. ``press_started`` is the press edge
    (None for a start-up fault and for FAULT_CLEARED). ``button_id`` is
    filled in by :class:`hardware.PanicButton`.
    """

    kind: ButtonEventKind
    at: float
    press_started: float | None = None
    button_id: str = ""


def _check_timings(hold_s: float, debounce_s: float, cooldown_s: float, stuck_s: float) -> None:
    values = {"hold_s": hold_s, "debounce_s": debounce_s, "cooldown_s": cooldown_s,
              "stuck_s": stuck_s}
    for name, value in values.items():
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{name} must be a finite number >= 0, not {value!r}")
    if not debounce_s < hold_s < stuck_s:
        raise ConfigError("timings must satisfy debounce_s < hold_s < stuck_s "
                          f"(got {debounce_s}, {hold_s}, {stuck_s})")


class HoldDetector:
    """Debounce, hold-to-alarm, cool-down and stuck-line detection (pure).

    Not thread-safe: one caller at a time (``PanicButton`` holds a lock).
    Times must not go backwards; a smaller ``now`` is treated as the last one.

    >>> d = HoldDetector()
    >>> d.start(False, 0.0)
    []
    >>> d.update(True, 1.0)
    []
    >>> d.tick(2.5)
    []
    >>> [e.kind.value for e in d.tick(3.0)]
    ['alarm']
    """

    def __init__(self, *, hold_s: float = 2.0, debounce_s: float = 0.05,
                 cooldown_s: float = 60.0, stuck_s: float = 30.0) -> None:
        """Check the timings (``debounce_s < hold_s < stuck_s``); raise ConfigError."""
        _check_timings(hold_s, debounce_s, cooldown_s, stuck_s)
        self.hold_s = hold_s
        self.debounce_s = debounce_s
        self.cooldown_s = cooldown_s
        self.stuck_s = stuck_s
        self._started = False
        self._now = -math.inf
        self._raw = False  # last level fed in
        self._raw_since = 0.0  # time of the last raw change
        self._stable = False  # debounced level
        self._press_start = 0.0  # edge of the current debounced press
        self._alarm_done = False  # this press has had its ALARM/REFRESH (or may not have one)
        self._fault_done = False  # this press has had its FAULT
        self._faulted = False
        self._last_alarm: float | None = None

    # -- feeding -----------------------------------------------------------

    def start(self, pressed: bool, now: float) -> list[ButtonEvent]:
        """Begin with the line level read at start-up.

        A line already active is one FAULT (never an alarm) until released.
        Calling :meth:`update` or :meth:`tick` first starts with a released line.
        """
        self._started = True
        self._now = now
        self._raw = self._stable = pressed
        self._raw_since = self._press_start = now
        if not pressed:
            return []
        self._alarm_done = self._fault_done = self._faulted = True
        return [ButtonEvent(ButtonEventKind.FAULT, now)]

    def update(self, pressed: bool, now: float) -> list[ButtonEvent]:
        """Feed the line level at ``now`` (an edge, or a repeated level)."""
        events = self._begin(now)
        now = self._now
        events += self._advance(now)
        if pressed != self._raw:
            self._raw = pressed
            self._raw_since = now
            events += self._advance(now)  # settles at once when debounce_s == 0
        return events

    def tick(self, now: float) -> list[ButtonEvent]:
        """Let time pass to ``now``: emits what became due without an edge."""
        events = self._begin(now)
        return events + self._advance(self._now)

    def reset_cooldown(self) -> None:
        """End the current incident: the next completed hold is a new ALARM."""
        self._last_alarm = None

    # -- state -------------------------------------------------------------

    @property
    def pressed(self) -> bool:
        """The debounced level: True while a press is being held."""
        return self._stable

    @property
    def faulted(self) -> bool:
        """True between a FAULT and its FAULT_CLEARED."""
        return self._faulted

    def next_deadline(self) -> float | None:
        """When :meth:`tick` may next emit something or settle a level.

        None means nothing can happen before the next edge, so a caller may
        sleep until then.
        """
        pending = self._raw != self._stable
        if pending:
            return self._raw_since + self.debounce_s
        if not self._stable:
            return None
        deadlines = []
        if not self._alarm_done:
            deadlines.append(self._press_start + self.hold_s)
        if not self._fault_done:
            deadlines.append(self._press_start + self.stuck_s)
        return min(deadlines, default=None)

    def pending_hold(self) -> ButtonEvent | None:
        """The ALARM or REFRESH the current press will give if it lasts.

        None when no press is being held (or it has had its ALARM/REFRESH, or
        the line is faulted). ``at`` is when it will be due, ``press_started``
        the press edge. Nothing is emitted: this lets a consumer prepare
        during the hold what does not depend on the moment it completes.

        >>> d = HoldDetector(hold_s=2.0, cooldown_s=60.0)
        >>> d.update(True, 1.0), d.pending_hold()
        ([], None)
        >>> d.tick(1.05); d.pending_hold()
        []
        ButtonEvent(kind=<ButtonEventKind.ALARM: 'alarm'>, at=3.0, press_started=1.0, button_id='')
        """
        if not self._stable or self._alarm_done or self._faulted:
            return None
        hold_at = self._press_start + self.hold_s
        return ButtonEvent(self._hold_kind(hold_at), hold_at, self._press_start)

    # -- internals ---------------------------------------------------------

    def _begin(self, now: float) -> list[ButtonEvent]:
        events = [] if self._started else self.start(False, now)
        self._now = max(self._now, now)
        return events

    def _advance(self, now: float) -> list[ButtonEvent]:
        events: list[ButtonEvent] = []
        if self._stable:
            # A pending release counts from its edge: a deadline after that
            # edge waits until the release is confirmed (no alarm) or turns
            # out to be bounce (the press went on).
            end = now if self._raw else self._raw_since
            events += self._deadlines(end)
        if self._raw != self._stable and now >= self._raw_since + self.debounce_s:
            if self._raw:
                self._stable = True
                self._press_start = self._raw_since
                self._alarm_done = self._fault_done = False
                events += self._deadlines(now)
            else:
                self._stable = False
                if self._faulted:
                    self._faulted = False
                    events.append(ButtonEvent(ButtonEventKind.FAULT_CLEARED,
                                              self._raw_since + self.debounce_s))
        return events

    def _hold_kind(self, hold_at: float) -> ButtonEventKind:
        refresh = self._last_alarm is not None and hold_at - self._last_alarm < self.cooldown_s
        return ButtonEventKind.REFRESH if refresh else ButtonEventKind.ALARM

    def _deadlines(self, end: float) -> list[ButtonEvent]:
        events: list[ButtonEvent] = []
        hold_at = self._press_start + self.hold_s
        if not self._alarm_done and end >= hold_at:
            self._alarm_done = True
            kind = self._hold_kind(hold_at)
            self._last_alarm = hold_at
            events.append(ButtonEvent(kind, hold_at, self._press_start))
        stuck_at = self._press_start + self.stuck_s
        if not self._fault_done and end >= stuck_at:
            self._fault_done = self._faulted = True
            events.append(ButtonEvent(ButtonEventKind.FAULT, stuck_at, self._press_start))
        return events
