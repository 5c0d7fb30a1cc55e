"""Carry: sealed batches of a node without uplink, through a peer that has one
(DESIGN.md §4, path 4; docs/mesh.md "Carry").

Both halves live here:

- **carrier** (:meth:`Carrier.take`): a peer's sealed batch is kept in the
  store's ``carried`` table exactly as it came (sealed to central, signed by
  its node: the carrier can neither read nor alter it), posted unchanged to
  central, and central's answer goes back in a ``carried`` document. A batch
  central could not be reached for stays and is posted again later.
- **origin** (:meth:`Carrier.send`): the uplink hands a batch it could not
  post to a connected peer whose hello said ``uplink: true`` and waits for
  central's answer, which it then checks exactly as a direct one (central's
  signature on the acknowledgement): nothing is pruned on a carrier's word.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from sync.mesh import MAX_CARRY_BYTES, MAX_DOC_BYTES, Carried, Carry

from ..errors import NodeError, StoreError
from ..store import Store, WriteTx

if TYPE_CHECKING:
    from .engine import Mesh

log = logging.getLogger(__name__)

BATCH_TYPE = "application/vnd.bart.batch"
#: Room for the rest of a ``carried`` document around central's answer (base64: 4/3).
MAX_REPLY_BYTES = (MAX_DOC_BYTES - 200) * 3 // 4
RETRY_S = 30.0
KEEP_ANSWERED_MS = 86_400_000
#: Most sealed batches kept for peers at once (bounded disk, whatever peers send).
MAX_KEPT = 200


class CarryFailed(NodeError):
    """No peer could carry the batch, or no answer came in time."""


def shrink_reply(content: bytes) -> bytes:
    """Central's answer, without its optional parts if it would not fit a document.

    The signed acknowledgement is what the origin needs; central's events and
    a newer roster come again with its next direct (or carried) exchange.
    """
    if len(content) <= MAX_REPLY_BYTES:
        return content
    try:
        reply = orjson.loads(content)
    except orjson.JSONDecodeError:
        return content[:0]
    if not isinstance(reply, dict) or "ack" not in reply:
        return content[:0]
    small = orjson.dumps({"ack": reply["ack"], "events": []})
    return small if len(small) <= MAX_REPLY_BYTES else content[:0]


class Carrier:
    """Both halves of carry for one node."""

    def __init__(self, store: Store, central_url: str | None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.store = store
        self.central_url = central_url.rstrip("/") if central_url else None
        self._transport = transport
        #: batch seq -> (first good answer, answers still expected)
        self._waiting: dict[int, tuple[asyncio.Future[Carried], list[int]]] = {}
        self.carried_for_peers = 0
        self.carried_by_peers = 0

    # -- the carrier's half -------------------------------------------------------------

    async def take(self, doc: Carry) -> Carried | None:
        """A peer's batch: keep it sealed, post it, answer with central's reply."""
        if self.central_url is None:
            return Carried(doc.node, doc.batch_seq, 503, b"")

        def keep(tx: WriteTx) -> bool:
            return tx.keep_carried(doc.node, doc.batch_seq, doc.batch, MAX_KEPT)

        try:
            kept = await self.store.write(keep)
        except StoreError as exc:  # a full disk: the peer keeps its batch and tries again
            log.info("mesh: could not keep %s's batch %d (%s); answered 503", doc.node,
                     doc.batch_seq, exc)
            return Carried(doc.node, doc.batch_seq, 503, b"")
        if not kept:
            return Carried(doc.node, doc.batch_seq, 503, b"")
        return await self._forward(doc.node, doc.batch_seq, doc.batch)

    async def _forward(self, node: str, batch_seq: int, wire: bytes) -> Carried:
        assert self.central_url is not None
        try:
            async with httpx.AsyncClient(timeout=30.0, transport=self._transport) as client:
                resp = await client.post(f"{self.central_url}/api/v1/batches", content=wire,
                                         headers={"Content-Type": BATCH_TYPE})
        except (httpx.HTTPError, OSError) as exc:
            log.info("mesh: could not post %s's batch %d to central (%s); kept for later",
                     node, batch_seq, exc.__class__.__name__)
            return Carried(node, batch_seq, 503, b"")
        reply = shrink_reply(resp.content)

        def answered(tx: WriteTx) -> None:
            tx.carried_answered(node, batch_seq, resp.status_code, reply, KEEP_ANSWERED_MS)

        try:
            await self.store.write(answered)
        except StoreError as exc:  # central's answer still goes back; kept for a retry
            log.info("mesh: could not record central's answer on %s's batch %d (%s)", node,
                     batch_seq, exc)
        self.carried_for_peers += 1
        log.info("mesh: carried %s's batch %d to central (%d)", node, batch_seq,
                 resp.status_code)
        return Carried(node, batch_seq, resp.status_code, reply)

    async def retry(self, mesh: Mesh) -> None:
        """Post kept batches again now and then; answers go back to connected origins."""
        while True:
            await asyncio.sleep(RETRY_S)
            if self.central_url is None:
                continue
            try:
                await self._retry_once(mesh)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a read failed (a full disk): next round, not never
                log.warning("mesh: could not retry carried batches: %s", exc)

    async def _retry_once(self, mesh: Mesh) -> None:
        rows = await asyncio.to_thread(self.store.carried_unanswered, 20)
        for node, batch_seq, wire in rows:
            answer = await self._forward(node, batch_seq, wire)
            if answer.status == 503:
                break  # central still away: try again later
            link = next((lk for lk in mesh.live_links() if lk.peer == node), None)
            if link is not None:
                link.send(answer.encode())

    # -- the origin's half --------------------------------------------------------------

    async def send(self, mesh: Mesh, node: str, batch_seq: int, wire: bytes,
                   timeout: float = 30.0) -> tuple[int, bytes]:
        """Hand a sealed batch to a peer with an uplink; central's (status, reply)."""
        if len(wire) > MAX_CARRY_BYTES:
            raise CarryFailed(f"batch of {len(wire)} bytes is too large to carry")
        # Peers that said they have an uplink; else every peer (an uplink may have
        # come back since its hello): each answers, a 200 counts.
        carriers = [lk for lk in mesh.live_links() if lk.uplink] or mesh.live_links()
        if not carriers:
            raise CarryFailed("no peer is connected")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Carried] = loop.create_future()
        self._waiting[batch_seq] = (future, [len(carriers)])
        data = Carry(node, batch_seq, wire).encode()
        try:
            for link in carriers:  # the first answer counts; central de-duplicates
                link.send(data)
            answer = await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            raise CarryFailed(f"no answer from {', '.join(lk.peer for lk in carriers)} "
                              f"within {timeout:.0f} s") from exc
        finally:
            self._waiting.pop(batch_seq, None)
        if answer.status != 200:
            # A refusal is not signed by central: never act on a carrier's word
            # (a forged "revoked" would stop the uplink). Try again later.
            raise CarryFailed(f"the batch was not taken through a peer ({answer.status})")
        self.carried_by_peers += 1
        return answer.status, answer.reply

    async def answered(self, doc: Carried) -> None:
        """Central's answer to one of our batches came back through a peer."""
        waiting = self._waiting.get(doc.batch_seq)
        if waiting is None:
            return
        future, left = waiting
        left[0] -= 1
        if not future.done() and (doc.status == 200 or left[0] <= 0):
            future.set_result(doc)

    def status(self) -> dict[str, Any]:
        """Counters for ``/api/v1/mesh``."""
        return {"carried_for_peers": self.carried_for_peers,
                "carried_by_peers": self.carried_by_peers}

    async def close(self) -> None:
        """Fail what still waits."""
        for future, _left in self._waiting.values():
            if not future.done():
                future.cancel()
        with contextlib.suppress(Exception):
            self._waiting.clear()
