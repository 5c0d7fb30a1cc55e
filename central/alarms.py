"""The alarm desk: panic alarms and team escalations, answered by police or municipality.

A node's panic alarm (an ``alert`` with a ``button``) and a team's escalation
(an ``ack`` with action ``escalated``) reach central in the node's sealed
batches like every other event. The projector (``central/projector.py``)
turns each into one ``alarms`` row, keyed by the event it is about: an alarm
that a team then escalates stays one row, marked escalated. Acks of the
node's team ("seen", "on my way", "resolved") move the row's ``team_state``,
so that the desk sees who is already on it.

The desk answers in steps that only go forward::

    new ──► seen ("police informed") ──► on_my_way ──► resolved

Each answer is an optimistic update (the form carries the ``version`` the
member saw; someone else first gives :class:`Stale`), is written to the audit
log, and travels back to the node in the same transaction:

* about an alert (a panic alarm): a central-signed public ``ack`` on it, with
  ``by`` the desk ("police"/"municipality"). The node gets it with its next
  sync reply (the uplink polls every second while an alarm of its is open);
  the team page, the residents' alert and the button's light show it; the
  mesh passes it on like every public event.
* about a report: the report's own state (``on_my_way`` takes it, ``resolved``
  handles it) and a ``report_updates`` row, which the node shows with the
  receipt code and on the team page.

Every change bumps the ``desk`` counter, which the staff pages' live stream
watches (one row read, whatever the history).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import db
from .errors import CentralError
from .events import append_central_event
from .identity import Central
from .staff.accounts import StaffMember, audit
from .triage import ROUTES

KINDS: Final = ("panic", "escalation")
#: The desk's answers in their order; an answer may skip steps, never go back.
STATES: Final = ("new", "seen", "on_my_way", "resolved")
ANSWERS: Final = STATES[1:]
#: The team answers that move ``team_state``.
TEAM_STATES: Final = ("seen", "on_my_way", "resolved", "hidden")
#: A team state that closes the alarm on the node (the desk may still answer).
TEAM_CLOSED: Final = ("resolved", "hidden")
#: A resolved alarm stays on the desk's list this long (then only in its history).
SHOWN_AFTER_RESOLVED_MS: Final = 3600 * 1000
DESK_COUNTER: Final = "desk"
MAX_PLACE: Final = 200

#: What an answer on an escalated report does to the report's state (from → to).
_REPORT_MOVES: Final[Mapping[str, Mapping[str, str]]] = {
    "seen": {"new": "in_progress", "reopened": "in_progress"},
    "on_my_way": {"new": "in_progress", "reopened": "in_progress"},
    "resolved": {"new": "handled", "in_progress": "handled", "reopened": "handled"},
}


class NotFound(CentralError, LookupError):
    """No such alarm, or not one of the member's desk."""


class NotAllowed(CentralError, ValueError):
    """An answer the alarm's state does not allow (e.g. back from resolved)."""


class Stale(CentralError):
    """Someone answered since the member loaded the page."""

    def __init__(self, handler: str | None, state: str, at: int) -> None:
        super().__init__(f"already {state} by {handler or '?'}")
        self.handler = handler
        self.state = state
        self.at = at


@dataclass(frozen=True)
class Alarm:
    """One row of the desk's alarm list."""

    id: str
    origin: str
    kind: str
    subject: str
    desk: str
    place: str
    what: str
    note: str
    ts: int
    received_at: int
    escalated_at: int | None
    team_state: str
    state: str
    handler: str | None
    answered_at: int | None
    updated_at: int
    version: int

    @property
    def open(self) -> bool:
        return self.state != "resolved"

    @property
    def waiting(self) -> bool:
        """Nobody has answered: not the desk, and the team did not close it either
        (a team's "resolved" on a false alarm ends the desk's cue, not its row)."""
        return self.state == "new" and self.team_state not in TEAM_CLOSED

    def next_answers(self) -> list[str]:
        """The answers the desk may give now (forward only)."""
        return list(STATES[STATES.index(self.state) + 1:]) if self.state in STATES else []


def can_answer(state: str, action: str) -> bool:
    """Does ``action`` move an alarm in ``state`` forward?

    >>> can_answer("new", "on_my_way"), can_answer("on_my_way", "seen")
    (True, False)
    >>> can_answer("resolved", "resolved")
    False
    """
    return state in STATES and action in ANSWERS and STATES.index(action) > STATES.index(state)


def bump(conn: Connection) -> None:
    """Tell the staff pages' live stream that something they show changed."""
    conn.execute(db.counters.update().where(db.counters.c.name == DESK_COUNTER)
                 .values(value=db.counters.c.value + 1))


def desk_mark(engine: Engine) -> int:
    """The desk counter: it changes whenever a staff list may have changed."""
    with db.reading(engine) as conn:
        got = conn.execute(sa.select(db.counters.c.value)
                           .where(db.counters.c.name == DESK_COUNTER)).scalar()
    return int(got or 0)


# -- projection (called by the projector inside its write transaction) -----------------


def _place(body: Mapping[str, Any]) -> str:
    place = body.get("place")
    if not isinstance(place, Mapping):
        return ""
    parts = [str(place.get(k) or "") for k in ("text", "point")]
    return next((p for p in parts if p), "")[:MAX_PLACE]


def _upsert(conn: Connection, values: dict[str, Any], update: dict[str, Any],
            changes: Any) -> int:
    """Insert ``values``, or update the stored row with ``update`` where ``changes``
    holds (nothing else: projecting again changes nothing); rows changed (0 or 1)."""
    dialect = conn.dialect.name
    ins: Any = (sa.dialects.postgresql.insert(db.alarms) if dialect == "postgresql"
                else sa.dialects.sqlite.insert(db.alarms)).values(**values)
    return _changed(conn, ins.on_conflict_do_update(
        index_elements=[db.alarms.c.id],
        set_={k: v(ins.excluded) if callable(v) else v for k, v in update.items()},
        where=changes))


def _changed(conn: Connection, statement: Any) -> int:
    """Rows an insert or update changed (RETURNING: psycopg's rowcount of an
    upsert is -1)."""
    return len(conn.execute(statement.returning(db.alarms.c.id)).all())


#: How far a team answer goes: ``team_state`` never moves back (as the button's
#: light, node/store_queries.py open_alarm), whatever order batches come in.
_TEAM_RANK: Final[Mapping[str, int]] = {"new": 0, "seen": 1, "on_my_way": 2, "escalated": 2,
                                        "resolved": 3, "hidden": 3}


def _team_rank(column: Any) -> Any:
    return sa.case(*((column == k, v) for k, v in _TEAM_RANK.items()), else_=0)


def project(conn: Connection, rows: Iterable[Any], central_origin: str, at: int) -> int:
    """Alarm rows from stored events (``id, origin, ts, kind, body`` rows) of one batch.

    Idempotent: a batch projected twice gives the same rows and changes
    nothing (an escalation keeps its first time, the team state its furthest
    answer). Returns how many events changed a row.
    """
    a = db.alarms.c
    changed = 0
    for row in sorted(rows, key=lambda r: (int(r.ts), str(r.id))):
        if row.origin == central_origin or row.kind not in ("alert", "ack"):
            continue
        body = orjson.loads(row.body) if isinstance(row.body, str | bytes) else row.body
        if row.kind == "alert":
            if not body.get("button"):
                # Warnings for residents; the desk sees them as alerts elsewhere. One
                # a team escalated before it reached central: now its place is known.
                place, what = _place(body), str(body.get("category") or "alert")[:32]
                changed += _changed(conn, db.alarms.update().where(
                    a.id == row.id, a.kind == "escalation",
                    sa.or_(a.subject != "alert", a.place != place, a.what != what))
                    .values(subject="alert", place=place, what=what, updated_at=at,
                            version=a.version + 1))
                continue
            values = {"id": row.id, "origin": row.origin, "kind": "panic", "subject": "alert",
                      "desk": "police", "place": _place(body), "what": "button", "note": "",
                      "ts": int(row.ts), "received_at": at, "state": "new",
                      "team_state": "new", "updated_at": at, "version": 1}
            changed += _upsert(
                conn, values, {"kind": "panic", "subject": "alert",
                               "place": lambda x: x.place, "what": "button",
                               "ts": lambda x: x.ts, "origin": lambda x: x.origin,
                               "updated_at": at, "version": a.version + 1},
                sa.or_(a.kind != "panic", a.subject != "alert", a.place != values["place"],
                       a.what != "button", a.ts != values["ts"], a.origin != values["origin"]))
            continue
        action, ref = body.get("action"), body.get("ref")
        if action == "escalated" and body.get("to") in ROUTES:
            subject = conn.execute(sa.select(db.events.c.kind, db.events.c.body)
                                   .where(db.events.c.id == ref)).first()
            sbody = orjson.loads(subject.body) if subject is not None else {}
            if subject is not None:
                skind = subject.kind
            else:
                # Not at central yet (a neighbour's alert the mesh brought): an ack
                # travels on its subject's stream, and only alerts are public.
                stream = conn.execute(sa.select(db.events.c.stream)
                                      .where(db.events.c.id == row.id)).scalar()
                skind = "alert" if stream == "public" else "report"
            panic = skind == "alert" and bool(sbody.get("button"))
            what = "button" if panic else str(sbody.get("category") or skind)[:32]
            note = str(body.get("note") or "")
            values = {"id": ref, "origin": row.origin, "kind": "panic" if panic else "escalation",
                      "subject": "alert" if skind == "alert" else "report",
                      "desk": body["to"], "place": _place(sbody), "what": what,
                      "note": note, "ts": int(row.ts),
                      "received_at": at, "escalated_at": int(row.ts), "state": "new",
                      "team_state": "escalated", "updated_at": at, "version": 1}
            update: dict[str, Any] = {
                "escalated_at": sa.func.coalesce(a.escalated_at, int(row.ts)),
                "desk": body["to"],
                "note": sa.case((sa.literal(note) != "", note), else_=a.note),
                "updated_at": at, "version": a.version + 1}
            if values["subject"] == "alert":
                update["subject"] = "alert"
            changed += _upsert(conn, values, update, sa.or_(
                a.escalated_at.is_(None), a.desk != body["to"],
                sa.and_(sa.literal(note) != "", a.note != note),
                sa.and_(sa.literal(values["subject"]) == "alert", a.subject != "alert")))
        elif action in TEAM_STATES:
            changed += _changed(conn, db.alarms.update().where(
                a.id == ref, a.team_state != action,
                _team_rank(a.team_state) <= _TEAM_RANK[action])
                .values(team_state=action, updated_at=at, version=a.version + 1))
    if changed:
        bump(conn)
    return changed


# -- the desk ---------------------------------------------------------------------------


def _alarm(row: Any) -> Alarm:
    return Alarm(id=row.id, origin=row.origin, kind=row.kind, subject=row.subject,
                 desk=row.desk, place=row.place, what=row.what, note=row.note, ts=int(row.ts),
                 received_at=int(row.received_at),
                 escalated_at=int(row.escalated_at) if row.escalated_at is not None else None,
                 team_state=row.team_state, state=row.state, handler=row.handler,
                 answered_at=int(row.answered_at) if row.answered_at is not None else None,
                 updated_at=int(row.updated_at), version=int(row.version))


def list_alarms(engine: Engine, member: StaffMember, now: int, *, limit: int = 50) -> list[Alarm]:
    """The member's desk's alarms: open ones (unanswered first, newest first), then
    those resolved (by the desk or the team) in the last hour. Bounded: the open ones
    by the index, at most ``limit``."""
    a = db.alarms.c
    closed = sa.or_(a.state == "resolved", a.team_state.in_(TEAM_CLOSED))
    query = sa.select(db.alarms).where(
        sa.or_(sa.not_(closed), a.updated_at >= now - SHOWN_AFTER_RESOLVED_MS))
    if member.role != "admin":
        query = query.where(a.desk == member.role)
    waiting = sa.and_(a.state == "new", a.team_state.not_in(TEAM_CLOSED))
    query = query.order_by(sa.case((waiting, 0), (closed, 2), else_=1),
                           a.ts.desc()).limit(limit)
    with db.reading(engine) as conn:
        return [_alarm(r) for r in conn.execute(query)]


def get_alarm(engine: Engine, member: StaffMember, alarm_id: str) -> Alarm:
    with db.reading(engine) as conn:
        row = conn.execute(sa.select(db.alarms).where(db.alarms.c.id == alarm_id)).first()
    if row is None or not member.sees(row.desk):
        raise NotFound("no such alarm")
    return _alarm(row)


def answer(engine: Engine, central: Central, member: StaffMember, alarm_id: str, action: str,
           seen_state: str, now: int) -> Alarm:
    """The desk's answer on an alarm; it travels back to the node (module docstring).

    ``seen_state``: the desk state the member saw. When another member answered
    since, :class:`Stale` says who and when (the team's own answers do not
    make the member's view stale: they do not change what the desk did).
    """
    if action not in ANSWERS:
        raise NotAllowed(f"unknown answer {action!r}")
    a = db.alarms
    with engine.begin() as conn:
        row = conn.execute(sa.select(a).where(a.c.id == alarm_id).with_for_update()).first()
        if row is None or not member.sees(row.desk):
            raise NotFound("no such alarm")
        if row.state != seen_state:
            raise Stale(row.handler, row.state, int(row.updated_at))
        if not can_answer(row.state, action):
            raise NotAllowed(f"an alarm that is {row.state} cannot become {action}")
        conn.execute(a.update().where(a.c.id == alarm_id).values(
            state=action, handler=sa.func.coalesce(a.c.handler, member.name),
            answered_at=sa.func.coalesce(a.c.answered_at, now), updated_at=now,
            version=a.c.version + 1))
        if row.subject == "alert":
            append_central_event(conn, central, "ack", "public",
                                 {"ref": alarm_id, "action": action, "by": row.desk,
                                  "note": "", "to": None})
        else:
            _move_report(conn, alarm_id, action, member, now)
        audit(conn, now, member.name, "alarm", alarm_id, f"{row.state} -> {action}")
        bump(conn)
    return get_alarm(engine, member, alarm_id)


def _move_report(conn: Connection, report_id: str, action: str, member: StaffMember,
                 now: int) -> None:
    r = db.reports
    row = conn.execute(sa.select(r).where(r.c.event_id == report_id).with_for_update()).first()
    if row is None:
        return  # not projected yet: the alarm row alone says it
    to = _REPORT_MOVES.get(action, {}).get(row.state)
    if to is None:
        return
    values: dict[str, Any] = {"state": to, "updated_at": now, "version": r.c.version + 1}
    if to == "in_progress":
        values["handler"] = member.name
    conn.execute(r.update().where(r.c.event_id == report_id).values(**values))
    conn.execute(db.report_updates.insert().values(
        report_id=report_id, origin=row.origin, receipt=row.receipt, state=to, at=now))


def to_json(alarm: Alarm) -> dict[str, Any]:
    """An alarm as ``GET /staff/api/alarms`` gives it."""
    return {k: getattr(alarm, k) for k in Alarm.__dataclass_fields__}
