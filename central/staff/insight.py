"""The insight page of the staff side: ``GET /staff/insight`` and its CSV tables.

A member sees the figures of their own desk; an admin those of every desk,
or of one with ``?desk=police|municipality``. Charts are inline SVG made on
the server (central/insight.py), each with a title, a description and the
table of its values; the page needs no script and prints (a print
stylesheet drops the navigation). ``GET /staff/insight.csv?table=…`` gives
the same table as CSV (``categories``, ``areas``, ``response``, ``uptime``).
"""

from __future__ import annotations

import asyncio
import csv
import io
from types import ModuleType
from typing import TYPE_CHECKING, Final

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..pages import local
from ..triage import ROUTES
from .accounts import StaffMember
from .web import engine_of, now_ms, render, renderer_of, require_member, tr
from .web import page_lang as _lang

if TYPE_CHECKING:
    from .. import insight

router = APIRouter(include_in_schema=False)

TABLES: Final = ("categories", "areas", "response", "uptime")


def _route(request: Request, member: StaffMember) -> str | None:
    """The desk whose figures the member sees: their own, or the admin's choice (None: all)."""
    if member.role != "admin":
        return member.role
    desk = request.query_params.get("desk")
    return desk if desk in ROUTES else None


def _insight() -> ModuleType:
    """central/insight.py, imported at the first insight page (0.7 MB of every worker
    otherwise, which most never serve)."""
    from .. import insight

    return insight


async def _figures(request: Request, member: StaffMember) -> insight.Figures:
    return await asyncio.to_thread(_insight().collect, engine_of(request),
                                   _route(request, member), now_ms())


@router.get("/staff/insight")
async def insight_page(request: Request) -> Response:
    """Reports per week, category and area, response times and node uptime, as SVG and tables."""
    member = await require_member(request)
    figures = await _figures(request, member)
    t = renderer_of(request).translator(_lang(request))
    tables = _insight().tables(figures, t)
    charts = _insight().charts(figures, t)
    return render(request, "insight.html", member, tables=tables, charts=charts,
                  desk=figures.route, routes=ROUTES,
                  period=(local(figures.starts[0], "%d-%m-%Y"), local(figures.now, "%d-%m-%Y")))


@router.get("/staff/insight.csv")
async def insight_csv(request: Request) -> Response:
    """One table of the insight page as CSV (``table`` = categories, areas, response, uptime)."""
    member = await require_member(request)
    key = request.query_params.get("table", "")
    if key not in TABLES:
        return Response(tr(request, "insight.bad_table", tables=", ".join(TABLES)),
                        status_code=404, media_type="text/plain; charset=utf-8",
                        headers={"Cache-Control": "no-store"})
    figures = await _figures(request, member)
    table = _insight().tables(figures, renderer_of(request).translator(_lang(request)))[key]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for row in _insight().csv_rows(table):
        writer.writerow(row)
    desk = figures.route or "all"
    day = local(figures.now, "%Y-%m-%d")
    return Response("\ufeff" + out.getvalue(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="bart-{key}-{desk}-{day}.csv"',
        "Cache-Control": "no-store"})
