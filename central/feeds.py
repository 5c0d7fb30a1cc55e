"""CAP 1.2 feed of central's broadcasts (``central/cap.py`` renders the XML).

* ``GET /api/v1/cap/alerts.xml`` — Atom index of the messages in force:
  not expired, not replaced by a later Update or Cancel (a Cancel is listed
  until the time the message it withdraws would have expired);
* ``GET /api/v1/cap/alerts/{id}.xml`` — one CAP 1.2 ``<alert>``, for every
  message central ever broadcast (also replaced and expired ones: readers
  follow ``<references>``), signed with an enveloped XML-DSig signature
  (``central/capsign.py``);
* ``GET /api/v1/cap/cert.pem`` — the certificate that verifies those
  signatures. The Atom index itself is not signed: it only points to the
  signed documents.

Mapping of a broadcast (see :mod:`central.broadcasts`) to CAP: ``alert`` →
``Alert``; ``update`` → ``Update``; ``cancel`` → ``Cancel``. An Update or
Cancel references every earlier message of its chain. A broadcast's
``expires`` is CAP's ``<expires>``; a Cancel (whose own ``expires`` is the
moment it was made) gets the expiry of the message it withdraws, at least
one hour after it was sent, so that readers can learn of it. ``<sender>`` is
``<central origin>@<host of public_url>``. Each area code becomes an
``<area>`` with the name, outline and geocodes of central's ``areas.toml``
(``central/areas.py``), plus the geocode ``bart:area`` = the code; a code
that file does not know keeps the code as its ``areaDesc``.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.engine import Engine

from . import broadcasts
from .areas import Area
from .broadcasts import Broadcast
from .cap import (
    AREA_GEOCODE,
    ATOM_MEDIA_TYPE,
    CAP_MEDIA_TYPE,
    EVENTS,
    LANG_NL,
    AlertText,
    CapArea,
    CapError,
    PublicAlert,
    active_alerts,
    alert_xml,
    feed_xml,
)
from .capsign import CapSigner, CapSignError
from .identity import Central

log = logging.getLogger(__name__)

MSG_TYPES: Final = {"alert": "Alert", "update": "Update", "cancel": "Cancel"}
#: A Cancel stays in the feed at least this long.
CANCEL_LISTED_MS: Final = 3600 * 1000
#: Broadcasts always carry an expiry; this is only for one that somehow has none.
DEFAULT_EXPIRY_MS: Final = 24 * 3600 * 1000
FEED_CACHE: Final = "public, max-age=30"
PEM_MEDIA_TYPE: Final = "application/x-pem-file"

router = APIRouter(tags=["cap"])


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def sender_of(central: Central) -> str:
    """CAP ``<sender>``: central's origin at the host of its public URL."""
    host = urlsplit(central.settings.public_url).hostname or "localhost"
    return f"{central.origin}@{host}"


def cap_area(code: str, known: dict[str, Area]) -> CapArea:
    """The CAP ``<area>`` of one area code: named and outlined if central knows it."""
    area = known.get(code)
    if area is None:
        return CapArea.bare(code)
    return CapArea(area.name, polygons=(area.polygon,) if area.polygon else (),
                   geocodes=((AREA_GEOCODE, code), *area.geocodes))


def to_cap(central: Central, message: Broadcast, earlier: list[Broadcast]) -> PublicAlert:
    """The CAP message of one broadcast; ``earlier`` = its chain, newest first."""
    kind = message.kind
    body = message.body
    if kind == "cancel":
        withdrawn = earlier[0].expires if earlier and earlier[0].expires else 0
        expires = max(withdrawn, message.ts + CANCEL_LISTED_MS)
    else:
        expires = message.expires if message.expires and message.expires > message.ts + 1000 \
            else message.ts + DEFAULT_EXPIRY_MS
    category = body.get("category") if body.get("category") in EVENTS["nl"] else "other"
    headline = body.get("title") or EVENTS["nl"][str(category)]
    return PublicAlert(
        id=message.id, sent=_dt(message.ts), msg_type=MSG_TYPES[kind],
        severity=str(body.get("severity", "moderate")),
        texts=(AlertText(LANG_NL, headline=str(headline), description=str(body.get("text", ""))),),
        expires=_dt(expires), category=str(category),
        areas=tuple(cap_area(str(code), central.areas) for code in body.get("areas") or ()),
        references=tuple((e.id, _dt(e.ts)) for e in reversed(earlier)) if kind != "alert"
        else (),
        sender=sender_of(central), sender_name=f"Bart {central.origin}")


def _chain(engine: Engine, central: Central, message: Broadcast,
           known: dict[str, Broadcast]) -> list[Broadcast]:
    out: list[Broadcast] = []
    ref = message.ref
    while ref and len(out) < broadcasts.MAX_CHAIN:
        earlier = known.get(ref)
        if earlier is None:  # older than the window: look the rest up
            return out + broadcasts.chain(engine, central, out[-1] if out else message)
        out.append(earlier)
        ref = earlier.ref
    return out


def current_alerts(engine: Engine, central: Central, now_ms: int) -> list[PublicAlert]:
    """The CAP messages the feed lists at ``now_ms``, newest first."""
    messages = broadcasts.recent(engine, central, now_ms)
    known = {m.id: m for m in messages}
    alerts = []
    for message in messages:
        try:
            alerts.append(to_cap(central, message, _chain(engine, central, message, known)))
        except CapError as exc:  # never one bad message for the whole feed
            log.warning("broadcast %s left out of the CAP feed: %s", message.id, exc)
    return active_alerts(alerts, _dt(now_ms))


def _base(central: Central) -> str:
    return central.settings.public_url.rstrip("/")


@router.get("/api/v1/cap/alerts.xml", summary="Atom index of the CAP 1.2 alerts in force",
            response_class=Response, responses={200: {"content": {ATOM_MEDIA_TYPE: {}}}})
def cap_feed(request: Request) -> Response:
    """Central's broadcasts in force, newest first, each linking to its CAP document."""
    central: Central = request.app.state.central
    engine: Engine = request.app.state.engine
    now = time.time_ns() // 1_000_000
    base = _base(central)
    xml = feed_xml(current_alerts(engine, central, now),
                   feed_url=f"{base}/api/v1/cap/alerts.xml",
                   alert_url=lambda a: f"{base}/api/v1/cap/alerts/{a.id}.xml",
                   updated=_dt(now), title="Bart: public alerts", author=f"Bart {central.origin}")
    return Response(xml, media_type=ATOM_MEDIA_TYPE, headers={"Cache-Control": FEED_CACHE})


@router.get("/api/v1/cap/alerts/{alert_id}.xml", summary="One CAP 1.2 alert message",
            response_class=Response,
            responses={200: {"content": {CAP_MEDIA_TYPE: {}}}, 404: {}})
def cap_alert(request: Request, alert_id: str) -> Response:
    """One broadcast message as CAP 1.2 (Alert, Update or Cancel)."""
    central: Central = request.app.state.central
    engine: Engine = request.app.state.engine
    message = broadcasts.get(engine, central, alert_id[:64])
    if message is None:
        return JSONResponse({"error": "not_found", "detail": "no such alert"}, status_code=404)
    earlier = broadcasts.chain(engine, central, message)
    signer: CapSigner = request.app.state.cap_signer
    try:
        xml = signer.sign(alert_xml(to_cap(central, message, earlier)))
    except (CapError, CapSignError) as exc:
        log.warning("broadcast %s cannot be rendered as CAP: %s", message.id, exc)
        return JSONResponse({"error": "not_cap", "detail": str(exc)}, status_code=500)
    return Response(xml, media_type=CAP_MEDIA_TYPE, headers={"Cache-Control": FEED_CACHE})


@router.get("/api/v1/cap/cert.pem", summary="Certificate that verifies the CAP signatures",
            response_class=Response, responses={200: {"content": {PEM_MEDIA_TYPE: {}}}})
def cap_cert(request: Request) -> Response:
    """Central's self-signed CAP signing certificate (PEM), for ``xmlsec1 --trusted-pem``."""
    signer: CapSigner = request.app.state.cap_signer
    return Response(signer.cert_pem, media_type=PEM_MEDIA_TYPE,
                    headers={"Cache-Control": "public, max-age=3600"})


def install(app: FastAPI, central: Central, engine: Engine) -> None:
    """Add the CAP routes to ``app``, with the signer of central's CAP key."""
    app.state.cap_signer = CapSigner(central.cap_key, central.cap_cert)
    app.include_router(router)
