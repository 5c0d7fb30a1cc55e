"""Catch-up: what a peer lacks, in bounded chunks; what it holds that we lack
(docs/mesh.md, "Catch-up"). A base of :class:`node.mesh.engine.Mesh`, as the
store's read side is a base of the store: the engine provides the links, the
store and the checks.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Any

from common.quietlog import QuietLog
from sync import Event
from sync.mesh import MAX_CHUNK_EVENTS, Chunk, Vector, VectorDoc, chunks
from sync.replication import Held

from ..config import NodeSettings
from ..store import Store
from .budget import OriginBudget, Path, Via
from .link import LINK_QUEUE, Link

#: :meth:`CatchUp.refusal`'s reason for an event beyond its origin's budget.
OVER_BUDGET = "over its origin's budget"


def _encode_chunk(events: list[Event]) -> bytes:
    return Chunk(tuple(events)).encode()


class CatchUp(ABC):
    """Vectors, chunks and the names that travel with them."""

    me: str
    settings: NodeSettings
    store: Store
    budget: OriginBudget
    links: dict[tuple[str, bool], Link]
    stats: dict[str, int]
    names: dict[str, str]
    _direct_names: set[str]
    _quiet: QuietLog
    _closed: bool
    _announce: asyncio.TimerHandle | None
    _announce_sources: set[str]

    @abstractmethod
    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run ``coro`` as a task of the mesh."""

    @abstractmethod
    def live_links(self) -> list[Link]:
        """One link per connected peer."""

    @abstractmethod
    def refusal(self, event: Event, path: Path | None = None) -> str | None:
        """Why ``event`` from a peer may not be taken (None: it may)."""

    @abstractmethod
    def _over_budget(self, event: Event, peer: str, via: Via) -> None:
        """Count and log an event refused for its origin's rate."""

    @abstractmethod
    async def _store(self, events: list[Event], queued: Any = None) -> list[Event]:
        """Store events from peers; what was new goes on to be shown."""

    @abstractmethod
    def _seen_add(self, event_id: str) -> bool:
        """Remember an id; False when it was seen already."""

    def vector(self) -> Vector:
        """What this node holds of every public stream."""
        return {origin: held for (origin, _), held in self.store.heads("public").items()}

    def _vector_doc(self, *, reply: bool) -> bytes:
        return VectorDoc(self.vector(), reply=reply, names=self._known_names()).encode()

    def _known_names(self) -> dict[str, str]:
        """Community-centre names to pass on: our own and those we learnt."""
        names = {self.me: self.settings.display_name} if self.settings.display_name else {}
        for origin, display in self.names.items():
            if len(names) >= 64:
                break
            names.setdefault(origin, display)
        return names

    def _learn_names(self, names: dict[str, str], direct: str | None = None,
                     display: str = "") -> None:
        """Names heard from a peer: its own (``direct``) wins over what others say."""
        if direct is not None and display:
            self.names[direct] = display
            self._direct_names.add(direct)
        for origin, name in names.items():
            if origin == self.me or origin in self._direct_names or not name:
                continue
            if origin in self.names or len(self.names) < 256:
                self.names[origin] = name

    # -- catch-up -----------------------------------------------------------------------

    def _answer_vector(self, link: Link, theirs: Vector, *, reply: bool) -> None:
        link.vector = theirs
        for other in list(self.links.values()):  # its newest vector, whichever session
            if other.peer == link.peer:
                other.vector = theirs
        if link.catchup is not None and not link.catchup.done():
            link.catchup.cancel()
        link.catchup = self._spawn(self._send_missing(link, theirs))
        if not reply and self._lacking(theirs):
            link.send(self._vector_doc(reply=True))

    def _lacking(self, theirs: Vector) -> bool:
        """Whether a peer's vector holds anything this node lacks."""
        mine = self.vector()
        return any(next(mine.get(origin, Held()).missing(held, limit=1), None) is not None
                   for origin, held in theirs.items() if origin != self.me)

    def lacks(self, theirs: Vector | None) -> dict[str, int]:
        """Per origin, how many events this node holds that ``theirs`` does not."""
        if theirs is None:
            return {}
        out: dict[str, int] = {}
        for origin, held in self.vector().items():
            n = sum(b - a + 1 for a, b in theirs.get(origin, Held()).missing(held))
            if n:
                out[origin] = n
        return out

    async def _send_missing(self, link: Link, theirs: Vector) -> None:
        mine = self.vector()
        ranges = []
        for origin, held in sorted(mine.items()):
            known = theirs.get(origin, Held()).copy()
            for a, b in link.sent_held.get(origin, Held()).spans():
                known.add_range(a, b)  # on its way already
            ranges += [(origin, a, b) for a, b in known.missing(held)]
        for origin, start, end in ranges:
            while start <= end:
                events = await asyncio.to_thread(self.store.events_between, origin, "public",
                                                 start, end, MAX_CHUNK_EVENTS)
                if not events:
                    break
                start = events[-1].seq + 1
                for group in chunks(events):
                    while link.queue.qsize() > LINK_QUEUE // 2:  # let the link drain
                        await asyncio.sleep(0.01)
                    data = await asyncio.to_thread(_encode_chunk, group)
                    link.send(data)
                    sent = link.sent_held.setdefault(origin, Held())
                    for event in group:
                        sent.add(event.seq)
                    self.stats["chunks_sent"] += 1
                    self.stats["chunk_events_sent"] += len(group)

    async def _on_chunk(self, link: Link, doc: Chunk) -> None:
        """Verify, charge and store a chunk's events (one transaction).

        An event this node lacks is charged to its origin's catch-up bucket
        (node/mesh/budget.py); beyond it, it is refused and its seq stays a gap,
        which the next vector asks for again (every ``mesh.sync_s`` at the
        latest) once the bucket has refilled. A seq held already costs nothing
        (a clipped vector, a second sender): the store sees it again, a fork
        there is refused.
        """
        def check() -> list[Event]:
            good = []
            over: set[str] = set()  # origins whose bucket ran out in this chunk
            for event in doc.events:
                if event.origin == self.me:
                    continue  # ours: held already (or not ours to take)
                lacking = not self.store.holds(event.origin, event.stream, event.seq)
                why = OVER_BUDGET if lacking and event.origin in over else \
                    self.refusal(event, "catchup" if lacking else None)
                if why is None and lacking and not self.budget.take(event, "catchup"):
                    why = OVER_BUDGET
                if why == OVER_BUDGET:
                    over.add(event.origin)
                    self._over_budget(event, link.peer, "catchup")
                    continue
                if why is not None:
                    self._quiet.say(f"chunk:{link.peer}:{why[:40]}",
                                    "mesh: refused %s from %s: %s", event.id, link.peer, why)
                    self.stats["refused"] += 1
                    continue
                good.append(event)
            return good

        good = await asyncio.to_thread(check)
        if not good:
            return
        new = await self._store(good)
        for event in new:
            self._seen_add(event.id)
        if new:
            self._announce_soon(link.peer)

    def _announce_soon(self, source: str) -> None:
        """After catch-up brought news: tell the other peers (debounced); not the
        peer(s) it came from, which hold it."""
        self._announce_sources.add(source)
        if self._announce is not None or self._closed:
            return

        def announce() -> None:
            self._announce = None
            sources, self._announce_sources = self._announce_sources, set()
            data = self._vector_doc(reply=False)
            for link in self.live_links():
                if link.peer not in sources:
                    link.send(data)

        self._announce = asyncio.get_running_loop().call_later(0.5, announce)
