"""Validation of the team's forms (pure): what the routes pass to the runtime.

The event model's own validators decide (:mod:`sync.bodies`), so a form
refuses exactly what the event would refuse; each refusal is an
:class:`~sync.InvalidField` naming the form field.

>>> ack_form({"ref": "0193a0b2-0000-7000-8000-000000000001", "action": "on_my_way"},
...          by="Fatma").action
'on_my_way'
>>> alert_form({"title": "Inbraken", "severity": "severe", "expires": "4"},
...            now_ms=0).expires_ms
14400000
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from sync import InvalidField
from sync.bodies import validate_ack, validate_alert

from .views import ACK_ACTIONS

MIN_HOURS: Final = 1
MAX_HOURS: Final = 72
EXPIRY_CHOICES: Final = (1, 2, 4, 8, 12, 24, 48, 72)
DEFAULT_HOURS: Final = 4


@dataclass(frozen=True)
class AckInput:
    """A validated answer to an open item."""

    ref: str
    action: str
    note: str
    to: str | None


@dataclass(frozen=True)
class AlertInput:
    """A validated public alert from the team."""

    title: str
    text: str
    severity: str
    hours: int
    expires_ms: int


def ack_form(values: Mapping[str, str], *, by: str) -> AckInput:
    """The ack form (fields ref, action, to, note)."""
    action = values.get("action", "")
    if action not in ACK_ACTIONS:
        raise InvalidField("action", f"must be one of {', '.join(ACK_ACTIONS)}")
    to = values.get("to") or None
    if action == "escalated" and to is None:
        raise InvalidField("to", "must be police or municipality")
    body = validate_ack({"ref": values.get("ref", ""), "action": action, "by": by,
                         "note": values.get("note", ""),
                         "to": to if action == "escalated" else None})
    return AckInput(body["ref"], body["action"], body["note"], body["to"])


def hide_form(values: Mapping[str, str], *, by: str) -> str:
    """The hide form: the id of a resident's warning."""
    body = validate_ack({"ref": values.get("ref", ""), "action": "hidden", "by": by})
    ref: str = body["ref"]
    return ref


def alert_form(values: Mapping[str, str], *, now_ms: int) -> AlertInput:
    """The raise-an-alert form (title, text, severity, expires in hours)."""
    raw_hours = values.get("expires", "").strip()
    if not raw_hours.isdigit() or not MIN_HOURS <= int(raw_hours) <= MAX_HOURS:
        raise InvalidField("expires", f"must be {MIN_HOURS} to {MAX_HOURS} hours")
    hours = int(raw_hours)
    expires_ms = now_ms + hours * 3_600_000
    body = validate_alert({"source": "team", "title": values.get("title", ""),
                           "text": values.get("text", ""),
                           "severity": values.get("severity", ""), "expires": expires_ms})
    if not body["title"]:
        raise InvalidField("title", "must not be empty")
    return AlertInput(body["title"], body["text"], body["severity"], hours, expires_ms)
