"""In-process fan-out of public events to live page and SSE subscribers.

Each subscriber has a small bounded queue; a subscriber that does not keep up
is dropped (its browser reconnects and reloads), so one slow phone can never
hold memory or slow the others. Ids already delivered are remembered in a
bounded set, so an event that arrives twice (from the local store and back
through Mosquitto, or from two peers) is delivered once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sync import Event

log = logging.getLogger(__name__)


class Hub:
    """Deliver each public event once to every current subscriber."""

    def __init__(self, *, queue_size: int = 64, remember: int = 4096) -> None:
        self._queue_size = queue_size
        self._remember = remember
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._subscribers: set[Subscription] = set()

    def seen(self, event_id: str) -> bool:
        """True when ``event_id`` was delivered already."""
        return event_id in self._seen

    def publish(self, event: Event) -> bool:
        """Deliver ``event`` (must be called on the event loop); False if a repeat."""
        if event.id in self._seen:
            return False
        self._seen[event.id] = None
        if len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        for sub in list(self._subscribers):
            if not sub.offer(event):
                log.debug("dropping a slow live subscriber")
                sub.dropped = True
                self._subscribers.discard(sub)
        return True

    @property
    def subscriber_count(self) -> int:
        """Number of live subscribers."""
        return len(self._subscribers)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Subscription]:
        """A subscription to new public events for the duration of the block."""
        sub = Subscription(self._queue_size)
        self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)

    def close(self) -> None:
        """Tell every subscriber to finish."""
        for sub in list(self._subscribers):
            sub.dropped = True
        self._subscribers.clear()


class Subscription:
    """One live subscriber: a bounded queue and a flag set when it was dropped.

    A deque and at most one waiting future, not an :class:`asyncio.Queue` (four
    deques and an event each): a node holds hundreds of these for as long as
    residents' pages are open (issue 15, memory).
    """

    __slots__ = ("_items", "_limit", "_waiter", "dropped")

    def __init__(self, limit: int) -> None:
        self._items: deque[Event] = deque()
        self._limit = limit
        self._waiter: asyncio.Future[None] | None = None
        self.dropped = False

    def offer(self, event: Event) -> bool:
        """Queue ``event`` (on the event loop); False when ``limit`` already wait."""
        if len(self._items) >= self._limit:
            return False
        self._items.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True

    async def next(self, timeout: float) -> Event | None:
        """The next event, or None after ``timeout`` seconds without one."""
        if not self._items:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            # One timer, not wait_for: no extra task per event (latency).
            timer = loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        return self._items.popleft() if self._items else None


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
