"""Staff pages of central: login, incoming reports, node health, broadcasts, audit log.

Server-rendered (Jinja2, Dutch first, English), complete without JavaScript,
usable on a phone. Installed by :func:`install`, which ``central.app`` calls.

* Roles: ``police`` and ``municipality`` see (and handle) reports routed to
  their desk; ``admin`` sees all of them and the audit log. Everybody may
  broadcast.
* Sessions: cookie ``bart_staff`` (HttpOnly, SameSite=Strict, Secure over
  https, Path=/); every form carries a CSRF token that is
  HMAC-SHA256(session token, "csrf"); the login form a double-submit token.
* Every page and ``GET /api/v1/nodes`` get a strict CSP with a per-request
  nonce (no scripts at all), ``no-store`` and no framing.
* Refused input shows the page again with the message and what was typed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import math
import os
import secrets
import time
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.engine import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sync.bodies import MAX_REPORT_TEXT, MAX_TITLE, SEVERITIES

from . import broadcasts, handling
from .health import node_health, silent_nodes
from .identity import Central
from .pages import LANGUAGES, Renderer, local, negotiate
from .passwords import MIN_PASSWORD, WeakPassword
from .staff_accounts import (
    LockedOut,
    LoginFailed,
    StaffAccounts,
    StaffMember,
    Throttled,
    UnknownStaff,
)
from .triage import ROUTES, RULES_FILE, RulesError, RuleSet, default_rules, load_rules

log = logging.getLogger("bart.central.staff")

COOKIE: Final = "bart_staff"
LOGIN_COOKIE: Final = "bart_staff_login"
LANG_COOKIE: Final = "bart_staff_lang"
MAX_FORM_FIELDS: Final = 20
MAX_FORM_BYTES: Final = 64 * 1024
LIST_LIMIT: Final = 200
#: Lists refresh themselves (a control room leaves them open); forms never do.
REFRESH_S: Final = 60

router = APIRouter(include_in_schema=False)


# -- plumbing --------------------------------------------------------------------------


def _now() -> int:
    return time.time_ns() // 1_000_000


def _accounts(request: Request) -> StaffAccounts:
    accounts: StaffAccounts = request.app.state.staff_accounts
    return accounts


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _central(request: Request) -> Central:
    central: Central = request.app.state.central
    return central


def _renderer(request: Request) -> Renderer:
    renderer: Renderer = request.app.state.staff_renderer
    return renderer


def _lang(request: Request) -> str:
    return negotiate(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE),
                     request.headers.get("accept-language"))


def _t(request: Request, key: str, **kwargs: object) -> str:
    return _renderer(request).translator(_lang(request))(key, **kwargs)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def csrf_token(session_token: str) -> str:
    """The form token of a session: HMAC-SHA256(session token, "csrf")."""
    return hmac.new(session_token.encode(), b"csrf", hashlib.sha256).hexdigest()


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site.

    Pages send ``Referrer-Policy: no-referrer``, so browsers send ``Origin:
    null`` with our own forms: that (or no header) says nothing either way;
    the CSRF token decides.
    """
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return True
    return urlsplit(origin).netloc == request.headers.get("host")


def _csrf_ok(request: Request, given: str) -> bool:
    token = request.cookies.get(COOKIE)
    if not token or not same_origin(request) or len(given) > 128:
        return False
    return hmac.compare_digest(csrf_token(token).encode(), given.encode())


async def _form(request: Request) -> dict[str, str]:
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
        raise HTTPException(413, "form too large")
    form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def current_member(request: Request) -> StaffMember | None:
    """The member of the request's session cookie, or None."""
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    return await asyncio.to_thread(_accounts(request).session, token)


async def require_member(request: Request) -> StaffMember:
    """The logged-in member; else 303 to the login page (or to choose a password)."""
    member = await current_member(request)
    if member is None:
        raise HTTPException(303, "log in first", headers={"Location": "/staff/login"})
    if member.must_change and request.url.path != "/staff/password":
        raise HTTPException(303, "choose your own password first",
                            headers={"Location": "/staff/password"})
    return member


def render(request: Request, template: str, member: StaffMember | None, *,
           status: int = 200, refresh: bool = False, **context: Any) -> HTMLResponse:
    """Render a staff page with what every page needs (nav, alarm banner, language)."""
    lang = _lang(request)
    query = {k: v for k, v in request.query_params.items() if k != "done"}
    links = []
    for code in LANGUAGES:
        query["lang"] = code
        links.append({"code": code, "url": f"{request.url.path}?{urlencode(query)}"})
    silent = silent_nodes(_engine(request), _now()) if member is not None else []
    token = request.cookies.get(COOKIE, "")
    html = _renderer(request).render(
        template, lang=lang, member=member, silent=silent, lang_links=links,
        csrf=csrf_token(token) if token and member else "",
        csp_nonce=request.scope.get("state", {}).get("csp_nonce", ""),
        refresh=REFRESH_S if refresh else 0, central_name=_central(request).origin,
        **context)
    response = HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})
    if request.query_params.get("lang") in LANGUAGES:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="strict",
                            httponly=True, path="/")
    return response


def _redirect(url: str, message: str = "") -> RedirectResponse:
    if message:
        url += ("&" if "?" in url else "?") + urlencode({"done": message})
    return RedirectResponse(url, status_code=303)


def _done(request: Request) -> str:
    """The confirmation named by ``?done=`` (only words of the catalogue, never the query)."""
    key = "done." + request.query_params.get("done", "")[:40]
    text = _t(request, key)
    return "" if text == key else text


class StaffHeaders:
    """ASGI middleware: CSP nonce and strict headers on the staff pages and node API,
    and a body limit (MAX_FORM_BYTES) on their forms.

    Only paths under ``/staff`` and ``/api/v1/nodes``: batch ingest stays untouched.
    """

    PREFIXES: Final = ("/staff", "/api/v1/nodes")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(self.PREFIXES):
            await self.app(scope, receive, send)
            return
        if scope.get("method") == "POST":
            body = await _read_limited(scope, receive)
            if body is None:
                await _too_large(send)
                return
            receive = _replay(body, receive)
        nonce = base64.urlsafe_b64encode(os.urandom(12)).decode("ascii")
        scope.setdefault("state", {})["csp_nonce"] = nonce
        csp = (f"default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self' data:; "
               "form-action 'self'; base-uri 'none'; frame-ancestors 'none'").encode()

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"content-security-policy", csp),
                            (b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"no-referrer"),
                            (b"x-frame-options", b"DENY")]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


async def _read_limited(scope: Scope, receive: Receive) -> bytes | None:
    """The whole request body, or None when it is larger than MAX_FORM_BYTES
    (declared or not: a chunked body is counted as it arrives)."""
    for name, value in scope.get("headers", []):
        if name == b"content-length" and (not value.isdigit() or int(value) > MAX_FORM_BYTES):
            return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _too_large(send: Send) -> None:
    body = b"form larger than %d bytes" % MAX_FORM_BYTES
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


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
        return _redirect("/staff/reports")
    return _login_page(request)


@router.post("/staff/login")
async def login(request: Request) -> Response:
    """Check name and password; start a session; a first login goes to /staff/password."""
    values = await _form(request)
    name = values.get("name", "")[:200]
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    given = values.get("login_token", "")[:64]
    if not same_origin(request) or not cookie or not hmac.compare_digest(cookie.encode(),
                                                                         given.encode()):
        return _login_page(request, name=name, error=_t(request, "error.csrf"), status=403)
    accounts = _accounts(request)
    try:
        member = await asyncio.to_thread(accounts.verify, name, values.get("password", ""),
                                         _client(request))
    except Throttled as exc:
        response = _login_page(request, name=name, status=429, error=_t(
            request, "login.throttled", minutes=max(1, math.ceil(exc.retry_after / 60))))
        response.headers["Retry-After"] = str(math.ceil(exc.retry_after))
        return response
    except LockedOut as exc:
        return _login_page(request, name=name, status=423,
                           error=_t(request, "login.locked", time=local(exc.until, "%H:%M")))
    except LoginFailed:
        return _login_page(request, name=name, status=401, error=_t(request, "login.failed"))
    old = request.cookies.get(COOKIE)
    if old:  # never carry a session over a login
        await asyncio.to_thread(accounts.end_session, old)
    token = await asyncio.to_thread(accounts.create_session, member)
    response = _redirect("/staff/password" if member.must_change else "/staff/reports")
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    response.delete_cookie(LOGIN_COOKIE, path="/staff/login")
    return response


@router.post("/staff/logout")
async def logout(request: Request) -> Response:
    """End the session and forget the cookie."""
    values = await _form(request)
    member = await current_member(request)
    token = request.cookies.get(COOKIE, "")
    if member is not None and _csrf_ok(request, values.get("csrf", "")):
        accounts = _accounts(request)
        await asyncio.to_thread(accounts.end_session, token)
        await asyncio.to_thread(accounts.record, member.name, "logout")
    response = _redirect("/staff/login")
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
    values = await _form(request)
    if not _csrf_ok(request, values.get("csrf", "")):
        return render(request, "password.html", member, status=403, min_length=MIN_PASSWORD,
                      error=_t(request, "error.csrf"))
    new = values.get("new", "")
    if new != values.get("repeat", ""):
        return render(request, "password.html", member, status=422, min_length=MIN_PASSWORD,
                      error=_t(request, "password.mismatch"))
    try:
        await asyncio.to_thread(_accounts(request).set_password, member,
                                values.get("old", ""), new)
    except WeakPassword:
        return render(request, "password.html", member, status=422, min_length=MIN_PASSWORD,
                      error=_t(request, "password.weak", min=MIN_PASSWORD))
    except (LoginFailed, UnknownStaff):
        return render(request, "password.html", member, status=403, min_length=MIN_PASSWORD,
                      error=_t(request, "password.wrong_old"))
    return _redirect("/staff/reports", "password")


# -- reports ---------------------------------------------------------------------------


@router.get("/staff")
async def staff_home(request: Request) -> Response:
    """The reports are the front page."""
    await require_member(request)
    return _redirect("/staff/reports")


@router.get("/staff/reports")
async def reports_page(request: Request) -> Response:
    """Incoming reports of the member's desk (admin: every desk), newest first."""
    member = await require_member(request)
    state = request.query_params.get("state", "open")
    route = request.query_params.get("route")
    route = route if route in ROUTES and member.role == "admin" else None
    states: tuple[str, ...] = {"open": ("new", "in_progress", "reopened"), "all": ()}.get(
        state, (state,) if state in handling.STATES else ("new", "in_progress", "reopened"))
    engine = _engine(request)
    reports = await asyncio.to_thread(handling.list_reports, engine, member, states=states,
                                      route=route, limit=LIST_LIMIT)
    counts = await asyncio.to_thread(handling.counts, engine, member)
    return render(request, "reports.html", member, refresh=True, reports=reports,
                  counts=counts, state=state if state in (*handling.STATES, "all") else "open",
                  route=route, routes=ROUTES, done=_done(request))


def _rules(request: Request) -> RuleSet:
    rules: RuleSet = request.app.state.staff_rules
    return rules


def _explain(request: Request, rule: str) -> str:
    if rule.startswith(handling.MANUAL_RULE + ":"):
        return _t(request, "report.rule_manual", name=rule.split(":", 1)[1])
    try:
        description = _rules(request).by_name(rule).description
    except KeyError:
        description = ""
    return description


async def _report_page(request: Request, member: StaffMember, report_id: str, *,
                       status: int = 200, error: str = "", note_text: str = "") -> Response:
    try:
        report, notes = await asyncio.to_thread(handling.get_report, _engine(request), member,
                                                report_id)
    except handling.NotFound:
        return render(request, "error.html", member, status=404,
                      message=_t(request, "error.no_report"))
    points = report.body.get("place") or {}
    return render(request, "report.html", member, status=status, report=report, notes=notes,
                  place=" – ".join(p for p in (points.get("point") or "",
                                               points.get("text") or "") if p),
                  explanation=_explain(request, report.rule), routes=ROUTES, error=error,
                  note_text=note_text, note_max=handling.MAX_NOTE, done=_done(request))


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
        return _t(request, "report.stale_took", name=who, time=when)
    return _t(request, "report.stale", time=when,
              state=_t(request, f"state.{exc.state}"))


async def _report_action(request: Request, report_id: str, action: str) -> Response:
    member = await require_member(request)
    _check_id(report_id)
    values = await _form(request)
    if not _csrf_ok(request, values.get("csrf", "")):
        return await _report_page(request, member, report_id, status=403,
                                  error=_t(request, "error.csrf"))
    engine = _engine(request)
    try:
        version = int(values.get("version", "")[:12])
    except ValueError:
        version = -1
    try:
        if action == "state":
            to = values.get("to", "")
            await asyncio.to_thread(handling.change_state, engine, member, report_id, to,
                                    version, _now())
            return _redirect(f"/staff/reports/{report_id}", "take" if to == "in_progress"
                             else "state")
        if action == "route":
            await asyncio.to_thread(handling.reroute, engine, member, report_id,
                                    values.get("route", ""), version, _now())
            return _redirect("/staff/reports", "rerouted")
        await asyncio.to_thread(handling.add_note, engine, member, report_id,
                                values.get("text", ""), _now())
        return _redirect(f"/staff/reports/{report_id}", "note")
    except handling.Stale as exc:
        return await _report_page(request, member, report_id, status=409,
                                  error=_stale_text(request, exc))
    except handling.NotFound:
        return render(request, "error.html", member, status=404,
                      message=_t(request, "error.no_report"))
    except handling.NotAllowed as exc:
        return await _report_page(request, member, report_id, status=422, error=str(exc),
                                  note_text=values.get("text", "")[:handling.MAX_NOTE * 2])


@router.post("/staff/reports/{report_id}/state")
async def report_state(request: Request, report_id: str) -> Response:
    """Take (to in_progress), mark handled or reopen; the form carries ``version``."""
    return await _report_action(request, report_id, "state")


@router.post("/staff/reports/{report_id}/route")
async def report_route(request: Request, report_id: str) -> Response:
    """Re-route to the other desk."""
    return await _report_action(request, report_id, "route")


@router.post("/staff/reports/{report_id}/notes")
async def report_note(request: Request, report_id: str) -> Response:
    """Add a note."""
    return await _report_action(request, report_id, "note")


# -- nodes -----------------------------------------------------------------------------


@router.get("/staff/nodes")
async def nodes_page(request: Request) -> Response:
    """Node health: last seen, backlog, version, revoked; silent nodes on top, in red."""
    member = await require_member(request)
    nodes = await asyncio.to_thread(node_health, _engine(request), _now())
    return render(request, "nodes.html", member, refresh=True, nodes=nodes)


@router.get("/api/v1/nodes")
async def nodes_api(request: Request) -> Response:
    """Node health as JSON for monitoring (needs a staff session)."""
    member = await current_member(request)
    if member is None or member.must_change:
        return JSONResponse({"error": "unauthorized", "detail": "log in at /staff/login"},
                            status_code=401, headers={"Cache-Control": "no-store"})
    now = _now()
    nodes = await asyncio.to_thread(node_health, _engine(request), now)
    silent = [n.name for n in nodes if n.silent]
    return JSONResponse({"time": now, "alarm": bool(silent), "silent": silent,
                         "nodes": [n.to_json() for n in nodes]},
                        headers={"Cache-Control": "no-store"})


# -- broadcasts -------------------------------------------------------------------------


def _form_defaults(source: broadcasts.Broadcast | None = None) -> dict[str, str]:
    if source is None:
        return {"title": "", "text": "", "areas": "", "severity": "moderate",
                "category": "suspicious", "hours": "24"}
    body = source.body
    left_h = max(1, math.ceil(((source.expires or 0) - _now()) / 3_600_000))
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
    now = _now()
    messages = await asyncio.to_thread(broadcasts.recent, _engine(request),
                                       _central(request), now)
    nodes = await asyncio.to_thread(node_health, _engine(request), now)
    areas = sorted({n.area for n in nodes if n.revoked_at is None})
    return render(request, "broadcasts.html", member, status=status,
                  active=[m for m in messages if m.active(now)],
                  past=[m for m in messages if not m.active(now)][:50], now=now,
                  values=values or _form_defaults(), errors=errors or {}, areas=areas,
                  done=_done(request), **_broadcast_context())


@router.get("/staff/broadcasts")
async def broadcasts_page(request: Request) -> Response:
    """Active and past broadcasts, and the form for a new one."""
    member = await require_member(request)
    return await _broadcasts_page(request, member)


_FORM_FIELDS: Final = ("title", "text", "areas", "severity", "category", "hours")


def _field_error(request: Request, exc: broadcasts.BroadcastError) -> dict[str, str]:
    message = _t(request, f"broadcast.error.{exc.field}", detail=str(exc))
    return {exc.field if exc.field in _FORM_FIELDS else "form": message}


@router.post("/staff/broadcasts")
async def broadcast_create(request: Request) -> Response:
    """Sign and store a new broadcast; nodes get it with their next sync."""
    member = await require_member(request)
    values = await _form(request)
    if not _csrf_ok(request, values.get("csrf", "")):
        return await _broadcasts_page(request, member, status=403, values=values,
                                      errors={"form": _t(request, "error.csrf")})
    try:
        fields = broadcasts.parse_form(values)
        event = await asyncio.to_thread(broadcasts.publish, _engine(request),
                                        _central(request), member, fields)
    except broadcasts.BroadcastError as exc:
        return await _broadcasts_page(request, member, status=422, values=values,
                                      errors=_field_error(request, exc))
    return _redirect(f"/staff/broadcasts/{event.id}", "broadcast")


async def _broadcast_page(request: Request, member: StaffMember, message_id: str, *,
                          status: int = 200, values: dict[str, str] | None = None,
                          errors: dict[str, str] | None = None) -> Response:
    central, engine = _central(request), _engine(request)
    message = await asyncio.to_thread(broadcasts.get, engine, central, message_id)
    if message is None:
        return render(request, "error.html", member, status=404,
                      message=_t(request, "error.no_broadcast"))
    earlier = await asyncio.to_thread(broadcasts.chain, engine, central, message)
    now = _now()
    return render(request, "broadcast.html", member, status=status, message=message,
                  earlier=earlier, now=now, active=message.active(now),
                  values=values or _form_defaults(message), errors=errors or {},
                  done=_done(request), **_broadcast_context())


@router.get("/staff/broadcasts/{message_id}")
async def broadcast_page(request: Request, message_id: str) -> Response:
    """One broadcast message, what it replaced, and forms to update or cancel it."""
    member = await require_member(request)
    return await _broadcast_page(request, member, message_id[:64])


async def _change_broadcast(request: Request, message_id: str, action: str) -> Response:
    member = await require_member(request)
    message_id = message_id[:64]
    values = await _form(request)
    if not _csrf_ok(request, values.get("csrf", "")):
        return await _broadcast_page(request, member, message_id, status=403, values=values,
                                     errors={"form": _t(request, "error.csrf")})
    central, engine = _central(request), _engine(request)
    try:
        if action == "update":
            fields = broadcasts.parse_form(values)
            event = await asyncio.to_thread(broadcasts.publish, engine, central, member,
                                            fields, ref=message_id)
        else:
            event = await asyncio.to_thread(broadcasts.cancel, engine, central, member,
                                            message_id, values.get("reason", ""))
    except broadcasts.Replaced as exc:
        text = _t(request, f"broadcast.replaced_{exc.kind}", name=exc.by,
                  time=local(exc.at, "%H:%M"))
        return await _broadcast_page(request, member, message_id, status=409,
                                     values=values if action == "update" else None,
                                     errors={"form": text})
    except broadcasts.BroadcastError as exc:
        return await _broadcast_page(request, member, message_id, status=422,
                                     values=values if action == "update" else None,
                                     errors=_field_error(request, exc))
    return _redirect(f"/staff/broadcasts/{event.id}",
                     "updated" if action == "update" else "cancelled")


@router.post("/staff/broadcasts/{message_id}/update")
async def broadcast_update(request: Request, message_id: str) -> Response:
    """Replace a broadcast with a new version (CAP Update)."""
    return await _change_broadcast(request, message_id, "update")


@router.post("/staff/broadcasts/{message_id}/cancel")
async def broadcast_cancel(request: Request, message_id: str) -> Response:
    """Withdraw a broadcast (CAP Cancel); nodes stop showing it."""
    return await _change_broadcast(request, message_id, "cancel")


# -- audit -----------------------------------------------------------------------------


@router.get("/staff/audit")
async def audit_page(request: Request) -> Response:
    """The audit log (admin only): every staff action, newest first."""
    member = await require_member(request)
    if member.role != "admin":
        return render(request, "error.html", member, status=403,
                      message=_t(request, "error.admin_only"))
    before_raw = request.query_params.get("before", "")
    before = int(before_raw) if before_raw.isdigit() and len(before_raw) < 19 else None
    entries = await asyncio.to_thread(_accounts(request).audit_log, 200, before=before)
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
    app.add_middleware(StaffHeaders)


__all__ = ["COOKIE", "StaffHeaders", "csrf_token", "install", "router"]
