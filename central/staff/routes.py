"""Staff pages of central: login, incoming reports, node health, broadcasts, audit log.

Server-rendered (Jinja2, Dutch first, English), complete without JavaScript,
usable on a phone. Installed by :func:`install`, which ``central.app`` calls.

* Roles: ``police`` and ``municipality`` see (and handle) reports routed to
  their desk; ``admin`` sees all of them, the audit log and the staff
  accounts (:mod:`central.staff.admin`). Everybody may broadcast.
* Sessions: cookie ``bart_staff`` (HttpOnly, SameSite=Strict, Secure over
  https, Path=/); every form carries a CSRF token that is
  HMAC-SHA256(session token, "csrf"); the login form a double-submit token.
* Every page and ``GET /api/v1/nodes`` get a strict CSP with a per-request
  nonce (no scripts at all), ``no-store`` and no framing.
* Refused input shows the page again with the message and what was typed.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import secrets
from typing import Final
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.engine import Engine

from .. import alarms, handling, open311
from ..health import node_health, node_names
from ..identity import Central
from ..pages import Renderer, local
from ..passwords import MIN_PASSWORD, WeakPassword
from ..triage import ROUTES, RULES_FILE, RulesError, RuleSet, default_rules, load_rules
from . import admin as staff_admin
from . import alarms as staff_alarms
from . import broadcasts as staff_broadcasts
from . import insight as staff_insight
from .accounts import (
    LockedOut,
    LoginFailed,
    StaffAccounts,
    StaffMember,
    Throttled,
    UnknownStaff,
)
from .web import (
    COOKIE,
    LOGIN_COOKIE,
    StaffHeaders,
    accounts_of,
    client_key,
    csrf_ok,
    csrf_token,
    current_member,
    done_text,
    engine_of,
    not_admin,
    now_ms,
    page_lang,
    read_form,
    redirect,
    render,
    require_member,
    same_origin,
    tr,
)

log = logging.getLogger(__name__)

LIST_LIMIT: Final = 200

router = APIRouter(include_in_schema=False)


# -- login, logout, password ------------------------------------------------------------


def _login_page(request: Request, *, name: str = "", error: str = "",
                status: int = 200) -> Response:
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(16)
    response = render(request, "login.html", None, status=status, name=name, error=error,
                      login_token=token)
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict",
                        path="/staff/login", secure=request.url.scheme == "https")
    return response


@router.get("/staff/login")
async def login_page(request: Request) -> Response:
    """The login form (straight to the reports when already logged in)."""
    member = await current_member(request)
    if member is not None and not member.must_change:
        return redirect("/staff/reports")
    return _login_page(request)


@router.post("/staff/login")
async def login(request: Request) -> Response:
    """Check name and password; start a session; a first login goes to /staff/password."""
    values = await read_form(request)
    name = values.get("name", "")[:200]
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    given = values.get("login_token", "")[:64]
    if not same_origin(request) or not cookie or not hmac.compare_digest(cookie.encode(),
                                                                         given.encode()):
        return _login_page(request, name=name, error=tr(request, "error.csrf"), status=403)
    accounts = accounts_of(request)
    try:
        member = await asyncio.to_thread(accounts.verify, name, values.get("password", ""),
                                         client_key(request))
    except Throttled as exc:
        response = _login_page(request, name=name, status=429, error=tr(
            request, "login.throttled", minutes=max(1, math.ceil(exc.retry_after / 60))))
        response.headers["Retry-After"] = str(math.ceil(exc.retry_after))
        return response
    except LockedOut as exc:
        return _login_page(request, name=name, status=423,
                           error=tr(request, "login.locked", time=local(exc.until, "%H:%M")))
    except LoginFailed:
        return _login_page(request, name=name, status=401, error=tr(request, "login.failed"))
    old = request.cookies.get(COOKIE)
    if old:  # never carry a session over a login
        await asyncio.to_thread(accounts.end_session, old)
    token = await asyncio.to_thread(accounts.create_session, member)
    response = redirect("/staff/password" if member.must_change else "/staff/reports")
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    response.delete_cookie(LOGIN_COOKIE, path="/staff/login")
    return response


@router.post("/staff/logout")
async def logout(request: Request) -> Response:
    """End the session and forget the cookie."""
    values = await read_form(request)
    member = await current_member(request)
    token = request.cookies.get(COOKIE, "")
    if member is not None and csrf_ok(request, values.get("csrf", "")):
        accounts = accounts_of(request)
        await asyncio.to_thread(accounts.end_session, token)
        await asyncio.to_thread(accounts.record, member.name, "logout")
    response = redirect("/staff/login")
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/staff/password")
async def password_page(request: Request) -> Response:
    """Choose a (new) password; the first login must."""
    member = await require_member(request)
    return render(request, "password.html", member, error="", min_length=MIN_PASSWORD)


@router.post("/staff/password")
async def password_change(request: Request) -> Response:
    """Set a new password after checking the current (or one-time) one."""
    member = await require_member(request)
    values = await read_form(request)
    if not csrf_ok(request, values.get("csrf", "")):
        return render(request, "password.html", member, status=403, min_length=MIN_PASSWORD,
                      error=tr(request, "error.csrf"))
    new = values.get("new", "")
    if new != values.get("repeat", ""):
        return render(request, "password.html", member, status=422, min_length=MIN_PASSWORD,
                      error=tr(request, "password.mismatch"))
    try:
        await asyncio.to_thread(accounts_of(request).set_password, member,
                                values.get("old", ""), new)
    except WeakPassword:
        return render(request, "password.html", member, status=422, min_length=MIN_PASSWORD,
                      error=tr(request, "password.weak", min=MIN_PASSWORD))
    except (LoginFailed, UnknownStaff):
        return render(request, "password.html", member, status=403, min_length=MIN_PASSWORD,
                      error=tr(request, "password.wrong_old"))
    return redirect("/staff/reports", "password")


# -- reports ---------------------------------------------------------------------------


@router.get("/staff")
async def staff_home(request: Request) -> Response:
    """The reports are the front page."""
    await require_member(request)
    return redirect("/staff/reports")


@router.get("/staff/reports")
async def reports_page(request: Request) -> Response:
    """Incoming reports of the member's desk (admin: every desk), newest first."""
    member = await require_member(request)
    state = request.query_params.get("state", "open")
    route = request.query_params.get("route")
    route = route if route in ROUTES and member.role == "admin" else None
    states: tuple[str, ...] = {"open": ("new", "in_progress", "reopened"), "all": ()}.get(
        state, (state,) if state in handling.STATES else ("new", "in_progress", "reopened"))
    engine = engine_of(request)
    before = _cursor(request.query_params.get("before", ""))
    reports, older = await asyncio.to_thread(handling.list_reports, engine, member,
                                             states=states, route=route, limit=LIST_LIMIT,
                                             before=before)
    counts = await asyncio.to_thread(handling.counts, engine, member)
    found = await asyncio.to_thread(alarms.list_alarms, engine, member, now_ms())
    names = await asyncio.to_thread(node_names, engine)
    query = {"state": state, **({"route": route} if route else {})}
    return render(request, "reports.html", member, live=before is None, reports=reports,
                  alarms=found if before is None else [], node_names=names,
                  older=f"/staff/reports?{urlencode({**query, 'before': f'{older[0]}.{older[1]}'})}"
                  if older else "", newest=f"/staff/reports?{urlencode(query)}"
                  if before is not None else "",
                  counts=counts, state=state if state in (*handling.STATES, "all") else "open",
                  route=route, routes=ROUTES, done=done_text(request))


def _cursor(value: str) -> handling.Cursor | None:
    """``?before=TS.ID`` (the last row of the page before); None when absent or odd."""
    ts, _, ident = value[:64].partition(".")
    if not ts.isdigit() or len(ident) != 36:
        return None
    return int(ts), ident


def _rules(request: Request) -> RuleSet:
    rules: RuleSet = request.app.state.staff_rules
    return rules


def _explain(request: Request, rule: str) -> str:
    if rule.startswith(handling.MANUAL_RULE + ":"):
        return tr(request, "report.rule_manual", name=rule.split(":", 1)[1])
    try:
        found = _rules(request).by_name(rule)
    except KeyError:
        return ""
    # The page's language; the other one when the rule has only that.
    if page_lang(request) == "nl":
        return found.description_nl or found.description
    return found.description or found.description_nl


async def _report_page(request: Request, member: StaffMember, report_id: str, *,
                       status: int = 200, error: str = "", note_text: str = "",
                       reply_text: str = "") -> Response:
    try:
        report, notes = await asyncio.to_thread(handling.get_report, engine_of(request), member,
                                                report_id)
    except handling.NotFound:
        return render(request, "error.html", member, status=404,
                      message=tr(request, "error.no_report"))
    points = report.body.get("place") or {}
    sent = await asyncio.to_thread(handling.replies, engine_of(request), report_id)
    return render(request, "report.html", member, status=status, report=report, notes=notes,
                  replies=sent, reply_max=handling.MAX_REPLY, reply_text=reply_text,
                  page=f"/staff/reports/{report.id}",
                  place=" – ".join(p for p in (points.get("point") or "",
                                               points.get("text") or "") if p),
                  explanation=_explain(request, report.rule), routes=ROUTES, error=error,
                  note_text=note_text, note_max=handling.MAX_NOTE, done=done_text(request))


def _check_id(report_id: str) -> None:
    if len(report_id) != 36:
        raise HTTPException(404, "no such report")


@router.get("/staff/reports/{report_id}")
async def report_page(request: Request, report_id: str) -> Response:
    """One report: text, place, route and why, state, handler, notes, actions."""
    member = await require_member(request)
    _check_id(report_id)
    return await _report_page(request, member, report_id)


def _stale_text(request: Request, exc: handling.Stale) -> str:
    when = local(exc.at, "%H:%M")
    who = exc.handler or "?"
    if exc.state == "in_progress" and exc.handler:
        return tr(request, "report.stale_took", name=who, time=when)
    return tr(request, "report.stale", time=when,
              state=tr(request, f"state.{exc.state}"))


async def _report_action(request: Request, report_id: str, action: str) -> Response:
    member = await require_member(request)
    _check_id(report_id)
    values = await read_form(request)
    if not csrf_ok(request, values.get("csrf", "")):
        return await _report_page(request, member, report_id, status=403,
                                  error=tr(request, "error.csrf"))
    engine = engine_of(request)
    try:
        version = int(values.get("version", "")[:12])
    except ValueError:
        version = -1
    try:
        if action == "state":
            to = values.get("to", "")
            await asyncio.to_thread(handling.change_state, engine, member, report_id, to,
                                    version, now_ms())
            return redirect(f"/staff/reports/{report_id}", "take" if to == "in_progress"
                             else "state")
        if action == "route":
            await asyncio.to_thread(handling.reroute, engine, member, report_id,
                                    values.get("route", ""), version, now_ms())
            return redirect("/staff/reports", "rerouted")
        if action == "reply":
            await asyncio.to_thread(handling.reply_to_resident, engine, member, report_id,
                                    values.get("text", ""), now_ms())
            return redirect(f"/staff/reports/{report_id}", "reply")
        await asyncio.to_thread(handling.add_note, engine, member, report_id,
                                values.get("text", ""), now_ms())
        return redirect(f"/staff/reports/{report_id}", "note")
    except handling.Stale as exc:
        return await _report_page(request, member, report_id, status=409,
                                  error=_stale_text(request, exc))
    except handling.NotFound:
        return render(request, "error.html", member, status=404,
                      message=tr(request, "error.no_report"))
    except handling.NotAllowed as exc:
        typed = values.get("text", "")[:handling.MAX_NOTE * 2]
        return await _report_page(request, member, report_id, status=422, error=str(exc),
                                  note_text=typed if action != "reply" else "",
                                  reply_text=typed if action == "reply" else "")


@router.post("/staff/reports/{report_id}/state")
async def report_state(request: Request, report_id: str) -> Response:
    """Take (to in_progress), mark handled or reopen; the form carries ``version``."""
    return await _report_action(request, report_id, "state")


@router.post("/staff/reports/{report_id}/route")
async def report_route(request: Request, report_id: str) -> Response:
    """Re-route to the other desk."""
    return await _report_action(request, report_id, "route")


@router.post("/staff/reports/{report_id}/reply")
async def report_reply(request: Request, report_id: str) -> Response:
    """A short public answer to the resident (shown with the receipt code)."""
    return await _report_action(request, report_id, "reply")


@router.post("/staff/reports/{report_id}/notes")
async def report_note(request: Request, report_id: str) -> Response:
    """Add a note."""
    return await _report_action(request, report_id, "note")


# -- nodes -----------------------------------------------------------------------------


@router.get("/staff/nodes")
async def nodes_page(request: Request) -> Response:
    """Node health: last seen, backlog, version, revoked; silent nodes on top, in red."""
    member = await require_member(request)
    nodes = await asyncio.to_thread(node_health, engine_of(request), now_ms())
    return render(request, "nodes.html", member, live=True, nodes=nodes)


@router.get("/api/v1/nodes")
async def nodes_api(request: Request) -> Response:
    """Node health as JSON for monitoring (needs a staff session)."""
    member = await current_member(request)
    if member is None or member.must_change:
        return JSONResponse({"error": "unauthorized", "detail": "log in at /staff/login"},
                            status_code=401, headers={"Cache-Control": "no-store"})
    now = now_ms()
    nodes = await asyncio.to_thread(node_health, engine_of(request), now)
    silent = [n.name for n in nodes if n.silent]
    return JSONResponse({"time": now, "alarm": bool(silent), "silent": silent,
                         "nodes": [n.to_json() for n in nodes]},
                        headers={"Cache-Control": "no-store"})


# -- audit -----------------------------------------------------------------------------


@router.get("/staff/audit")
async def audit_page(request: Request) -> Response:
    """The audit log (admin only): every staff action, newest first."""
    member = await require_member(request)
    if (refused := not_admin(request, member)) is not None:
        return refused
    before_raw = request.query_params.get("before", "")
    before = int(before_raw) if before_raw.isdigit() and len(before_raw) < 19 else None
    entries = await asyncio.to_thread(accounts_of(request).audit_log, 200, before=before)
    return render(request, "audit.html", member, entries=entries,
                  older=entries[-1].id if len(entries) == 200 else None)


# -- installation ---------------------------------------------------------------------


def _load_rules(central: Central) -> RuleSet:
    path = central.data_dir / RULES_FILE
    try:
        return load_rules(path) if path.exists() else default_rules()
    except RulesError:  # ingest refuses to start on bad rules; pages only explain
        return default_rules()


def install(app: FastAPI, central: Central, engine: Engine) -> None:
    """Add the staff pages, ``GET /api/v1/nodes`` and their headers to ``app``."""
    app.state.staff_accounts = StaffAccounts(engine)
    app.state.staff_renderer = Renderer()
    app.state.staff_rules = _load_rules(central)
    app.include_router(router)
    app.include_router(staff_broadcasts.router)
    app.include_router(staff_admin.router)
    app.include_router(staff_alarms.router)
    app.include_router(staff_insight.router)
    app.include_router(open311.router)
    app.add_middleware(StaffHeaders)


__all__ = ["COOKIE", "StaffHeaders", "csrf_token", "install", "router"]
