"""A session's plumbing: the link to one peer (its send queue and counters),
a peer to dial, and the mesh's timings (docs/mesh.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from paho.mqtt.enums import MQTTErrorCode

from broker import MqttClient
from broker.client import _Batch
from common.clock import now_ms
from sync.mesh import Vector
from sync.replication import Held

log = logging.getLogger(__name__)

SEEN_MAX = 65_536
LINK_QUEUE = 4_096
SEND_BATCH = 50
PING_S = 10.0
TICK_S = 1.0
#: A link without any message for this long is considered gone.
SILENT_S = 45.0
MESH_KEEPALIVE = 10
#: A peer refused (not in the roster, wrong name) is dialled again after this.
REFUSED_RETRY_S = 60.0
#: An mDNS peer not reached at one of its addresses within this is tried at the next.
ADDRESS_TRY_S = 10.0


class MeshClient(MqttClient):
    """The client of a dialled session: :class:`MqttClient` plus a publish that is
    on the socket before the call returns (live relay; bench/README.md, mesh)."""

    def publish_now(self, topic: str, payload: bytes) -> asyncio.Future[None] | None:
        """Publish at QoS 1 and write it to the socket now, not at the loop's next
        turn; the future resolves at its PUBACK (or after ``publish_timeout``
        without one: then ``acked`` is empty). None when it cannot go now (not
        connected, paho's queue full): the caller queues it instead.
        """
        loop = self._loop
        if loop is None or not self._connected or self._closed:
            return None
        size = len(topic) + len(payload) + 16
        if self._max_packet is not None and size > self._max_packet:
            return None
        try:
            info = self._paho.publish(topic, payload, qos=1)
        except ValueError:
            return None
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return None
        done: asyncio.Future[None] = loop.create_future()
        batch = _Batch(done, index={info.mid: 0})
        self._batches[info.mid] = batch
        with contextlib.suppress(OSError):
            self._paho.loop_write()  # paho would wait for the loop's next turn
        mid = info.mid

        def expire() -> None:  # a lost connection never acknowledges it
            if self._batches.get(mid) is batch:
                del self._batches[mid]
            if not done.done():
                done.set_result(None)

        handle = loop.call_later(self.publish_timeout, expire)
        done.add_done_callback(lambda _f: handle.cancel())
        return done


@dataclass
class Link:
    """One session with a peer."""

    peer: str
    how: str  # "mdns", "static" (dialled) or "incoming" (accepted)
    dialled: bool
    send_raw: Callable[[list[tuple[str, bytes]]], Any]
    topic: str
    #: A dialled session's :meth:`MeshClient.publish_now` (None: accepted sessions
    #: answer through the node's own client and always queue).
    send_now: Callable[[str, bytes], asyncio.Future[None] | None] | None = None
    since_ms: int = field(default_factory=now_ms)
    last_rx: float = field(default_factory=time.monotonic)
    area: str = ""
    fp: str = ""
    uplink: bool = False
    vector: Vector | None = None
    rtt_ms: float | None = None
    hello_sent: bool = False
    queue: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(LINK_QUEUE))
    task: asyncio.Task[None] | None = None
    catchup: asyncio.Task[None] | None = None
    pings: dict[int, float] = field(default_factory=dict)
    #: What catch-up sent on this link since the last anti-entropy round, per origin:
    #: not sent again when the next vector comes before the peer stored it.
    sent_held: dict[str, Held] = field(default_factory=dict)
    sent: int = 0
    received: int = 0
    dropped: int = 0
    #: The mesh's stats: documents' bytes sent on every link add up in "bytes_sent".
    totals: dict[str, int] = field(default_factory=dict)

    def send(self, data: bytes, *, now: bool = False) -> None:
        """Queue ``data`` for the peer (dropped, counted, when the queue is full:
        catch-up repairs what live relay loses).

        ``now`` (live relay): when nothing is queued before it, hand it to the
        socket at once instead of waking the drain task, a loop turn later.
        """
        if now and self.send_now is not None and self.queue.empty():
            acked = self.send_now(self.topic, data)
            if acked is not None:
                acked.add_done_callback(lambda f: self._counted(f, len(data)))
                return
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:
            self.dropped += 1

    def _counted(self, acked: asyncio.Future[None], size: int) -> None:
        if not acked.cancelled():
            self.sent += 1
            self.totals["bytes_sent"] = self.totals.get("bytes_sent", 0) + size

    async def drain(self) -> None:
        """Send queued documents, a batch at a time, in order."""
        while True:
            first = await self.queue.get()
            batch = [first]
            while len(batch) < SEND_BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                results = await self.send_raw([(self.topic, data) for data in batch])
            except Exception as exc:
                log.debug("mesh: sending to %s failed: %s", self.peer, exc)
                continue
            done = [data for data, r in zip(batch, results, strict=False) if r is None]
            self.sent += len(done)
            self.totals["bytes_sent"] = self.totals.get("bytes_sent", 0) + sum(map(len, done))

    def close(self) -> None:
        """Stop this link's tasks."""
        for task in (self.task, self.catchup):
            if task is not None:
                task.cancel()


@dataclass
class Target:
    """A peer to dial: from mDNS (name known) or the static list (name from its certificate)."""

    host: str
    port: int
    how: str
    expected: str | None = None
    client: MqttClient | None = None
    peer: str | None = None
    refused_until: float = 0.0
    #: Other addresses the peer advertised (mDNS), tried in turn when this one fails.
    others: tuple[str, ...] = ()
    dialled_at: float = field(default_factory=time.monotonic)
