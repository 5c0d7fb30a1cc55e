"""Handling reports at central: state machine, who handles it, re-routing, notes.

The report event itself never changes; its handling state lives in the
``reports`` row (``state``, ``handler``, ``route``, ``rule``, ``version``).

State machine (as Signalen has it)::

    new ──take──► in_progress ──► handled ──► reopened ──take──► in_progress …

Taking a report makes the member its ``handler``. Every change is an
optimistic update: the form carries the ``version`` the member saw, and the
``UPDATE … WHERE version = :seen`` changes nothing when someone else was
first; the member then gets :class:`Stale` with who changed it and when
("X took this at 14:05"), never a silent overwrite. Every state change
inserts a ``report_updates`` row in the same transaction, so the new state
travels back to the node with the next sync reply and the resident sees it
with their receipt code. Every action is in the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from sync.text import clean_text

from . import alarms, db
from .staff.accounts import StaffError, StaffMember, audit
from .staff.db import report_notes
from .triage import ROUTES

STATES: Final = ("new", "in_progress", "handled", "reopened")
#: Allowed changes: (from, to). "take" is the move to in_progress.
TRANSITIONS: Final = frozenset({
    ("new", "in_progress"),
    ("in_progress", "handled"),
    ("handled", "reopened"),
    ("reopened", "in_progress"),
})
MAX_NOTE: Final = 2000
#: Re-routed by staff: the rule column names who did it.
MANUAL_RULE: Final = "manual"


class NotAllowed(StaffError):
    """The member's role does not cover this report, or the change is not in the state machine."""


class NotFound(StaffError):
    """No such report."""


class Stale(StaffError):
    """Someone else changed the report since the member loaded it."""

    def __init__(self, handler: str | None, state: str, at: int, version: int) -> None:
        super().__init__(f"changed by {handler or 'someone'} (now {state})")
        self.handler = handler
        self.state = state
        self.at = at
        self.version = version


@dataclass(frozen=True)
class Report:
    """A report as the staff pages show it: triage row plus the event's body."""

    id: str
    origin: str
    receipt: str
    category: str
    ts: int
    route: str
    rule: str
    state: str
    handler: str | None
    updated_at: int
    version: int
    body: dict[str, Any]

    def next_states(self) -> list[str]:
        """The states this report can move to now."""
        return [to for (frm, to) in sorted(TRANSITIONS) if frm == self.state]


@dataclass(frozen=True)
class Note:
    """A staff note on a report."""

    id: int
    staff: str
    role: str
    at: int
    text: str


def can_move(state: str, to: str) -> bool:
    """Is ``state`` → ``to`` a change of the state machine?

    >>> can_move("new", "in_progress"), can_move("new", "handled"), can_move("handled", "reopened")
    (True, False, True)
    """
    return (state, to) in TRANSITIONS


def _report(row: Any) -> Report:
    return Report(id=row.event_id, origin=row.origin, receipt=row.receipt,
                  category=row.category, ts=int(row.ts), route=row.route, rule=row.rule,
                  state=row.state, handler=row.handler, updated_at=int(row.updated_at),
                  version=int(row.version), body=orjson.loads(row.body))


def _select() -> sa.Select[Any]:
    r = db.reports
    return sa.select(r, db.events.c.body).join(db.events, db.events.c.id == r.c.event_id)


#: A page of the staff list: (ts, event id) of its last row, for the next page.
Cursor = tuple[int, str]


def _all(ranges: list[sa.Select[Any]]) -> sa.Select[Any] | sa.CompoundSelect[Any]:
    """The rows of several ranges (each ordered and limited) in one statement: one
    round trip for an admin's desks and states instead of one per range."""
    if len(ranges) == 1:
        return ranges[0]
    return sa.union_all(*(sa.select(q.subquery()) for q in ranges))


def list_reports(engine: Engine, member: StaffMember, *, states: tuple[str, ...] = (),
                 route: str | None = None, limit: int = 100,
                 before: Cursor | None = None) -> tuple[list[Report], Cursor | None]:
    """One page of the reports the member's role sees, newest first, and the cursor of
    the next (older) page, or None when this is the last.

    Cost does not grow with history: each desk and state is one range scan of an
    index (``(route, state, ts, event_id)`` or ``(route, ts, event_id)``; an admin's
    list of every desk reads each desk, a route being always one of ``ROUTES``)
    that stops after ``limit + 1`` rows (all in one ``UNION ALL``), the ranges are
    merged here, and only the page's rows are joined to their event bodies. On the
    first page of a list with new reports, untaken emergencies come first (they
    are few: each is a red row the desk answers).
    """
    r = db.reports.c
    desk = route if member.role == "admin" and route in ROUTES else (
        None if member.role == "admin" else member.role)
    desks = ROUTES if desk is None else (desk,)
    with db.reading(engine) as conn:
        ranges = []
        for one, state in ((d, s) for d in desks for s in states or (None,)):
            q = sa.select(r.event_id, r.ts).where(r.route == one)
            if state is not None:
                q = q.where(r.state == state)
            if before is not None:
                q = q.where(sa.or_(r.ts < before[0],
                                   sa.and_(r.ts == before[0], r.event_id < before[1])))
            ranges.append(q.order_by(r.ts.desc(), r.event_id.desc()).limit(limit + 1))
        keys = {str(ident): (int(ts), str(ident)) for ident, ts in conn.execute(_all(ranges))}
        ordered = sorted(keys.values(), reverse=True)
        more = len(ordered) > limit
        page = ordered[:limit]
        first: list[str] = []
        if before is None and (not states or "new" in states):
            urgent = conn.execute(_all([
                sa.select(r.event_id, r.ts).where(r.route == one, r.state == "new",
                                                  r.category == "emergency")
                .order_by(r.ts.desc(), r.event_id.desc()).limit(limit) for one in desks]))
            first = [str(i) for ts, i in sorted(((int(ts), str(i)) for i, ts in urgent),
                                                reverse=True)[:limit]]
        ids = list(dict.fromkeys([*first, *(i for _, i in page)]))
        rows = {row.event_id: _report(row) for row in conn.execute(
            _select().where(db.reports.c.event_id.in_(ids)))} if ids else {}
    return [rows[i] for i in ids if i in rows], (page[-1] if more and page else None)


def counts(engine: Engine, member: StaffMember) -> dict[str, int]:
    """Number of reports per state that the member's role sees (``report_counts``,
    kept by triggers: a read of at most a few rows)."""
    c = db.report_counts.c
    query = sa.select(c.state, sa.func.sum(c.n)).group_by(c.state)
    if member.role != "admin":
        query = query.where(c.route == member.role)
    with db.reading(engine) as conn:
        found = {state: int(n or 0) for state, n in conn.execute(query)}
    return {state: found.get(state, 0) for state in STATES}


def _sees(conn: Connection, member: StaffMember, row: Any) -> bool:
    """The member's desk sees a report routed to it, and one a team escalated to it
    (the report stays routed where triage put it; both desks can act on it)."""
    if member.sees(row.route):
        return True
    a = db.alarms.c
    return conn.execute(sa.select(a.id).where(a.id == row.event_id, a.desk == member.role)
                        ).first() is not None


def get_report(engine: Engine, member: StaffMember, report_id: str) -> tuple[Report, list[Note]]:
    """One report and its notes; :class:`NotFound` also when the role does not see it."""
    with db.reading(engine) as conn:
        row = conn.execute(_select().where(db.reports.c.event_id == report_id)).first()
        if row is None or not _sees(conn, member, row):
            raise NotFound("no such report")
        notes = [Note(int(n.id), n.staff, n.role, int(n.at), n.text) for n in conn.execute(
            sa.select(report_notes).where(report_notes.c.report_id == report_id)
            .order_by(report_notes.c.id))]
    return _report(row), notes


def _current(conn: Connection, member: StaffMember, report_id: str) -> Any:
    row = conn.execute(sa.select(db.reports).where(db.reports.c.event_id == report_id)
                       .with_for_update()).first()
    if row is None or not _sees(conn, member, row):
        raise NotFound("no such report")
    return row


def _stale(row: Any) -> Stale:
    return Stale(row.handler, row.state, int(row.updated_at), int(row.version))


def change_state(engine: Engine, member: StaffMember, report_id: str, to: str, seen_version: int,
                 now: int) -> Report:
    """Move a report to ``to`` (``in_progress`` = take it) if nobody changed it since
    ``seen_version``; record the change for the node and in the audit log."""
    if to not in STATES:
        raise NotAllowed(f"unknown state {to!r}")
    r = db.reports
    with engine.begin() as conn:
        row = _current(conn, member, report_id)
        if int(row.version) != seen_version:
            raise _stale(row)
        if not can_move(row.state, to):
            raise NotAllowed(f"a report that is {row.state} cannot become {to}")
        values: dict[str, Any] = {"state": to, "updated_at": now, "version": r.c.version + 1}
        if to == "in_progress":
            values["handler"] = member.name
        done = conn.execute(r.update().where(r.c.event_id == report_id,
                                             r.c.version == seen_version).values(**values))
        if done.rowcount != 1:  # lost a race between the read and the write
            raise _stale(_current(conn, member, report_id))
        conn.execute(db.report_updates.insert().values(
            report_id=report_id, origin=row.origin, receipt=row.receipt, state=to, at=now))
        audit(conn, now, member.name, "take" if to == "in_progress" else "state", report_id,
              f"{row.state} -> {to}")
    return get_report(engine, member, report_id)[0]


def reroute(engine: Engine, member: StaffMember, report_id: str, route: str, seen_version: int,
            now: int) -> Report:
    """Send a report to the other desk. Its handler is cleared; a report being handled
    goes back to ``new`` there (and the node hears "forwarded")."""
    if route not in ROUTES:
        raise NotAllowed(f"route must be one of {', '.join(ROUTES)}")
    r = db.reports
    with engine.begin() as conn:
        row = _current(conn, member, report_id)
        if int(row.version) != seen_version:
            raise _stale(row)
        if row.route == route:
            raise NotAllowed(f"the report is already routed to {route}")
        state = "new" if row.state in ("in_progress", "reopened") else row.state
        rule = f"{MANUAL_RULE}:{member.name}"[:80]
        done = conn.execute(r.update().where(r.c.event_id == report_id,
                                             r.c.version == seen_version).values(
            route=route, rule=rule, handler=None, state=state, updated_at=now,
            version=r.c.version + 1))
        if done.rowcount != 1:
            raise _stale(_current(conn, member, report_id))
        if state != row.state:
            conn.execute(db.report_updates.insert().values(
                report_id=report_id, origin=row.origin, receipt=row.receipt, state=state,
                at=now))
        audit(conn, now, member.name, "reroute", report_id,
              f"{row.route} -> {route} (rule was {row.rule})")
    report, _ = get_report(engine, _AdminView, report_id)
    return report


_AdminView = StaffMember(key="", name="", role="admin", must_change=False, created=0,
                         last_login=None)


def add_note(engine: Engine, member: StaffMember, report_id: str, text: str, now: int) -> Note:
    """Add a note (at most 2,000 characters after cleaning) to a report."""
    if not isinstance(text, str) or len(text) > MAX_NOTE * 4:
        raise NotAllowed(f"a note has at most {MAX_NOTE} characters")
    cleaned = clean_text(text, multiline=True)
    if not cleaned:
        raise NotAllowed("a note must not be empty")
    if len(cleaned) > MAX_NOTE:
        raise NotAllowed(f"a note has at most {MAX_NOTE} characters")
    with engine.begin() as conn:
        _current(conn, member, report_id)
        note_id = conn.execute(report_notes.insert().values(
            report_id=report_id, staff=member.name, role=member.role, at=now, text=cleaned)
            .returning(report_notes.c.id)).scalar_one()
        audit(conn, now, member.name, "note", report_id, cleaned[:120])
    return Note(int(note_id), member.name, member.role, now, cleaned)


#: Characters of a desk's public reply to a resident (``sync.exchange.MAX_REPLY_CHARS``).
MAX_REPLY = 280


@dataclass(frozen=True)
class Reply:
    """A desk's public answer to the resident, as sent to the report's node."""

    staff: str
    at: int
    text: str


def replies(engine: Engine, report_id: str) -> list[Reply]:
    """The public replies sent on a report, oldest first (who sent them is in the audit
    log; the row keeps only what went to the node)."""
    u = db.report_updates.c
    with db.reading(engine) as conn:
        return [Reply("", int(row.at), str(row.reply)) for row in conn.execute(
            sa.select(u.at, u.reply).where(u.report_id == report_id, u.reply.isnot(None))
            .order_by(u.id))]


def reply_to_resident(engine: Engine, member: StaffMember, report_id: str, text: str,
                      now: int) -> Reply:
    """A short public answer to the resident: travels to the report's node with the
    receipt updates and is shown to whoever holds the receipt code (no names)."""
    if not isinstance(text, str) or len(text) > MAX_REPLY * 4:
        raise NotAllowed(f"a reply has at most {MAX_REPLY} characters")
    cleaned = clean_text(text, multiline=True)
    if not cleaned:
        raise NotAllowed("a reply must not be empty")
    if len(cleaned) > MAX_REPLY:
        raise NotAllowed(f"a reply has at most {MAX_REPLY} characters")
    with engine.begin() as conn:
        row = _current(conn, member, report_id)
        conn.execute(db.report_updates.insert().values(
            report_id=report_id, origin=row.origin, receipt=row.receipt, state=row.state,
            at=now, reply=cleaned))
        audit(conn, now, member.name, "reply", report_id, cleaned[:120])
        alarms.bump(conn)
    return Reply(member.name, now, cleaned)
