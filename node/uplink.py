"""The uplink: this node's events to central in sealed batches (DESIGN.md §4.3).

The outbox is not a second copy: it is every stored event whose seq lies
beyond what central said it holds for that (origin, stream). So nothing can be
lost between store and outbox, and a crash anywhere only means sending again
what central will de-duplicate by id.

One batch is in flight at a time. A batch goes when ``uplink_batch_max``
events wait or the oldest waiting one is ``uplink_max_age_s`` old; with
nothing to send, an empty batch every ``uplink_poll_s`` fetches broadcasts,
receipt states and roster updates. Failures back off exponentially with full
jitter up to ``uplink_backoff_max_s``. Each batch seq is committed to the
store *before* the batch is sent, so a seq is never used twice, not even
across a crash.

Central's reply is trusted only after its signature verifies against the key
from enrolment; then the node records what central holds, marks forwarded
receipts, stores central's events (each verified), applies receipt updates
and a newer roster. Events central holds and older than ``retention_days``
are pruned (the newest of each stream always stays: seqs must never restart).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from sync import Event, KeyPair, sealed
from sync.errors import SyncError
from sync.event import event_from_dict
from sync.exchange import Ack, AckNotVerified, BatchMeta, ExchangeError, SyncReply
from sync.mesh import MAX_CARRY_BYTES
from sync.roster import Roster

from .clock import NodeClock
from .config import NodeSettings
from .enrol import load_enrolment, load_roster, package_version, save_roster
from .errors import NodeError, StoreError
from .mesh.carry import CarryFailed
from .store import Store, WriteTx
from .store_writes import acked_key

log = logging.getLogger(__name__)

BATCH_TYPE = "application/vnd.bart.batch"
#: Central states of a report, as the node's receipt page names them.
RECEIPT_STATES = {"new": "forwarded", "in_progress": "in_progress", "handled": "handled",
                  "reopened": "reopened"}
PRUNE_EVERY_S = 3600.0
UPLINK_TIMEOUT_S = 15.0


@dataclass
class UplinkSchedule:
    """When the uplink acts next: pure, on the monotonic clock (seconds).

    The wall clock decides nothing here (issue 17: after the wall clock jumped
    back 3 days, a schedule on ``time.time()`` put the next poll 259,199 s
    away). Events' own stamps count only as far as they make a batch go
    sooner: how long events have waited is the monotonic time since the
    uplink first saw them waiting, or their stamped age when that is larger
    (after a restart), never less than zero nor more than ``max_age_s``.

    >>> sched = UplinkSchedule(batch_max=100, max_age_s=2.0)
    >>> sched.wait_s(1000.0, waiting=0, stamped_age_s=0.0, urgent=False, poll_s=30.0)
    0.0
    >>> sched.sent(1000.0, backlog_left=0)
    >>> sched.wait_s(1001.0, waiting=1, stamped_age_s=-259_200.0, urgent=False, poll_s=30.0)
    2.0
    """

    batch_max: int
    max_age_s: float
    #: Monotonic time of the last exchange central answered (None: none yet).
    last_poll: float | None = None
    #: Monotonic time the uplink first saw the events now waiting.
    waiting_since: float | None = None
    last_prune: float | None = None

    def wait_s(self, now: float, *, waiting: int, stamped_age_s: float, urgent: bool,
               poll_s: float) -> float:
        """0.0: send now (a batch, or an empty poll); else how long to wait at most.

        ``waiting``: events in the outbox; ``stamped_age_s``: the oldest one's age by
        its stamp; ``urgent``: an alarm waits; ``poll_s``: the poll interval now.
        """
        if not waiting:
            self.waiting_since = None
        elif self.waiting_since is None:
            self.waiting_since = now
        poll_left = 0.0 if self.last_poll is None else poll_s - (now - self.last_poll)
        poll_left = min(poll_left, poll_s)  # a clock can never put a poll further away
        if poll_left <= 0.0 or (waiting and (urgent or waiting >= self.batch_max)):
            return 0.0
        if not waiting:
            return poll_left
        since = now - self.waiting_since if self.waiting_since is not None else 0.0
        age = max(since, min(max(stamped_age_s, 0.0), self.max_age_s))
        if age >= self.max_age_s:
            return 0.0
        return min(self.max_age_s - age, poll_left)

    def sent(self, now: float, backlog_left: int) -> None:
        """Central answered an exchange at ``now``."""
        self.last_poll = now
        if not backlog_left:
            self.waiting_since = None

    def prune_due(self, now: float, every_s: float = PRUNE_EVERY_S) -> bool:
        """Whether to prune now (at the first success, then every ``every_s``)."""
        if self.last_prune is not None and now - self.last_prune < every_s:
            return False
        self.last_prune = now
        return True


def backoff_s(failures: int, cap_s: float, uniform: Callable[[float, float], float]) -> float:
    """Exponential back-off with full jitter: ``uniform`` in [1, min(cap, 2^failures)].

    >>> backoff_s(3, 300.0, lambda a, b: b)
    8.0
    >>> backoff_s(30, 300.0, lambda a, b: b)
    300.0
    """
    cap = min(cap_s, 2.0 ** min(failures, 20))
    return uniform(min(1.0, cap), cap)


@dataclass
class UplinkState:
    """What ``/healthz`` and ``bart status`` show of the uplink."""

    enabled: bool = False
    central: str = ""
    url: str = ""
    backlog: int = 0
    batches_sent: int = 0
    events_sent: int = 0
    last_batch_seq: int = 0
    last_success_ms: int | None = None
    last_attempt_ms: int | None = None
    last_error: str = ""
    failures: int = 0
    next_attempt_in_s: float = 0.0
    revoked: bool = False
    paused: bool = False
    #: Batches central took through a mesh peer (carry) while this node could not reach it.
    batches_carried: int = 0
    #: Open alarms of this node waiting for the desk's answer (quick polling while > 0).
    watching: int = 0
    holds: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {k: v for k, v in self.__dict__.items()}


def is_urgent(event: Event) -> bool:
    """An event central should have now: alarms, answers, alerts, emergencies."""
    return event.kind in ("alert", "ack") or (
        event.kind == "report" and (event.body.get("category") == "emergency"
                                    or bool(event.body.get("called_112"))))


def watch_key(event: Event) -> str | None:
    """The alarm whose answer the uplink waits for after ``event``, if any:
    a panic button's alarm, or what a team escalated."""
    if event.kind == "alert" and event.body.get("button"):
        return event.id
    if event.kind == "ack" and event.body.get("action") == "escalated":
        return str(event.body.get("ref"))
    return None


class Uplink:
    """Sends the outbox to central and applies what central answers."""

    def __init__(self, settings: NodeSettings, store: Store, keys: KeyPair,
                 on_central_event: Callable[[Event], None] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 clock: NodeClock | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 uniform: Callable[[float, float], float] = random.uniform) -> None:
        self.settings = settings
        #: The node's time (stamps, central's signed time); timers use ``monotonic``.
        self.clock = clock or NodeClock()
        #: The timers' clock and the back-off's jitter (injected by tests).
        self._monotonic = monotonic
        self._uniform = uniform
        self.store = store
        self.keys = keys
        self.on_central_event = on_central_event
        self.state = UplinkState()
        # Highest seq per (origin, stream) in a batch sealed or posted but not yet
        # acknowledged: the next batch starts after it.
        self._inflight: dict[tuple[str, str], int] = {}
        self._wake = asyncio.Event()  # set when an event is committed
        self._kick = asyncio.Event()  # set by pause/resume (and tests): act now
        self._urgent = False  # an alarm waits in the outbox: send without delay
        self._watching: dict[str, float] = {}  # open alarms → monotonic deadline
        self._transport = transport
        #: Carry (DESIGN §4 path 4), set by the runtime when the mesh runs:
        #: ``carry(batch_seq, wire) -> (status, reply)`` through a peer, and
        #: ``carry_ready()``: whether a peer is connected to try.
        self.carry: Callable[[int, bytes], Awaitable[tuple[int, bytes]]] | None = None
        self.carry_ready: Callable[[], bool] = lambda: False
        enrolment = load_enrolment(settings)
        self.enrolment = enrolment
        if enrolment is None:
            return
        self.central_origin = str(enrolment["origin"])
        self.central_signing = base64.b64decode(enrolment["signing_pub"])
        self.central_encryption = base64.b64decode(enrolment["encryption_pub"])
        self.url = str(enrolment["url"]).rstrip("/")
        roster = load_roster(settings, self.central_signing)
        self.roster_serial = roster.serial if roster else 0
        self.roster: Roster | None = roster
        self.state.enabled = True
        self.state.central = self.central_origin
        self.state.url = self.url

    # -- the outbox -------------------------------------------------------------

    def wake(self, events: Iterable[Event] = ()) -> None:
        """New events were committed: look at the outbox now.

        An alarm (a panic button's alert, a team's escalation) is sent at once,
        not after ``uplink_max_age_s``, and opens a *watch*: while it is open
        the uplink polls central every ``uplink_alarm_poll_s`` instead of
        every ``uplink_poll_s``, so that the desk's answer reaches the team
        page and the button's light within seconds. The watch on an alarm
        ends when it is resolved (here or by the desk), on an escalated report
        with the desk's first answer (a receipt update), or after
        ``uplink_alarm_watch_s``.
        """
        now = self._monotonic()
        for event in events:
            own = event.origin == self.settings.name
            if own and is_urgent(event):
                self._urgent = True
            key = watch_key(event) if own else None
            if key is not None:
                self._watching[key] = now + self.settings.uplink_alarm_watch_s
            elif event.kind == "ack" and event.body.get("action") in ("resolved", "hidden"):
                self._watching.pop(str(event.body.get("ref")), None)
        self.watching()
        self._wake.set()

    def watching(self) -> bool:
        """Is an alarm of this node open (the fast poll)?"""
        now = self._monotonic()
        for key in [k for k, until in self._watching.items() if until <= now]:
            del self._watching[key]
        self.state.watching = len(self._watching)
        return bool(self._watching)

    def _poll_s(self) -> float:
        s = self.settings
        return min(s.uplink_poll_s, s.uplink_alarm_poll_s) if self.watching() else s.uplink_poll_s

    def pause(self, paused: bool) -> None:
        """Demo control: cut (True) or restore (False) the uplink."""
        self.state.paused = paused
        self._wake.set()
        self._kick.set()

    def read_pending(self, limit: int) -> tuple[list[Event], int, int]:
        """Up to ``limit`` unsent events, the backlog size, and the oldest unsent ts.

        The heads come from the store's memory and the acknowledged seqs from
        its ``uplink_state`` (:meth:`node.store.Store.outbox`): no scan of the
        events table, however long the backlog. Blocking: call it off the loop.
        """
        heads = {key: top for key, top in self.store.known_heads().items()
                 if key[0] == self.settings.name or self._carries(key[0])}
        return self.store.outbox(heads, limit, dict(self._inflight))

    def _carries(self, origin: str) -> bool:
        """Whether events of another origin go up with ours: only roster members'.

        Central refuses a batch carrying events it cannot verify, so events of
        a peer that central does not know (or revoked) would stall the uplink;
        they stay on the node (central itself and unknown peers).
        """
        return self.roster is not None and self.roster.member(origin) is not None

    # -- one exchange ----------------------------------------------------------------

    async def _prepare(self, events: list[Event], backlog: int) -> _Prepared:
        """Allocate a batch seq (committed first: never reused) and seal the batch.

        A poll (no events) takes the last seq again and writes nothing: central
        keeps no row of a poll, so nothing can be confused with it, and an idle
        node's disk stays idle (issue "cost flat": <= 1 MB an hour on an SD card).
        """
        cursors = await asyncio.to_thread(self.store.uplink_cursors, self.central_origin)
        if events:
            batch_seq = await self.store.write(lambda tx: self._next_batch_seq(tx))
        else:
            batch_seq = max(1, cursors["batch_seq"])
        meta = BatchMeta(
            heads={self.central_origin: {"public": cursors["central_public"]}},
            updates_after=cursors["updates_after"], roster_serial=self.roster_serial,
            backlog=max(0, backlog - len(events)), version=package_version()[:40],
            display=" ".join(self.settings.display_name.split())[:80] or None)
        wire = await asyncio.to_thread(
            sealed.seal, sealed.Payload.of(events, meta.to_doc()), node_id=self.settings.name,
            batch_seq=batch_seq, created=self.clock.now_ms(), keys=self.keys,
            central_encryption_public=self.central_encryption)
        return _Prepared(batch_seq, wire, events, backlog)

    async def _exchange(self, client: httpx.AsyncClient, batch: _Prepared) -> Ack:
        """Post a sealed batch; verify and apply central's reply."""
        self.state.last_attempt_ms = self.clock.now_ms()
        try:
            if self.state.paused:
                raise httpx.ConnectError("the uplink is cut (demo)")
            resp = await client.post(f"{self.url}/api/v1/batches", content=batch.wire,
                                     headers={"Content-Type": BATCH_TYPE})
            status, content = resp.status_code, resp.content
        except (httpx.HTTPError, OSError):
            carried = await self._carry(batch)
            if carried is None:
                raise
            status, content, batch = carried
            resp = None
        if status != 200:
            try:
                detail = resp.json() if resp is not None else {}
            except ValueError:
                detail = {"error": "http", "detail": resp.text[:200] if resp else ""}
            raise CentralRefused(status, str(detail.get("error", "")),
                                 str(detail.get("detail", "")))
        try:
            reply = SyncReply.parse(content)
        except ExchangeError as exc:
            raise UplinkError(f"central's reply is malformed: {exc}") from exc
        ack = self._verify_ack(reply, batch.batch_seq)
        if not self.clock.observe_central(ack.at):
            log.warning("central's time in its answer (%d) is before what this node holds: "
                        "not taken as the time", ack.at)
        await self._apply(reply, ack)
        self.state.batches_sent += 1
        self.state.events_sent += len(batch.events)
        self.state.last_batch_seq = batch.batch_seq
        self.state.last_success_ms = self.clock.now_ms()
        return ack

    async def _carry(self, batch: _Prepared) -> tuple[int, bytes, _Prepared] | None:
        """Central cannot be reached: hand the batch to a mesh peer that can.

        A carried batch must fit one mesh document: a larger one is sealed
        again with fewer events (a new batch seq; the rest follows in the
        next batches). Central's answer is checked as a direct one.
        """
        if self.carry is None or not self.carry_ready():
            return None
        used = batch
        n = len(batch.events)
        while len(used.wire) > MAX_CARRY_BYTES and n > 1:
            n = max(1, min(n // 2, int(n * MAX_CARRY_BYTES * 0.8 / len(used.wire))))
            used = await self._prepare(batch.events[:n], batch.backlog)
        if len(used.wire) > MAX_CARRY_BYTES:
            return None
        try:
            status, content = await self.carry(used.batch_seq, used.wire)
        except CarryFailed as exc:
            log.debug("carry of batch %d failed: %s", used.batch_seq, exc)
            return None
        self.state.batches_carried += 1
        log.info("batch %d (%d events) reached central through a mesh peer",
                 used.batch_seq, len(used.events))
        return status, content, used

    @staticmethod
    def _next_batch_seq(tx: WriteTx) -> int:
        seq = tx.uplink_value("batch_seq") + 1
        tx.set_uplink_value("batch_seq", seq)
        return seq

    def _verify_ack(self, reply: SyncReply, batch_seq: int) -> Ack:
        try:
            ack = Ack.verify(reply.ack, self.central_signing)
        except AckNotVerified as exc:
            raise UplinkError(f"central's acknowledgement does not verify: {exc}") from exc
        except ExchangeError as exc:
            raise UplinkError(f"central's acknowledgement is malformed: {exc}") from exc
        if ack.node != self.settings.name or ack.batch_seq != batch_seq:
            raise UplinkError("the acknowledgement is for another node or batch")
        return ack

    async def _apply(self, reply: SyncReply, ack: Ack) -> None:
        holds = ack.holds
        central_events: list[Event] = []
        for raw in reply.events:  # at most MAX_REPLY_EVENTS (SyncReply.parse)
            try:
                event = event_from_dict(raw)
                if event.origin != self.central_origin:
                    raise SyncError(f"origin {event.origin} is not central")
                event.verify(self.central_signing)
            except SyncError as exc:
                log.warning("an event from central was refused: %s", exc)
                continue
            central_events.append(event)

        def apply(tx: WriteTx) -> list[Event]:
            if not ack.replay:  # a replay's answer is as old as its batch
                for origin, stream, had, now in tx.lower_acked(holds):
                    log.warning("central holds %s's %s events up to %d, not %d as it said "
                                "before (restored from an older backup?): sending %d-%d "
                                "again", origin, stream, now, had, now + 1, had)
            for origin, streams in holds.items():
                for stream, seq in streams.items():
                    before = tx.uplink_value(acked_key(origin, stream))
                    if before < seq:
                        tx.set_uplink_value(acked_key(origin, stream), seq)
                        if origin == self.settings.name and stream == "private":
                            tx.receipts_forwarded(origin, before, seq)
            last = tx.uplink_value("updates_after")
            for upd in ack.updates:
                state = RECEIPT_STATES.get(upd.state)  # a state this node does not know: skip
                if state is not None:
                    tx.set_receipt_central(upd.report, state, upd.state)
                if upd.reply:  # the desk's public answer: the newest one is shown
                    tx.set_receipt_reply(upd.report, upd.reply, upd.at)
                last = max(last, upd.id)
            tx.set_uplink_value("updates_after", last)
            return [e for e in central_events if tx.insert(e)]

        def held_differs() -> bool:
            return self.store.central_holds_more(holds) or (
                not ack.replay and self.store.central_holds_less(holds))

        changes = bool(central_events or ack.updates) or await asyncio.to_thread(held_differs)
        stored = await self.store.write(apply) if changes else []
        for upd in ack.updates:  # the desk answered an escalated report: no quick polls
            self._watching.pop(upd.report, None)
        self.watching()
        for event in stored:
            if self.on_central_event is not None:
                self.on_central_event(event)
        self.state.holds = {o: dict(s) for o, s in holds.items()}
        roster = reply.roster
        if roster is not None:
            try:
                newer = save_roster(self.settings, roster, self.central_signing,
                                    self.roster_serial)
            except SyncError as exc:
                log.warning("a roster from central was refused: %s", exc)
            else:
                if newer is not None:
                    self.roster_serial = newer.serial
                    self.roster = newer
                    log.info("roster updated to serial %s", newer.serial)

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Send whenever there is something to send and a path to central.

        A thin loop around :class:`UplinkSchedule`: it reads the outbox, asks
        the schedule how long to wait, waits (new events cut a quiet wait
        short, never a back-off) and sends.
        """
        if not self.state.enabled:
            return
        s = self.settings
        sched = UplinkSchedule(batch_max=s.uplink_batch_max, max_age_s=s.uplink_max_age_s)
        delay = 0.0
        prepared: _Prepared | None = None
        events: list[Event] = []
        backlog = 0
        # A request on a connection whose path went away (a cut uplink) waits for its
        # timeout before the batch may take another path (carry): 15 s, not minutes.
        timeout = httpx.Timeout(UPLINK_TIMEOUT_S, connect=5.0)
        # A central at http:// (a LAN set-up) needs no certificate authorities: loading
        # the CA bundle into the client's TLS context costs ~1.2 MiB (issue 15,
        # memory). It follows no redirects, so it never leaves that URL.
        verify = not self.url.lower().startswith("http://")
        async with httpx.AsyncClient(timeout=timeout, transport=self._transport,
                                     verify=verify) as client:
            while True:
                try:
                    if self.state.paused and not self.carry_ready():
                        # Cut (demo), and no mesh peer to carry: keep counting what waits,
                        # so that /healthz shows the backlog grow; pause(False) and new
                        # events both set _wake.
                        self.state.next_attempt_in_s = 0.0
                        self._wake.clear()
                        _, self.state.backlog, _ = await asyncio.to_thread(self.read_pending, 0)
                        if self.state.paused:
                            await self._wake.wait()
                        continue
                    if delay > 0:
                        # New events cut a quiet wait short, but never a back-off.
                        self.state.next_attempt_in_s = delay
                        if self.state.failures:
                            self._kick.clear()
                        signal = self._kick if self.state.failures else self._wake
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(signal.wait(), delay)
                        delay = 0.0
                        self.state.next_attempt_in_s = 0.0
                        continue
                    if prepared is None:
                        self._wake.clear()
                        events, backlog, oldest = await asyncio.to_thread(
                            self.read_pending, s.uplink_batch_max)
                        self.state.backlog = backlog
                        if self.state.paused and not self.carry_ready():  # cut while reading
                            continue
                        urgent, self._urgent = self._urgent, False
                        stamped_age = (self.clock.now_ms() - oldest) / 1000 if oldest else 0.0
                        delay = sched.wait_s(self._monotonic(), waiting=len(events),
                                             stamped_age_s=stamped_age, urgent=urgent,
                                             poll_s=self._poll_s())
                        if delay > 0:
                            self.state.failures = 0
                            continue
                    batch, prepared = prepared, None
                    try:
                        if batch is None:
                            batch = await self._prepare(events, backlog)
                        exchange = asyncio.ensure_future(self._exchange(client, batch))
                        if len(batch.events) >= s.uplink_batch_max:
                            # A long backlog: seal the next batch while central takes this
                            # one (one batch in flight, one ready).
                            prepared = await self._prepare_next(batch)
                        await exchange
                    except CentralRefused as exc:
                        self._failed(f"central refused the batch ({exc.status} {exc.code}): "
                                     f"{exc.detail}")
                        if exc.code == "revoked":
                            self.state.revoked = True
                            log.error("central says this node is revoked: the uplink stops")
                            return
                    except (httpx.HTTPError, OSError) as exc:
                        self._failed(f"central unreachable: {exc.__class__.__name__}: {exc}")
                    except (UplinkError, SyncError) as exc:
                        self._failed(str(exc))
                    except (StoreError, sqlite3.Error) as exc:  # e.g. a full disk
                        self._failed(f"this node's store refused central's answer: {exc}")
                    else:
                        self.state.failures = 0
                        self.state.last_error = ""
                        self.state.backlog = max(0, batch.backlog - len(batch.events))
                        now = self._monotonic()
                        sched.sent(now, self.state.backlog)
                        self._inflight = prepared.tops() if prepared else {}
                        if sched.prune_due(now):
                            await self.prune()
                        continue
                    prepared, self._inflight = None, {}  # resend from what central holds
                    delay = self._backoff()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the uplink must outlive any one step
                    # A step that failed outside the exchange (the store refused a
                    # write: a full disk; a read failed) costs one attempt, never the
                    # uplink: the loop backs off and tries again (docs/chaos.md, 1).
                    prepared, self._inflight = None, {}
                    self._failed(f"this node could not go on: {exc.__class__.__name__}: "
                                 f"{exc}")
                    delay = self._backoff()

    async def _prepare_next(self, sent: _Prepared) -> _Prepared | None:
        """Seal the batch after ``sent`` if a full one waits; None otherwise."""
        self._inflight = sent.tops()
        try:
            events, backlog, _ = await asyncio.to_thread(
                self.read_pending, self.settings.uplink_batch_max)
            if self.state.paused or len(events) < self.settings.uplink_batch_max:
                return None
            return await self._prepare(events, backlog)
        except (SyncError, UplinkError, StoreError, OSError, sqlite3.Error) as exc:
            log.debug("could not seal the next batch ahead: %s", exc)
            return None
        finally:
            self._inflight = {}

    def _failed(self, message: str) -> None:
        self.state.failures += 1
        self.state.last_error = message
        level = logging.WARNING if self.state.failures in (1, 5, 20) else logging.DEBUG
        log.log(level, "uplink attempt %d failed: %s", self.state.failures, message)

    def _backoff(self) -> float:
        """Exponential back-off with full jitter (:func:`backoff_s`)."""
        return backoff_s(self.state.failures, self.settings.uplink_backoff_max_s,
                         self._uniform)

    async def prune(self) -> int:
        """Delete events central holds that are older than the retention period."""
        cutoff = self.store.clock_ms() - self.settings.retention_days * 86_400_000

        gone = await self.store.write(lambda tx: tx.prune_held_by_central(cutoff))
        if gone:
            log.info("pruned %d events central holds, older than %d days", gone,
                     self.settings.retention_days)
        return gone


@dataclass(frozen=True)
class _Prepared:
    """A sealed batch ready to post."""

    batch_seq: int
    wire: bytes
    events: list[Event]
    backlog: int

    def tops(self) -> dict[tuple[str, str], int]:
        """Highest seq per (origin, stream) in this batch."""
        out: dict[tuple[str, str], int] = {}
        for e in self.events:
            key = (e.origin, e.stream)
            if e.seq > out.get(key, 0):
                out[key] = e.seq
        return out


class UplinkError(NodeError):
    """Central's answer could not be used (not verified, not ours)."""


class CentralRefused(UplinkError):
    """Central answered a batch with an error status."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
