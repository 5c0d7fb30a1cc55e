"""Status-light patterns as data, and a pure player that reads them.

Every state a button's light can show has one :class:`Pattern` in
:data:`PATTERNS`: an LED rhythm that repeats, an optional buzzer rhythm played
once on entering the state, and a colour for an RGB LED. The rhythms alone
tell the states apart (a single-colour LED, colour-blind people); the colour
is extra. No pattern flashes more than three times in any second (WCAG 2.3.1,
photosensitive epilepsy). ``docs/hardware/README.md`` carries the same table;
a unit test keeps the two equal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from hardware.errors import ConfigError

__all__ = ["PATTERNS", "LightOutput", "LightState", "Pattern", "PatternPlayer", "Rhythm"]

Rhythm = tuple[tuple[float, float], ...]
"""Steps of ``(on_s, off_s)``. ``()`` is always off; ``((1.0, 0.0),)`` is steady on."""

Colour = tuple[float, float, float]


class LightState(StrEnum):
    """What the light beside a panic button says."""

    IDLE = "idle"
    STORED = "stored"
    RELAYED = "relayed"
    COMING = "coming"
    RESOLVED = "resolved"
    FAULT = "fault"
    NOT_DELIVERED = "not_delivered"


def _check_rhythm(name: str, rhythm: Rhythm) -> None:
    for step in rhythm:
        if len(step) != 2 or not all(math.isfinite(v) and v >= 0 for v in step):
            raise ConfigError(f"{name}: each step is (on_s, off_s) >= 0, not {step!r}")
    if rhythm and sum(on + off for on, off in rhythm) <= 0:
        raise ConfigError(f"{name}: a rhythm must last longer than 0 s")


def _describe(rhythm: Rhythm, *, repeats: bool) -> str:
    if not rhythm or all(on == 0 for on, _ in rhythm):
        return "off" if repeats else "—"
    if repeats and all(off == 0 for _, off in rhythm):
        return "steady on"
    parts = [f"on {on:g} s, off {off:g} s" if off else f"on {on:g} s" for on, off in rhythm]
    return "; ".join(parts) + (", repeated" if repeats else ", once")


@dataclass(frozen=True, slots=True)
class Pattern:
    """How one state looks and sounds."""

    led: Rhythm
    """LED rhythm, repeated for as long as the state lasts."""
    buzzer: Rhythm = ()
    """Buzzer rhythm, played once when the state is entered."""
    colour: Colour = (1.0, 1.0, 1.0)
    """RGB colour (0–1 per channel) shown during the LED's on-phases."""
    meaning: str = ""
    """One line for the docs and the demo page."""

    def __post_init__(self) -> None:
        _check_rhythm("led", self.led)
        _check_rhythm("buzzer", self.buzzer)
        if len(self.colour) != 3 or not all(0.0 <= c <= 1.0 for c in self.colour):
            raise ConfigError(f"colour must be three values in 0..1, not {self.colour!r}")

    def describe_led(self) -> str:
        """The LED rhythm in words, as the docs table shows it."""
        return _describe(self.led, repeats=True)

    def describe_buzzer(self) -> str:
        """The buzzer rhythm in words, as the docs table shows it."""
        return _describe(self.buzzer, repeats=False)


PATTERNS: Mapping[LightState, Pattern] = MappingProxyType({
    LightState.IDLE: Pattern(
        led=((0.1, 4.9),), colour=(0.3, 0.3, 0.3),
        meaning="working and waiting: a short flash every 5 s shows the button is alive"),
    LightState.STORED: Pattern(
        led=((0.5, 0.5),), buzzer=((0.5, 0.0),), colour=(1.0, 0.5, 0.0),
        meaning="the alarm is stored on the node (or on the point device's outbox)"),
    LightState.RELAYED: Pattern(
        led=((0.2, 0.2), (0.2, 1.4)), buzzer=((0.1, 0.1), (0.1, 0.0)), colour=(0.0, 0.3, 1.0),
        meaning="the alarm has been passed on to another node or to central"),
    LightState.COMING: Pattern(
        led=((1.0, 0.0),), buzzer=((0.15, 0.1), (0.15, 0.1), (0.15, 0.0)),
        colour=(0.0, 1.0, 0.0),
        meaning="a prevention team member answered 'on my way'"),
    LightState.RESOLVED: Pattern(
        led=((1.5, 1.5),), buzzer=((0.1, 0.0),), colour=(1.0, 1.0, 1.0),
        meaning="the team closed the alarm; back to idle after a while"),
    LightState.FAULT: Pattern(
        led=((0.2, 0.2),), colour=(1.0, 0.0, 0.0),
        meaning="the button line is stuck or the hardware is faulty; the team is told"),
    LightState.NOT_DELIVERED: Pattern(
        led=((1.0, 0.2), (0.2, 0.6)), buzzer=((1.0, 0.0),), colour=(1.0, 0.0, 1.0),
        meaning="point device: the alarm is kept but has not reached the node yet"),
})
"""The light's pattern for every :class:`LightState`."""


@dataclass(frozen=True, slots=True)
class LightOutput:
    """What the pins should show at one moment."""

    led: bool
    buzzer: bool
    colour: Colour
    """RGB value: the pattern's colour while the LED is on, black while off."""


_BLACK: Colour = (0.0, 0.0, 0.0)


def _level(rhythm: Rhythm, t: float, *, repeats: bool) -> tuple[bool, float | None]:
    """Level at ``t`` seconds into the rhythm, and seconds until it may change."""
    if not rhythm:
        return False, None
    ons = [on for on, _ in rhythm]
    offs = [off for _, off in rhythm]
    if repeats and not any(offs):
        return True, None
    if repeats and not any(ons):
        return False, None
    period = sum(ons) + sum(offs)
    if repeats:
        t = math.fmod(t, period)
    elif t >= period:
        return False, None
    acc = 0.0
    for on, off in rhythm:
        if t < acc + on:
            return True, acc + on - t
        acc += on
        if t < acc + off:
            return False, acc + off - t
        acc += off
    return False, (period - t) if repeats else None  # float rounding at the very end


class PatternPlayer:
    """Pure: given a state and the seconds since it was entered, what to show.

    ``resolved`` turns into ``idle`` after ``resolved_s`` seconds.

    >>> player = PatternPlayer()
    >>> player.output(LightState.STORED, 0.25).led, player.output(LightState.STORED, 0.75).led
    (True, False)
    >>> player.resolve(LightState.RESOLVED, 31.0)
    (<LightState.IDLE: 'idle'>, 1.0)
    """

    def __init__(self, patterns: Mapping[LightState, Pattern] = PATTERNS, *,
                 resolved_s: float = 30.0) -> None:
        """Check that every state has a pattern and ``resolved_s`` > 0."""
        missing = [s.value for s in LightState if s not in patterns]
        if missing:
            raise ConfigError(f"no pattern for state(s): {', '.join(missing)}")
        if not math.isfinite(resolved_s) or resolved_s <= 0:
            raise ConfigError(f"resolved_s must be > 0, not {resolved_s!r}")
        self.patterns = patterns
        self.resolved_s = resolved_s

    def resolve(self, state: LightState, elapsed: float) -> tuple[LightState, float]:
        """The state actually shown, and the seconds since it began."""
        if state is LightState.RESOLVED and elapsed >= self.resolved_s:
            return LightState.IDLE, elapsed - self.resolved_s
        return state, elapsed

    def output(self, state: LightState, elapsed: float) -> LightOutput:
        """LED, buzzer and RGB value ``elapsed`` seconds after entering ``state``."""
        state, elapsed = self.resolve(state, max(0.0, elapsed))
        pattern = self.patterns[state]
        led, _ = _level(pattern.led, elapsed, repeats=True)
        buzzer, _ = _level(pattern.buzzer, elapsed, repeats=False)
        return LightOutput(led, buzzer, pattern.colour if led else _BLACK)

    def next_change(self, state: LightState, elapsed: float) -> float | None:
        """Seconds until :meth:`output` may change; None when it never will."""
        elapsed = max(0.0, elapsed)
        shown, since = self.resolve(state, elapsed)
        pattern = self.patterns[shown]
        waits = [w for w in (_level(pattern.led, since, repeats=True)[1],
                             _level(pattern.buzzer, since, repeats=False)[1]) if w is not None]
        if shown is LightState.RESOLVED:  # not yet timed out into idle
            waits.append(self.resolved_s - elapsed)
        return min(waits, default=None)
