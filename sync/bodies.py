"""Validation of event bodies by kind (event schema v1).

Each validator takes an untrusted mapping and returns a new, cleaned body
containing exactly the known fields, or raises :class:`InvalidField`. Text is
cleaned with :func:`sync.text.clean_text` and its length checked *after*
cleaning, so the same input always yields the same body on every machine.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final

from .errors import InvalidField
from .text import clean_text

CATEGORIES: Final = ("nuisance", "suspicious", "social", "emergency")
AUDIENCES: Final = ("neighbours", "authorities", "both")
ALERT_SOURCES: Final = ("resident", "team", "button", "central", "integration")
SEVERITIES: Final = ("minor", "moderate", "severe", "extreme")  # CAP 1.2 <severity>
#: "repeated": the same panic button was held again within its cool-down.
ACK_ACTIONS: Final = ("seen", "on_my_way", "resolved", "escalated", "hidden", "repeated")
ESCALATE_TO: Final = ("police", "municipality")

MAX_REPORT_TEXT: Final = 1000
MAX_PLACE_TEXT: Final = 200
MAX_CONTACT: Final = 200
MAX_TITLE: Final = 120
MAX_NAME: Final = 80
MAX_NOTE: Final = 500
MAX_AREAS: Final = 16

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
AREA = re.compile(r"^[A-Z0-9](?:[A-Z0-9-]{0,14}[A-Z0-9])?$")
RECEIPT = re.compile(r"^[A-HJ-NP-Z2-9]{3}-[A-HJ-NP-Z2-9]{3}$")
LANG = re.compile(r"^[a-z]{2,3}$")
STATUS_KEY = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def _get(body: Mapping[str, Any], name: str, default: Any = ...) -> Any:
    if name in body:
        return body[name]
    if default is ...:
        raise InvalidField(name, "is required")
    return default


def _text(body: Mapping[str, Any], name: str, limit: int, *, required: bool = False,
          multiline: bool = True) -> str:
    value = _get(body, name, ...) if required else _get(body, name, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidField(name, "must be text")
    if len(value) > limit * 4:
        # Refuse absurd input before spending time cleaning it.
        raise InvalidField(name, f"is longer than {limit} characters")
    cleaned = clean_text(value, multiline=multiline)
    if len(cleaned) > limit:
        raise InvalidField(name, f"is longer than {limit} characters")
    if required and not cleaned:
        raise InvalidField(name, "must not be empty")
    return cleaned


def _choice(body: Mapping[str, Any], name: str, options: tuple[str, ...],
            default: Any = ...) -> str:
    value = _get(body, name, default)
    if value not in options:
        raise InvalidField(name, f"must be one of {', '.join(options)}")
    return str(value)


def _bool(body: Mapping[str, Any], name: str, default: Any = ...) -> bool:
    value = _get(body, name, default)
    if not isinstance(value, bool):
        raise InvalidField(name, "must be true or false")
    return value


def _optional_int(body: Mapping[str, Any], name: str) -> int | None:
    value = _get(body, name, None)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value > 2**53:
        raise InvalidField(name, "must be a non-negative integer or null")
    return value


def _event_ref(body: Mapping[str, Any], name: str, required: bool) -> str | None:
    value = _get(body, name, ...) if required else _get(body, name, None)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidField(name, "must be an event id")
    try:
        parsed = uuid.UUID(value)
    except ValueError as exc:
        raise InvalidField(name, "must be an event id") from exc
    if str(parsed) != value:
        raise InvalidField(name, "must be a lower-case hyphenated UUID")
    return value


def _place(body: Mapping[str, Any]) -> dict[str, Any]:
    value = _get(body, "place", None) or {}
    if not isinstance(value, Mapping) or set(value) - {"point", "text"}:
        raise InvalidField("place", "must be an object with only point and text")
    point = value.get("point")
    if point is not None and (not isinstance(point, str) or not SLUG.fullmatch(point)):
        raise InvalidField("place.point", "must be a meeting-point id")
    try:
        text = _text(value, "text", MAX_PLACE_TEXT, multiline=False)
    except InvalidField as exc:  # named as the API and the form name it, not as "text"
        raise InvalidField("place.text", exc.reason) from None
    return {"point": point, "text": text}


def _only(body: Mapping[str, Any], allowed: set[str]) -> None:
    if not isinstance(body, Mapping):
        raise InvalidField("body", "must be an object")
    extra = set(body) - allowed
    if extra:
        raise InvalidField("body", f"unknown field(s): {', '.join(sorted(map(str, extra)))}")


def validate_report(body: Mapping[str, Any]) -> dict[str, Any]:
    """A resident's or team member's report."""
    _only(body, {"category", "text", "place", "audience", "called_112", "called_112_by",
                 "contact", "receipt", "lang"})
    receipt = _get(body, "receipt")
    if not isinstance(receipt, str) or not RECEIPT.fullmatch(receipt):  # checked first: cheap
        raise InvalidField("receipt", "must look like K7F-3QX")
    lang = _get(body, "lang", "nl")
    if not isinstance(lang, str) or not LANG.fullmatch(lang):
        raise InvalidField("lang", "must be a language code such as nl")
    return {
        "category": _choice(body, "category", CATEGORIES),
        "text": _text(body, "text", MAX_REPORT_TEXT),
        "place": _place(body),
        "audience": _choice(body, "audience", AUDIENCES),
        "called_112": _bool(body, "called_112", False),
        "called_112_by": _text(body, "called_112_by", MAX_NAME, multiline=False),
        "contact": _text(body, "contact", MAX_CONTACT, multiline=False),
        "receipt": receipt,
        "lang": lang,
    }


#: Categories whose new reports go to the authorities only unless the resident
#: chooses otherwise: a suspicion about a person, or worries about a neighbour,
#: are not for the whole street by default.
AUTHORITIES_BY_DEFAULT: Final = frozenset({"suspicious", "social"})


class EmptyReport(InvalidField):
    """A new report says nothing: no words, no meeting point and no place."""

    def __init__(self) -> None:
        super().__init__("report", "needs a few words (text), a meeting point (place.point) "
                                   "or a place (place.text)")


def default_audience(category: object) -> str:
    """Who sees a new report of ``category`` when the resident did not say.

    >>> default_audience("social"), default_audience("nuisance")
    ('authorities', 'both')
    """
    return "authorities" if category in AUTHORITIES_BY_DEFAULT else "both"


def check_new_report(report: Mapping[str, Any]) -> None:
    """Intake rule for a *new* report, after :func:`validate_report` cleaned it.

    A pictogram alone tells no one anything (and an empty card would be shown
    to every neighbour): a report needs at least a few words, a meeting point
    or a place. This is not part of parsing an event: reports stored before
    the rule still validate everywhere. Raises :class:`EmptyReport`.

    >>> check_new_report({"category": "nuisance", "text": "", "place": {"point": "speeltuin"}})
    >>> try:
    ...     check_new_report({"category": "nuisance", "text": " ", "place": {"text": ""}})
    ... except EmptyReport as exc:
    ...     print(exc.field)
    report
    """
    place = report.get("place") or {}
    text = report.get("text") or ""
    if not (text.strip() or place.get("point") or (place.get("text") or "").strip()):
        raise EmptyReport


def validate_alert(body: Mapping[str, Any]) -> dict[str, Any]:
    """A warning for residents (panic button, team, central, resident report)."""
    _only(body, {"source", "category", "severity", "title", "text", "place", "areas",
                 "expires", "ref", "called_112", "called_112_by", "button"})
    button = _get(body, "button", None)
    if button is not None and (not isinstance(button, str) or not SLUG.fullmatch(button)):
        raise InvalidField("button", "must be a panic-button id")
    areas = _get(body, "areas", [])
    if not isinstance(areas, list) or len(areas) > MAX_AREAS:
        raise InvalidField("areas", f"must be a list of at most {MAX_AREAS} area codes")
    for area in areas:
        if not isinstance(area, str) or not AREA.fullmatch(area):
            raise InvalidField("areas", f"{area!r} is not an area code such as ESC-01")
    return {
        "source": _choice(body, "source", ALERT_SOURCES),
        "category": _choice(body, "category", (*CATEGORIES, "other"), "other"),
        "severity": _choice(body, "severity", SEVERITIES, "moderate"),
        "title": _text(body, "title", MAX_TITLE, multiline=False),
        "text": _text(body, "text", MAX_REPORT_TEXT),
        "place": _place(body),
        "areas": list(areas),
        "expires": _optional_int(body, "expires"),
        "ref": _event_ref(body, "ref", required=False),
        "called_112": _bool(body, "called_112", False),
        "called_112_by": _text(body, "called_112_by", MAX_NAME, multiline=False),
        "button": button,
    }


def validate_ack(body: Mapping[str, Any]) -> dict[str, Any]:
    """A response to an earlier event: seen, on my way, resolved, escalated, hidden."""
    _only(body, {"ref", "action", "by", "note", "to"})
    action = _choice(body, "action", ACK_ACTIONS)
    to = _get(body, "to", None)
    if action == "escalated":
        to = _choice(body, "to", ESCALATE_TO)
    elif to is not None:
        raise InvalidField("to", "is only for escalated")
    return {
        "ref": _event_ref(body, "ref", required=True),
        "action": action,
        "by": _text(body, "by", MAX_NAME, required=True, multiline=False),
        "note": _text(body, "note", MAX_NOTE),
        "to": to,
    }


def validate_status(body: Mapping[str, Any]) -> dict[str, Any]:
    """A node health heartbeat: a flat map of small numbers and short strings."""
    if not isinstance(body, Mapping) or len(body) > 32:
        raise InvalidField("body", "must be an object of at most 32 fields")
    out: dict[str, Any] = {}
    for key, value in body.items():
        if not isinstance(key, str) or not STATUS_KEY.fullmatch(key):
            raise InvalidField("body", f"bad status key {key!r}")
        if isinstance(value, bool) or value is None:
            out[key] = value
        elif isinstance(value, int):
            if abs(value) > 2**53:
                raise InvalidField(key, "integer out of range")
            out[key] = value
        elif isinstance(value, str):
            out[key] = _text(body, key, 200, multiline=False)
        else:
            raise InvalidField(key, "must be a number, text, true/false or null")
    return out


VALIDATORS: Final[dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]]] = {
    "report": validate_report,
    "alert": validate_alert,
    "ack": validate_ack,
    "status": validate_status,
}

#: Which streams each kind may travel on (DESIGN.md §3: a privacy rule).
KIND_STREAMS: Final[dict[str, tuple[str, ...]]] = {
    "report": ("private",),
    "alert": ("public",),
    "ack": ("public", "private"),
    "status": ("private",),
}


def validate_body(kind: str, body: Mapping[str, Any], *, clean: bool = True) -> dict[str, Any]:
    """Validate ``body`` for event ``kind``; return the cleaned body.

    ``clean=False`` is the lean check of :func:`_lean`: central's ingest uses
    it for events whose batch signature it verified (DESIGN.md §9: the sending
    node validated, cleaned and signed them; nodes, which show and relay
    events, always run the full validators).
    """
    try:
        validator = VALIDATORS[kind]
    except KeyError:
        raise InvalidField("kind", f"must be one of {', '.join(VALIDATORS)}") from None
    if clean:
        return validator(body)
    return _lean(kind, body)


#: The fields each kind may carry (what the validators above return).
KIND_FIELDS: Final[dict[str, frozenset[str]]] = {
    "report": frozenset({"category", "text", "place", "audience", "called_112", "called_112_by",
                         "contact", "receipt", "lang"}),
    "alert": frozenset({"source", "category", "severity", "title", "text", "place", "areas",
                        "expires", "ref", "called_112", "called_112_by", "button"}),
    "ack": frozenset({"ref", "action", "by", "note", "to"}),
}
_LEAN_TEXT = 4 * MAX_REPORT_TEXT


def _lean(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """Structure and limits only, for events whose batch signature was verified.

    Known fields only; every value a scalar, short text (≤ 4000 characters), a
    short list or a small place object; and what central acts on (a report's
    category and receipt, an alert's source, an ack's action and ref) exact.
    Text is not re-cleaned: the sending node cleaned it before signing.
    """
    if type(body) is not dict:
        raise InvalidField("body", "must be an object")
    if kind == "status":
        return validate_status(body)
    if not KIND_FIELDS[kind].issuperset(body):
        extra = sorted(set(body) - KIND_FIELDS[kind])
        raise InvalidField("body", f"unknown field(s): {', '.join(map(str, extra))}")
    for key, value in body.items():
        # type() identity, not isinstance(): this loop runs for every event of
        # every batch, and central's ingest rate is bounded by it.
        kind_of = type(value)
        if kind_of is str:
            if len(value) > _LEAN_TEXT:
                raise InvalidField(key, "is too long")
        elif kind_of is bool or kind_of is int or value is None:
            continue
        elif kind_of is dict:
            if len(value) > 2:
                raise InvalidField(key, "must be a small object of text")
            for item in value.values():
                if item is not None and (type(item) is not str or len(item) > 800):
                    raise InvalidField(key, "must be a small object of text")
        elif kind_of is list:
            if len(value) > MAX_AREAS:
                raise InvalidField(key, "must be a short list of codes")
            for item in value:
                if type(item) is not str or len(item) > 16:
                    raise InvalidField(key, "must be a short list of codes")
        else:
            raise InvalidField(key, "has an unexpected type")
    if kind == "report":
        if body.get("category") not in CATEGORIES:
            raise InvalidField("category", f"must be one of {', '.join(CATEGORIES)}")
        receipt = body.get("receipt")
        if not isinstance(receipt, str) or not RECEIPT.fullmatch(receipt):
            raise InvalidField("receipt", "must look like K7F-3QX")
    elif kind == "alert":
        if body.get("source") not in ALERT_SOURCES:
            raise InvalidField("source", f"must be one of {', '.join(ALERT_SOURCES)}")
    elif body.get("action") not in ACK_ACTIONS or not isinstance(body.get("ref"), str):
        raise InvalidField("action", "an ack needs a known action and a ref")
    return body
