"""The alarm loop: panic-button alarms, team answers and team alerts as events.

Every step is an event (DESIGN.md §3), so sync and mesh carry it without
special cases: a button hold is an ``alert``; "seen / on my way / resolved /
escalated / hidden / repeated" are ``ack`` events that refer to it. An ack
travels on the stream of what it answers (public for alerts, private for
reports), and an ack on a report moves its receipt's state, which residents
see with their receipt code.
"""

from __future__ import annotations

from typing import Any

from sync import Event, InvalidField

from .store import WriteTx

#: What the resident's receipt shows after a team answer on their report.
RECEIPT_STATE = {"on_my_way": "in_progress", "resolved": "handled", "escalated": "forwarded"}

#: The state a dashboard row shows after each ack action.
ITEM_STATE = {"seen": "seen", "on_my_way": "on_my_way", "resolved": "resolved",
              "escalated": "escalated", "hidden": "hidden"}

#: Severity of a panic-button alarm: someone may be in danger right now.
BUTTON_SEVERITY = "extreme"


def button_alarm_body(button_id: str, point: str | None, area: str,
                      point_name: str = "") -> dict[str, Any]:
    """The public alert a panic-button hold raises (place, time; no personal data).

    The meeting point's name travels in ``place.text``: teams of neighbouring
    nodes, which do not know this node's meeting points, read where it is.
    """
    return {"source": "button", "category": "emergency", "severity": BUTTON_SEVERITY,
            "title": "", "text": "", "place": {"point": point, "text": point_name},
            "areas": [area], "expires": None, "ref": None, "called_112": False,
            "called_112_by": "", "button": button_id}


def team_alert_body(title: str, text: str, severity: str, expires_ms: int | None,
                    area: str) -> dict[str, Any]:
    """A public alert raised by a team member for the residents of this area."""
    return {"source": "team", "category": "other", "severity": severity, "title": title,
            "text": text, "place": {"point": None, "text": ""}, "areas": [area],
            "expires": expires_ms, "ref": None, "called_112": False, "called_112_by": "",
            "button": None}


def store_ack(tx: WriteTx, ref: str, action: str, by: str, note: str = "",
              to: str | None = None) -> Event:
    """Writer task: append an ack on ``ref`` on that event's stream; move its receipt."""
    row = tx.event_kind_stream(ref)
    if row is None:
        raise InvalidField("ref", "no such event on this node")
    kind, stream = row
    if kind not in ("alert", "report"):
        raise InvalidField("ref", "only alerts and reports can be answered")
    body = {"ref": ref, "action": action, "by": by, "note": note, "to": to}
    event = tx.append_local("ack", stream, body)
    state = RECEIPT_STATE.get(action)
    if kind == "report" and state is not None:
        tx.set_receipt_state(ref, state)
    return event


#: How a team member is named in a public event (names stay with the team).
PUBLIC_BY = "team"


def store_team_ack(tx: WriteTx, ref: str, action: str, by: str, note: str = "",
                   to: str | None = None) -> list[Event]:
    """Writer task: a team member's answer, without their name in public.

    An answer to a public alert travels on the public stream, which reaches
    integrations (and later every node of the mesh): there it says only
    "team", without the note. The name and the note go in a private ack right
    after it, which only this node's team (and central) sees.
    """
    row = tx.event_kind_stream(ref)
    if row is None or row[1] != "public":
        return [store_ack(tx, ref, action, by, note, to)]
    public = store_ack(tx, ref, action, PUBLIC_BY, "", to)
    private = tx.append_local("ack", "private", {"ref": ref, "action": action, "by": by,
                                                 "note": note, "to": to})
    return [public, private]
