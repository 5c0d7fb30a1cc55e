"""JSON API: reports, alerts, live stream, health."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from sync import AUDIENCES, CATEGORIES, Event
from sync.bodies import LANG, SLUG

from ..reports import normalise_receipt
from . import deps
from .intake import LIMITS
from .views import Phase, alert_json, alert_phase, alert_view, is_visible

router = APIRouter()
KEEPALIVE_S = 15.0
#: ``render=``: a language code.
RENDER = re.compile(r"^[a-z]{2,3}$")
#: Longest ``Last-Event-ID`` taken (longer: 422).
MAX_EVENT_ID = 64
#: Answers that change what residents see of an alert ("hidden" from its
#: origin removes it; the page drops it on reload).
PHASE_ACTIONS = frozenset({"on_my_way", "resolved", "hidden"})


_CLEANED = (" characters after cleaning (control and invisible characters removed, "
            "spaces collapsed: docs/protocol.md)")


class PlaceIn(BaseModel):
    """Where it happens: a meeting point id and/or free text."""

    model_config = ConfigDict(extra="forbid")
    point: str | None = Field(default=None, max_length=63, pattern=SLUG.pattern,
                              description="A meeting point id of this node; an unknown "
                                          "one is refused with 422.")
    text: str = Field(default="", max_length=LIMITS["place.text"],
                      description=f"At most {LIMITS['place.text']}{_CLEANED}; one line.")


class ReportIn(BaseModel):
    """A report as a resident (or an app on their behalf) submits it."""

    # Documentation only: node/portal/intake.py checks the body (the event
    # model's validator) with these limits; tests/integration/test_hostile_input.py
    # holds the schema and the checks equal.
    model_config = ConfigDict(extra="forbid")
    category: Literal[CATEGORIES]  # type: ignore[valid-type]
    text: str = Field(default="", max_length=LIMITS["text"],
                      description=f"At most {LIMITS['text']}{_CLEANED}.")
    place: PlaceIn = Field(default_factory=PlaceIn)
    audience: Literal[AUDIENCES] | None = Field(  # type: ignore[valid-type]
        default=None,
        description="Who sees it. Left out (or null): `authorities` for suspicious and "
                    "social reports, `both` for the others.")
    called_112: bool = False
    called_112_by: str = Field(default="", max_length=LIMITS["called_112_by"],
                               description=f"At most {LIMITS['called_112_by']}{_CLEANED}; "
                                           "one line.")
    contact: str = Field(default="", max_length=LIMITS["contact"],
                         description=f"At most {LIMITS['contact']}{_CLEANED}; one line.")
    lang: str = Field(default="nl", pattern=LANG.pattern)


class ReportCreated(BaseModel):
    """The answer to a stored report."""

    id: str
    receipt: str
    status_url: str
    shown_to_neighbours: bool


def add_schemas(schema: dict[str, Any]) -> dict[str, Any]:
    """Document ``POST /api/v1/reports`` (served by :mod:`node.portal.ingest`)."""
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    ref = "#/components/schemas/{model}"
    for model in (ReportIn, ReportCreated):
        found = model.model_json_schema(ref_template=ref)
        schemas.update(found.pop("$defs", {}))
        schemas[model.__name__] = found

    def reply(text: str, model: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"description": text}
        if model:
            out["content"] = {"application/json": {"schema": {"$ref": ref.format(model=model)}}}
        return out

    schema.setdefault("paths", {})["/api/v1/reports"] = {"post": {
        "tags": ["reports"], "summary": "Store a report",
        "description": "Stored durably before the answer: 201 only after its COMMIT. The body "
                       "is checked by the event model's own validator; nothing is stored on "
                       "any error. A report needs a few words (`text`), a meeting point "
                       "(`place.point`) or a place (`place.text`): without any of them the "
                       "answer is 422 with the field `report`. Hostile JSON (invalid UTF-8, "
                       "lone surrogate escapes, NaN, floats, integers of more than 20 digits, "
                       "duplicate keys, deep nesting) and unknown fields are 422 with the "
                       "field `$`, `body` or `place`; the form `POST /report` takes the same "
                       "checks and limits.",
        "operationId": "post_report",
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": ref.format(model="ReportIn")}}}},
        "responses": {
            "201": reply("stored; Location points at its status", "ReportCreated"),
            "413": reply("body too large"), "415": reply("not application/json"),
            "422": reply("invalid input"), "429": reply("too many reports from this device"),
            "503": reply("the store could not take it; try again"),
        }}}
    return schema


@router.get("/api/v1/reports/{receipt}", tags=["reports"],
            responses={404: {"description": "unknown receipt code"}})
async def get_report(receipt: str, request: Request) -> dict[str, Any]:
    """State of a report by its receipt code (no text, no contact data)."""
    deps.limit(request, "lookup_limiter")
    found = deps.runtime(request).require_store().receipt(normalise_receipt(receipt))
    if found is None:
        raise HTTPException(404, "no report with this receipt code")
    state, event = found
    return deps.report_status(state, event, deps.settings(request),
                              reply=deps.runtime(request).require_store().receipt_reply(
                                  normalise_receipt(receipt)))


@router.get("/api/v1/alerts", tags=["alerts"])
async def get_alerts(request: Request,
                     limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
    """Public alerts for this node's area that have not expired, newest first."""
    s = deps.settings(request)
    return {"node": s.name, "area": s.area,
            "alerts": [alert_json(e, s, phase)
                       for e, phase in deps.visible_alert_phases(request, limit)]}


@router.get("/api/v1/stream", tags=["alerts"],
            response_description="text/event-stream of public alerts")
async def stream(
    request: Request,
    render: Annotated[str | None, Query(pattern=RENDER.pattern)] = None,
    last_event_id: Annotated[str | None, Header(max_length=MAX_EVENT_ID)] = None,
) -> StreamingResponse:
    """Server-Sent Events: one ``alert`` message per new public alert.

    ``render=nl`` adds the rendered list item (for the resident page). After a
    reconnect, ``Last-Event-ID`` replays what was missed. When an alert updates
    or cancels an earlier one of its origin (``ref``), a ``withdraw`` message
    ``{"id": …}`` names the earlier one first. When an answer changes an
    alert's phase (someone coming, resolved), the alert is sent again with
    its new ``phase`` (same id: the page replaces the item).
    """
    # The server runs this route's twin, node.portal.stream.LiveStream, in front
    # of the framework (issue 15: ~35 KB less per open stream); this one serves
    # what that one passes on (it answers odd requests with the framework's 422)
    # and documents the endpoint.
    return StreamingResponse(live_events(request, render, last_event_id,
                                         request.is_disconnected),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def live_events(request: Request, render: str | None, last_event_id: str | None,
                      disconnected: Callable[[], Awaitable[bool]] | None
                      ) -> AsyncGenerator[bytes, None]:
    """The body of ``GET /api/v1/stream`` (see :func:`stream`): its messages as bytes.

    ``disconnected``, when given, is asked at each keep-alive whether the client
    went away (then the stream ends); without it the caller ends the stream.
    """
    rt = deps.runtime(request)
    s = deps.settings(request)
    r = deps.renderer(request)

    def message(event: Event, phase: Phase | None = None, *, resume: str | None = None) -> bytes:
        phase = phase or deps.alert_phase_of(request, event)
        data: dict[str, Any] = alert_json(event, s, phase)
        if render:
            name = rt.peer_names().get(event.origin, event.origin)
            data["html"] = r.render_alert_item(alert_view(event, s, render, name, phase),
                                               render)
        payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        # An update's id is the answer's, so that Last-Event-ID resumes after it.
        return f"id: {resume or event.id}\nevent: alert\ndata: {payload}\n\n".encode()

    def answered(ack: Event) -> bytes | None:
        """The alert an answer refers to, again with its new phase (None: not shown)."""
        if ack.body.get("action") not in PHASE_ACTIONS:
            return None
        alert = rt.require_store().get_event(ack.body["ref"])
        if alert is None or alert.kind != "alert" or not is_visible(
                alert, s, rt.now_ms(), central_origin=deps.central_origin(request)):
            return None
        # Every event reaches the live stream after its COMMIT: the store
        # holds this answer already.
        acks = rt.require_store().acks_for([alert.id]).get(alert.id, [])
        return message(alert, alert_phase(alert, acks), resume=ack.id)

    def withdraw(alert_id: str) -> bytes:
        payload = json.dumps({"id": alert_id}, separators=(",", ":"))
        return f"event: withdraw\ndata: {payload}\n\n".encode()

    async with rt.hub.subscribe() as sub:
        yield b"retry: 3000\n: connected\n\n"
        if last_event_id:
            last = rt.require_store().get_event(last_event_id)
            if last is not None:  # replay what was missed, filtered as the page is
                for e, phase in reversed(deps.visible_alert_phases(request, 100)):
                    if e.id != last.id and (e.ts >= last.ts
                                            or (phase.since or 0) >= last.ts):
                        yield message(e, phase)
        while not sub.dropped:
            event = await sub.next(KEEPALIVE_S)
            if event is None:
                if disconnected is not None and await disconnected():
                    return
                yield b": keepalive\n\n"
                continue
            if event.kind == "ack":
                update = answered(event)
                if update is not None:
                    yield update
                continue
            if event.kind != "alert":
                continue
            replaced = event.body.get("ref")
            if replaced:  # an update or cancel: the page drops what it replaces
                earlier = rt.require_store().get_event(replaced)
                if earlier is not None and earlier.kind == "alert" \
                        and earlier.origin == event.origin:
                    yield withdraw(earlier.id)
            if is_visible(event, s, rt.now_ms(),
                          central_origin=deps.central_origin(request)):
                yield message(event)


@router.get("/healthz", tags=["health"])
async def healthz(request: Request) -> JSONResponse:
    """Broker, store and disk state; 503 when the node cannot take reports."""
    health = await asyncio.to_thread(deps.runtime(request).health)
    return JSONResponse(health, status_code=503 if health["status"] == "failing" else 200)


@router.get("/api/v1/mesh", tags=["health"])
async def mesh(request: Request) -> JSONResponse:
    """This node's mesh: peers (name, how found, connected since, round-trip ms,
    hops, what each lacks), its vector (``{origin: {stream: gapless head}}``)."""
    runtime = deps.runtime(request)
    if runtime.mesh is None:
        view: dict[str, Any] = {"node": runtime.settings.name, "enabled": False,
                                "why": "mesh.port is 0" if not runtime.settings.mesh.port
                                else "no one can be a peer yet: enrol with central "
                                     "or add a peer (bart node trust add)",
                                "peers": [], "vector": {}}
    else:
        view = runtime.mesh.view()
        if runtime.carrier is not None:
            view["carry"] = runtime.carrier.status()
    return JSONResponse(view, headers={"Cache-Control": "no-store"})
