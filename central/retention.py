"""Retention at central: what residents told about themselves is not kept forever.

A report that was *handled* (its state ``handled``, reached more than
``retention_days`` ago; Signalen's default is 365) is anonymised:

* in the stored report event (``events.body``): the reporter's ``contact``,
  the free ``text``, ``called_112_by`` (a name) and the place's free text are
  removed; category, meeting point, audience, ``called_112``, language and
  receipt code stay, and ``anonymised`` records when. The same for the events
  about it: the neighbours' copy (an ``alert`` with ``ref``) loses its text,
  place text and ``called_112_by``, a team's answer (an ``ack``) its ``note``
  (action, time and the member's name stay);
* the staff notes on it (``report_notes.text``), the desk's public replies to
  the resident (``report_updates.reply``), the note of an alarm about it
  (``alarms.note``) and the quotes of notes and replies in the staff audit log
  (``staff_audit.detail`` of its ``note`` and ``reply`` lines) are emptied.

Rows are never deleted: the insight page counts reports per week, category
and area and measures answer times from ``reports``, ``report_updates`` and
acks, none of which depend on what is removed, so its figures stay exactly the
same (tests/integration/test_retention.py compares them). The event's node
signature covered the original body and no longer verifies afterwards: proof
of origin ends with the data it proved. A report still open is not touched,
whatever its age; :func:`run_retention` counts those too, so that a desk sees
what waits. Each run writes one line to the staff audit log (``retention``,
or ``retention_dry_run``), by ``retention``.

>>> cutoff_ms(365, now_ms=400 * 86_400_000) == 35 * 86_400_000
True
>>> sorted(anonymised_body({"category": "social", "text": "Buurman 12 schreeuwt",
...     "contact": "06-12345678", "place": {"point": "plein", "text": "bij nr. 12"}},
...     at=1).items())  # doctest: +NORMALIZE_WHITESPACE
[('anonymised', 1), ('category', 'social'), ('contact', None), ('place', {'point': 'plein',
 'text': ''}), ('text', '')]
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import db, queries
from .staff.accounts import audit
from .staff.db import report_notes, staff_audit
from .triage import ROUTES

__all__ = ["RetentionResult", "anonymise_report", "anonymised_body", "cutoff_ms",
           "run_retention"]

DAY_MS: Final = 86_400_000
DEFAULT_DAYS: Final = 365
#: Reports anonymised per transaction: short transactions beside ingest.
CHUNK: Final = 500
WHO: Final = "retention"
#: The states of a report not yet handled (``central.handling.STATES`` but ``handled``).
OPEN_STATES: Final = ("new", "in_progress", "reopened")


@dataclass(frozen=True)
class RetentionResult:
    """What a run did (or, dry, would do)."""

    days: int
    cutoff: int
    reports: int
    contacts: int
    open_older: int
    applied: bool

    @property
    def cutoff_text(self) -> str:
        """The cutoff as a UTC date."""
        return dt.datetime.fromtimestamp(self.cutoff / 1000, dt.UTC).strftime("%Y-%m-%d")


def cutoff_ms(days: int, *, now_ms: int | None = None) -> int:
    """Reports handled before this time (ms) are anonymised."""
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return now - days * DAY_MS


def anonymised_body(body: dict[str, Any], *, at: int) -> dict[str, Any]:
    """``body`` of a report (or of an alert or ack about one) without what could name
    a person: its free text, note, contact, place text and who called 112."""
    out = dict(body)
    for key in ("text", "note", "called_112_by"):
        if key in out or (key == "text" and "category" in out):
            out[key] = ""
    if "contact" in out:
        out["contact"] = None
    place = out.get("place")
    if isinstance(place, dict):
        out["place"] = {**place, "text": ""}
    out["anonymised"] = at
    return out


def _about(conn: Connection, ids: list[str]) -> list[tuple[str, str]]:
    """(id, body) of the alerts and acks that refer to the reports ``ids`` (a
    neighbours' copy of a report, a team's answer with its note)."""
    rows = conn.execute(queries.events_about(conn.dialect.name, len(ids)).text(),
                        {f"i{n}": i for n, i in enumerate(ids)})
    return [(r.id, r.body) for r in rows]


def _due(conn: Connection, cutoff: int, limit: int | None) -> list[tuple[str, str]]:
    """(event id, body) of handled reports past ``cutoff`` not yet anonymised."""
    r, e = db.reports, db.events
    query = (sa.select(e.c.id, e.c.body).select_from(r.join(e, e.c.id == r.c.event_id))
             .where(r.c.route.in_(ROUTES), r.c.state == "handled", r.c.updated_at < cutoff,
                    e.c.body.notlike('%"anonymised":%'))
             .order_by(r.c.updated_at))
    if limit is not None:
        query = query.limit(limit)
    return [(row.id, row.body) for row in conn.execute(query)]


def _anonymise(conn: Connection, due: list[tuple[str, str]], now: int) -> int:
    """Anonymise the reports ``due`` (id, body) and what refers to them, inside the
    caller's transaction. Returns how many of them had contact details."""
    ids = [event_id for event_id, _ in due]
    if not ids:
        return 0
    contacts = 0
    for event_id, raw in due + _about(conn, ids):
        body = json.loads(raw)
        contacts += event_id in ids and bool(body.get("contact"))
        conn.execute(db.events.update().where(db.events.c.id == event_id).values(
            body=json.dumps(anonymised_body(body, at=now), ensure_ascii=False,
                            separators=(",", ":"), sort_keys=True)))
    conn.execute(report_notes.update().where(report_notes.c.report_id.in_(ids))
                 .values(text=""))
    conn.execute(db.report_updates.update().where(
        db.report_updates.c.report_id.in_(ids), db.report_updates.c.reply.isnot(None))
        .values(reply=""))
    conn.execute(db.alarms.update().where(db.alarms.c.id.in_(ids)).values(note=""))
    # The audit log quotes the start of each note and reply: not any more.
    conn.execute(staff_audit.update().where(
        staff_audit.c.subject.in_(ids), staff_audit.c.action.in_(("note", "reply")))
        .values(detail=""))
    return contacts


def anonymise_report(engine: Engine, report: str, *, by: str = WHO,
                     now_ms: int | None = None) -> tuple[str, bool]:
    """Anonymise one report now, whatever its state or age (a resident's request),
    found by its id or receipt code. Returns (its id, whether it had contact details).

    LookupError when no report, or more than one, has that id or receipt code."""
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    r, e = db.reports, db.events
    with engine.begin() as conn:
        rows = conn.execute(
            sa.select(e.c.id, e.c.body).select_from(r.join(e, e.c.id == r.c.event_id))
            .where(sa.or_(r.c.event_id == report, r.c.receipt == report.upper())).limit(3)
        ).all()
        if len(rows) != 1:
            raise LookupError(f"no report has the id or receipt code {report!r}" if not rows
                              else f"more than one report has the receipt code {report!r}: "
                              "give the report's id (the end of its page's address, "
                              "/staff/reports/ID)")
        contacts = _anonymise(conn, [(rows[0].id, rows[0].body)], now)
        audit(conn, now, by, "anonymise_report", rows[0].id,
              "on request" + (" (had contact details)" if contacts else ""))
    return rows[0].id, bool(contacts)


def run_retention(engine: Engine, days: int = DEFAULT_DAYS, *, apply: bool,
                  by: str = WHO, now_ms: int | None = None) -> RetentionResult:
    """Anonymise (``apply``) or count (dry run) handled reports older than ``days``."""
    if days < 1:
        raise ValueError("retention_days must be at least 1")
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    cutoff = cutoff_ms(days, now_ms=now)
    reports = contacts = 0
    with db.reading(engine) as conn:
        # Per desk and open state, a range of ``(route, state, ts)`` (migration 0011).
        r = db.reports.c
        open_older = int(conn.execute(
            sa.select(sa.func.count()).select_from(db.reports)
            .where(r.route.in_(ROUTES), r.state.in_(OPEN_STATES), r.ts < cutoff)).scalar_one())
        if not apply:
            due = _due(conn, cutoff, None)
            reports = len(due)
            contacts = sum(1 for _, body in due if json.loads(body).get("contact"))
    if apply:
        while True:
            with engine.begin() as conn:
                due = _due(conn, cutoff, CHUNK)
                contacts += _anonymise(conn, due, now)
                reports += len(due)
            if len(due) < CHUNK:
                break
    result = RetentionResult(days, cutoff, reports, contacts, open_older, apply)
    with engine.begin() as conn:
        audit(conn, now, by, "retention" if apply else "retention_dry_run", "",
              f"{'anonymised' if apply else 'would anonymise'} {reports} reports handled "
              f"before {result.cutoff_text} ({contacts} with contact details; "
              f"retention_days {days}); {open_older} older reports still open")
    return result
