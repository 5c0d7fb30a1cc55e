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
from collections import OrderedDict
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
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
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
        sub = Subscription(asyncio.Queue(self._queue_size))
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
    """One live subscriber: a bounded queue and a flag set when it was dropped."""

    __slots__ = ("dropped", "queue")

    def __init__(self, queue: asyncio.Queue[Event]) -> None:
        self.queue = queue
        self.dropped = False

    async def next(self, timeout: float) -> Event | None:
        """The next event, or None after ``timeout`` seconds without one."""
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            pass
        try:
            # asyncio.timeout, not wait_for: no extra task per event (latency).
            async with asyncio.timeout(timeout):
                return await self.queue.get()
        except TimeoutError:
            return None
