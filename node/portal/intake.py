"""One report intake for the resident form and the JSON API (issue 16).

``POST /report`` (the form, :mod:`node.portal.resident`) and ``POST
/api/v1/reports`` (the API, :mod:`node.portal.ingest`) take a report through
the same steps, with the same limits and the same answers:

1. read: :func:`from_json` (the API's body) or :func:`from_form` (the form's
   fields) give the raw report; hostile JSON — invalid UTF-8, lone surrogate
   escapes, NaN, floats, huge integers, duplicate keys, deep nesting — is
   refused by :func:`sync.canonical.parse_json`, and an unknown field (such as
   ``receipt``, which only the node assigns) is refused, as ``ReportIn``'s
   ``additionalProperties: false`` says;
2. :func:`check`: the event model's own validator
   (:func:`node.reports.validate_report_input`, limits from
   :mod:`sync.bodies`), the rule that a new report says something
   (:func:`sync.bodies.check_new_report`) and the node's meeting points;
3. :func:`store`: stored before the answer, through the runtime.

Every refusal is a :class:`Refused` with the status both paths answer
(:data:`STATUS`): 422 for input that is not a report (the field and the
reason), 413 for a report whose event would be too large, 503 with
``Retry-After`` when the store cannot take it now. Nothing is stored on any
of them; the form shows its page again with everything the resident typed.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from typing import Any, Final, Protocol

from sync import EventError, EventTooLarge, InvalidField
from sync.bodies import (
    CATEGORIES,
    MAX_CONTACT,
    MAX_NAME,
    MAX_PLACE_TEXT,
    MAX_REPORT_TEXT,
    check_new_report,
    default_audience,
)
from sync.canonical import parse_json

from ..errors import NodeError
from ..reports import Submitted, validate_report_input

log = logging.getLogger(__name__)

#: The fields of a report as the API takes it (``ReportIn`` in OpenAPI).
FIELDS: Final = frozenset({"category", "text", "place", "audience", "called_112",
                           "called_112_by", "contact", "lang"})
PLACE_FIELDS: Final = frozenset({"point", "text"})
#: Limits of the text fields, in characters after cleaning (:mod:`sync.text`):
#: the one source for the event validator, the OpenAPI schema and the form.
LIMITS: Final = {"text": MAX_REPORT_TEXT, "place.text": MAX_PLACE_TEXT,
                 "called_112_by": MAX_NAME, "contact": MAX_CONTACT}
#: Longest text a field may carry *before* cleaning (:func:`sync.bodies._text`
#: refuses more at once; cleaning may shorten what is within it).
RAW_FACTOR: Final = 4
#: Fields the form may send (it has 10): more is not the portal's form (400).
MAX_FORM_FIELDS: Final = 20
#: Characters of a refusal's reason that reach an answer (hostile keys can be long).
MAX_REASON: Final = 200


class Refused(NodeError):
    """A report is refused; nothing was stored. ``status`` is the HTTP answer."""

    def __init__(self, status: int, field: str, reason: str, *,
                 key: str | None = None, retry_after: int | None = None) -> None:
        reason = _printable(reason)
        super().__init__(f"{field}: {reason}")
        self.status = status
        self.field = field
        self.reason = reason
        #: The catalogue key of the form's message (``error.field.<field>`` by default).
        self.key = key or f"error.field.{field}"
        self.retry_after = retry_after

    @property
    def refunds(self) -> bool:
        """Whether the refusal gives the device back its unit of the report budget:
        yes when the report was not complete (a resident correcting the form must
        not run out of reports) or the node could not store it; not for a body too
        large to be a report."""
        return self.status in (STATUS["invalid"], STATUS["unavailable"])


#: Status of each kind of refusal, the same on both paths.
STATUS: Final = {"invalid": 422, "too_large": 413, "unavailable": 503}


class Runtime(Protocol):
    """What the intake needs of the node: storing a checked report."""

    async def submit_report(self, clean: Mapping[str, Any]) -> Submitted:
        """Store ``clean`` (and its public warning); answer after the COMMIT."""


def _printable(text: str) -> str:
    """``text`` safe to put in any answer: valid UTF-8, bounded."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 1] + "…"


def _invalid(field: str, reason: str, key: str | None = None) -> Refused:
    return Refused(STATUS["invalid"], field, reason, key=key)


def from_json(data: bytes, limit: int) -> dict[str, Any]:
    """The API's body (at most ``limit`` bytes) as a raw report; raise :class:`Refused`.

    Left-out ``audience`` (or null) becomes the category's safe default:
    suspicious and social reports go to the authorities only unless asked.
    """
    try:
        doc = parse_json(data, limit)
    except EventTooLarge as exc:
        raise Refused(STATUS["too_large"], "$", str(exc)) from exc
    except EventError as exc:  # parse_json's refusals are InvalidField("$", ...)
        reason = exc.reason if isinstance(exc, InvalidField) else str(exc)
        raise _invalid("$", reason if reason.startswith("not valid") else
                       f"not valid JSON for a report: {reason}") from exc
    if not isinstance(doc, dict):
        raise _invalid("$", "a report must be a JSON object")
    unknown = doc.keys() - FIELDS
    if unknown:
        names = ", ".join(sorted(unknown))
        raise _invalid("body", f"unknown field(s): {names}")
    place = doc.get("place")
    if isinstance(place, dict) and place.keys() - PLACE_FIELDS:
        names = ", ".join(sorted(place.keys() - PLACE_FIELDS))
        raise _invalid("place", f"unknown field(s): {names}")
    if doc.get("audience") is None:
        category = doc.get("category")
        doc["audience"] = default_audience(category if category in CATEGORIES else None)
    return doc


def from_form(values: Mapping[str, str], lang: str) -> dict[str, Any]:
    """The form's fields as a raw report (unknown form fields are not read)."""
    category = values.get("category", "")
    return {
        "category": category,
        "text": values.get("text", ""),
        "place": {"point": values.get("place_point") or None,
                  "text": values.get("place_text", "")},
        "audience": values.get("audience") or default_audience(category),
        "called_112": values.get("called_112") == "yes",
        "called_112_by": values.get("called_112_by", ""),
        "contact": values.get("contact", ""),
        "lang": lang,
    }


def check(raw: Mapping[str, Any], meeting_points: Mapping[str, str]) -> dict[str, Any]:
    """The report cleaned as it will be stored; raise :class:`Refused` (422).

    ``meeting_points`` maps this node's meeting points' ids to their names. A
    chosen point's name goes into ``place.text``, before what the resident typed
    (as a panic alarm carries it, node/alarms.py): central's desk and the teams
    of other nodes know no point ids, and the police must read "Sportveldje De
    Hangar", not "hangar". When both would not fit, the resident's words stay
    as typed (the id is still there).
    """
    try:
        clean = validate_report_input(raw)
        check_new_report(clean)
    except InvalidField as exc:  # EmptyReport too: its field is "report"
        raise _invalid(exc.field, exc.reason) from exc
    place = clean["place"]
    point = place["point"]
    if point is not None:
        if point not in meeting_points:
            raise _invalid("place.point", "is not a meeting point of this node")
        place["text"] = with_point_name(meeting_points[point], place["text"])
    return clean


def with_point_name(name: str, typed: str) -> str:
    """``place.text`` of a report at a meeting point: its name, then what was typed.

    >>> with_point_name("Sportveldje De Hangar", "")
    'Sportveldje De Hangar'
    >>> with_point_name("Sportveldje De Hangar", "bij het hek")
    'Sportveldje De Hangar – bij het hek'
    >>> with_point_name("Sportveldje De Hangar", "x" * 190) == "x" * 190
    True
    """
    if not name or typed == name or typed.startswith(name + POINT_SEPARATOR):
        return typed
    both = f"{name}{POINT_SEPARATOR}{typed}" if typed else name
    return both if len(both) <= MAX_PLACE_TEXT else typed


#: Between a meeting point's name and the words typed about the place.
POINT_SEPARATOR: Final = " – "


async def store(runtime: Runtime, clean: Mapping[str, Any]) -> Submitted:
    """Store a checked report; raise :class:`Refused` when it cannot be stored now.

    The store's failures (closed, disk full, I/O errors) are 503 with
    ``Retry-After``: the report was not stored and may be sent again.
    """
    try:
        return await runtime.submit_report(clean)
    except EventTooLarge as exc:  # the signed event would exceed MAX_EVENT_BYTES
        raise Refused(STATUS["too_large"], "report", "the report is too large to store",
                      key="error.too_large") from exc
    except EventError as exc:
        raise _invalid("report", str(exc)) from exc
    except (NodeError, sqlite3.Error, OSError) as exc:
        log.error("report not stored: %s", exc)
        raise Refused(STATUS["unavailable"], "report",
                      "the report could not be stored; nothing was stored, try again",
                      key="error.store", retry_after=5) from exc


def answer(exc: Refused) -> dict[str, Any]:
    """The JSON body of a refusal (the API's answer)."""
    if exc.status == STATUS["unavailable"]:
        return {"detail": "the report could not be stored; try again"}
    if exc.status == STATUS["too_large"]:
        return {"detail": f"{exc.reason}; nothing was stored"}
    return {"detail": "invalid input; nothing was stored",
            "errors": [{"field": exc.field, "message": exc.reason}]}
