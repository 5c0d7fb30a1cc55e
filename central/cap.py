"""CAP 1.2 (OASIS Common Alerting Protocol) documents for public alerts.

Pure functions: a :class:`PublicAlert` in, XML bytes out. No I/O, no clock
(the feed's ``updated`` time is passed in).

- :func:`alert_xml` renders one ``<alert>`` in the namespace
  ``urn:oasis:names:tc:emergency:cap:1.2``, with one ``<info>`` per language.
- :func:`feed_xml` renders the index that ``GET /api/v1/cap/alerts.xml``
  serves. CAP defines no feed element of its own; this is an Atom feed
  (RFC 4287) with one entry per alert message linking to its full CAP
  document (``type="application/cap+xml"``), as the OASIS "Example Practices:
  CAP Feeds" note and the Google / WMO alert hubs use, with a few ``cap:``
  elements copied into each entry (as MeteoAlarm and NWS feeds do) so that a
  reader can filter without fetching every alert.

Rules of CAP 1.2 that XML Schema alone does not enforce, and that this module
does: ``identifier``, ``sender`` and references contain no spaces, commas,
``<`` or ``&``; date-times carry a numeric zone and never "Z" (CAP 1.2
§3.3.2 writes UTC as ``-00:00``) and no fractional seconds (the schema's
pattern has none); ``references`` is a space-separated list of
``sender,identifier,sent``. All text goes through :func:`sync.text.clean_text`
and ElementTree's escaping, so no input can break the document: control
characters and bidirectional overrides are removed, ``<`` and ``&`` escaped.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, NamedTuple

from sync.bodies import AREA, SEVERITIES
from sync.text import clean_text

from .errors import CentralError

CAP_NS: Final = "urn:oasis:names:tc:emergency:cap:1.2"
ATOM_NS: Final = "http://www.w3.org/2005/Atom"
XML_NS: Final = "http://www.w3.org/XML/1998/namespace"
#: Media type of one CAP document (registered with IANA in CAP 1.2 Appendix).
CAP_MEDIA_TYPE: Final = "application/cap+xml"
ATOM_MEDIA_TYPE: Final = "application/atom+xml"

LANG_NL: Final = "nl-NL"
LANG_EN: Final = "en-GB"
DEFAULT_SENDER: Final = "bart@central.example"

STATUSES: Final = ("Actual", "Exercise", "System", "Test", "Draft")
#: Ack and Error exist in CAP but are answers between systems, not public alerts.
MSG_TYPES: Final = ("Alert", "Update", "Cancel")
#: CAP 1.2 §3.3.2: "The timezone for UTC MUST be represented as -00:00".
UTC_SUFFIX: Final = "-00:00"
#: ``valueName`` of the ``<geocode>`` that carries one of our area codes.
AREA_GEOCODE: Final = "bart:area"

#: Our alert severity -> CAP (severity, urgency, certainty). Our severities are
#: CAP's own words (sync.bodies.SEVERITIES); urgency and certainty follow from
#: them because staff pick one level, not three.
LEVELS: Final[dict[str, tuple[str, str, str]]] = {
    "extreme": ("Extreme", "Immediate", "Observed"),
    "severe": ("Severe", "Immediate", "Likely"),
    "moderate": ("Moderate", "Expected", "Likely"),
    "minor": ("Minor", "Future", "Possible"),
}
#: Our alert category -> CAP <category>.
CAP_CATEGORIES: Final[dict[str, str]] = {
    "emergency": "Safety",
    "suspicious": "Security",
    "nuisance": "Safety",
    "social": "Other",
    "other": "Other",
}
#: Default <event> text per language and category (English for other languages).
EVENTS: Final[dict[str, dict[str, str]]] = {
    "nl": {
        "emergency": "Noodsituatie",
        "suspicious": "Verdachte situatie",
        "nuisance": "Overlast",
        "social": "Sociaal probleem",
        "other": "Waarschuwing",
    },
    "en": {
        "emergency": "Emergency",
        "suspicious": "Suspicious situation",
        "nuisance": "Nuisance",
        "social": "Social problem",
        "other": "Warning",
    },
}

# CAP 1.2 §3.2.1: identifier and sender "MUST NOT include spaces, commas or
# restricted characters (< and &)". Control characters are refused as well.
_CAP_TOKEN = re.compile(r"^[^\s,<&\x00-\x1f\x7f]+$")
_LANGUAGE = re.compile(r"^[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*$")  # xs:language
# Characters XML 1.0 cannot carry at all, even escaped.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

ET.register_namespace("cap", CAP_NS)


class CapError(CentralError, ValueError):
    """A public alert cannot be expressed as a valid CAP 1.2 message."""


@dataclass(frozen=True, slots=True)
class CapArea:
    """One CAP ``<area>``: a description, optional outlines and geocodes.

    ``polygons`` are closed rings of WGS 84 (latitude, longitude) pairs, first
    point == last, at least four points (CAP 1.2 §3.2.4); ``geocodes`` are
    (valueName, value) pairs. Invalid values raise :class:`CapError`.
    """

    desc: str
    polygons: Sequence[Sequence[tuple[float, float]]] = ()
    geocodes: Sequence[tuple[str, str]] = ()

    def __post_init__(self) -> None:
        polygons = tuple(tuple((float(lat), float(lon)) for lat, lon in ring)
                         for ring in self.polygons)
        object.__setattr__(self, "polygons", polygons)
        object.__setattr__(self, "geocodes", tuple((str(n), str(v)) for n, v in self.geocodes))
        if not _clean(self.desc, multiline=False):
            raise CapError("an area must have a description")
        for ring in polygons:
            polygon_value(ring)
        for name, value in self.geocodes:
            if not _clean(name, multiline=False) or not _clean(value, multiline=False):
                raise CapError("a geocode needs a valueName and a value")

    @classmethod
    def bare(cls, code: str) -> CapArea:
        """An area known only by its text: an area code also becomes a geocode."""
        return cls(code, geocodes=((AREA_GEOCODE, code),) if AREA.fullmatch(code) else ())


class Reference(NamedTuple):
    """An earlier message of the same sender that an Update or Cancel refers to."""

    identifier: str
    sent: datetime


@dataclass(frozen=True, slots=True)
class AlertText:
    """The words of an alert in one language: one CAP ``<info>`` block."""

    language: str
    headline: str
    description: str = ""
    instruction: str = ""
    #: ``<event>``; empty means the default for the alert's category (:data:`EVENTS`).
    event: str = ""


@dataclass(frozen=True, slots=True)
class PublicAlert:
    """One public alert message as central publishes it.

    ``id`` becomes the CAP ``identifier`` (an event id, a UUID, fits). Every
    Update or Cancel is a new message with its own ``id`` and ``sent`` that
    lists the earlier messages it replaces in ``references``. ``severity`` and
    ``category`` are ours (``sync.bodies``); the CAP words follow from
    :data:`LEVELS` and :data:`CAP_CATEGORIES`. Invalid values raise
    :class:`CapError` at construction.

    >>> from datetime import datetime, timedelta, UTC
    >>> t = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    >>> a = PublicAlert(id="a1", sent=t, msg_type="Alert", severity="moderate",
    ...                 texts=(AlertText(LANG_NL, "Inbraakgolf"),),
    ...                 expires=t + timedelta(days=2), areas=("ESC-01",))
    >>> b"<sent>2026-11-29T12:00:00-00:00</sent>" in alert_xml(a)
    True
    """

    id: str
    sent: datetime
    msg_type: str
    severity: str
    texts: Sequence[AlertText]
    expires: datetime
    #: Area codes or names (see :meth:`CapArea.bare`) or full :class:`CapArea` values.
    areas: Sequence[str | CapArea] = ()
    category: str = "other"
    references: Sequence[tuple[str, datetime]] = ()
    status: str = "Actual"
    sender: str = DEFAULT_SENDER
    #: Human-readable sender, e.g. "Politie Den Haag" (``<senderName>``).
    sender_name: str = ""
    #: Why a message is an Update or Cancel, for other systems (``<note>``).
    note: str = ""
    #: A page about the alert (``<web>``), absolute URL.
    web: str = ""
    _refs: tuple[Reference, ...] = field(default=(), init=False, repr=False, compare=False)
    _areas: tuple[CapArea, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Freeze the sequences so that a PublicAlert is a value, whatever was passed.
        object.__setattr__(self, "texts", tuple(self.texts))
        object.__setattr__(self, "areas", tuple(self.areas))
        object.__setattr__(self, "_areas", tuple(
            a if isinstance(a, CapArea) else CapArea.bare(a) for a in self.areas))
        refs = tuple(Reference(str(i), s) for i, s in self.references)
        object.__setattr__(self, "references", refs)
        object.__setattr__(self, "_refs", refs)
        _check_token("identifier", self.id)
        _check_token("sender", self.sender)
        cap_datetime(self.sent)  # both must be timezone-aware
        cap_datetime(self.expires)
        if self.expires <= self.sent:
            raise CapError("expires must be later than sent")
        if self.msg_type not in MSG_TYPES:
            raise CapError(f"msg_type must be one of {', '.join(MSG_TYPES)}")
        if self.status not in STATUSES:
            raise CapError(f"status must be one of {', '.join(STATUSES)}")
        if self.severity not in SEVERITIES:
            raise CapError(f"severity must be one of {', '.join(SEVERITIES)}")
        if self.category not in CAP_CATEGORIES:
            raise CapError(f"category must be one of {', '.join(CAP_CATEGORIES)}")
        if self.msg_type == "Alert" and refs:
            raise CapError("an Alert is a first message: it references nothing")
        if self.msg_type != "Alert" and not refs:
            raise CapError(f"an {self.msg_type} must reference the message(s) it replaces")
        for ref in refs:
            _check_token("references", ref.identifier)
            if ref.identifier == self.id:
                raise CapError("a message cannot reference itself")
            cap_datetime(ref.sent)
            if ref.sent > self.sent:
                raise CapError("a referenced message cannot be sent after this one")
        if not self.texts:
            raise CapError("at least one text (language) is required")
        languages = [t.language.lower() for t in self.texts]
        if len(set(languages)) != len(languages):
            raise CapError("one text per language")
        for text in self.texts:
            if not _LANGUAGE.fullmatch(text.language):
                raise CapError(f"{text.language!r} is not a language tag such as nl-NL")
            if not _clean(text.headline, multiline=False):
                raise CapError(f"the {text.language} headline is empty")
        for area in self.areas:
            if isinstance(area, str) and not _clean(area, multiline=False):
                raise CapError("an area must have a name or code")
        if self.web and not re.fullmatch(r"https?://[^\s<>\"]+", self.web):
            raise CapError("web must be an absolute http(s) URL")

    @property
    def levels(self) -> tuple[str, str, str]:
        """CAP (severity, urgency, certainty) of this message."""
        severity, urgency, certainty = LEVELS[self.severity]
        if self.msg_type == "Cancel":
            urgency = "Past"  # the subject event no longer calls for action
        return severity, urgency, certainty


# --- formatting --------------------------------------------------------------


def cap_datetime(value: datetime) -> str:
    """A CAP 1.2 date-time: UTC, whole seconds, zone written ``-00:00``.

    >>> cap_datetime(datetime(2026, 11, 29, 13, 5, 9, 999, tzinfo=UTC))
    '2026-11-29T13:05:09-00:00'
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise CapError("date-times must be timezone-aware")
    utc = value.astimezone(UTC).replace(microsecond=0, tzinfo=None)
    return utc.isoformat(timespec="seconds") + UTC_SUFFIX


def polygon_value(ring: Sequence[tuple[float, float]]) -> str:
    """CAP 1.2 ``<polygon>`` text: ``lat,lon`` pairs separated by spaces, closed.

    >>> polygon_value([(52.06, 4.292), (52.062, 4.283), (52.057, 4.275), (52.06, 4.292)])
    '52.06,4.292 52.062,4.283 52.057,4.275 52.06,4.292'
    """
    points = list(ring)
    if len(points) < 4:
        raise CapError("a polygon needs at least four points (three corners, then the first again)")
    if points[0] != points[-1]:
        raise CapError("a polygon must end with its first point")
    for lat, lon in points:
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise CapError(f"{lat},{lon} is not a WGS 84 latitude,longitude")
    return " ".join(f"{_coord(lat)},{_coord(lon)}" for lat, lon in points)


def _coord(value: float) -> str:
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def references_value(alert: PublicAlert) -> str:
    """The CAP ``<references>`` text: ``sender,identifier,sent`` separated by spaces."""
    return " ".join(f"{alert.sender},{ref.identifier},{cap_datetime(ref.sent)}"
                    for ref in alert._refs)


def _check_token(name: str, value: str) -> None:
    if not isinstance(value, str) or not _CAP_TOKEN.fullmatch(value) or _NOT_XML.search(value):
        raise CapError(f"{name} {value!r} must be non-empty, without spaces, commas, '<' or '&'")


def _clean(text: str, *, multiline: bool = True) -> str:
    # clean_text already drops what XML cannot carry; the second pass keeps the
    # document well-formed even if that function changes one day.
    return _NOT_XML.sub("", clean_text(text, multiline=multiline))


def _event_name(alert: PublicAlert, text: AlertText) -> str:
    if text.event and _clean(text.event, multiline=False):
        return _clean(text.event, multiline=False)
    primary = text.language.split("-", 1)[0].lower()
    return EVENTS.get(primary, EVENTS["en"])[alert.category]


def _sub(parent: ET.Element, tag: str, text: str) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = text
    return element


# --- one alert ---------------------------------------------------------------


def _alert_element(alert: PublicAlert) -> ET.Element:
    c = f"{{{CAP_NS}}}"
    root = ET.Element(f"{c}alert")
    _sub(root, f"{c}identifier", alert.id)
    _sub(root, f"{c}sender", alert.sender)
    _sub(root, f"{c}sent", cap_datetime(alert.sent))
    _sub(root, f"{c}status", alert.status)
    _sub(root, f"{c}msgType", alert.msg_type)
    _sub(root, f"{c}scope", "Public")
    note = _clean(alert.note)
    if note:
        _sub(root, f"{c}note", note)
    if alert._refs:
        _sub(root, f"{c}references", references_value(alert))
    severity, urgency, certainty = alert.levels
    for text in alert.texts:
        info = ET.SubElement(root, f"{c}info")
        _sub(info, f"{c}language", text.language)
        _sub(info, f"{c}category", CAP_CATEGORIES[alert.category])
        _sub(info, f"{c}event", _event_name(alert, text))
        if alert.msg_type == "Cancel":
            _sub(info, f"{c}responseType", "AllClear")
        _sub(info, f"{c}urgency", urgency)
        _sub(info, f"{c}severity", severity)
        _sub(info, f"{c}certainty", certainty)
        _sub(info, f"{c}expires", cap_datetime(alert.expires))
        sender_name = _clean(alert.sender_name, multiline=False)
        if sender_name:
            _sub(info, f"{c}senderName", sender_name)
        _sub(info, f"{c}headline", _clean(text.headline, multiline=False))
        description = _clean(text.description)
        if description:
            _sub(info, f"{c}description", description)
        instruction = _clean(text.instruction)
        if instruction:
            _sub(info, f"{c}instruction", instruction)
        if alert.web:
            _sub(info, f"{c}web", alert.web)
        for area in alert._areas:
            # CAP 1.2 order: areaDesc, polygon*, circle*, geocode*, altitude, ceiling.
            area_element = ET.SubElement(info, f"{c}area")
            _sub(area_element, f"{c}areaDesc", _clean(area.desc, multiline=False))
            for ring in area.polygons:
                _sub(area_element, f"{c}polygon", polygon_value(ring))
            for name, value in area.geocodes:
                geocode = ET.SubElement(area_element, f"{c}geocode")
                _sub(geocode, f"{c}valueName", _clean(name, multiline=False))
                _sub(geocode, f"{c}value", _clean(value, multiline=False))
    return root


def alert_xml(alert: PublicAlert) -> bytes:
    """One CAP 1.2 ``<alert>`` document, UTF-8 with an XML declaration."""
    root = _alert_element(alert)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True,
                              default_namespace=CAP_NS)
    return data


# --- the feed ----------------------------------------------------------------


def active_alerts(alerts: Iterable[PublicAlert], now: datetime) -> list[PublicAlert]:
    """The messages a feed should list at ``now``, newest first.

    A message is dropped when it has expired or when a later message in
    ``alerts`` references it (an Update or Cancel replaces it). A Cancel stays
    listed until its own ``expires``, so readers learn of the cancellation.
    """
    pool = list(alerts)
    replaced = {(a.sender, ref.identifier) for a in pool for ref in a._refs}
    keep = [a for a in pool if a.expires > now and (a.sender, a.id) not in replaced]
    return sorted(keep, key=lambda a: (a.sent, a.id), reverse=True)


def feed_xml(
    alerts: Iterable[PublicAlert],
    *,
    feed_url: str,
    alert_url: Callable[[PublicAlert], str],
    updated: datetime,
    title: str = "Bart: public alerts",
    author: str = "Bart central",
) -> bytes:
    """Atom index of CAP messages for ``GET /api/v1/cap/alerts.xml``.

    ``alerts`` are listed in the order given (see :func:`active_alerts`);
    ``alert_url(alert)`` is the absolute URL of that alert's CAP document,
    ``feed_url`` the URL of the feed itself (its Atom id and ``self`` link),
    ``updated`` the time the list last changed (usually now).
    """
    # Atom elements are written unqualified under a default xmlns set by hand:
    # ElementTree's default_namespace option refuses the unqualified attributes
    # (rel, href) that Atom uses, and an "atom:" prefix on every element would
    # puzzle simple feed readers.
    a = ""
    c = f"{{{CAP_NS}}}"
    feed = ET.Element("feed", xmlns=ATOM_NS)
    _sub(feed, f"{a}id", feed_url)
    _sub(feed, f"{a}title", _clean(title, multiline=False))
    _sub(feed, f"{a}updated", _atom_datetime(updated))
    ET.SubElement(feed, f"{a}link", rel="self", type=ATOM_MEDIA_TYPE, href=feed_url)
    _sub(ET.SubElement(feed, f"{a}author"), f"{a}name", _clean(author, multiline=False))
    for alert in alerts:
        url = alert_url(alert)
        first = alert.texts[0]
        entry = ET.SubElement(feed, f"{a}entry")
        _sub(entry, f"{a}id", url)
        headline = _sub(entry, f"{a}title", _clean(first.headline, multiline=False))
        headline.set(f"{{{XML_NS}}}lang", first.language)
        _sub(entry, f"{a}updated", _atom_datetime(alert.sent))
        _sub(entry, f"{a}published", _atom_datetime(alert.sent))
        ET.SubElement(entry, f"{a}link", rel="alternate", type=CAP_MEDIA_TYPE, href=url)
        summary_text = _clean(first.description)
        if summary_text:
            summary = _sub(entry, f"{a}summary", summary_text)
            summary.set(f"{{{XML_NS}}}lang", first.language)
        severity, urgency, certainty = alert.levels
        _sub(entry, f"{c}identifier", alert.id)
        _sub(entry, f"{c}sender", alert.sender)
        _sub(entry, f"{c}sent", cap_datetime(alert.sent))
        _sub(entry, f"{c}status", alert.status)
        _sub(entry, f"{c}msgType", alert.msg_type)
        if alert._refs:
            _sub(entry, f"{c}references", references_value(alert))
        _sub(entry, f"{c}event", _event_name(alert, first))
        _sub(entry, f"{c}urgency", urgency)
        _sub(entry, f"{c}severity", severity)
        _sub(entry, f"{c}certainty", certainty)
        _sub(entry, f"{c}expires", cap_datetime(alert.expires))
        if alert._areas:
            _sub(entry, f"{c}areaDesc",
                 "; ".join(_clean(area.desc, multiline=False) for area in alert._areas))
    data: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return data


def _atom_datetime(value: datetime) -> str:
    # RFC 3339 as Atom requires; "Z" is fine here (it is not CAP).
    if value.tzinfo is None or value.utcoffset() is None:
        raise CapError("date-times must be timezone-aware")
    return value.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


__all__ = [
    "AREA_GEOCODE",
    "CAP_CATEGORIES",
    "CAP_MEDIA_TYPE",
    "CAP_NS",
    "DEFAULT_SENDER",
    "EVENTS",
    "LANG_EN",
    "LANG_NL",
    "LEVELS",
    "MSG_TYPES",
    "STATUSES",
    "AlertText",
    "CapArea",
    "CapError",
    "PublicAlert",
    "Reference",
    "active_alerts",
    "alert_xml",
    "cap_datetime",
    "feed_xml",
    "polygon_value",
]
