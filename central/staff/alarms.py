"""The desk's alarms on the staff pages, and the live stream every staff page listens to.

* ``POST /staff/alarms/{id}/answer`` — "police informed" (``seen``), "on the
  way" (``on_my_way``), "resolved"; the form carries the desk state the member
  saw (``seen``): someone else answering first gives a 409 page saying who.
* ``GET /staff/live`` — Server-Sent Events for logged-in members: ``event:
  desk`` with ``{"mark": n, "new": k}`` whenever the desk counter moves
  (central/alarms.py), ``k`` being the alarms of the member's desk nobody has
  answered plus its emergency reports nobody has taken. The pages' script
  fetches the list again on a change and sounds the alarm cue while ``k > 0``;
  without JavaScript the lists have a reload link, and the forms work as before.
* ``GET /staff/api/alarms`` — the member's desk's alarms as JSON.

One :class:`DeskWatch` per worker reads the counter (one row) every
``WATCH_S`` while anybody listens, whatever the history.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Final

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy.engine import Engine

from .. import alarms, db
from ..pages import local
from ..triage import ROUTES
from .web import (
    central_of,
    csrf_ok,
    engine_of,
    now_ms,
    read_form,
    redirect,
    render,
    require_member,
    tr,
)

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

WATCH_S: Final = 0.25
KEEPALIVE_S: Final = 15.0
MAX_LISTENERS: Final = 200


def new_by_desk(engine: Engine) -> dict[str, int]:
    """Unanswered alarms and untaken emergency reports per desk (both by their
    ``(desk|route, state, ts)`` index, once per desk: only the ``new`` rows are read)."""
    a = db.alarms.c
    r = db.reports.c
    out: dict[str, int] = {}
    with db.reading(engine) as conn:
        for desk, n in conn.execute(
                sa.select(a.desk, sa.func.count())
                .where(a.state == "new", a.team_state.not_in(alarms.TEAM_CLOSED))
                .group_by(a.desk)):
            out[str(desk)] = out.get(str(desk), 0) + int(n)
        for route, n in conn.execute(
                sa.select(r.route, sa.func.count()).where(r.route.in_(ROUTES), r.state == "new",
                                                          r.category == "emergency")
                .group_by(r.route)):
            out[str(route)] = out.get(str(route), 0) + int(n)
    return out


class DeskWatch:
    """Reads the desk counter while anybody listens; wakes the listeners on a change."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.mark = -1
        self.new: dict[str, int] = {}
        self.listeners = 0
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._reads = 0  # reads started
        self._applied = 0  # the newest read whose result is shown

    async def refresh(self) -> None:
        """Read the counter (and on a change the unanswered alarms) now.

        Also when a page connects: between two of the watch's reads it would
        get the last mark's count — e.g. "1 unanswered" (and a cue) on the page
        the member comes back to right after answering. Of two reads that
        overlap, the one started later wins (the counter only grows).
        """
        self._reads += 1
        ticket = self._reads
        mark = await asyncio.to_thread(alarms.desk_mark, self.engine)
        if mark == self.mark:
            return
        new = await asyncio.to_thread(new_by_desk, self.engine)
        if ticket < self._applied:
            return
        self._applied, self.new, self.mark = ticket, new, mark
        async with self._changed:
            self._changed.notify_all()

    async def _run(self) -> None:
        while self.listeners > 0:
            try:
                await self.refresh()
            except Exception as exc:  # the database away: the pages keep their last state
                log.warning("the desk's live stream cannot read the database: %s", exc)
                await asyncio.sleep(5.0)
            await asyncio.sleep(WATCH_S)
        self._task = None

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def wait(self, seen: int, timeout: float) -> int:
        """The mark once it differs from ``seen`` (or the same after ``timeout``)."""
        self._start()
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(lambda: self.mark != seen),
                                       timeout)
        return self.mark


def _watch(request: Request) -> DeskWatch:
    watch: DeskWatch | None = getattr(request.app.state, "desk_watch", None)
    if watch is None:
        watch = request.app.state.desk_watch = DeskWatch(engine_of(request))
    return watch


@router.get("/staff/live")
async def live(request: Request) -> Response:
    """Server-Sent Events: the desk counter and the member's unanswered alarms."""
    member = await require_member(request)
    watch = _watch(request)
    if watch.listeners >= MAX_LISTENERS:
        raise HTTPException(503, "too many live pages")

    def unanswered() -> int:
        return sum(n for desk, n in watch.new.items() if member.sees(desk))

    async def events() -> AsyncIterator[bytes]:
        watch.listeners += 1
        try:
            yield b"retry: 2000\n\n"
            with contextlib.suppress(Exception):  # else the watch's last state
                await watch.refresh()
            seen = -1
            last = time.monotonic()
            while not await request.is_disconnected():
                mark = await watch.wait(seen, 1.0)
                if mark != seen and mark >= 0:
                    seen = mark
                    data = json.dumps({"mark": mark, "new": unanswered()})
                    yield f"event: desk\ndata: {data}\n\n".encode()
                    last = time.monotonic()
                elif time.monotonic() - last > KEEPALIVE_S:
                    yield b": keep-alive\n\n"
                    last = time.monotonic()
        finally:
            watch.listeners -= 1

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/staff/api/alarms")
async def alarms_api(request: Request) -> Response:
    """The member's desk's alarms (open first), as on the reports page."""
    member = await require_member(request)
    found = await asyncio.to_thread(alarms.list_alarms, engine_of(request), member, now_ms())
    return JSONResponse({"alarms": [alarms.to_json(a) for a in found]},
                        headers={"Cache-Control": "no-store"})


def _stale_text(request: Request, exc: alarms.Stale) -> str:
    return tr(request, "alarm.stale", name=exc.handler or "?", time=local(exc.at, "%H:%M"),
              state=tr(request, f"alarm.state_{exc.state}"))


@router.post("/staff/alarms/{alarm_id}/answer")
async def answer(request: Request, alarm_id: str) -> Response:
    """The desk's answer; back to the list with what was done."""
    member = await require_member(request)
    if len(alarm_id) != 36:
        raise HTTPException(404, "no such alarm")
    values = await read_form(request)
    if not csrf_ok(request, values.get("csrf", "")):
        return render(request, "error.html", member, status=403,
                      message=tr(request, "error.csrf"))
    central = central_of(request)
    try:
        await asyncio.to_thread(alarms.answer, engine_of(request), central, member, alarm_id,
                                values.get("action", "")[:16], values.get("seen", "")[:16],
                                now_ms())
    except alarms.NotFound:
        return render(request, "error.html", member, status=404,
                      message=tr(request, "error.no_alarm"))
    except alarms.Stale as exc:
        return render(request, "error.html", member, status=409,
                      message=_stale_text(request, exc))
    except alarms.NotAllowed:
        return render(request, "error.html", member, status=422,
                      message=tr(request, "error.alarm_answer"))
    return redirect("/staff/reports", "alarm_answered")


def alarm_context(request: Request, found: list[alarms.Alarm]) -> dict[str, Any]:
    """What ``reports.html`` needs to show the alarms on top."""
    return {"alarms": found, "open_alarms": sum(1 for a in found if a.waiting)}
