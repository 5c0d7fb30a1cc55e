"""Area broadcasts: police and municipality warn residents through the nodes.

A broadcast is a public ``alert`` event of central (``source = "central"``),
signed by central and seq'd by :func:`central.events.append_central_event`;
nodes receive it in their next sync reply and show it only after verifying
central's signature. Messages are never edited; a change is a new message
that names the one it replaces in ``ref`` (as CAP's Update and Cancel do):

* **alert** — ``ref`` is null; ``expires`` is required (1 hour to 7 days);
* **update** — ``ref`` = the message it replaces; new title, text, areas,
  severity and expiry; ``expires`` later than the message's own ``ts``;
* **cancel** — ``ref`` = the message it withdraws; ``expires`` = the moment
  of cancelling, so ``expires <= ts``: a message that was over when it was
  made. Title, category, severity and areas are copied from the withdrawn
  message; ``text`` may say why.

So a node needs one rule for both: *an alert is not shown once a later alert
of the same origin refers to it*, besides the expiry it already checks.
Only the newest message of a chain can be updated or cancelled; two staff
changing the same broadcast at once: the second is told who was first.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Final

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from sync import Event
from sync.bodies import AREA, CATEGORIES, MAX_AREAS, MAX_REPORT_TEXT, MAX_TITLE, SEVERITIES
from sync.text import clean_text

from . import db
from .events import append_central_event
from .identity import Central
from .staff.accounts import StaffError, StaffMember, audit
from .staff.db import staff_audit

KINDS: Final = ("alert", "update", "cancel")
BROADCAST_CATEGORIES: Final = (*CATEGORIES, "other")
#: Choices of the form, in hours.
EXPIRY_HOURS: Final = (1, 2, 4, 8, 12, 24, 48, 72, 168)
MAX_HOURS: Final = 168
#: How far back the lists and the CAP feed look (longer than any expiry).
LOOKBACK_MS: Final = (MAX_HOURS + 24) * 3600 * 1000
MAX_CHAIN: Final = 100
_SPLIT = re.compile(r"[\s,;]+")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class BroadcastError(StaffError, ValueError):
    """A broadcast form is invalid; ``field`` names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class Replaced(StaffError):
    """The broadcast was updated or cancelled already (by ``by`` at ``at``)."""

    def __init__(self, by: str, at: int, kind: str) -> None:
        super().__init__(f"already replaced by {by}")
        self.by, self.at, self.kind = by, at, kind


@dataclass(frozen=True)
class Broadcast:
    """One message of central as the staff pages and the CAP feed see it."""

    id: str
    seq: int
    ts: int
    body: dict[str, Any]
    #: The message that replaced this one (an update or cancel), if any.
    replaced_by: str | None = None

    @property
    def kind(self) -> str:
        """alert, update or cancel (see the module docstring)."""
        return classify(self.body, self.ts)

    @property
    def ref(self) -> str | None:
        """The message this one replaces."""
        ref = self.body.get("ref")
        return ref if isinstance(ref, str) else None

    @property
    def expires(self) -> int | None:
        """When it stops being shown (ms), or None."""
        value = self.body.get("expires")
        return int(value) if isinstance(value, int) else None

    def active(self, now: int) -> bool:
        """Shown to residents now: not replaced, not a cancel, not expired."""
        if self.replaced_by is not None or self.kind == "cancel":
            return False
        return self.expires is None or self.expires > now


def classify(body: dict[str, Any], ts: int) -> str:
    """Which kind of message a central alert body is.

    >>> classify({"ref": None, "expires": 10}, 5), classify({"ref": "x", "expires": 10}, 5)
    ('alert', 'update')
    >>> classify({"ref": "x", "expires": 5}, 5)
    'cancel'
    """
    if not body.get("ref"):
        return "alert"
    expires = body.get("expires")
    if isinstance(expires, int) and expires <= ts:
        return "cancel"
    return "update"


def parse_areas(text: str) -> list[str]:
    """Area codes from what staff typed: separated by spaces, commas or semicolons.

    >>> parse_areas(" esc-01, LDY-02 esc-01 ")
    ['ESC-01', 'LDY-02']
    """
    if len(text) > 1000:
        raise BroadcastError("areas", f"at most {MAX_AREAS} area codes")
    out: list[str] = []
    for part in _SPLIT.split(text.strip().upper()):
        if not part:
            continue
        if not AREA.fullmatch(part):
            raise BroadcastError("areas", f"{part[:20]!r} is not an area code such as ESC-01")
        if part not in out:
            out.append(part)
    if len(out) > MAX_AREAS:
        raise BroadcastError("areas", f"at most {MAX_AREAS} area codes")
    return out


def _text(values: dict[str, str], name: str, limit: int, *, multiline: bool,
          required: bool) -> str:
    raw = values.get(name, "")
    if len(raw) > limit * 4:
        raise BroadcastError(name, f"at most {limit} characters")
    cleaned = clean_text(raw, multiline=multiline)
    if len(cleaned) > limit:
        raise BroadcastError(name, f"at most {limit} characters")
    if required and not cleaned:
        raise BroadcastError(name, "must not be empty")
    return cleaned


def parse_form(values: dict[str, str]) -> dict[str, Any]:
    """Validated fields of a new or updated broadcast (raises :class:`BroadcastError`)."""
    severity = values.get("severity", "")
    if severity not in SEVERITIES:
        raise BroadcastError("severity", f"must be one of {', '.join(SEVERITIES)}")
    category = values.get("category", "other")
    if category not in BROADCAST_CATEGORIES:
        raise BroadcastError("category", f"must be one of {', '.join(BROADCAST_CATEGORIES)}")
    try:
        hours = int(values.get("hours", ""))
    except ValueError:
        raise BroadcastError("hours", "choose how long it is shown") from None
    if not 1 <= hours <= MAX_HOURS:
        raise BroadcastError("hours", f"between 1 and {MAX_HOURS} hours")
    return {
        "title": _text(values, "title", MAX_TITLE, multiline=False, required=True),
        "text": _text(values, "text", MAX_REPORT_TEXT, multiline=True, required=False),
        "areas": parse_areas(values.get("areas", "")),
        "severity": severity,
        "category": category,
        "hours": hours,
    }


def _body(fields: dict[str, Any], *, expires: int, ref: str | None) -> dict[str, Any]:
    return {"source": "central", "category": fields["category"],
            "severity": fields["severity"], "title": fields["title"], "text": fields["text"],
            "place": {"point": None, "text": ""}, "areas": list(fields["areas"]),
            "expires": expires, "ref": ref, "called_112": False, "called_112_by": "",
            "button": None}


def _row(row: Any) -> Broadcast:
    return Broadcast(id=row.id, seq=int(row.seq), ts=int(row.ts), body=orjson.loads(row.body))


def _messages_query(central: Central) -> sa.Select[Any]:
    e = db.events
    return sa.select(e.c.id, e.c.seq, e.c.ts, e.c.body).where(
        e.c.origin == central.origin, e.c.stream == "public", e.c.kind == "alert")


def _replacements(conn: Connection, central: Central, ref: str) -> list[Broadcast]:
    # Bodies are stored in canonical JSON (sorted keys, no spaces): the ref is a fixed string.
    needle = f'%"ref":"{ref}"%'
    rows = conn.execute(_messages_query(central).where(db.events.c.body.like(needle))).all()
    return [b for b in map(_row, rows) if b.ref == ref]


def _replaced_by(conn: Connection, central: Central, ref: str) -> Replaced | None:
    found = _replacements(conn, central, ref)
    if not found:
        return None
    first = min(found, key=lambda b: b.seq)
    who = conn.execute(sa.select(staff_audit.c.staff).where(
        staff_audit.c.subject == ref,
        staff_audit.c.action.in_(("broadcast_update", "broadcast_cancel")))
        .order_by(staff_audit.c.id).limit(1)).scalar()
    return Replaced(str(who or "?"), first.ts, first.kind)


def get(engine: Engine, central: Central, message_id: str) -> Broadcast | None:
    """One message of central by id (with what replaced it), or None."""
    if not _UUID.fullmatch(message_id):
        return None
    with db.reading(engine) as conn:
        row = conn.execute(_messages_query(central).where(db.events.c.id == message_id)).first()
        if row is None:
            return None
        found = _row(row)
        later = _replacements(conn, central, message_id)
    if later:
        return Broadcast(found.id, found.seq, found.ts, found.body,
                         min(later, key=lambda b: b.seq).id)
    return found


def recent(engine: Engine, central: Central, now: int, limit: int = 500) -> list[Broadcast]:
    """Central's messages of the look-back window, newest first, with ``replaced_by``."""
    with db.reading(engine) as conn:
        rows = conn.execute(_messages_query(central).where(db.events.c.ts >= now - LOOKBACK_MS)
                            .order_by(db.events.c.seq.desc()).limit(limit)).all()
    messages = [_row(r) for r in rows]
    replaced: dict[str, str] = {}
    for m in sorted(messages, key=lambda b: b.seq):
        if m.ref and m.ref not in replaced:
            replaced[m.ref] = m.id
    return [Broadcast(m.id, m.seq, m.ts, m.body, replaced.get(m.id)) for m in messages]


def chain(engine: Engine, central: Central, message: Broadcast) -> list[Broadcast]:
    """The earlier messages ``message`` replaces, newest first (bounded)."""
    out: list[Broadcast] = []
    ref = message.ref
    with db.reading(engine) as conn:
        while ref and len(out) < MAX_CHAIN:
            row = conn.execute(_messages_query(central).where(db.events.c.id == ref)).first()
            if row is None:
                break
            earlier = _row(row)
            out.append(earlier)
            ref = earlier.ref
    return out


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def publish(engine: Engine, central: Central, member: StaffMember, fields: dict[str, Any],
            *, ref: str | None = None) -> Event:
    """A new broadcast, or an update of ``ref``: signed, stored, sent with the next syncs."""
    now = _now_ms()
    expires = now + int(fields["hours"]) * 3600 * 1000
    with engine.begin() as conn:
        if ref is not None:
            _lock_active(conn, central, ref, now)
        event = append_central_event(conn, central, "alert", "public",
                                     _body(fields, expires=expires, ref=ref))
        if ref is None:
            audit(conn, now, member.name, "broadcast", event.id,
                  f"{fields['severity']} {','.join(fields['areas']) or 'all areas'}: "
                  f"{fields['title']}")
        else:
            audit(conn, now, member.name, "broadcast_update", ref,
                  f"by {event.id}: {fields['title']}")
    return event


def cancel(engine: Engine, central: Central, member: StaffMember, ref: str,
           reason: str = "") -> Event:
    """Withdraw broadcast ``ref``: a message with ``ref`` that expires as it is made."""
    why = _text({"reason": reason}, "reason", MAX_REPORT_TEXT, multiline=True, required=False)
    with engine.begin() as conn:
        now = _now_ms()
        target = _lock_active(conn, central, ref, now)
        fields = {"category": target.body.get("category", "other"),
                  "severity": target.body.get("severity", "moderate"),
                  "title": target.body.get("title", ""), "text": why,
                  "areas": target.body.get("areas") or []}
        # expires <= the event's own ts (taken after this line): a cancel, by definition.
        event = append_central_event(conn, central, "alert", "public",
                                     _body(fields, expires=now, ref=ref))
        audit(conn, now, member.name, "broadcast_cancel", ref, f"by {event.id}: {why[:200]}")
    return event


def _lock_active(conn: Connection, central: Central, ref: str, now: int) -> Broadcast:
    if not _UUID.fullmatch(ref):
        raise BroadcastError("ref", "no such broadcast")
    row = conn.execute(_messages_query(central).where(db.events.c.id == ref)
                       .with_for_update()).first()
    if row is None:
        raise BroadcastError("ref", "no such broadcast")
    target = _row(row)
    replaced = _replaced_by(conn, central, ref)
    if replaced is not None:
        raise replaced
    if target.kind == "cancel":
        raise BroadcastError("ref", "a cancellation cannot be changed")
    if target.expires is not None and target.expires <= now:
        raise BroadcastError("ref", "this broadcast has expired already")
    return target
