"""Receiving sealed batches: verify, open, store once, answer (DESIGN.md §4, §9).

Order of work for ``POST /api/v1/batches``, cheapest refusal first:

1. parse the framing and header (size limits, version);
2. look the sender up: unknown → 403 ``unknown_node``, revoked → 403 ``revoked``;
3. verify the node's signature over header‖ciphertext → 401 ``bad_signature``;
4. only then decrypt (wrong key id → 400 ``wrong_key_id``, bad tag → 400
   ``bad_tag``), decompress and validate every event (→ 422 ``malformed``);
5. one transaction: the batch row (``(node, batch_seq)`` unique, with the
   runs of seqs of its reports for the projector, which triages them later,
   :func:`pending_runs`) and the events
   (unique by id), both ``ON CONFLICT DO NOTHING``. A batch row that already
   exists is a replay: nothing is stored and the original acknowledgement
   (count, new) is returned;
6. advance the per-(origin, stream) heads (gapless prefix and highest seq;
   gaps are what lies between) inside that transaction: SQLite's one writer
   sees everything; on PostgreSQL each head row is locked first (``FOR
   UPDATE``) and the events after it counted with that statement's snapshot,
   so that a concurrent worker's batch of the same stream is seen (it
   committed before the lock was granted) or sees this one;
7. answer with a signed acknowledgement that says what central holds of the
   node's streams, plus what the node lacks: central's public events
   (broadcasts), receipt-state updates of its reports, a newer roster.

Nothing is stored for a refused batch, and every refusal is logged.
"""

from __future__ import annotations

import binascii
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.engine import Connection, Engine

from common.clock import now_ms
from sync import sealed
from sync.errors import BadSignature
from sync.event import DOMAIN as EVENT_DOMAIN
from sync.exchange import MAX_ACK_UPDATES, Ack, BatchMeta, ReceiptUpdate, SyncReply
from sync.keys import unb64, verify_signature

from . import db
from . import queries as q
from .enrol import current_roster
from .errors import IngestRefused
from .identity import Central
from .metrics import ingest_metrics

log = logging.getLogger(__name__)

#: At most this many central events / receipt updates in one reply (nodes take
#: up to sync.exchange.MAX_REPLY_EVENTS events and MAX_ACK_UPDATES updates).
MAX_REPLY_EVENTS = 200
MAX_REPLY_UPDATES = MAX_ACK_UPDATES

#: Event kinds the projector looks at (central/projector.py).
_PROJECTED = frozenset({"report", "alert", "ack"})


@dataclass
class _NodeKeys:
    name: str
    signing: bytes
    revoked_at: int | None


class Ingest:
    """The receiving side of the uplink, shared by the HTTP app and the benchmarks.

    Ingest stores events and answers; reports are triaged afterwards by
    :mod:`central.projector`, off this path.
    """

    def __init__(self, engine: Engine, central: Central) -> None:
        self.engine = engine
        self.central = central
        self.dialect = engine.dialect.name
        #: Latency and refusals for /metrics (central/metrics.py; one per process).
        self.metrics = ingest_metrics()

    # ------------------------------------------------------------ the steps
    def _node(self, conn: Connection, name: str) -> _NodeKeys | None:
        # DB-API: this runs for every batch (see advance_head).
        rows = q.run(conn, q.NODE_KEYS, {"name": name})
        if not rows:
            return None
        signing_pub, revoked_at = rows[0]
        return _NodeKeys(name, unb64(signing_pub, 32, "signing_pub"), revoked_at)

    def open(self, wire: bytes) -> tuple[sealed.BatchHeader, sealed.Payload,
                                         list[sealed.LeanEvent]]:
        """Steps 1–4: refuse or return the verified, decrypted, checked batch."""
        if len(wire) > self.central.settings.max_batch_bytes:
            raise IngestRefused(413, "too_large", f"batch of {len(wire)} bytes is too large")
        try:
            env = sealed.parse(wire)
        except sealed.BatchTooLarge as exc:
            raise IngestRefused(413, exc.code, str(exc)) from exc
        except sealed.BatchError as exc:
            raise IngestRefused(400, exc.code, str(exc)) from exc
        sender = env.header.node_id
        # Short read transactions: one open through the whole check would hold
        # a WAL snapshot (and keep checkpoints from resetting the log) for
        # milliseconds per batch.
        with db.reading(self.engine) as conn:
            node = self._node(conn, sender)
        try:
            sealed.verify(env, node.signing if node else b"")
        except sealed.BatchError:
            node_ok = False
        else:
            node_ok = True
        if node is None:
            raise IngestRefused(403, "unknown_node", f"node {sender!r} is not enrolled")
        if node.revoked_at is not None:
            raise IngestRefused(403, "revoked", f"node {sender!r} was revoked")
        if not node_ok:
            raise IngestRefused(401, "bad_signature", "batch signature does not verify")
        try:
            payload = sealed.open_envelope(env, self.central.keys.encryption)
            # Batch signature verified: structural checks, no re-cleaning.
            events = sealed.iter_lean(payload)
        except sealed.BatchTooLarge as exc:
            raise IngestRefused(413, exc.code, str(exc)) from exc
        except sealed.BatchError as exc:
            status = 422 if exc.code == "malformed" else 400
            raise IngestRefused(status, exc.code, str(exc)) from exc
        # Events the sender carries for others keep their own signatures:
        # verify those (DESIGN.md §9), against keys central enrolled.
        if {e[1] for e in events} - {sender}:
            self._verify_carried([e for e in events if e[1] != sender])
        return env.header, payload, events

    def _verify_carried(self, carried: list[sealed.LeanEvent]) -> None:
        others: dict[str, _NodeKeys | None] = {}
        with db.reading(self.engine) as conn:
            for origin_id in {e[1] for e in carried}:
                others[origin_id] = self._node(conn, origin_id)
        for ident, origin_id, _s, _q, ts, _k, _b, sig, unsigned in carried:
            origin = others[origin_id]
            if origin is None or (origin.revoked_at is not None and ts >= origin.revoked_at):
                raise IngestRefused(422, "unknown_origin",
                                    f"event {ident} from untrusted origin {origin_id!r}")
            try:
                # iter_lean checked the bytes are canonical: they are what was signed.
                verify_signature(origin.signing, sig, EVENT_DOMAIN + unsigned)
            except BadSignature as exc:
                raise IngestRefused(422, "bad_event_signature",
                                    f"event {ident} does not verify") from exc

    def store(self, header: sealed.BatchHeader, events: list[sealed.LeanEvent],
              meta: BatchMeta, origins: set[str] | None = None
              ) -> tuple[int, int, bool, SyncReply | None]:
        """Steps 5 and 6: store once and move the heads, in one transaction. Returns
        (count, new, replay, reply): on PostgreSQL the reply (step 7, for ``origins``)
        is read in that transaction too, before its commit; on SQLite it is None."""
        node = header.node_id
        b64 = binascii.b2a_base64
        at = now_ms()
        with self.engine.begin() as conn:
            new = 0
            # DB-API statements: SQLAlchemy's statement machinery cost ~2 ms per
            # batch here, more than the fsync of the commit.
            cur = conn.connection.cursor()
            try:
                # An empty batch is a poll (every uplink_poll_s per node): nothing to
                # de-duplicate, so it leaves no batch row behind — only last_seen.
                batch = {"node": node, "batch_seq": header.batch_seq}
                if events:
                    cur.execute(*q.BATCH_CLAIM.bind(self.dialect, {
                        **batch, "at": at, "count": header.count}))
                    if cur.fetchone() is None:
                        cur.execute(*q.BATCH_HELD.bind(self.dialect, batch))
                        held = cur.fetchone()
                        assert held is not None  # the conflicting row is committed
                        count, new = int(held[0]), int(held[1])
                        return count, new, True, self._reply_here(
                            conn, header, meta, count, new, True, origins)
                    new = self._insert_events(cur, [
                        (i, o, s, q, t, k, b, b64(sig, newline=False).decode(), node, at)
                        for i, o, s, q, t, k, b, sig, _unsigned in events])
                    # Reports (triage), alerts and acks (the alarm desk) wait in
                    # the batch row for the projector, as runs of seqs.
                    runs = pending_runs(events)
                    cur.execute(*q.BATCH_PENDING.bind(self.dialect, {
                        **batch, "new": new,
                        "pending": orjson.dumps(runs).decode() if runs else None}))
                cur.execute(*q.NODE_SEEN.bind(self.dialect, {
                    "at": at, "backlog": meta.backlog, "version": meta.version,
                    "display": meta.display, "batch_seq": header.batch_seq, "name": node}))
            finally:
                cur.close()
            if events:
                # In the same transaction, saving a second commit (fsync) per batch.
                # SQLite's writer lock (BEGIN IMMEDIATE) serialises this with every
                # other ingest; on PostgreSQL each head row is locked (FOR UPDATE)
                # before the events after it are counted, with a snapshot of that
                # statement: a concurrent batch of the same stream either moved the
                # head and committed before, or waits for this one's commit.
                self._advance(conn, events, all_new=new == len(events))
            reply = self._reply_here(conn, header, meta, len(events), new, False, origins)
        if new != len(events):
            log.info("batch %s/%s: %d of %d events were already here", node, header.batch_seq,
                     len(events) - new, len(events))
        return len(events), new, False, reply

    def _reply_here(self, conn: Connection, header: sealed.BatchHeader, meta: BatchMeta,
                    count: int, new: int, replay: bool,
                    origins: set[str] | None) -> SyncReply | None:
        """PostgreSQL: the reply read in the store's transaction (a pool checkout with
        its pre-ping, a BEGIN and an end fewer per batch than a reading transaction
        of its own; each round trip costs ~30–90 µs of client and of server CPU);
        None on SQLite, whose reply is read after the commit without the write lock."""
        if self.dialect == "sqlite" or origins is None:
            return None
        return self.reply_on(conn, header, meta, count, new, replay, origins)

    def _insert_events(self, cur: Any, rows: list[tuple[Any, ...]]) -> int:
        """``INSERT … ON CONFLICT DO NOTHING`` of a batch's events (tuples in
        ``queries.EVENT_COLUMNS`` order); returns how many were new.

        SQLite: ``executemany``. PostgreSQL: ``COPY`` (into a temporary table,
        then one ``INSERT … SELECT``, when some are stored already).
        """
        if self.dialect == "sqlite":
            return q.run_many(cur, self.dialect, q.INSERT_EVENTS, rows)
        # PostgreSQL: COPY, 1.8 µs of client CPU per row against 10.5 for
        # executemany (and 44 for unnest of arrays), measured here with psycopg 3.
        return db.copy_new_rows(cur, q.EVENTS_COPY, rows)

    def _advance(self, conn: Connection, events: list[sealed.LeanEvent], *,
                 all_new: bool) -> None:
        """Step 6: move each (origin, stream)'s gapless prefix forward."""
        seqs: dict[tuple[str, str], list[int]] = {}
        keys = {(e[1], e[2]) for e in events}
        if len(keys) == 1:  # the usual batch: one node's own stream
            seqs[keys.pop()] = [e[3] for e in events]
        else:
            for e in events:
                seqs.setdefault((e[1], e[2]), []).append(e[3])
        lock = self.dialect != "sqlite"
        for (origin, stream), got in sorted(seqs.items()):  # sorted: locks in one order
            advance_head(conn, origin, stream, got if all_new else None, lock=lock)

    def holds(self, conn: Connection, origins: Iterable[str]) -> dict[str, dict[str, int]]:
        """Gapless prefix central holds per origin and stream."""
        out: dict[str, dict[str, int]] = {}
        names = sorted(set(origins))
        if not names:
            return out
        for origin, stream, contiguous in q.run(
                conn, q.heads_of(len(names)), {f"o{n}": name for n, name in enumerate(names)}):
            out.setdefault(origin, {})[stream] = int(contiguous)
        return out

    # --------------------------------------------------------- the whole thing
    def handle(self, wire: bytes) -> dict[str, Any]:
        """Receive one sealed batch; return the reply as a JSON mapping (steps 1–7)."""
        return self.receive(wire).to_doc()

    def receive(self, wire: bytes) -> SyncReply:
        """Receive one sealed batch; return the reply (steps 1–7)."""
        started = time.perf_counter()
        try:
            header, payload, events = self.open(wire)
        except IngestRefused as exc:
            log.warning("batch refused (%s %s): %s", exc.status, exc.code, exc)
            self.metrics.refusal(exc.code)
            raise
        # Read, never refused: central has always served any meta (see BatchMeta.read).
        meta = BatchMeta.read(payload.meta)
        origins = {e[1] for e in events} | {header.node_id}
        count, new, replay, reply = self.store(header, events, meta, origins)
        if reply is None:
            reply = self.reply(header, meta, count, new, replay, origins)
        self.metrics.latency.observe(time.perf_counter() - started)
        return reply

    def reply(self, header: sealed.BatchHeader, meta: BatchMeta, count: int, new: int,
              replay: bool, origins: set[str]) -> SyncReply:
        """Step 7: the signed acknowledgement and what the node lacks."""
        with db.reading(self.engine) as conn:
            return self.reply_on(conn, header, meta, count, new, replay, origins)

    def reply_on(self, conn: Connection, header: sealed.BatchHeader, meta: BatchMeta,
                 count: int, new: int, replay: bool, origins: set[str]) -> SyncReply:
        """:meth:`reply`, read through ``conn`` (a transaction of the caller's)."""
        node = header.node_id
        # DB-API queries: this runs for every batch (see advance_head).
        holds = self.holds(conn, origins)
        have = meta.head(self.central.origin, "public")
        central_events = [
            event_row_to_wire(r) for r in q.run(conn, q.CENTRAL_EVENTS_AFTER, {
                "origin": self.central.origin, "after": have, "limit": MAX_REPLY_EVENTS},
                named=True)]
        updates = tuple(
            ReceiptUpdate(id=int(i), report=report, receipt=receipt, state=state,
                          at=int(at), reply=reply or None)
            for i, report, receipt, state, at, reply in q.run(
                conn, q.RECEIPT_UPDATES_AFTER, {
                    "origin": node, "after": meta.updates_after,
                    "limit": MAX_REPLY_UPDATES}))
        # The roster only when the node's is older (it grows with every node).
        newest = q.run(conn, q.NEWEST_ROSTER)
        roster = (current_roster(conn) if newest
                  and int(newest[0][0]) > meta.roster_serial else None)
        ack = Ack(node=node, batch_seq=header.batch_seq, count=count, new=new, replay=replay,
                  holds=holds, updates=updates, at=now_ms())
        return SyncReply(ack=ack.sign(self.central.keys), events=tuple(central_events),
                         roster=roster)


#: A run of a batch's pending list spans at most this many seqs that are not
#: reports, alerts or acks of the batch (central/projector.py reads each run as
#: one range of the ``(origin, stream, seq)`` index).
RUN_GAP = 32


def pending_runs(events: list[sealed.LeanEvent]) -> list[tuple[str, str, int, int]]:
    """What the projector has to look at in a batch: ``(origin, stream, first seq,
    last seq)`` runs that cover its reports, alerts and acks.

    The projector reads a run as one range (of the events this batch stored,
    ``via`` and ``received_at``), not the events one by one by id: 1,000
    primary-key probes cost the database ~3.5 µs per event, and a list of
    1,000 ids is ~37 kB in the batch row (compressed and TOASTed on
    PostgreSQL). A new run starts after a gap of more than :data:`RUN_GAP`
    seqs, so a range holds few events that are not to be projected.
    """
    seqs: dict[tuple[str, str], list[int]] = {}
    for e in events:
        if e[5] in _PROJECTED:
            got = seqs.get((e[1], e[2]))
            if got is None:
                seqs[(e[1], e[2])] = [e[3]]
            else:
                got.append(e[3])
    runs: list[tuple[str, str, int, int]] = []
    for (origin, stream), got in sorted(seqs.items()):
        got.sort()
        first = last = got[0]
        for seq in got:
            if seq - last > RUN_GAP:
                runs.append((origin, stream, first, last))
                first = seq
            last = seq
        runs.append((origin, stream, first, last))
    return runs


def advance_head(conn: Connection, origin: str, stream: str,
                 stored: list[int] | None = None, *, lock: bool = False) -> None:
    """Recompute one head from the committed events (idempotent, monotonic).

    ``stored``: the seqs a batch has just stored, every one of them new, in a
    transaction that holds the writer lock (SQLite) or the head row's lock
    (``lock``, PostgreSQL: ``FOR UPDATE``, the row made first if the stream is
    new). When they continue a head that has no gap, the head moves to their
    end without counting rows. DB-API statements (:func:`central.queries.run`):
    this runs for every batch.
    """
    key = {"origin": origin, "stream": stream}
    if lock:
        got = q.run(conn, q.HEAD_LOCKED, key)
        if not got:
            q.run(conn, q.HEAD_CREATE, key)
            got = q.run(conn, q.HEAD_LOCKED, key)
    else:
        got = q.run(conn, q.HEAD, key)
    contiguous, top = (int(got[0][0]), int(got[0][1])) if got else (0, 0)
    if stored and top == contiguous and min(stored) == contiguous + 1 \
            and max(stored) - contiguous == len(stored):
        contiguous = top = max(stored)
    else:
        n, high = q.run(conn, q.EVENTS_AFTER, {**key, "after": contiguous})[0]
        if n:
            top = max(top, int(high))
            if int(high) - contiguous == int(n):
                contiguous = int(high)  # no gap: the usual case, one indexed query
            else:
                for (seq,) in q.run(conn, q.SEQS_AFTER, {**key, "after": contiguous}):
                    if seq != contiguous + 1:
                        break
                    contiguous = seq
    q.run(conn, q.UPSERT_HEAD, {**key, "contiguous": contiguous, "max_seq": top})


def event_row_to_wire(row: Any) -> dict[str, Any]:
    """A stored event as the JSON mapping nodes decode (``sync.event_from_dict``)."""
    return {"v": 1, "id": row.id, "origin": row.origin, "stream": row.stream, "seq": row.seq,
            "ts": row.ts, "kind": row.kind, "body": orjson.loads(row.body), "sig": row.sig}
