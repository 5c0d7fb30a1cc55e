"""The node's clock: the time its events are stamped with and expiry is judged by.

A Raspberry Pi has no real-time clock. Booted without network it starts at
the last time it saved (or at its image's build date), and NTP may correct it
by days once a network appears. The event protocol refuses timestamps before
2024 (``sync.event.MIN_TS``), and residents must see alerts expire on time,
so the node does not stamp events with the wall clock blindly:

- **floor**: the node's time is never earlier than the newest event it stored
  itself or got from central (read at start), plus the time that has passed
  since (monotonic clock), and never before 2024. A Pi that boots into 2023
  keeps stamping from the last known time onwards: reports are stored, not
  refused;
- **central's clock**: every acknowledgement central signs carries its time
  (``Ack.at``); a node that is off from it by more than :data:`TOLERANCE_MS`
  stamps with central's time plus the monotonic time since that answer;
- **never backwards**: a stamp is never earlier than the previous one, so
  the order of ``ts`` within a stream follows ``seq`` even when the wall
  clock jumps back (a clock that was ahead and gets corrected: stamps stay at
  the last one given until real time passes it).

Timers never use the wall clock: the uplink, buttons and watches run on the
monotonic clock. A wall clock that disagrees with the node's time by more
than :data:`TOLERANCE_MS` is a finding of ``/healthz`` (``clock``) and of
``bart node doctor``. Without central a wall clock that runs *ahead* cannot be
told from the truth; its stamps are used as they are.

>>> wall = [1_600_000_000_000]       # 2020: a Pi without RTC and NTP
>>> mono = [100.0]
>>> c = NodeClock(wall_ms=lambda: wall[0], mono=lambda: mono[0])
>>> c.observe_floor(1_790_000_000_000)   # the newest event this node stored
>>> mono[0] += 2.0
>>> c.now_ms()
1790000002000
>>> c.finding() is not None
True
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from sync.event import MIN_TS

log = logging.getLogger(__name__)

#: How far the wall clock may be from the node's time before it counts as wrong
#: (an acknowledgement is up to a request timeout old when it arrives).
TOLERANCE_MS: Final = 300_000


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def iso(ms: int) -> str:
    """``ms`` as a UTC time for people (``2026-12-07 19:05:56 UTC``)."""
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms"


class NodeClock:
    """The node's time in Unix milliseconds (module docstring); safe from any thread."""

    def __init__(self, *, wall_ms: Callable[[], int] = _wall_ms,
                 mono: Callable[[], float] = time.monotonic,
                 tolerance_ms: int = TOLERANCE_MS) -> None:
        self._wall = wall_ms
        self._mono = mono
        self.tolerance_ms = tolerance_ms
        self._lock = threading.Lock()
        # (time in ms, monotonic seconds when it was true)
        self._floor: tuple[int, float] = (MIN_TS, mono())
        self._central: tuple[int, float] | None = None
        self._last = 0

    def observe_floor(self, ts_ms: int) -> None:
        """An event this node holds was stamped ``ts_ms``: it is at least that late now."""
        with self._lock:
            mono = self._mono()
            if ts_ms > self._since(self._floor, mono):
                self._floor = (ts_ms, mono)

    def observe_central(self, at_ms: int) -> bool:
        """Central's signed clock said ``at_ms`` just now; False when it is not
        taken (earlier than what this node has stored: a replayed answer)."""
        with self._lock:
            mono = self._mono()
            if at_ms < self._since(self._floor, mono) - self.tolerance_ms:
                return False
            self._central = (at_ms, mono)
            return True

    @staticmethod
    def _since(mark: tuple[int, float], mono: float) -> int:
        return mark[0] + int((mono - mark[1]) * 1000)

    def _reading(self) -> tuple[int, int, str]:
        """(wall clock, the node's time before the never-backwards rule, its source)."""
        mono = self._mono()
        wall = self._wall()
        best, source = wall, "wall"
        if self._central is not None:
            central = self._since(self._central, mono)
            if abs(wall - central) > self.tolerance_ms:
                best, source = central, "central"
        floor = self._since(self._floor, mono)
        if floor > best:
            best, source = floor, "floor"
        return wall, best, source

    def now_ms(self) -> int:
        """The time to stamp an event with, or to judge expiry by."""
        with self._lock:
            _, best, _ = self._reading()
            self._last = max(self._last, best)
            return self._last

    def finding(self) -> str | None:
        """Why the wall clock is wrong, in words; None when it is plausible."""
        with self._lock:
            wall, best, source = self._reading()
            best = max(best, self._last)
        off = wall - best
        if wall < MIN_TS:
            return (f"the system clock reads {iso(wall)}, before 2024; events are stamped "
                    f"{iso(best)} (from {self._source_words(source)})")
        if abs(off) <= self.tolerance_ms:
            return None
        direction = "behind" if off < 0 else "ahead of"
        return (f"the system clock ({iso(wall)}) is {_duration(abs(off))} {direction} the "
                f"node's time ({iso(best)}, from {self._source_words(source)})")

    @staticmethod
    def _source_words(source: str) -> str:
        return {"central": "central's signed clock",
                "floor": "the newest stored event and the time since",
                "wall": "the system clock"}[source]

    def health(self) -> dict[str, Any]:
        """The clock in ``/healthz``: ok, the wall clock, the node's time, the finding."""
        finding = self.finding()
        with self._lock:
            wall, best, source = self._reading()
            now = max(best, self._last)
        return {"ok": finding is None, "wall_ms": wall, "node_ms": now, "source": source,
                "offset_ms": wall - now, "finding": finding or ""}


def _duration(ms: int) -> str:
    """``ms`` in words, rounded to the largest fitting unit.

    >>> _duration(259_199_996), _duration(5 * 3_600_000), _duration(301_000)
    ('3 days', '5 hours', '5 minutes')
    """
    s = ms / 1000
    for unit, size in (("days", 86_400), ("hours", 3600), ("minutes", 60)):
        if s >= 2 * size:
            return f"{round(s / size)} {unit}"
    return f"{round(s)} seconds"


def newest_stamp(db_path: Path, origins: Iterable[str]) -> int:
    """The newest ``ts`` of the events of ``origins`` in the node's database (0: none).

    Reads the last event (highest seq) of each stream, by index: no scan.
    """
    wanted = [o for o in origins if o]
    if not wanted or not db_path.exists():
        return 0
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        newest = 0
        for origin in wanted:
            for stream in ("public", "private"):
                row = conn.execute(
                    "SELECT ts FROM events WHERE origin = ? AND stream = ? "
                    "ORDER BY seq DESC LIMIT 1", (origin, stream)).fetchone()
                if row is not None and int(row[0]) > newest:
                    newest = int(row[0])
        return newest
    except sqlite3.Error as exc:
        log.warning("could not read the newest event's time: %s", exc)
        return 0
    finally:
        conn.close()
