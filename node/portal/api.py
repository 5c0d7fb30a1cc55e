"""JSON API: reports, alerts, live stream, health."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from sync import Event, InvalidField

from ..reports import normalise_receipt, validate_report_input
from . import deps
from .views import alert_json, alert_view, is_visible

router = APIRouter()
KEEPALIVE_S = 15.0


class PlaceIn(BaseModel):
    """Where it happens: a meeting point id and/or free text."""

    model_config = ConfigDict(extra="forbid")
    point: str | None = Field(default=None, max_length=64)
    text: str = Field(default="", max_length=800)


class ReportIn(BaseModel):
    """A report as a resident (or an app on their behalf) submits it."""

    model_config = ConfigDict(extra="forbid")
    category: Literal["nuisance", "suspicious", "social", "emergency"]
    text: str = Field(default="", max_length=4000)
    place: PlaceIn = Field(default_factory=PlaceIn)
    audience: Literal["neighbours", "authorities", "both"] = "both"
    called_112: bool = False
    called_112_by: str = Field(default="", max_length=320)
    contact: str = Field(default="", max_length=800)
    lang: str = Field(default="nl", pattern=r"^[a-z]{2,3}$")


class ReportCreated(BaseModel):
    """The answer to a stored report."""

    id: str
    receipt: str
    status_url: str
    shown_to_neighbours: bool


def add_schemas(schema: dict[str, Any]) -> dict[str, Any]:
    """Put ``ReportIn`` (documentation of the report body) into an OpenAPI schema."""
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    report = ReportIn.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(report.pop("$defs", {}))
    schemas["ReportIn"] = report
    return schema


def check_place(report: dict[str, Any], request: Request) -> None:
    """A meeting point must be one of this node's."""
    point = report["place"]["point"]
    if point is not None and point not in {p.id for p in deps.settings(request).meeting_points}:
        raise InvalidField("place.point", "is not a meeting point of this node")


def _invalid(field: str, message: str) -> JSONResponse:
    return JSONResponse({"detail": "invalid input; nothing was stored",
                         "errors": [{"field": field, "message": message}]}, status_code=422)


@router.post("/api/v1/reports", status_code=201, response_model=ReportCreated,
             responses={413: {"description": "body too large"},
                        415: {"description": "not application/json"},
                        422: {"description": "invalid input"},
                        429: {"description": "too many reports from this device"}},
             tags=["reports"],
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": {"$ref": "#/components/schemas/ReportIn"}}}}})
async def post_report(request: Request) -> JSONResponse:
    """Store a report (body: ``ReportIn``); the answer comes only after its COMMIT.

    The body is checked by the event model's own validator (``sync.bodies``),
    the one authority on what a report may hold; ``ReportIn`` documents it.
    """
    deps.limit(request, "report_limiter")
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        # Also keeps other sites' plain HTML forms out (they cannot send JSON).
        return JSONResponse({"detail": "send the report as application/json"},
                            status_code=415)
    try:
        data = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        return _invalid("$", "not valid JSON")
    if not isinstance(data, dict):
        return _invalid("$", "a report must be a JSON object")
    try:
        clean = validate_report_input(data)
        check_place(clean, request)
    except InvalidField as exc:
        return _invalid(exc.field, exc.reason)
    done = await deps.runtime(request).submit_report(clean)
    receipt = done.report.body["receipt"]
    return JSONResponse({"id": done.report.id, "receipt": receipt,
                         "status_url": f"/status?receipt={receipt}",
                         "shown_to_neighbours": done.warning is not None}, status_code=201,
                        headers={"Location": f"/api/v1/reports/{receipt}"})


@router.get("/api/v1/reports/{receipt}", tags=["reports"],
            responses={404: {"description": "unknown receipt code"}})
async def get_report(receipt: str, request: Request) -> dict[str, Any]:
    """State of a report by its receipt code (no text, no contact data)."""
    deps.limit(request, "lookup_limiter")
    found = deps.runtime(request).require_store().receipt(normalise_receipt(receipt))
    if found is None:
        raise HTTPException(404, "no report with this receipt code")
    state, event = found
    return deps.report_status(state, event, deps.settings(request))


@router.get("/api/v1/alerts", tags=["alerts"])
async def get_alerts(request: Request,
                     limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
    """Public alerts for this node's area that have not expired, newest first."""
    s = deps.settings(request)
    return {"node": s.name, "area": s.area,
            "alerts": [alert_json(e, s) for e in deps.visible_alerts(request, limit)]}


@router.get("/api/v1/stream", tags=["alerts"],
            response_description="text/event-stream of public alerts")
async def stream(
    request: Request,
    render: Annotated[str | None, Query(pattern=r"^[a-z]{2,3}$")] = None,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> StreamingResponse:
    """Server-Sent Events: one ``alert`` message per new public alert.

    ``render=nl`` adds the rendered list item (for the resident page). After a
    reconnect, ``Last-Event-ID`` replays what was missed.
    """
    rt = deps.runtime(request)
    s = deps.settings(request)
    r = deps.renderer(request)

    def message(event: Event) -> bytes:
        data: dict[str, Any] = alert_json(event, s)
        if render:
            data["html"] = r.render_alert_item(alert_view(event, s, render), render)
        payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        return f"id: {event.id}\nevent: alert\ndata: {payload}\n\n".encode()

    async def events() -> AsyncIterator[bytes]:
        async with rt.hub.subscribe() as sub:
            yield b"retry: 3000\n: connected\n\n"
            if last_event_id:
                last = rt.require_store().get_event(last_event_id)
                if last is not None:  # replay what was missed, filtered as the page is
                    missed = deps.visible_alerts(request, 100, since_ms=last.ts)
                    for e in reversed(missed):
                        if e.id != last.id:
                            yield message(e)
            while not sub.dropped:
                event = await sub.next(KEEPALIVE_S)
                if event is None:
                    if await request.is_disconnected():
                        return
                    yield b": keepalive\n\n"
                    continue
                if event.kind == "alert" and is_visible(event, s, int(time.time() * 1000)):
                    yield message(event)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/healthz", tags=["health"])
async def healthz(request: Request) -> JSONResponse:
    """Broker, store and disk state; 503 when the node cannot take reports."""
    health = await asyncio.to_thread(deps.runtime(request).health)
    return JSONResponse(health, status_code=503 if health["status"] == "failing" else 200)
