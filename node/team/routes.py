"""The team's pages: login, password, dashboard and the team's actions.

Server-rendered and complete without JavaScript; with it, the live stream
(:mod:`node.team.stream`) prepends new rows and replaces changed ones.
Everything but the login page needs a session (:mod:`node.team.session`);
every form carries the session's CSRF token. Refused input shows the page
again with the message and everything the member typed.
"""

from __future__ import annotations

import asyncio
import math

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from sync import InvalidField
from sync.bodies import MAX_NOTE, MAX_REPORT_TEXT, MAX_TITLE, SEVERITIES

from ..errors import NodeError
from ..portal import deps
from ..portal.resident import page_lang, render
from ..portal.views import local_time
from .accounts import Member
from .errors import LockedOut, LoginFailed, Throttled, WeakPassword
from .forms import DEFAULT_HOURS, EXPIRY_CHOICES, ack_form, alert_form, hide_form
from .passwords import MIN_PASSWORD
from .session import (
    COOKIE,
    COOKIE_PATH,
    MemberDep,
    accounts,
    csrf_ok,
    csrf_token,
    current_member,
    read_form,
    same_origin,
    set_session_cookie,
    team_runtime,
)
from .stream import OPEN_ITEMS, stream_router
from .views import board

router = APIRouter(include_in_schema=False)
CLOSED_SHOWN = 20
router.include_router(stream_router)


def _t(request: Request, key: str, default: str | None = None, **kwargs: object) -> str:
    message = deps.translate(request, page_lang(request), key, default)
    return message.format(**kwargs) if kwargs else message


def _field_error(request: Request, exc: InvalidField) -> str:
    return _t(request, f"team.error.field.{exc.field}", default=f"{exc.field} {exc.reason}")


# -- login, logout, password ------------------------------------------------------------


def _login_page(request: Request, *, name: str = "", error: str | None = None,
                status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = render(request, "team_login.html", status=status, values={"name": name},
                      error=error)
    response.headers.update(headers or {})
    return response


@router.get("/team/login")
async def login_page(request: Request) -> Response:
    """The login form (straight to the dashboard when already logged in)."""
    member = await current_member(request)
    if member is not None and not member.must_change:
        return RedirectResponse("/team", status_code=303)
    return _login_page(request)


def _until_text(request: Request, until_ms: float) -> str:
    return local_time(int(until_ms), deps.settings(request).timezone, page_lang(request))[0]


@router.post("/team/login")
async def login(request: Request) -> Response:
    """Check name and password; start a session; first login goes to /team/password."""
    values = await read_form(request)
    name = values.get("name", "")[:200]
    if not same_origin(request):
        return _login_page(request, name=name, error=_t(request, "team.error.csrf"), status=403)
    team = accounts(request)
    try:
        member = await asyncio.to_thread(team.verify, name, values.get("password", ""),
                                         deps.client_key(request))
    except Throttled as exc:
        minutes = max(1, math.ceil(exc.retry_after / 60))
        return _login_page(request, name=name, status=429,
                           error=_t(request, "team.login.throttled", minutes=minutes),
                           headers={"Retry-After": str(math.ceil(exc.retry_after))})
    except LockedOut as exc:
        return _login_page(request, name=name, status=423, error=_t(
            request, "team.login.locked", time=_until_text(request, exc.until)))
    except LoginFailed:
        return _login_page(request, name=name, status=401,
                           error=_t(request, "team.login.failed"))
    old = request.cookies.get(COOKIE)
    if old:  # never reuse a session from before the login
        await asyncio.to_thread(team.end_session, old)
    token = await asyncio.to_thread(team.create_session, member.name)
    response = RedirectResponse("/team/password" if member.must_change else "/team",
                                status_code=303)
    set_session_cookie(response, request, token)
    return response


@router.post("/team/logout")
async def logout(request: Request) -> Response:
    """End the session and forget the cookie."""
    values = await read_form(request)
    team = accounts(request)
    token = request.cookies.get(COOKIE)
    member = await current_member(request, touch=False)
    if member is not None and not csrf_ok(request, values.get("csrf", "")):
        return _dashboard(request, member, errors={"form": _t(request, "team.error.csrf")},
                          status=403)
    if token:
        await asyncio.to_thread(team.end_session, token)
    if member is not None:
        await asyncio.to_thread(team.record, member, "logout", "")
    response = RedirectResponse("/team/login", status_code=303)
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")
    return response


def _password_page(request: Request, member: Member, *, error: str | None = None,
                   status: int = 200) -> Response:
    return render(request, "team_password.html", status=status,
                  member={"name": member.name, "must_change": member.must_change},
                  csrf_token=csrf_token(request.cookies.get(COOKIE, "")), error=error,
                  min_length=MIN_PASSWORD)


@router.get("/team/password")
async def password_page(request: Request, member: MemberDep) -> Response:
    """Choose a password (forced after logging in with a one-time password)."""
    return _password_page(request, member)


@router.post("/team/password")
async def change_password(request: Request, member: MemberDep) -> Response:
    """Replace the password; every other session ends; a new one starts here."""
    values = await read_form(request)
    if not csrf_ok(request, values.get("csrf", "")):
        return _password_page(request, member, error=_t(request, "team.error.csrf"),
                              status=403)
    new = values.get("new", "")
    if new != values.get("repeat", ""):
        return _password_page(request, member, status=422,
                              error=_t(request, "team.password.mismatch"))
    if len(new) < MIN_PASSWORD:
        return _password_page(request, member, status=422,
                              error=_t(request, "team.password.too_short", min=MIN_PASSWORD))
    team = accounts(request)
    try:
        await asyncio.to_thread(team.set_password, member.name, values.get("current", ""), new)
    except WeakPassword:
        return _password_page(request, member, status=422,
                              error=_t(request, "team.password.weak"))
    except LockedOut as exc:
        return _password_page(request, member, status=423, error=_t(
            request, "team.login.locked", time=_until_text(request, exc.until)))
    except LoginFailed:
        return _password_page(request, member, status=403,
                              error=_t(request, "team.password.wrong"))
    token = await asyncio.to_thread(team.create_session, member.name)
    response = RedirectResponse("/team", status_code=303)
    set_session_cookie(response, request, token)
    return response


# -- dashboard ------------------------------------------------------------------------


def _dashboard(request: Request, member: Member, *, errors: dict[str, str] | None = None,
               alert_values: dict[str, str] | None = None,
               row_values: dict[str, dict[str, str]] | None = None,
               row_errors: dict[str, str] | None = None, status: int = 200) -> Response:
    lang = page_lang(request)
    s = deps.settings(request)
    store = team_runtime(request).require_store()
    items = store.open_items(limit=OPEN_ITEMS, area=s.area)
    rows = board(items, s, lang, team_runtime(request).now_ms(),
                 team_runtime(request).peer_names())
    names = {b.id: mp.name for mp in s.meeting_points for b in mp.panic_buttons}
    faults = [{"button": button, "place": names.get(button, ""),
               "time": " · ".join(local_time(since, s.timezone, lang))}
              for button, since in store.button_faults()]
    errors = dict(errors or {})
    shown: dict[str, str] = {}
    for ref, message in (row_errors or {}).items():
        row = rows.find(ref)
        if row is not None and not row["closed"]:
            shown[row["id"]] = message
        else:  # its row is gone or closed: say it on top, with what was typed
            errors.setdefault("form", message)
            note = (row_values or {}).get(ref, {}).get("note", "")
            if note:
                errors.setdefault("note", note)
    return render(
        request, "team_dashboard.html", status=status, member={"name": member.name},
        rows=rows.open, closed=rows.closed[:CLOSED_SHOWN],
        csrf_token=csrf_token(request.cookies.get(COOKIE, "")), errors=errors,
        alert_values=alert_values or {}, row_values=row_values or {}, row_errors=shown,
        severities=SEVERITIES, expiry_choices=EXPIRY_CHOICES, default_hours=DEFAULT_HOURS,
        limits={"title": MAX_TITLE, "text": MAX_REPORT_TEXT, "note": MAX_NOTE},
        stream_url="/team/stream", faults=faults,
        mesh_peers=team_runtime(request).mesh_peers(),
        watching=team_runtime(request).team_hub.subscriber_count)


@router.get("/team")
async def dashboard(request: Request, member: MemberDep) -> Response:
    """Open alarms, alerts and reports with their state and what the team can do."""
    return _dashboard(request, member)


async def _refused(request: Request, member: Member, path: str) -> None:
    await asyncio.to_thread(accounts(request).record, member, "csrf.refused", path)


@router.post("/team/ack")
async def ack(request: Request, member: MemberDep) -> Response:
    """Answer an item: seen, on my way, resolved, or escalate to police/municipality."""
    values = await read_form(request)
    ref = values.get("ref", "")[:64]
    kept = {ref: {"note": values.get("note", ""), "to": values.get("to", "")}}
    if not csrf_ok(request, values.get("csrf", "")):
        await _refused(request, member, "/team/ack")
        return _dashboard(request, member, row_values=kept, status=403,
                          row_errors={ref: _t(request, "team.error.csrf")})
    try:
        clean = ack_form(values, by=member.name)
        await team_runtime(request).team_ack(clean.ref, clean.action, member.name,
                                             clean.note, clean.to)
    except InvalidField as exc:
        return _dashboard(request, member, row_values=kept, status=422,
                          row_errors={ref: _field_error(request, exc)})
    except NodeError as exc:
        return _dashboard(request, member, row_values=kept, status=409, row_errors={
            ref: _t(request, "team.error.refused", reason=str(exc))})
    detail = clean.ref + (f" to {clean.to}" if clean.to else "") + (
        f": {clean.note}" if clean.note else "")
    await asyncio.to_thread(accounts(request).record, member, f"ack.{clean.action}", detail)
    return RedirectResponse("/team", status_code=303)


@router.post("/team/alert")
async def raise_alert(request: Request, member: MemberDep) -> Response:
    """Raise a public alert for residents (title, text, severity, hours until it expires)."""
    values = await read_form(request)
    kept = {k: values.get(k, "") for k in ("title", "text", "severity", "expires")}
    if not csrf_ok(request, values.get("csrf", "")):
        await _refused(request, member, "/team/alert")
        return _dashboard(request, member, alert_values=kept, status=403,
                          errors={"alert": _t(request, "team.error.csrf")})
    now_ms = team_runtime(request).now_ms()  # expiry by the node's time (node/clock.py)
    try:
        clean = alert_form(values, now_ms=now_ms)
        event = await team_runtime(request).team_alert(clean.title, clean.text, clean.severity,
                                                       clean.expires_ms, member.name)
    except InvalidField as exc:
        return _dashboard(request, member, alert_values=kept, status=422,
                          errors={exc.field: _field_error(request, exc)})
    except NodeError as exc:
        return _dashboard(request, member, alert_values=kept, status=409, errors={
            "alert": _t(request, "team.error.refused", reason=str(exc))})
    await asyncio.to_thread(accounts(request).record, member, "alert",
                            f"{event.id} {clean.severity} {clean.hours}h: {clean.title}")
    return RedirectResponse("/team", status_code=303)


@router.post("/team/hide")
async def hide(request: Request, member: MemberDep) -> Response:
    """Hide an abusive resident warning from residents (an ack "hidden")."""
    values = await read_form(request)
    ref = values.get("ref", "")[:64]
    if not csrf_ok(request, values.get("csrf", "")):
        await _refused(request, member, "/team/hide")
        return _dashboard(request, member, status=403,
                          row_errors={ref: _t(request, "team.error.csrf")})
    try:
        clean_ref = hide_form(values, by=member.name)
        await team_runtime(request).team_ack(clean_ref, "hidden", member.name)
    except InvalidField as exc:
        return _dashboard(request, member, status=422,
                          row_errors={ref: _field_error(request, exc)})
    except NodeError as exc:
        return _dashboard(request, member, status=409, row_errors={
            ref: _t(request, "team.error.refused", reason=str(exc))})
    await asyncio.to_thread(accounts(request).record, member, "hide", clean_ref)
    return RedirectResponse("/team", status_code=303)
