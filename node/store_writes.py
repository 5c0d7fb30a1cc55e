"""The node store's write side: every statement a piece of writer work runs,
by name (:class:`node.store.WriteTx` has them as methods).

Modules that write the node's database (reports, answers, panic buttons,
the uplink, carry) call these inside their writer task; none of them holds a
connection or SQL of its own (tests/unit/test_store_owns_sql.py). Each method
runs on the writer thread, inside the transaction (and savepoint) of its
piece of work: a piece that raises is rolled back whole.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from sync import Event

from .store_queries import ACK_REF, EVENT_COLS, row_to_event


def acked_key(origin: str, stream: str) -> str:
    """The ``uplink_state`` key of what central holds of (origin, stream)."""
    return f"acked/{origin}/{stream}"


class TxStatements:
    """Named statements on the writer's connection, for work inside a transaction."""

    conn: sqlite3.Connection
    now_ms: int
    release_cache: bool

    def _on_writer(self) -> None:
        """Refuse to run off the writer thread (the store's threading contract)."""
        raise NotImplementedError

    def _sql(self, sql: str, args: tuple[object, ...] = ()) -> sqlite3.Cursor:
        self._on_writer()
        return self.conn.execute(sql, args)

    # -- events ------------------------------------------------------------------

    def event_kind_stream(self, event_id: str) -> tuple[str, str] | None:
        """(kind, stream) of a stored event, or None."""
        row = self._sql("SELECT kind, stream FROM events WHERE id = ?",
                                (event_id,)).fetchone()
        return (str(row[0]), str(row[1])) if row is not None else None

    def has_event(self, event_id: str) -> bool:
        """Whether an event with this id is stored."""
        return self._sql("SELECT 1 FROM events WHERE id = ?",
                                 (event_id,)).fetchone() is not None

    def last_button_alarm(self, button: str) -> str | None:
        """Id of the newest alarm of a panic button, or None."""
        row = self._sql(
            "SELECT id FROM events WHERE kind = 'alert' AND "
            "json_extract(body, '$.button') = ? ORDER BY ts DESC, id DESC LIMIT 1",
            (button,)).fetchone()
        return str(row[0]) if row is not None else None

    def alarm_closed(self, alarm_id: str) -> bool:
        """Whether an answer resolved (or hid) the alarm."""
        return self._sql(
            f"SELECT 1 FROM events {ACK_REF} WHERE kind = 'ack' AND "
            "json_extract(body, '$.ref') = ? "
            "AND json_extract(body, '$.action') IN ('resolved', 'hidden')",
            (alarm_id,)).fetchone() is not None

    # -- receipts ----------------------------------------------------------------

    def add_receipt(self, receipt: str, event_id: str) -> bool:
        """A report's receipt code, state "received"; False when the code is taken."""
        try:
            self._sql(
                "INSERT INTO receipts (receipt, event_id, state, updated_at) VALUES (?,?,?,?)",
                (receipt, event_id, "received", self.now_ms))
        except sqlite3.IntegrityError:
            return False
        return True

    def set_receipt_state(self, event_id: str, state: str) -> None:
        """The state a report's receipt page shows (the team's answer)."""
        self._sql("UPDATE receipts SET state = ?, updated_at = ? WHERE event_id = ?",
                          (state, self.now_ms, event_id))

    def receipts_forwarded(self, origin: str, after_seq: int, upto_seq: int) -> None:
        """Receipts of the private events ``after_seq < seq <= upto_seq`` of
        ``origin`` that central now holds: "received" becomes "forwarded"."""
        self._sql(
            "UPDATE receipts SET state = 'forwarded', updated_at = ? "
            "WHERE state = 'received' AND event_id IN (SELECT id FROM "
            "events WHERE origin = ? AND stream = 'private' AND seq > ? "
            "AND seq <= ?)", (self.now_ms, origin, after_seq, upto_seq))

    def set_receipt_central(self, event_id: str, state: str, central_state: str) -> None:
        """A report's state at central (and as its receipt page names it)."""
        self._sql(
            "UPDATE receipts SET state = ?, central_state = ?, updated_at = ? "
            "WHERE event_id = ?", (state, central_state, self.now_ms, event_id))

    def set_receipt_reply(self, event_id: str, reply: str, at_ms: int) -> None:
        """The desk's newest public answer on a report."""
        self._sql("UPDATE receipts SET reply = ?, replied_at = ? WHERE event_id = ?",
                          (reply, at_ms, event_id))

    # -- panic buttons: armed alarms and point presses ----------------------------

    def arm_alarm(self, button: str, event: Event) -> None:
        """Keep the alarm of a hold in progress (replacing the button's earlier one)."""
        self._sql(
            f"INSERT OR REPLACE INTO armed_alarms (button, {EVENT_COLS}, armed_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (button, event.id, event.origin, event.stream, event.seq, event.ts, event.kind,
             event.body_json().decode("utf-8"), event.sig, self.now_ms))

    def disarm_alarm(self, button: str, event_id: str | None = None) -> None:
        """Forget the button's armed alarm (only the one with ``event_id`` if given)."""
        if event_id is None:
            self._sql("DELETE FROM armed_alarms WHERE button = ?", (button,))
        else:
            self._sql("DELETE FROM armed_alarms WHERE button = ? AND id = ?",
                              (button, event_id))

    def armed_buttons(self) -> list[str]:
        """Buttons with an armed alarm, the earliest hold first."""
        return [str(row[0]) for row in self._sql(
            "SELECT button FROM armed_alarms ORDER BY ts, seq, button")]

    def armed_alarm(self, button: str) -> Event | None:
        """The button's armed alarm, or None."""
        row = self._sql(
            f"SELECT {EVENT_COLS} FROM armed_alarms WHERE button = ?", (button,)).fetchone()
        return row_to_event(row) if row is not None else None

    def seq_armed(self, stream: str, seq: int) -> bool:
        """Whether an armed alarm holds (stream, seq)."""
        return self._sql("SELECT 1 FROM armed_alarms WHERE stream = ? AND seq = ?",
                                 (stream, seq)).fetchone() is not None

    def press_known(self, press_id: str) -> bool:
        """Whether a point device's press with this id was stored before."""
        return self._sql("SELECT 1 FROM point_presses WHERE press_id = ?",
                                 (press_id,)).fetchone() is not None

    def add_press(self, press_id: str, point: str, button: str, kind: str,
                  event_id: str) -> None:
        """Remember a point device's press with the event it produced."""
        self._sql(
            "INSERT INTO point_presses (press_id, point, button, kind, event_id, "
            "received_at) VALUES (?, ?, ?, ?, ?, ?)",
            (press_id, point, button, kind, event_id, self.now_ms))

    # -- the uplink's state ---------------------------------------------------------

    def uplink_value(self, key: str) -> int:
        """A counter of the uplink (``batch_seq``, ``updates_after``, ``acked/…``); 0 unset."""
        row = self._sql("SELECT value FROM uplink_state WHERE key = ?",
                                (key,)).fetchone()
        return int(row[0]) if row else 0

    def set_uplink_value(self, key: str, value: int) -> None:
        """Set a counter of the uplink."""
        self._sql("INSERT INTO uplink_state (key, value) VALUES (?, ?) "
                          "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def _acked(self) -> Iterator[tuple[str, str, int]]:
        for key, seq in self._sql(
                "SELECT key, value FROM uplink_state WHERE key LIKE 'acked/%'").fetchall():
            _, origin, stream = str(key).split("/", 2)
            yield origin, stream, int(seq)

    def lower_acked(self, holds: dict[str, dict[str, int]]) -> list[tuple[str, str, int, int]]:
        """Go back to what central says it holds where that is less than recorded here
        (central restored from an older backup), for every stream of an origin in
        ``holds`` (a stream missing there: central holds none of it). Only where this
        node still has the event after central's seq, so that sending again can close
        the gap (a pruned one cannot: then nothing changes, and nothing loops).
        Returns (origin, stream, recorded, now) of each stream lowered."""
        lowered = []
        for origin, stream, acked in list(self._acked()):
            if origin not in holds:
                continue
            central = holds[origin].get(stream, 0)
            if central >= acked or not self._sql(
                    "SELECT 1 FROM events WHERE origin = ? AND stream = ? AND seq = ?",
                    (origin, stream, central + 1)).fetchone():
                continue
            self.set_uplink_value(acked_key(origin, stream), central)
            lowered.append((origin, stream, acked, central))
        return lowered

    def prune_held_by_central(self, cutoff_ms: int) -> int:
        """Delete events central holds that are older than ``cutoff_ms`` (with their
        receipts and presses); the newest of each stream always stays (seqs never
        restart). The number of events deleted."""
        gone = 0
        for origin, stream, acked in list(self._acked()):
            where = ("origin = ? AND stream = ? AND seq <= ? AND ts < ? AND seq < "
                     "(SELECT MAX(seq) FROM events WHERE origin = ? AND stream = ?)")
            args = (origin, stream, acked, cutoff_ms, origin, stream)
            self._sql(f"DELETE FROM receipts WHERE event_id IN "
                              f"(SELECT id FROM events WHERE {where})", args)
            self._sql(f"DELETE FROM point_presses WHERE event_id IN "
                              f"(SELECT id FROM events WHERE {where})", args)
            gone += self._sql(f"DELETE FROM events WHERE {where}", args).rowcount
        # The prune read every held event's row: ~2 MiB of cached pages at 10^5 events
        # that no write needs next (issue 15, memory).
        self.release_cache = True
        return gone

    # -- carry: peers' sealed batches ----------------------------------------------

    def keep_carried(self, node: str, batch_seq: int, wire: bytes, max_kept: int) -> bool:
        """Keep a peer's sealed batch to post; False when ``max_kept`` wait already."""
        count = self._sql("SELECT COUNT(*) FROM carried WHERE status IS NULL"
                                  ).fetchone()[0]
        if count >= max_kept:
            return False
        self._sql(
            "INSERT OR IGNORE INTO carried (node, batch_seq, wire, received_at) "
            "VALUES (?, ?, ?, ?)", (node, batch_seq, wire, self.now_ms))
        return True

    def carried_answered(self, node: str, batch_seq: int, status: int, reply: bytes,
                         keep_ms: int) -> None:
        """Central answered a carried batch: keep the answer (not the batch), and
        forget answers older than ``keep_ms``."""
        self._sql(
            "UPDATE carried SET status = ?, reply = ?, answered_at = ?, wire = X'' "
            "WHERE node = ? AND batch_seq = ?",
            (status, reply, self.now_ms, node, batch_seq))
        self._sql("DELETE FROM carried WHERE answered_at < ?",
                          (self.now_ms - keep_ms,))
