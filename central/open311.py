"""A public Open311 GeoReport v2 feed of the municipality's reports (read only).

``GET /open311/v2/services.json`` lists the services (Bart's categories the
municipality handles), ``GET /open311/v2/requests.json`` their reports and
``GET /open311/v2/requests/{id}.json`` one; each also as ``.xml``. Nothing
can be posted: reports come from the nodes.

The feed is public, so it carries less than the desk sees (docs/central.md,
"Open311 feed"):

* only reports routed to the municipality, and of those only the categories
  in :data:`SERVICES` (nuisance, social): never a police report, and never a
  suspicious situation or emergency that staff sent on to the municipality;
* never the contact, the receipt code, the node, staff names or notes;
* the resident's words (``description``) and own place text (``address``)
  only for nuisance reports whose resident chose to show them to the
  neighbours as well (audience ``both``), with e-mail addresses, phone
  numbers and receipt-like codes blotted out; otherwise the meeting point
  (a public place) at most, and for a social report not even that.

``status`` is ``open`` (new, in progress, reopened) or ``closed`` (handled).
Pages are newest first, at most 1,000 requests, with keyset paging (the
``Link: <…>; rel="next"`` header); without dates the last 90 days.

The mapping of Bart's categories to Signalen's main and sub categories
(:data:`SIGNALEN`) comes from Signalen's category fixture; it is in
``services.json`` (``group``, ``keywords``) and, with ``extensions=true``, in
each request's ``extended_attributes``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import orjson
import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.engine import Engine

from . import db
from .errors import CentralError

ROUTE: Final = "municipality"
MAX_PAGE: Final = 1000
MAX_IDS: Final = 100
DEFAULT_DAYS: Final = 90
TIMEZONE: Final = ZoneInfo("Europe/Amsterdam")
AGENCY: Final = "Gemeente"
CACHE: Final = "public, max-age=60"
#: States of the handling state machine that Open311 calls open; ``handled`` is closed.
OPEN_STATES: Final = ("new", "in_progress", "reopened")
STATUS_NOTES: Final[Mapping[str, str]] = {
    "new": "Ontvangen door de gemeente",
    "in_progress": "In behandeling",
    "handled": "Afgehandeld",
    "reopened": "Heropend",
}


@dataclass(frozen=True)
class Signalen:
    """A Signalen main category and one of its sub categories (slug and name)."""

    main: str
    main_name: str
    sub: str
    sub_name: str

    def to_json(self) -> dict[str, str]:
        return {"main": self.main, "main_name": self.main_name, "sub": self.sub,
                "sub_name": self.sub_name}


_PERSONS = Signalen("overlast-van-en-door-personen-of-groepen",
                    "Overlast van en door personen of groepen",
                    "overige-overlast-door-personen", "Overige overlast door personen")
_PUBLIC_SPACE = Signalen("overlast-in-de-openbare-ruimte", "Overlast in de openbare ruimte",
                         "overig-openbare-ruimte", "Overig openbare ruimte")
_OTHER = Signalen("overig", "Overig", "overig", "Overig")

#: Bart's category (and, where it says more, the triage rule that routed the
#: report) -> Signalen's main/sub category. Source: Amsterdam/signals,
#: api/app/signals/apps/signals/fixtures/categories.json (docs/central.md).
SIGNALEN: Final[Mapping[tuple[str, str | None], Signalen]] = {
    ("nuisance", None): _PERSONS,
    ("nuisance", "public-space"): _PUBLIC_SPACE,
    ("social", None): _OTHER,
    ("suspicious", None): _PERSONS,
    ("emergency", None): _OTHER,
    ("other", None): _OTHER,
}


def signalen_for(category: str, rule: str | None = None) -> Signalen:
    """Signalen's category for a report of ``category`` routed by ``rule``.

    >>> signalen_for("nuisance", "public-space").sub
    'overig-openbare-ruimte'
    >>> signalen_for("nuisance", "manual:Ans").main
    'overlast-van-en-door-personen-of-groepen'
    """
    return SIGNALEN.get((category, rule)) or SIGNALEN.get((category, None)) or _OTHER


@dataclass(frozen=True)
class Service:
    """One Open311 service: a Bart category the municipality handles."""

    code: str
    name: str
    description: str
    #: May the feed carry the resident's words and place text (when they allowed it)?
    details: bool


#: The services of the feed, in this order. Only these categories are ever published.
SERVICES: Final = (
    Service("nuisance", "Overlast",
            "Overlast in de buurt: lawaai, afval, vernieling, kapotte straatverlichting, "
            "hangjongeren. Gemeld bij een buurtcomputer van Bart.", details=True),
    Service("social", "Zorgen om iemand",
            "Zorgen om een buurtbewoner of een sociaal probleem. Over personen: "
            "zonder tekst en zonder plaats in deze feed.", details=False),
)
_BY_CODE: Final = {s.code: s for s in SERVICES}


class Open311Error(CentralError):
    """A request to the Open311 feed that cannot be answered (HTTP 400 or 404)."""

    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


# ------------------------------------------------------------------ pure part


def services_json() -> list[dict[str, Any]]:
    """The GeoReport v2 service list."""
    out = []
    for s in SERVICES:
        tags = {signalen_for(s.code, rule) for (cat, rule) in SIGNALEN if cat == s.code}
        mains = sorted({t.main for t in tags})
        subs = sorted({t.sub for t in tags})
        out.append({"service_code": s.code, "service_name": s.name,
                    "description": s.description, "metadata": False, "type": "realtime",
                    "keywords": ",".join(dict.fromkeys([*mains, *subs])),
                    "group": signalen_for(s.code).main_name})
    return out


def iso(ms: int) -> str:
    """A W3C/ISO 8601 time with its offset, Dutch time, whole seconds.

    >>> iso(1_764_412_200_000)
    '2025-11-29T11:30:00+01:00'
    """
    return datetime.fromtimestamp(ms // 1000, UTC).astimezone(TIMEZONE).isoformat()


def parse_time(name: str, value: str) -> int:
    """A W3C datetime with a zone (``2010-01-01T00:00:00Z``) as Unix milliseconds.

    >>> parse_time("start_date", "2010-01-01T00:00:00Z")
    1262304000000
    """
    try:
        when = datetime.fromisoformat(value.strip()[:40])
    except ValueError as exc:
        raise Open311Error(400, f"{name} must be a W3C datetime such as "
                                "2010-01-01T00:00:00Z") from exc
    if when.tzinfo is None:
        raise Open311Error(400, f"{name} needs a time zone (Z or an offset such as +01:00)")
    return int(when.timestamp() * 1000)


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"(?:\+|\b)\d[\d ()./-]{6,}\d")
_RECEIPT = re.compile(r"\b[A-HJ-NP-Z2-9]{3}-[A-HJ-NP-Z2-9]{3}\b")
BLOT: Final = "[…]"


def blot(text: str) -> str:
    """``text`` without e-mail addresses, phone numbers (8+ digits) and receipt-like codes.

    >>> blot("bel 06-1234 5678 of a@b.nl, code K7F-3QX; lamp 12 kapot")
    'bel […] of […], code […]; lamp 12 kapot'
    """
    text = _EMAIL.sub(BLOT, text)
    text = _PHONE.sub(lambda m: BLOT if sum(c.isdigit() for c in m.group()) >= 8
                      else m.group(), text)
    return _RECEIPT.sub(BLOT, text)


def to_request(row: Any, *, extensions: bool = False) -> dict[str, Any]:
    """One report row (reports + event body + node area) as a GeoReport v2 request.

    Only what a public feed may carry (module docstring); ``extensions`` adds
    ``extended_attributes`` with the Signalen category and the node's area code.
    """
    service = _BY_CODE[row.category]
    body = orjson.loads(row.body)
    place = body.get("place") or {}
    shown = service.details and body.get("audience") == "both"
    description = blot(body.get("text") or "").strip() if shown else ""
    address = ""
    if shown:
        address = blot(place.get("text") or "").strip()
    if not address and service.details:
        address = place.get("point") or ""
    request: dict[str, Any] = {
        "service_request_id": row.event_id,
        "status": "open" if row.state in OPEN_STATES else "closed",
        "status_notes": STATUS_NOTES.get(row.state, ""),
        "service_name": service.name,
        "service_code": service.code,
        "description": description or None,
        "agency_responsible": AGENCY,
        "service_notice": None,
        "requested_datetime": iso(int(row.ts)),
        "updated_datetime": iso(int(row.updated_at)),
        "expected_datetime": None,
        "address": address or None,
        "address_id": None,
        "zipcode": None,
        "media_url": None,
    }
    if extensions:
        request["extended_attributes"] = {
            "signalen": signalen_for(row.category, row.rule).to_json(),
            "area": row.area or None,
        }
    return request


def _xml(root: str, item: str, rows: Sequence[Mapping[str, Any]]) -> bytes:
    top = ET.Element(root)
    for row in rows:
        el = ET.SubElement(top, item)
        for key, value in row.items():
            child = ET.SubElement(el, key)
            if isinstance(value, Mapping):
                for k, v in value.items():
                    if isinstance(v, Mapping):
                        sub = ET.SubElement(child, k)
                        for k2, v2 in v.items():
                            ET.SubElement(sub, k2).text = str(v2)
                    elif v is not None:
                        ET.SubElement(child, k).text = str(v)
            elif isinstance(value, bool):
                child.text = "true" if value else "false"
            elif value is not None:
                child.text = str(value)
    data: bytes = ET.tostring(top, encoding="utf-8", xml_declaration=True)
    return data


def services_xml() -> bytes:
    """The service list as GeoReport v2 XML (``<services><service>…``)."""
    return _xml("services", "service", services_json())


def requests_xml(requests: Sequence[Mapping[str, Any]]) -> bytes:
    """Requests as GeoReport v2 XML (``<service_requests><request>…``)."""
    return _xml("service_requests", "request", requests)


def errors_json(code: int, description: str) -> list[dict[str, Any]]:
    """A GeoReport v2 error list."""
    return [{"code": code, "description": description}]


def cursor(ts: int, event_id: str) -> str:
    """The keyset position after a request: ``<ts>_<id>``."""
    return f"{ts}_{event_id}"


def parse_cursor(value: str) -> tuple[int, str]:
    """``(ts, id)`` of a ``before`` cursor; :class:`Open311Error` when it is not one."""
    ts, _, event_id = value.partition("_")
    if not ts.isdigit() or len(ts) > 16 or not 0 < len(event_id) <= 36:
        raise Open311Error(400, "before must be the cursor of a Link header")
    return int(ts), event_id


@dataclass(frozen=True)
class Query:
    """The filters of ``GET requests``, checked."""

    ids: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    start: int | None = None
    end: int | None = None
    before: tuple[int, str] | None = None
    limit: int = MAX_PAGE
    extensions: bool = False


def _list(value: str | None, limit: int) -> tuple[str, ...]:
    if not value:
        return ()
    items = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    if len(items) > limit:
        raise Open311Error(400, f"at most {limit} values in a list")
    return items


def parse_query(params: Mapping[str, str], now_ms: int) -> Query:
    """The filters of ``GET requests`` from the query string.

    ``service_request_id`` (comma list) overrides every other filter, as the
    specification says; without dates the last 90 days.
    """
    extensions = params.get("extensions", "").lower() == "true"
    ids = _list(params.get("service_request_id"), MAX_IDS)
    if ids:
        return Query(ids=tuple(i[:36] for i in ids), extensions=extensions)
    codes = _list(params.get("service_code"), len(SERVICES) + 10)
    statuses = _list(params.get("status"), 2)
    for status in statuses:
        if status not in ("open", "closed"):
            raise Open311Error(400, "status must be open or closed")
    raw_start, raw_end = params.get("start_date"), params.get("end_date")
    end = parse_time("end_date", raw_end) if raw_end else None
    start = parse_time("start_date", raw_start) if raw_start else None
    if start is None and end is None:
        end = now_ms
    if start is None:
        assert end is not None
        start = end - DEFAULT_DAYS * 86_400_000
    if end is not None and end < start:
        raise Open311Error(400, "end_date is before start_date")
    size = params.get("page_size", "")
    if size and (not size.isdigit() or not 1 <= int(size) <= MAX_PAGE):
        raise Open311Error(400, f"page_size must be 1 to {MAX_PAGE}")
    before = parse_cursor(params["before"]) if params.get("before") else None
    return Query(codes=codes, statuses=statuses, start=start, end=end, before=before,
                 limit=int(size) if size else MAX_PAGE, extensions=extensions)


# ------------------------------------------------------------------ database


def _select() -> sa.Select[Any]:
    r, e, n = db.reports, db.events, db.nodes
    return (sa.select(r.c.event_id, r.c.category, r.c.ts, r.c.state, r.c.updated_at, r.c.rule,
                      e.c.body, n.c.area)
            .join(e, e.c.id == r.c.event_id)
            .outerjoin(n, n.c.name == r.c.origin)
            .where(r.c.route == ROUTE, r.c.category.in_([s.code for s in SERVICES])))


def find(engine: Engine, query: Query) -> tuple[list[dict[str, Any]], str | None]:
    """The requests ``query`` asks for, newest first, and the cursor of the next page."""
    r = db.reports
    stmt = _select()
    if query.ids:
        stmt = stmt.where(r.c.event_id.in_(query.ids))
    else:
        if query.codes:
            stmt = stmt.where(r.c.category.in_(query.codes))
        if query.statuses == ("open",):
            stmt = stmt.where(r.c.state.in_(OPEN_STATES))
        elif query.statuses == ("closed",):
            stmt = stmt.where(r.c.state.not_in(OPEN_STATES))
        if query.start is not None:
            stmt = stmt.where(r.c.ts >= query.start)
        if query.end is not None:
            stmt = stmt.where(r.c.ts <= query.end)
        if query.before is not None:
            ts, event_id = query.before
            stmt = stmt.where(sa.or_(r.c.ts < ts, sa.and_(r.c.ts == ts, r.c.event_id < event_id)))
    limit = min(query.limit, MAX_IDS) if query.ids else query.limit
    stmt = stmt.order_by(r.c.ts.desc(), r.c.event_id.desc()).limit(limit + 1)
    with db.reading(engine) as conn:
        rows = conn.execute(stmt).all()
    more = len(rows) > limit
    rows = rows[:limit]
    after = cursor(int(rows[-1].ts), rows[-1].event_id) if more and rows else None
    return [to_request(row, extensions=query.extensions) for row in rows], after


def get(engine: Engine, request_id: str, *, extensions: bool = False) -> dict[str, Any] | None:
    """One request of the feed, or None (also for a report the feed never shows)."""
    with db.reading(engine) as conn:
        row = conn.execute(_select().where(db.reports.c.event_id == request_id[:36])).first()
    return None if row is None else to_request(row, extensions=extensions)


# ------------------------------------------------------------------ HTTP

router = APIRouter(prefix="/open311/v2", tags=["open311"])

_MEDIA: Final = {"json": "application/json; charset=utf-8", "xml": "text/xml; charset=utf-8"}


def _respond(fmt: str, payload: Any, xml: bytes | None = None, *, status: int = 200,
             headers: Mapping[str, str] | None = None) -> Response:
    body = orjson.dumps(payload) if fmt == "json" else xml
    return Response(body, status_code=status, media_type=_MEDIA[fmt], headers={
        "Cache-Control": CACHE if status == 200 else "no-store",
        "Access-Control-Allow-Origin": "*", "X-Content-Type-Options": "nosniff",
        **(headers or {})})


def _error(fmt: str, exc: Open311Error) -> Response:
    payload = errors_json(exc.code, exc.description)
    xml = _xml("errors", "error", payload) if fmt == "xml" else None
    return _respond(fmt, payload, xml, status=exc.code)


def _fmt(value: str) -> str:
    if value not in _MEDIA:
        raise Open311Error(404, "format must be json or xml")
    return value


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _now() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


@router.get("/services.{fmt}", summary="Open311 GeoReport v2: the services (Bart's "
            "categories the municipality handles)", response_class=Response)
def services(fmt: str) -> Response:
    """The services with their Signalen category in ``group`` and ``keywords``."""
    try:
        fmt = _fmt(fmt)
    except Open311Error as exc:
        return _error("json", exc)
    return _respond(fmt, services_json(), services_xml() if fmt == "xml" else None)


@router.get("/requests.{fmt}", summary="Open311 GeoReport v2: the municipality's reports, "
            "newest first", response_class=Response)
def requests(request: Request, fmt: str) -> Response:
    """Filters: ``service_request_id``, ``service_code``, ``start_date``, ``end_date``,
    ``status``; paging: ``page_size`` (≤ 1000), ``before`` (from the ``Link`` header)."""
    try:
        fmt = _fmt(fmt)
    except Open311Error as exc:
        return _error("json", exc)
    try:
        query = parse_query(request.query_params, _now())
    except Open311Error as exc:
        return _error(fmt, exc)
    found, after = find(_engine(request), query)
    headers = {}
    if after is not None:
        params = {k: v for k, v in request.query_params.items() if k != "before"}
        params["before"] = after
        headers["Link"] = f'<{request.url.path}?{urlencode(params)}>; rel="next"'
    return _respond(fmt, found, requests_xml(found) if fmt == "xml" else None,
                    headers=headers)


@router.get("/requests/{request_id}.{fmt}", summary="Open311 GeoReport v2: one report",
            response_class=Response)
def one_request(request: Request, request_id: str, fmt: str) -> Response:
    """One report of the feed as a list of one (as the specification has it); 404 else."""
    try:
        fmt = _fmt(fmt)
    except Open311Error as exc:
        return _error("json", exc)
    extensions = request.query_params.get("extensions", "").lower() == "true"
    found = get(_engine(request), request_id, extensions=extensions)
    if found is None:
        return _error(fmt, Open311Error(404, "no such service request"))
    return _respond(fmt, [found], requests_xml([found]) if fmt == "xml" else None)


__all__ = ["SERVICES", "SIGNALEN", "Open311Error", "Query", "Service", "Signalen", "blot",
           "find", "get", "iso", "parse_query", "router", "services_json", "signalen_for",
           "to_request"]
