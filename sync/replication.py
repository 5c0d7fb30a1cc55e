"""Replication state: which seqs of one (origin, stream) a place holds.

Seqs are 1, 2, 3 … without gaps at their origin, but a node that got some
events live while it missed others holds a prefix and a few islands beyond
it. :class:`Held` is that set in the shape catch-up needs: the *gapless*
prefix (every seq up to it is held) and sorted, disjoint ranges beyond it.
"What do you lack?" is then a short list of ranges, not a list of ids.

Pure code: no I/O. ``node/store.py`` keeps one :class:`Held` per (origin,
stream); ``sync/mesh.py`` sends them as vectors.

>>> h = Held()
>>> for seq in (1, 2, 5, 6, 9):
...     h.add(seq)
>>> h.gapless, h.ranges
(2, [(5, 6), (9, 9)])
>>> h.add(3); h.add(4); h.gapless, h.ranges
(6, [(9, 9)])
>>> list(Held(2, [(5, 5)]).missing(Held(6)))
[(3, 4), (6, 6)]
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

#: Most ranges beyond the gapless prefix that a vector carries per origin.
MAX_RANGES = 64


class Held:
    """A set of positive seqs as ``gapless`` prefix plus ranges beyond it."""

    __slots__ = ("gapless", "ranges")

    def __init__(self, gapless: int = 0, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self.gapless = gapless
        self.ranges: list[tuple[int, int]] = []
        for start, end in ranges:
            self.add_range(start, end)

    def __repr__(self) -> str:
        return f"Held({self.gapless}, {self.ranges})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Held):
            return NotImplemented
        return self.gapless == other.gapless and self.ranges == other.ranges

    def copy(self) -> Held:
        """An independent copy."""
        held = Held(self.gapless)
        held.ranges = list(self.ranges)
        return held

    @property
    def top(self) -> int:
        """The highest seq held (0: none)."""
        return self.ranges[-1][1] if self.ranges else self.gapless

    def count(self) -> int:
        """How many seqs are held."""
        return self.gapless + sum(end - start + 1 for start, end in self.ranges)

    def __contains__(self, seq: int) -> bool:
        if seq <= self.gapless:
            return seq >= 1
        i = bisect.bisect_right(self.ranges, (seq, float("inf"))) - 1
        return i >= 0 and self.ranges[i][0] <= seq <= self.ranges[i][1]

    def add(self, seq: int) -> None:
        """Mark ``seq`` as held."""
        if seq == self.gapless + 1 and (not self.ranges or self.ranges[0][0] > seq + 1):
            self.gapless = seq  # the usual case: the next one
            return
        self.add_range(seq, seq)

    def add_range(self, start: int, end: int) -> None:
        """Mark every seq in ``start..end`` (inclusive) as held."""
        if start < 1 or end < start:
            raise ValueError(f"bad range {start}..{end}")
        if end <= self.gapless:
            return
        start = max(start, self.gapless + 1)
        merged: list[tuple[int, int]] = []
        placed = False
        for a, b in self.ranges:
            if b + 1 < start:
                merged.append((a, b))
            elif end + 1 < a:
                if not placed:
                    merged.append((start, end))
                    placed = True
                merged.append((a, b))
            else:
                start, end = min(a, start), max(b, end)
        if not placed:
            merged.append((start, end))
        merged.sort()
        # Absorb ranges that now touch the prefix.
        while merged and merged[0][0] <= self.gapless + 1:
            self.gapless = max(self.gapless, merged.pop(0)[1])
        self.ranges = merged

    def missing(self, other: Held, limit: int | None = None) -> Iterator[tuple[int, int]]:
        """Ranges that ``other`` holds and this does not, lowest first.

        >>> list(Held(0).missing(Held(3, [(7, 8)])))
        [(1, 3), (7, 8)]
        """
        for start, end in other.spans():
            for gap in self._gaps(start, end):
                yield gap
                if limit is not None:
                    limit -= 1
                    if limit <= 0:
                        return

    def spans(self) -> Iterator[tuple[int, int]]:
        """Every held seq as ranges, lowest first."""
        if self.gapless:
            yield 1, self.gapless
        yield from self.ranges

    def _gaps(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """Parts of ``start..end`` not held here."""
        cur = max(start, self.gapless + 1)
        for a, b in self.ranges:
            if cur > end:
                return
            if b < cur:
                continue
            if a > cur:
                yield cur, min(end, a - 1)
            cur = max(cur, b + 1)
        if cur <= end:
            yield cur, end

    def clipped(self, max_ranges: int = MAX_RANGES) -> Held:
        """This set with at most ``max_ranges`` ranges (the lowest kept).

        What is dropped only means that a peer may send it again.
        """
        if len(self.ranges) <= max_ranges:
            return self
        held = Held(self.gapless)
        held.ranges = self.ranges[:max_ranges]
        return held
