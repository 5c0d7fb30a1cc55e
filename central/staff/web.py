"""Plumbing of central's staff pages: sessions, CSRF, forms, rendering, headers.

* Session cookie ``bart_staff`` (HttpOnly, SameSite=Strict, Secure over
  https, Path=/); every form carries HMAC-SHA256(session token, "csrf"); the
  login form a double-submit token (cookie ``bart_staff_login``).
* :class:`StaffHeaders`: a strict CSP with a per-request nonce (no scripts at
  all), ``no-store``, no framing, and a 64 KB limit on form bodies, for
  ``/staff`` and ``/api/v1/nodes`` only.
"""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any, Final
from urllib.parse import urlencode

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.engine import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common import apidocs, csrf, logins
from common.clock import now_ms as now_ms  # re-exported for the pages
from common.csrf import csrf_token as csrf_token  # re-exported for the pages

from ..health import silent_nodes
from ..identity import Central
from ..pages import LANGUAGES, Renderer, negotiate
from .accounts import StaffAccounts, StaffMember

COOKIE: Final = "bart_staff"
LOGIN_COOKIE: Final = "bart_staff_login"
LANG_COOKIE: Final = "bart_staff_lang"
MAX_FORM_FIELDS: Final = 20
MAX_FORM_BYTES: Final = 64 * 1024


def accounts_of(request: Request) -> StaffAccounts:
    """The app's staff accounts."""
    accounts: StaffAccounts = request.app.state.staff_accounts
    return accounts


def engine_of(request: Request) -> Engine:
    """The app's database engine."""
    engine: Engine = request.app.state.engine
    return engine


def central_of(request: Request) -> Central:
    """The running central (settings and keys)."""
    central: Central = request.app.state.central
    return central


def renderer_of(request: Request) -> Renderer:
    """The staff pages' renderer."""
    renderer: Renderer = request.app.state.staff_renderer
    return renderer


def page_lang(request: Request) -> str:
    """Language of this request: ``?lang=``, cookie, Accept-Language, Dutch."""
    return negotiate(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE),
                     request.headers.get("accept-language"))


def tr(request: Request, key: str, **kwargs: object) -> str:
    """A word of the catalogue in the page's language."""
    return renderer_of(request).translator(page_lang(request))(key, **kwargs)


def client_key(request: Request) -> str:
    """The client address that login throttling counts."""
    return request.client.host if request.client else "unknown"


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site
    (:func:`common.csrf.same_origin`: Origin, else Referer, against Host)."""
    return csrf.same_origin(request.headers)


def csrf_ok(request: Request, given: str) -> bool:
    """Same origin, and ``given`` is the form token of the request's session (length capped)."""
    return csrf.csrf_ok(request.cookies.get(COOKIE), given, request.headers)


async def read_form(request: Request) -> dict[str, str]:
    """The text fields of a posted form (no files, at most MAX_FORM_FIELDS)."""
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
    return await asyncio.to_thread(accounts_of(request).session, token)


async def require_member(request: Request) -> StaffMember:
    """The logged-in member; else 303 to the login page (or to choose a password)."""
    return logins.require_login(await current_member(request), request.url.path,
                                login_url="/staff/login", choose_url="/staff/password")


def not_admin(request: Request, member: StaffMember) -> HTMLResponse | None:
    """The 403 page for a member who is no admin; None for an admin."""
    if member.role == "admin":
        return None
    return render(request, "error.html", member, status=403,
                  message=tr(request, "error.admin_only"))


def render(request: Request, template: str, member: StaffMember | None, *,
           status: int = 200, live: bool = False, page: str | None = None,
           **context: Any) -> HTMLResponse:
    """Render a staff page with what every page needs (nav, alarm banner, language).

    ``page``: the page the language links open — for the answer to a POST,
    the page it was posted from (a link cannot repeat the POST). ``live``: the
    page's list is fetched again whenever the desk changes (``/staff/live``,
    central/staff/alarms.py); every staff page sounds the alarm cue, none
    refreshes on a timer.
    """
    lang = page_lang(request)
    query = {k: v for k, v in request.query_params.items() if k != "done"}
    links = []
    for code in LANGUAGES:
        query["lang"] = code
        links.append({"code": code, "url": f"{page or request.url.path}?{urlencode(query)}"})
    silent = silent_nodes(engine_of(request), now_ms()) if member is not None else []
    token = request.cookies.get(COOKIE, "")
    html = renderer_of(request).render(
        template, lang=lang, member=member, silent=silent, lang_links=links,
        csrf=csrf_token(token) if token and member else "",
        csp_nonce=request.scope.get("state", {}).get("csp_nonce", ""),
        live=live, central_name=central_of(request).origin,
        **context)
    response = HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})
    if request.query_params.get("lang") in LANGUAGES:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="strict",
                            httponly=True, path="/")
    return response


def redirect(url: str, message: str = "") -> RedirectResponse:
    """303 to ``url``; ``message`` names a ``done.*`` confirmation to show there."""
    if message:
        url += ("&" if "?" in url else "?") + urlencode({"done": message})
    return RedirectResponse(url, status_code=303)


def done_text(request: Request) -> str:
    """The confirmation named by ``?done=`` (only words of the catalogue, never the query)."""
    name = request.query_params.get("done", "")[:40]
    key = "done." + name
    translate = renderer_of(request).translator(page_lang(request))
    return translate(key) if name and translate.has(key) else ""


class StaffHeaders:
    """ASGI middleware: CSP nonce and strict headers on the staff pages and node API,
    and a body limit (MAX_FORM_BYTES) on their forms.

    Only paths under ``/staff``, ``/api/v1/nodes`` and ``/api/docs``: batch ingest
    stays untouched.
    """

    PREFIXES: Final = ("/staff", "/api/v1/nodes", "/api/docs")

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
        # The API docs page (common/apidocs.py) also loads Swagger UI's files from here.
        own = "'self' " if scope.get("path") == apidocs.DOCS_PATH else ""
        csp = (f"default-src 'none'; style-src {own}'nonce-{nonce}'; "
               f"script-src {own}'nonce-{nonce}'; connect-src 'self'; img-src 'self' data:; "
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
