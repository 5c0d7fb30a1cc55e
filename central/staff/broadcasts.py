"""Broadcast pages of central's staff side: list, new, update, cancel.

The rules of broadcasts are in :mod:`central.broadcasts`; this module only
turns forms into calls and answers into pages.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import Response

from sync.bodies import MAX_REPORT_TEXT, MAX_TITLE, SEVERITIES

from .. import broadcasts
from ..health import node_health
from ..pages import local
from .accounts import StaffMember
from .web import (
    central_of,
    csrf_ok,
    done_text,
    engine_of,
    now_ms,
    read_form,
    redirect,
    render,
    require_member,
    tr,
)

router = APIRouter(include_in_schema=False)


def _form_defaults(source: broadcasts.Broadcast | None = None) -> dict[str, str]:
    if source is None:
        return {"title": "", "text": "", "areas": "", "severity": "moderate",
                "category": "suspicious", "hours": "24"}
    body = source.body
    left_h = max(1, math.ceil(((source.expires or 0) - now_ms()) / 3_600_000))
    hours = min((h for h in broadcasts.EXPIRY_HOURS if h >= left_h),
                default=broadcasts.MAX_HOURS)
    return {"title": body.get("title", ""), "text": body.get("text", ""),
            "areas": " ".join(body.get("areas") or []), "severity": body.get("severity", ""),
            "category": body.get("category", "other"), "hours": str(hours)}


def _broadcast_context() -> dict[str, Any]:
    return {"severities": SEVERITIES, "categories": broadcasts.BROADCAST_CATEGORIES,
            "hours": broadcasts.EXPIRY_HOURS, "max_title": MAX_TITLE,
            "max_text": MAX_REPORT_TEXT}


async def _broadcasts_page(request: Request, member: StaffMember, *, status: int = 200,
                           values: dict[str, str] | None = None,
                           errors: dict[str, str] | None = None) -> Response:
    now = now_ms()
    messages = await asyncio.to_thread(broadcasts.recent, engine_of(request),
                                       central_of(request), now)
    nodes = await asyncio.to_thread(node_health, engine_of(request), now)
    areas = sorted({n.area for n in nodes if n.revoked_at is None})
    return render(request, "broadcasts.html", member, status=status, page="/staff/broadcasts",
                  active=[m for m in messages if m.active(now)],
                  past=[m for m in messages if not m.active(now)][:50], now=now,
                  values=values or _form_defaults(), errors=errors or {}, areas=areas,
                  done=done_text(request), **_broadcast_context())


@router.get("/staff/broadcasts")
async def broadcasts_page(request: Request) -> Response:
    """Active and past broadcasts, and the form for a new one."""
    member = await require_member(request)
    return await _broadcasts_page(request, member)


_FORM_FIELDS: Final = ("title", "text", "areas", "severity", "category", "hours")


def _field_error(request: Request, exc: broadcasts.BroadcastError) -> dict[str, str]:
    message = tr(request, f"broadcast.error.{exc.field}", detail=str(exc))
    return {exc.field if exc.field in _FORM_FIELDS else "form": message}


@router.post("/staff/broadcasts")
async def broadcast_create(request: Request) -> Response:
    """Sign and store a new broadcast; nodes get it with their next sync."""
    member = await require_member(request)
    values = await read_form(request)
    if not csrf_ok(request, values.get("csrf", "")):
        return await _broadcasts_page(request, member, status=403, values=values,
                                      errors={"form": tr(request, "error.csrf")})
    try:
        fields = broadcasts.parse_form(values)
        event = await asyncio.to_thread(broadcasts.publish, engine_of(request),
                                        central_of(request), member, fields)
    except broadcasts.BroadcastError as exc:
        return await _broadcasts_page(request, member, status=422, values=values,
                                      errors=_field_error(request, exc))
    return redirect(f"/staff/broadcasts/{event.id}", "broadcast")


async def _broadcast_page(request: Request, member: StaffMember, message_id: str, *,
                          status: int = 200, values: dict[str, str] | None = None,
                          errors: dict[str, str] | None = None) -> Response:
    central, engine = central_of(request), engine_of(request)
    message = await asyncio.to_thread(broadcasts.get, engine, central, message_id)
    if message is None:
        return render(request, "error.html", member, status=404,
                      message=tr(request, "error.no_broadcast"))
    earlier = await asyncio.to_thread(broadcasts.chain, engine, central, message)
    now = now_ms()
    return render(request, "broadcast.html", member, status=status, message=message,
                  page=f"/staff/broadcasts/{message.id}",
                  earlier=earlier, now=now, active=message.active(now),
                  values=values or _form_defaults(message), errors=errors or {},
                  done=done_text(request), **_broadcast_context())


@router.get("/staff/broadcasts/{message_id}")
async def broadcast_page(request: Request, message_id: str) -> Response:
    """One broadcast message, what it replaced, and forms to update or cancel it."""
    member = await require_member(request)
    return await _broadcast_page(request, member, message_id[:64])


async def _change_broadcast(request: Request, message_id: str, action: str) -> Response:
    member = await require_member(request)
    message_id = message_id[:64]
    values = await read_form(request)
    if not csrf_ok(request, values.get("csrf", "")):
        return await _broadcast_page(request, member, message_id, status=403, values=values,
                                     errors={"form": tr(request, "error.csrf")})
    central, engine = central_of(request), engine_of(request)
    try:
        if action == "update":
            fields = broadcasts.parse_form(values)
            event = await asyncio.to_thread(broadcasts.publish, engine, central, member,
                                            fields, ref=message_id)
        else:
            event = await asyncio.to_thread(broadcasts.cancel, engine, central, member,
                                            message_id, values.get("reason", ""))
    except broadcasts.Replaced as exc:
        text = tr(request, f"broadcast.replaced_{exc.kind}", name=exc.by,
                  time=local(exc.at, "%H:%M"))
        return await _broadcast_page(request, member, message_id, status=409,
                                     values=values if action == "update" else None,
                                     errors={"form": text})
    except broadcasts.BroadcastError as exc:
        return await _broadcast_page(request, member, message_id, status=422,
                                     values=values if action == "update" else None,
                                     errors=_field_error(request, exc))
    return redirect(f"/staff/broadcasts/{event.id}",
                     "updated" if action == "update" else "cancelled")


@router.post("/staff/broadcasts/{message_id}/update")
async def broadcast_update(request: Request, message_id: str) -> Response:
    """Replace a broadcast with a new version (CAP Update)."""
    return await _change_broadcast(request, message_id, "update")


@router.post("/staff/broadcasts/{message_id}/cancel")
async def broadcast_cancel(request: Request, message_id: str) -> Response:
    """Withdraw a broadcast (CAP Cancel); nodes stop showing it."""
    return await _change_broadcast(request, message_id, "cancel")
