"""The node store's read side: queries on reader connections (WAL lets them
run beside the writer). :class:`node.store.Store` has them as methods.
"""

from __future__ import annotations

import json
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from sync import Event


def row_to_event(row: sqlite3.Row | tuple[Any, ...]) -> Event:
    """An event from a row of :data:`EVENT_COLS`."""
    ident, origin, stream, seq, ts, kind, body, sig = row
    return Event(id=ident, origin=origin, stream=stream, seq=seq, ts=ts, kind=kind,
                 body=json.loads(body), sig=bytes(sig))


#: Lookups of acks and alerts by what they refer to go through the partial expression
#: indexes (node/migrations.py 004, 010): SQLite's planner, without statistics,
#: prefers the (kind, ts) index and then walks every ack or alert ever stored.
ACK_REF = "INDEXED BY idx_events_ack_ref"
ALERT_REF = "INDEXED BY idx_events_alert_ref"

#: The columns of an event, in :func:`row_to_event`'s order.
EVENT_COLS = "id, origin, stream, seq, ts, kind, body, sig"


class StoreQueries(ABC):
    """Queries of the node store; the store provides the reader connections."""

    origin: str
    #: Central's origin once enrolled (set by the runtime): its acks are the desk's
    #: answers (police, municipality), shown beside the team's own state.
    desk_origin: str = ""

    @abstractmethod
    def _reader(self) -> sqlite3.Connection:
        """This thread's read-only connection."""

    @abstractmethod
    def _read(self) -> AbstractContextManager[sqlite3.Connection]:
        """This thread's reader inside one read transaction (a consistent view)."""

    def get_event(self, event_id: str) -> Event | None:
        """One event by id."""
        row = self._reader().execute(
            f"SELECT {EVENT_COLS} FROM events WHERE id = ?", (event_id,)).fetchone()
        return row_to_event(row) if row else None

    def id_at(self, origin: str, stream: str, seq: int) -> str | None:
        """Id of the event held at (origin, stream, seq), if any."""
        row = self._reader().execute(
            "SELECT id FROM events WHERE origin = ? AND stream = ? AND seq = ?",
            (origin, stream, seq)).fetchone()
        return str(row[0]) if row else None

    def recent(self, kind: str, *, limit: int = 50, since_ms: int = 0) -> list[Event]:
        """Newest events of ``kind`` first."""
        rows = self._reader().execute(
            f"SELECT {EVENT_COLS} FROM events WHERE kind = ? AND ts >= ? "
            "ORDER BY ts DESC, id DESC LIMIT ?", (kind, since_ms, limit)).fetchall()
        return [row_to_event(r) for r in rows]

    def acks_for(self, ref_ids: list[str]) -> dict[str, list[Event]]:
        """Acks referring to each of ``ref_ids``, oldest first."""
        if not ref_ids:
            return {}
        marks = ",".join("?" * len(ref_ids))
        rows = self._reader().execute(
            f"SELECT {EVENT_COLS} FROM events {ACK_REF} WHERE kind = 'ack' AND "
            f"json_extract(body, '$.ref') IN ({marks}) ORDER BY ts, id", ref_ids).fetchall()
        out: dict[str, list[Event]] = {}
        for row in rows:
            event = row_to_event(row)
            out.setdefault(event.body["ref"], []).append(event)
        return out

    def replaced_alerts(self, alert_ids: list[str]) -> set[str]:
        """Those of ``alert_ids`` that a later alert of the same origin refers to.

        Central updates or cancels a broadcast with a new alert whose ``ref`` is
        the earlier one (docs/protocol.md); only an alert's own origin can
        replace it. (A resident's alert refers to its report, not an alert.)
        """
        if not alert_ids:
            return set()
        marks = ",".join("?" * len(alert_ids))
        conn = self._reader()
        # By the alert-ref index (a lookup per id), not a walk over every alert.
        refs = conn.execute(
            f"SELECT json_extract(body, '$.ref'), origin FROM events {ALERT_REF} "
            f"WHERE kind = 'alert' AND json_extract(body, '$.ref') IN ({marks})",
            alert_ids).fetchall()
        if not refs:
            return set()
        targets = {str(r[0]) for r in refs}
        origins = {str(i): o for i, o, kind in conn.execute(  # by primary key
            f"SELECT id, origin, kind FROM events WHERE id IN ({','.join('?' * len(targets))})",
            list(targets)).fetchall() if kind == "alert"}
        return {str(ref) for ref, origin in refs if origins.get(ref) == origin}

    def open_items(self, limit: int = 100, *, area: str | None = None) -> list[dict[str, Any]]:
        """Alarms, alerts and reports for the team, newest first, with their state.

        The state is the last answer (ack) given; an item without one is "new".
        Reports include contact data: this is for the logged-in team only.
        """
        with self._read() as conn:
            # One index range scan per kind, merged here: "kind IN (…) ORDER BY ts"
            # made SQLite sort every alert and report ever stored.
            rows = [row for kind in ("alert", "report") for row in conn.execute(
                f"SELECT {EVENT_COLS} FROM events WHERE kind = ? "
                "ORDER BY ts DESC, id DESC LIMIT ?", (kind, limit))]
            rows.sort(key=lambda r: (r[4], r[0]), reverse=True)
            events = [row_to_event(r) for r in rows[:limit]]
            ids = [e.id for e in events]
            last: dict[str, tuple[str, str]] = {}
            desk: dict[str, tuple[str, str]] = {}
            if ids:
                marks = ",".join("?" * len(ids))
                for ref, action, by, origin in conn.execute(
                        "SELECT json_extract(body, '$.ref'), json_extract(body, '$.action'), "
                        f"json_extract(body, '$.by'), origin FROM events {ACK_REF} "
                        "WHERE kind = 'ack' AND "
                        f"json_extract(body, '$.ref') IN ({marks}) "
                        "AND json_extract(body, '$.action') != 'repeated' ORDER BY ts, id",
                        ids):
                    if self.desk_origin and origin == self.desk_origin:
                        desk[ref] = (action, by)  # the desk only moves forward
                    else:
                        last[ref] = (action, by)
            central: dict[str, str] = {}
            reports = [e.id for e in events if e.kind == "report"]
            if reports:
                marks = ",".join("?" * len(reports))
                central = {str(i): str(s) for i, s in conn.execute(
                    f"SELECT event_id, central_state FROM receipts WHERE event_id IN ({marks}) "
                    "AND central_state IN ('in_progress', 'handled')", reports)}
        items = []
        for e in events:
            b = e.body
            # A panic alarm reaches the teams of every node it reaches (DESIGN §4):
            # a neighbouring team may be the closest help. Other alerts by area.
            if e.kind == "alert" and area and b["areas"] and area not in b["areas"] \
                    and b.get("source") != "button":
                continue
            action, by = last.get(e.id, ("new", ""))
            desk_action, desk_by = desk.get(e.id, ("", ""))
            if e.id in central:  # a report: its state at central is the desk's answer
                desk_action, desk_by = central[e.id], "central"
            items.append({
                "id": e.id, "kind": e.kind, "origin": e.origin, "ts": e.ts,
                "source": b.get("source", "resident"), "category": b["category"],
                "severity": b.get("severity", "moderate"), "title": b.get("title", ""),
                "text": b["text"], "place": b["place"], "state": action, "by": by,
                "called_112": b["called_112"], "contact": b.get("contact", ""),
                "receipt": b.get("receipt"), "button_id": b.get("button"),
                "ref": b.get("ref"), "expires": b.get("expires"),
                "desk": desk_action, "desk_by": desk_by,
            })
        return items

    def button_faults(self) -> list[tuple[str, int]]:
        """(button id, since ms) of this node's buttons whose line is faulty now.

        A button is faulty when its last ``button_fault``/``button_fault_cleared``
        status event is a fault (a line stuck active, DESIGN.md §9).
        """
        # The last by seq, not by ts: a fault and its clearing can share a
        # millisecond (status events are all on this node's private stream).
        rows = self._reader().execute(
            "SELECT json_extract(body, '$.button'), json_extract(body, '$.event'), ts, MAX(seq) "
            "FROM events WHERE kind = 'status' AND origin = ? AND "
            "json_extract(body, '$.event') IN ('button_fault', 'button_fault_cleared') "
            "GROUP BY json_extract(body, '$.button')", (self.origin,)).fetchall()
        return [(str(b), int(ts)) for b, event, ts, _seq in rows if event == "button_fault"]

    def open_alarm(self, button_id: str) -> tuple[Event, str] | None:
        """The newest alarm of a button and its furthest answer ("new" if none).

        Furthest, not last: the light never goes back — a desk's "seen" after
        the team's "on my way" leaves it at "someone is coming"; "resolved"
        (or "hidden") ends it.
        """
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {EVENT_COLS} FROM events WHERE kind = 'alert' AND "
                "json_extract(body, '$.button') = ? ORDER BY ts DESC, id DESC LIMIT 1",
                (button_id,)).fetchone()
            if row is None:
                return None
            alarm = row_to_event(row)
            last = conn.execute(
                f"SELECT json_extract(body, '$.action') FROM events {ACK_REF} WHERE "
                "kind = 'ack' AND json_extract(body, '$.ref') = ? "
                "AND json_extract(body, '$.action') != 'repeated' "
                "ORDER BY CASE json_extract(body, '$.action') "
                "WHEN 'resolved' THEN 3 WHEN 'hidden' THEN 3 WHEN 'on_my_way' THEN 2 "
                "WHEN 'escalated' THEN 2 ELSE 1 END DESC, ts DESC, id DESC LIMIT 1",
                (alarm.id,)).fetchone()
        return alarm, (last[0] if last else "new")

    def receipt_reply(self, code: str) -> tuple[str, int] | None:
        """The desk's newest public answer on a receipt code: (text, ms), or None."""
        row = self._reader().execute(
            "SELECT reply, replied_at FROM receipts WHERE receipt = ? AND reply IS NOT NULL",
            (code,)).fetchone()
        return (str(row[0]), int(row[1] or 0)) if row is not None else None

    def receipt(self, code: str) -> tuple[str, Event] | None:
        """(state, report event) for a receipt code, or None."""
        with self._read() as conn:
            row = conn.execute("SELECT state, event_id FROM receipts WHERE receipt = ?",
                               (code,)).fetchone()
            if row is None:
                return None
            ev = conn.execute(f"SELECT {EVENT_COLS} FROM events WHERE id = ?",
                              (row[1],)).fetchone()
        return row[0], row_to_event(ev)

    def events_between(self, origin: str, stream: str, start: int, end: int,
                       limit: int) -> list[Event]:
        """Events of (origin, stream) with ``start <= seq <= end``, by seq, at most ``limit``."""
        rows = self._reader().execute(
            f"SELECT {EVENT_COLS} FROM events WHERE origin = ? AND stream = ? AND seq >= ? "
            "AND seq <= ? ORDER BY seq LIMIT ?", (origin, stream, start, end, limit)).fetchall()
        return [row_to_event(r) for r in rows]

    def count_events(self) -> int:
        """Number of events held."""
        return int(self._reader().execute("SELECT COUNT(*) FROM events").fetchone()[0])

    # -- the uplink and carry (node/uplink.py, node/mesh/carry.py) ------------------

    def outbox(self, heads: Mapping[tuple[str, str], int], limit: int,
               inflight: Mapping[tuple[str, str], int]) -> tuple[list[Event], int, int]:
        """What waits for central: up to ``limit`` events of the streams in ``heads``
        (their highest seq), after what central holds (``uplink_state``) and after
        ``inflight`` (sealed or posted, not yet acknowledged); with the backlog size
        and the oldest waiting ts (0: none). One read transaction; the heads come from
        the caller (the store's memory), so no scan of the events table.
        """
        events: list[Event] = []
        backlog = 0
        oldest = 0
        with self._read() as conn:
            acked = {str(key)[6:]: int(value) for key, value in conn.execute(
                "SELECT key, value FROM uplink_state WHERE key LIKE 'acked/%'")}
            for (origin, stream), top in sorted(heads.items()):
                done = acked.get(f"{origin}/{stream}", 0)
                if top <= done:
                    continue
                backlog += top - done
                room = limit - len(events)
                after = max(done, inflight.get((origin, stream), 0))
                if room <= 0 or top <= after:
                    continue
                rows = conn.execute(
                    f"SELECT {EVENT_COLS} FROM events "
                    "WHERE origin = ? AND stream = ? AND seq > ? ORDER BY seq LIMIT ?",
                    (origin, stream, after, room)).fetchall()
                batch = [row_to_event(r) for r in rows]
                if batch:
                    oldest = min(oldest or batch[0].ts, batch[0].ts)
                events.extend(batch)
        return events, backlog, oldest

    def uplink_cursors(self, central_origin: str) -> dict[str, int]:
        """Where the next exchange with central starts: its newest public seq held
        here, the last receipt update applied, the last batch seq used."""
        with self._read() as conn:
            state = {str(k): int(v) for k, v in conn.execute(
                "SELECT key, value FROM uplink_state WHERE key IN "
                "('updates_after', 'batch_seq')")}
            central_public = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM events WHERE origin = ? AND "
                "stream = 'public'", (central_origin,)).fetchone()[0]
        return {"central_public": int(central_public),
                "updates_after": state.get("updates_after", 0),
                "batch_seq": state.get("batch_seq", 0)}

    def central_holds_more(self, holds: Mapping[str, Mapping[str, int]]) -> bool:
        """Whether central holds more of any stream than recorded here (``uplink_state``)."""
        with self._read() as conn:
            acked = {str(key)[6:]: int(value) for key, value in conn.execute(
                "SELECT key, value FROM uplink_state WHERE key LIKE 'acked/%'")}
        return any(acked.get(f"{origin}/{stream}", 0) < seq
                   for origin, streams in holds.items() for stream, seq in streams.items())

    def central_holds_less(self, holds: Mapping[str, Mapping[str, int]]) -> bool:
        """Whether central holds less of a stream of an origin in ``holds`` than recorded
        here (a central restored from an older backup; a stream missing: none of it)."""
        with self._read() as conn:
            acked = [(str(key).split("/", 2), int(value)) for key, value in conn.execute(
                "SELECT key, value FROM uplink_state WHERE key LIKE 'acked/%'")]
        return any(origin in holds and holds[origin].get(stream, 0) < seq
                   for (_, origin, stream), seq in acked)

    def carried_unanswered(self, limit: int = 20) -> list[tuple[str, int, bytes]]:
        """Peers' batches kept for central and not answered yet, oldest first:
        (node, batch seq, sealed batch)."""
        return [(str(n), int(s), bytes(w)) for n, s, w in self._reader().execute(
            "SELECT node, batch_seq, wire FROM carried WHERE status IS NULL "
            "ORDER BY received_at LIMIT ?", (limit,))]
