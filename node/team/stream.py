"""``GET /team/stream``: every new event, private and public, with its dashboard row.

Server-Sent Events from ``runtime.team_hub`` (all events, unlike the public
``/api/v1/stream``), for logged-in members only: ``event: <kind>``, ``id:
<event id>``, ``data:`` JSON ``{id, kind, origin, stream, ts, body, row,
alarm, state, closed, html}``: ``row`` is the id of the dashboard row the
event adds or changes, ``html`` that row exactly as the dashboard renders it
(one macro, ``_team_row.html``); ``closed: true`` (and no ``html``) when an
answer took the row off the open list.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import jinja2
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from sync import Event

from ..config import NodeSettings
from ..portal import deps
from ..portal.i18n import direction
from ..portal.render import Renderer
from ..portal.resident import page_lang
from .accounts import Member
from .session import COOKIE, TeamStore, accounts, csrf_token, require_stream_member, team_runtime
from .views import board

log = logging.getLogger(__name__)
stream_router = APIRouter(include_in_schema=False)

OPEN_ITEMS = 100
KEEPALIVE_S = 15.0


@functools.lru_cache(maxsize=8)
def _row_template(renderer: Renderer) -> jinja2.Template:
    return renderer.env.from_string(
        '{% from "_team_row.html" import team_row with context %}'
        "{{ team_row(r, csrf_token) }}")


def row_html(renderer: Renderer, row: dict[str, Any], lang: str, csrf: str) -> str:
    """The ``<li>`` of one row, exactly as the dashboard renders it."""
    return _row_template(renderer).render(
        t=renderer.catalogue.translator(lang), lang=lang, dir=direction(lang), r=row,
        csrf_token=csrf)


def stream_message(event: Event, store: TeamStore, settings: NodeSettings,
                   renderer: Renderer, lang: str, csrf: str, now_ms: int,
                   names: dict[str, str] | None = None) -> bytes:
    """One SSE message: the event, and the dashboard row it adds or changes."""
    data: dict[str, Any] = {"id": event.id, "kind": event.kind, "origin": event.origin,
                            "stream": event.stream, "ts": event.ts, "body": event.body}
    target = event.body.get("ref") if event.kind == "ack" else event.id
    if event.kind in ("report", "alert", "ack") and isinstance(target, str):
        items = store.open_items(limit=OPEN_ITEMS, area=settings.area)
        row = board(items, settings, lang, now_ms, names).find(target)
        if row is not None:
            data.update(row=row["id"], alarm=row["alarm"], state=row["state"],
                        closed=row["closed"])
            if not row["closed"]:
                data["html"] = row_html(renderer, row, lang, csrf)
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"id: {event.id}\nevent: {event.kind}\ndata: {payload}\n\n".encode()


@stream_router.get("/team/stream")
async def stream(request: Request,
                 member: Annotated[Member, Depends(require_stream_member)]) -> Response:
    """Server-Sent Events: every new event, private and public, with its dashboard row.

    Ends when the session ends (logout, removal, expiry); it does not keep the
    session alive by itself.
    """
    rt = team_runtime(request)
    s = deps.settings(request)
    r = deps.renderer(request)
    lang = page_lang(request)
    team = accounts(request)
    token = request.cookies.get(COOKIE, "")
    csrf = csrf_token(token)

    async def alive() -> bool:
        return await asyncio.to_thread(team.session, token, touch=False) is not None

    async def events() -> AsyncIterator[bytes]:
        async with rt.team_hub.subscribe() as sub:
            yield b"retry: 3000\n: connected\n\n"
            while not sub.dropped:
                event = await sub.next(KEEPALIVE_S)
                if event is None:
                    if await request.is_disconnected() or not await alive():
                        return
                    yield b": keepalive\n\n"
                    continue
                if not await alive():
                    return
                try:
                    yield stream_message(event, rt.require_store(), s, r, lang, csrf,
                                         rt.now_ms(), rt.peer_names())
                except Exception as exc:  # one odd event must not end everyone's stream
                    log.warning("team stream: cannot show %s: %s", event.id, exc)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
