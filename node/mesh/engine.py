"""The mesh engine: sessions with peers, live relay and catch-up (docs/mesh.md).

One :class:`Mesh` per running node, on the node's event loop. A *link* is
one direction-agnostic channel to a peer:

- **dialled**: this node connected to the peer's mesh listener (mutual TLS);
  it publishes on ``bartmesh/v1/{me}/up`` there and reads ``…/{me}/down``;
- **accepted**: the peer connected to this node's mesh listener; its
  documents arrive on ``bartmesh/v1/{peer}/up`` through the node's own
  service connection, answers go to ``…/{peer}/down``.

What arrives is parsed by :mod:`sync.mesh`, checked against whom this node
trusts (:class:`node.trust.TrustedKeys`), verified, passed on (live relay,
within the hop limit), stored, and only then shown (``on_stored``).
Catch-up is its base :class:`node.mesh.catchup.CatchUp`; a link's send queue
and the timings are in :mod:`node.mesh.link`; carry in :mod:`node.mesh.carry`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from broker import MqttClient
from broker.topics import MESH_UP_FILTER, mesh_topic, parse_mesh_topic
from common.quietlog import QuietLog
from sync import Event, SyncError
from sync.keys import fingerprint
from sync.mesh import (
    Bye,
    Carried,
    Carry,
    Chunk,
    Hello,
    MeshDoc,
    MeshDocError,
    Ping,
    Relay,
    VectorDoc,
    parse,
)

from ..config import NodeSettings
from ..errors import SeqConflict
from ..store import Store, WriteTx
from ..trust import TrustedKeys
from .budget import OriginBudget, Path, Via
from .catchup import OVER_BUDGET, CatchUp
from .identity import MeshIdentity, certificate_name
from .link import (
    ADDRESS_TRY_S,
    MESH_KEEPALIVE,
    PING_S,
    REFUSED_RETRY_S,
    SEEN_MAX,
    SILENT_S,
    TICK_S,
    Link,
    MeshClient,
    Target,
)

log = logging.getLogger(__name__)

#: Alert sources a node (not central) may sign.
PEER_SOURCES = frozenset({"resident", "team", "button", "integration"})

class Mesh(CatchUp):
    """Sessions, relay and catch-up of one node."""

    def __init__(self, settings: NodeSettings, store: Store, trust: TrustedKeys, *,
                 signing_public: bytes, local: MqttClient, identity: MeshIdentity | None,
                 on_stored: Callable[[list[Event]], None],
                 uplink_up: Callable[[], bool] = lambda: False,
                 carry: Callable[[Carry], Any] | None = None,
                 on_carried: Callable[[Carried], Any] | None = None,
                 budget: OriginBudget | None = None) -> None:
        self.settings = settings
        self.me = settings.name
        self.store = store
        self.trust = trust
        self.fp = fingerprint(signing_public)
        self.local = local
        self.identity = identity
        self.on_stored = on_stored
        self.uplink_up = uplink_up
        self.carry_handler = carry
        self.carried_handler = on_carried
        self.hop_limit = settings.mesh.hop_limit
        #: Per-origin rate of peers' events (shared with the MQTT path: node/runtime.py).
        self.budget = budget or OriginBudget.of(settings.mesh, self.is_central)
        self.links: dict[tuple[str, bool], Link] = {}
        self.targets: dict[str, Target] = {}
        self.blocked: set[str] = set()
        self.reach: dict[str, int] = {}  # origin -> fewest hops an event of it took
        #: Community-centre names of peers (from their hello), shown with their events.
        self.names: dict[str, str] = {}
        self._direct_names: set[str] = set()
        self._seen: OrderedDict[str, None] = OrderedDict()
        #: (origin, seq) -> id of live events passed on and not yet committed here.
        self._writing: dict[tuple[str, int], str] = {}
        self._quiet = QuietLog(log)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ping_n = itertools.count(1)
        self._announce: asyncio.TimerHandle | None = None
        self._announce_sources: set[str] = set()
        self._closed = False
        self.stats = {"relayed": 0, "received": 0, "stored": 0, "refused": 0, "forks": 0,
                      "over_budget": 0, "chunks_sent": 0, "chunk_events_sent": 0,
                      "bytes_sent": 0}

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Read peers' documents on the local broker; dial the static peers."""
        self.local.subscribe(MESH_UP_FILTER, self._on_up)
        for peer in self.settings.mesh.peers:
            self.add_target(peer.host, peer.port, how="static")
        self._spawn(self._periodic())

    async def close(self) -> None:
        """Say bye, stop every link and dial; idempotent."""
        if self._closed:
            return
        self._closed = True
        self.local.remove_handler(MESH_UP_FILTER, self._on_up)
        if self._announce is not None:
            self._announce.cancel()
        for link in list(self.links.values()):
            if not link.dialled:
                with contextlib.suppress(Exception):
                    await self.local.publish(link.topic, Bye().encode(), timeout=1.0)
            link.close()
        self.links.clear()
        for target in self.targets.values():
            if target.client is not None:
                await self._close_client(target.client)
        self.targets.clear()
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("mesh task failed", exc_info=task.exception())

    # -- dialling -----------------------------------------------------------------------

    def add_target(self, host: str, port: int, *, how: str, expected: str | None = None,
                   others: tuple[str, ...] = ()) -> None:
        """Dial ``host:port`` (again, if it was known under another address)."""
        key = f"{host}:{port}"
        if key in self.targets or self._closed or self.identity is None:
            return
        target = Target(host=host, port=port, how=how, expected=expected, others=others)
        self.targets[key] = target
        self._dial(target)

    def discovered(self, peers: dict[str, Any]) -> None:
        """mDNS saw these peers (``{name: Found}``): dial the new ones, drop the gone.

        Of two nodes that see each other only the one with the smaller name
        dials (one session, not two); trust is checked on connecting.
        """
        wanted = {name: found for name, found in peers.items()
                  if name > self.me and found.addresses and name not in self.blocked}
        for key, target in list(self.targets.items()):
            found = wanted.get(target.expected or "")
            if target.how == "mdns" and (found is None or found.port != target.port or
                                         target.host not in found.addresses):
                del self.targets[key]
                self._spawn(self._drop_target(target))
        known = {t.expected for t in self.targets.values() if t.how == "mdns"}
        for name, found in wanted.items():
            if name not in known:
                self.add_target(found.addresses[0], found.port, how="mdns", expected=name,
                                others=tuple(found.addresses[1:]))

    async def remove_target(self, host: str, port: int) -> None:
        """Stop dialling ``host:port`` (an mDNS peer went away or moved)."""
        target = self.targets.pop(f"{host}:{port}", None) or next(
            (t for t in self.targets.values() if (t.host, t.port) == (host, port)), None)
        if target is not None and target.client is not None:
            await self._close_client(target.client)

    def _dial(self, target: Target) -> None:
        identity = self.identity
        assert identity is not None
        up = mesh_topic(self.me, "up")
        client = MeshClient(
            host=target.host, port=target.port, username=None, password=None,
            client_id=f"{self.me}-mesh-{target.host}-{target.port}"[:64],
            reconnect_min=0.5, reconnect_max=self.settings.mesh.retry_max_s,
            keepalive=MESH_KEEPALIVE, tls_ca=str(identity.cafile), tls_cert=str(identity.cert),
            tls_key=str(identity.key), tls_check_hostname=False, will=(up, Bye().encode()),
            on_connect=lambda: self._dialled(target))
        target.client = client
        client.subscribe(mesh_topic(self.me, "down"),
                         lambda _t, payload: self._on_down(target, payload))
        self._spawn(client.start())

    def _dialled(self, target: Target) -> None:
        """Connected to a peer's listener: check whom we reached, then say hello."""
        client = target.client
        if client is None:
            return
        name = certificate_name(client.peer_certificate())
        why = None
        if name is None:
            why = "its certificate names no one"
        elif target.expected is not None and name != target.expected:
            why = f"it announced itself as {target.expected} but its certificate says {name}"
        elif not self.trust.peer(name):
            why = self.trust.why_not_peer(name)
        if why is not None or name is None:
            self._quiet.say(f"dial-refused:{target.host}:{name}",
                            "mesh: not using peer at %s:%d (%s): %s", target.host, target.port,
                            name, why)
            self.stats["refused"] += 1
            self._spawn(self._pause_target(target))
            return
        target.peer = name
        if name in self.blocked:
            return
        old = self.links.pop((name, True), None)
        if old is not None:
            old.close()
        link = Link(peer=name, how=target.how, dialled=True, send_raw=client.publish_batch,
                    topic=mesh_topic(self.me, "up"), totals=self.stats,
                    send_now=client.publish_now if isinstance(client, MeshClient) else None)
        self._open(link)
        log.info("mesh: connected to %s at %s:%d", name, target.host, target.port)
        self._send_hello(link)
        self._spawn(self._hello_again(link))

    async def _hello_again(self, link: Link) -> None:
        """Say hello again while the peer says nothing: a hello that reached its
        broker before its node subscribed (the peer was starting) is lost."""
        for delay in (0.5, 1.0, 2.0, 4.0):
            await asyncio.sleep(delay)
            if link.received or self.links.get((link.peer, True)) is not link:
                return
            self._send_hello(link)

    async def _pause_target(self, target: Target) -> None:
        """A peer we may not use (yet): hang up, dial again later (a newer roster
        may list it by then)."""
        target.refused_until = time.monotonic() + REFUSED_RETRY_S
        client, target.client = target.client, None
        if client is not None:
            await self._close_client(client)

    async def _drop_target(self, target: Target) -> None:
        key = f"{target.host}:{target.port}"
        if self.targets.get(key) is target:
            del self.targets[key]
        if target.client is not None:
            await self._close_client(target.client)

    async def _close_client(self, client: MqttClient) -> None:
        with contextlib.suppress(Exception):
            if client.connected:
                await client.publish(mesh_topic(self.me, "up"), Bye().encode(), timeout=1.0)
        await client.close()

    # -- links --------------------------------------------------------------------------

    def _open(self, link: Link) -> None:
        self.links[(link.peer, link.dialled)] = link
        link.task = self._spawn(link.drain())

    def _close_link(self, link: Link, why: str) -> None:
        if self.links.get((link.peer, link.dialled)) is link:
            del self.links[(link.peer, link.dialled)]
            log.info("mesh: session with %s ended (%s)", link.peer, why)
        link.close()

    def live_links(self) -> list[Link]:
        """One link per connected peer (a dialled one when there are two)."""
        best: dict[str, Link] = {}
        for link in list(self.links.values()):  # a copy made at once: health() reads on a thread
            if link.peer in self.blocked or link.hello_sent is False:
                continue
            if link.peer not in best or link.dialled:
                best[link.peer] = link
        return list(best.values())

    def _send_hello(self, link: Link) -> None:
        link.hello_sent = True
        link.send(Hello(node=self.me, area=self.settings.area, fp=self.fp,
                        display=self.settings.display_name, names=self._known_names(),
                        uplink=self.uplink_up(), vector=self.vector()).encode())
        self._ping(link)

    def _ping(self, link: Link) -> None:
        n = next(self._ping_n)
        link.pings[n] = time.monotonic()
        if len(link.pings) > 16:
            link.pings.pop(next(iter(link.pings)))
        link.send(Ping(n).encode())

    # -- receiving ----------------------------------------------------------------------

    def _on_up(self, topic: str, payload: bytes) -> None:
        """A document from a peer that dialled us (through our own broker)."""
        if self._closed:
            return
        try:
            peer, direction = parse_mesh_topic(topic)
        except Exception:
            return
        if direction != "up" or peer == self.me:
            return
        if not self.trust.peer(peer):
            self._quiet.say(f"in-refused:{peer}", "mesh: ignoring %s (%s)", peer,
                            self.trust.why_not_peer(peer))
            self.stats["refused"] += 1
            return
        if peer in self.blocked:
            return
        doc = self._parse(peer, payload)
        if doc is None:
            return
        link = self.links.get((peer, False))
        if isinstance(doc, Bye):
            if link is not None:
                self._close_link(link, "it said bye")
            return
        if link is None or isinstance(doc, Hello):
            if link is not None:
                link.close()  # a new session of the same peer
            link = Link(peer=peer, how="incoming", dialled=False,
                        send_raw=self.local.publish_batch, topic=mesh_topic(peer, "down"),
                        totals=self.stats)
            self._open(link)
            log.info("mesh: %s connected to this node", peer)
            self._send_hello(link)
            if not isinstance(doc, Hello):
                # Its hello came before we listened (we were starting): ask for
                # its vector, so that it is sent what it lacks now, not in a minute.
                link.send(self._vector_doc(reply=False))
        self._handle(link, doc)

    def _on_down(self, target: Target, payload: bytes) -> None:
        """A document from a peer we dialled."""
        peer = target.peer
        if peer is None or peer in self.blocked:
            return
        if not self.trust.peer(peer):  # revoked since we dialled: hang up at once
            self._quiet.say(f"untrusted:{peer}", "mesh: no longer using %s (%s)", peer,
                            self.trust.why_not_peer(peer))
            gone = self.links.get((peer, True))
            if gone is not None:
                self._close_link(gone, self.trust.why_not_peer(peer))
            self._spawn(self._pause_target(target))
            return
        link = self.links.get((peer, True))
        if link is None:
            return
        doc = self._parse(peer, payload)
        if doc is None:
            return
        if isinstance(doc, Bye):
            return  # its broker is going away; the client notices and reconnects
        self._handle(link, doc)

    def _parse(self, peer: str, payload: bytes) -> MeshDoc | None:
        try:
            return parse(payload)
        except MeshDocError as exc:
            self._quiet.say(f"malformed:{peer}", "mesh: refused a document from %s: %s",
                            peer, exc)
            self.stats["refused"] += 1
            return None

    def _handle(self, link: Link, doc: MeshDoc) -> None:
        link.last_rx = time.monotonic()
        link.received += 1
        if isinstance(doc, Relay):
            self._on_relay(link, doc)
        elif isinstance(doc, Hello):
            if doc.node != link.peer:
                self._quiet.say(f"hello-name:{link.peer}",
                                "mesh: %s says it is %s; session closed", link.peer, doc.node)
                self._close_link(link, "wrong name in hello")
                return
            link.area, link.fp, link.uplink = doc.area, doc.fp, doc.uplink
            # A hello starts a session of the peer's node: it may have restarted
            # (and lost what it stored without a flush) while this link stayed
            # up, so what catch-up sent on this link counts no more.
            link.sent_held.clear()
            self._learn_names(doc.names, doc.node, doc.display)
            self._answer_vector(link, doc.vector, reply=True)
        elif isinstance(doc, VectorDoc):
            self._learn_names(doc.names)
            self._answer_vector(link, doc.vector, reply=doc.reply)
        elif isinstance(doc, Chunk):
            self._spawn(self._on_chunk(link, doc))
        elif isinstance(doc, Ping):
            if doc.pong:
                started = link.pings.pop(doc.n, None)
                if started is not None:
                    link.rtt_ms = round((time.monotonic() - started) * 1000, 2)
            else:
                link.send(Ping(doc.n, pong=True).encode())
        elif isinstance(doc, Carry):
            if doc.node != link.peer:  # a peer carries only its own batches to us
                self._quiet.say(f"carry-other:{link.peer}", "mesh: %s sent a batch of %s; "
                                "refused", link.peer, doc.node)
                self.stats["refused"] += 1
            elif self.carry_handler is not None:
                self._spawn(self._carry(link, doc))
        elif isinstance(doc, Carried) and self.carried_handler is not None \
                and doc.node == self.me:
            self._spawn(self.carried_handler(doc))

    async def _carry(self, link: Link, doc: Carry) -> None:
        assert self.carry_handler is not None
        answer: Carried | None = await self.carry_handler(doc)
        if answer is not None:
            link.send(answer.encode())

    # -- live relay ---------------------------------------------------------------------

    def _seen_add(self, event_id: str) -> bool:
        """Remember ``event_id``; False when it was seen already."""
        if event_id in self._seen:
            return False
        self._seen[event_id] = None
        if len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)
        return True

    def refusal(self, event: Event, path: Path | None = None) -> str | None:
        """Why ``event`` from a peer may not be taken (None: it may, if it verifies).

        With ``path``, an event of a trusted origin whose bucket on that path is
        empty is :data:`OVER_BUDGET` before its signature is checked (a flood
        costs no verifying); nothing is charged here (:meth:`_over_budget`).
        """
        if event.stream != "public":
            return "private events never travel through the mesh"
        if event.origin == self.me:
            return "an event of this node's own origin that it did not make"
        central = self.trust.central[0] if self.trust.central else None
        if event.kind == "alert" and event.origin != central \
                and event.body["source"] not in PEER_SOURCES:
            return f"{event.origin} may not send {event.body['source']} alerts"
        try:
            key = self.trust.lookup(event.origin)
            if key is None:
                return f"origin {event.origin} is not trusted here"
            if path is not None and not self.budget.allows(event, path):
                return OVER_BUDGET
            event.verify(key)
        except SyncError as exc:
            return f"bad signature: {exc}"
        return None

    def _on_relay(self, link: Link, doc: Relay) -> None:
        """A live event from a peer: verify, pass on at once, store, then show.

        Passing on does not wait for our COMMIT (each peer verifies and stores
        it itself; the origin still holds it if we fail): the peers' copies
        leave while ours is written. What is shown here waits for the COMMIT
        (``_store`` → ``on_stored``), and the vector counts only what is
        committed (``Store.heads``): a failed write is fetched again by catch-up.
        The COMMIT does not flush (``durable=False``, :meth:`_write_soon`).
        """
        event = doc.event
        assert event is not None
        if event.id in self._seen:
            return
        if event.origin == self.me and self.store.get_event(event.id) is not None:
            self._seen_add(event.id)
            return
        why = self.refusal(event, "live")
        if why is None:
            key = (event.origin, event.seq)
            held = self._writing.get(key)  # another event under a seq being written
            if held is None and self.store.holds(event.origin, event.stream, event.seq):
                held = self.store.id_at(event.origin, event.stream, event.seq)
                if held == event.id:  # held already (it came by another way)
                    self._seen_add(event.id)
                    return
            if held is not None and held != event.id:
                why = f"fork: {event.origin}/{event.seq} is held by {held}"
                self.stats["forks"] += 1
            elif not self.budget.take(event, "live"):
                why = OVER_BUDGET
        if why == OVER_BUDGET:
            # Not seen: a copy that comes when the budget allows (live, or catch-up
            # filling the gap) is taken then.
            self._over_budget(event, link.peer, "mesh")
            return
        if why is not None:
            self._quiet.say(f"relay:{link.peer}:{why[:40]}", "mesh: refused %s from %s: %s",
                            event.id, link.peer, why)
            self.stats["refused"] += 1
            return
        self._seen_add(event.id)
        self.stats["received"] += 1
        if doc.hops < self.reach.get(event.origin, 1 << 30):
            self.reach[event.origin] = doc.hops
        if doc.hops < self.hop_limit:
            # On the peers' sockets before our writer thread is woken: it would
            # take the GIL from the loop while the documents go out.
            data = Relay(hops=doc.hops + 1, event_json=doc.event_json).encode()
            for other in self.live_links():
                if other.peer != link.peer and other.peer != event.origin:
                    other.send(data, now=True)
                    self.stats["relayed"] += 1
        try:
            queued = self._write_soon([event])
        except Exception as exc:
            self._quiet.say("store", "mesh: could not store %s: %s", event.id, exc)
            self._seen.pop(event.id, None)
            return
        self._writing[(event.origin, event.seq)] = event.id
        self._spawn(self._store([event], queued))

    def is_central(self, origin: str) -> bool:
        """Whether ``origin`` is the enrolled central's (exempt from the budget)."""
        central = self.trust.central
        return central is not None and origin == central[0]

    def _over_budget(self, event: Event, peer: str, via: Via) -> None:
        """Count and log (loudly once per origin and way, then quietly) a refusal
        for rate: the event is neither stored nor passed on."""
        n = self.budget.count_refused(event, via)
        self.stats["over_budget"] += 1
        self._quiet.say(f"over-budget:{event.origin}:{via}",
                        "mesh: %s sends more public events than its budget (%s, %s): refused "
                        "%s from %s (%d so far), neither stored nor passed on",
                        event.origin, via, self._budget_words(via), event.id, peer, n)

    def _budget_words(self, via: str) -> str:
        m = self.settings.mesh
        burst = m.catchup_burst if via == "catchup" else m.origin_burst
        return f"{m.origin_rate_per_min:g}/min, {burst} at once"

    def local_event(self, event: Event) -> None:
        """A public event was committed here (made here, or from central): pass it on."""
        if event.stream != "public" or not self._seen_add(event.id):
            return
        data = Relay.of(event, 1).encode()
        for link in self.live_links():
            link.send(data)
            self.stats["relayed"] += 1

    async def _store(self, events: list[Event],
                     queued: asyncio.Future[tuple[list[Event], int]] | None = None,
                     ) -> list[Event]:
        """Store ``events`` (or await ``queued``, their write queued already by
        :meth:`_write_soon`), then hand what was new to ``on_stored``."""
        try:
            new, forks = await (queued if queued is not None else self._write_soon(events))
        except Exception as exc:
            for event in events:
                # Not held here: the next copy (live or catch-up) is taken again.
                self._seen.pop(event.id, None)
            self._quiet.say("store", "mesh: could not store %d event(s): %s", len(events), exc)
            return []
        finally:
            if queued is not None:
                for event in events:
                    if self._writing.get((event.origin, event.seq)) == event.id:
                        del self._writing[(event.origin, event.seq)]
        self.stats["forks"] += forks
        self.stats["stored"] += len(new)
        if new:
            self.on_stored(new)
        return new

    def _write_soon(self, events: list[Event]) -> asyncio.Future[tuple[list[Event], int]]:
        def insert(tx: WriteTx) -> tuple[list[Event], int]:
            new: list[Event] = []
            forks = 0
            for event in events:
                try:
                    if tx.insert(event):
                        new.append(event)
                except SeqConflict as exc:
                    forks += 1
                    self._quiet.say("fork", "mesh: refused a fork: %s", exc)
            return new, forks

        # Not durable: events of other origins, acknowledged to nobody here;
        # a power cut may lose this COMMIT and catch-up fetches them again
        # (node/store.py, docs/mesh.md "Relayed events are stored without a flush").
        return self.store.write_soon(insert, durable=False)

    async def _periodic(self) -> None:
        """Every second: whom we trust (a newer roster); every PING_S: pings,
        silent and lost sessions; every ``sync_s``: vectors (anti-entropy)."""
        last_ping = last_sync = time.monotonic()
        roster = self.trust.roster
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            if self.trust.roster is not roster:
                roster = self.trust.roster
                for target in self.targets.values():
                    target.refused_until = 0.0  # who was refused may be listed now
            await self._check_targets(now)
            for link in list(self.links.values()):
                if not self.trust.peer(link.peer):  # revoked
                    self._close_link(link, self.trust.why_not_peer(link.peer))
            if now - last_ping >= PING_S:
                last_ping = now
                self._pings(now)
            if now - last_sync >= self.settings.mesh.sync_s:
                last_sync = now
                for link in list(self.links.values()):
                    link.sent_held.clear()  # anti-entropy: what was lost is sent again
                data = self._vector_doc(reply=False)
                for link in self.live_links():
                    link.send(data)

    async def _check_targets(self, now: float) -> None:
        for target in list(self.targets.values()):
            client = target.client
            if client is None:
                if now >= target.refused_until and not self._closed:
                    self._dial(target)  # refused before: try again
                continue
            if target.peer is not None and not self.trust.peer(target.peer):
                self._quiet.say(f"untrusted:{target.peer}", "mesh: no longer using %s (%s)",
                                target.peer, self.trust.why_not_peer(target.peer))
                await self._pause_target(target)
            elif not client.connected and target.peer is not None:
                gone = self.links.get((target.peer, True))
                if gone is not None:
                    self._close_link(gone, "connection lost")
            elif not client.connected and target.peer is None and target.others \
                    and now - target.dialled_at > ADDRESS_TRY_S:
                # Never reached at this address: the next one the peer advertised.
                await self._close_client(client)
                target.client = None
                self.targets.pop(f"{target.host}:{target.port}", None)
                target.host, target.others = target.others[0], (*target.others[1:],
                                                                 target.host)
                self.targets[f"{target.host}:{target.port}"] = target
                target.dialled_at = now
                self._dial(target)

    def _pings(self, now: float) -> None:
        for link in list(self.links.values()):
            if now - link.last_rx > SILENT_S:
                self._close_link(link, f"silent for {SILENT_S:.0f} s")
            else:
                self._ping(link)

    # -- control and view ---------------------------------------------------------------

    def block(self, peer: str, blocked: bool) -> None:
        """Demo control: cut (True) or heal (False) the link with ``peer``."""
        if blocked:
            self.blocked.add(peer)
            for link in [lk for lk in self.links.values() if lk.peer == peer]:
                self._close_link(link, "cut")
        else:
            self.blocked.discard(peer)
            for target in self.targets.values():
                if target.peer == peer and target.client is not None and target.client.connected:
                    self._dialled(target)

    def view(self) -> dict[str, Any]:
        """This node's peers and vector, for ``GET /api/v1/mesh`` and ``bart status``."""
        vector = self.vector()
        peers = []
        for link in sorted(self.live_links(), key=lambda lk: lk.peer):
            peers.append({
                "name": link.peer, "area": link.area or self.trust.area_of(link.peer),
                "how": link.how, "dialled": link.dialled,
                "connected_since": link.since_ms, "rtt_ms": link.rtt_ms, "hops": 1,
                "uplink": link.uplink, "fingerprint": link.fp,
                "lacks": self.lacks(link.vector), "sent": link.sent,
                "received": link.received, "dropped": link.dropped,
            })
        return {
            "node": self.me,
            "enabled": True,
            "provisional": bool(self.identity and self.identity.provisional),
            "listening": self.identity is not None,
            "hop_limit": self.hop_limit,
            "peers": peers,
            "blocked": sorted(self.blocked),
            "dialling": sorted(f"{t.host}:{t.port}" for t in self.targets.values()),
            "vector": {origin: {"public": held.gapless} for origin, held in vector.items()},
            "reach": dict(sorted(self.reach.items())),
            "stats": dict(self.stats),
        }
