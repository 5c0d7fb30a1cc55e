"""Resident pages: alerts, the pictogram report flow, receipt and status.

Server-rendered, complete without JavaScript. Form errors re-render the form
with everything the resident typed (bad input never loses their words).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from sync.bodies import CATEGORIES, default_audience

from ..reports import normalise_receipt
from . import deps, intake
from .i18n import LANGUAGE_NAMES, SUPPORTED, negotiate
from .qr import qr_svg
from .views import alert_view

router = APIRouter(include_in_schema=False)
LANG_COOKIE = "bart_lang"
CSRF_COOKIE = "bart_csrf"
HOME_ALERTS = 20


def page_lang(request: Request) -> str:
    """Language of this request: ?lang= beats the cookie beats Accept-Language."""
    return negotiate(request.headers.get("accept-language"), request.cookies.get(LANG_COOKIE),
                     request.query_params.get("lang"))


def render(request: Request, template: str, *, status: int = 200,
           **context: Any) -> HTMLResponse:
    """Render ``template`` with the context every page needs."""
    lang = page_lang(request)
    s = deps.settings(request)
    query = dict(request.query_params)
    links = []
    for code in SUPPORTED:
        query["lang"] = code
        links.append({"code": code, "label": LANGUAGE_NAMES[code],
                      "url": f"{request.url.path}?{urlencode(query)}"})
    html = deps.renderer(request).render(
        template, lang=lang,
        node={"display_name": s.display_name or s.name, "area": s.area},
        csp_nonce=request.scope.get("state", {}).get("csp_nonce", ""),
        lang_links=links, **context)
    response = HTMLResponse(html, status_code=status,
                            headers={"Cache-Control": "no-store"})
    if request.query_params.get("lang") in SUPPORTED:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="lax",
                            httponly=True)
    return response


@router.get("/")
async def home(request: Request) -> Response:
    """Live alerts for this node's area, newest first."""
    lang = page_lang(request)
    s = deps.settings(request)
    # The newest 20 keep the page light on an old phone; the API lists more.
    names = deps.runtime(request).peer_names()
    alerts = [alert_view(e, s, lang, names.get(e.origin, e.origin), phase)
              for e, phase in deps.visible_alert_phases(request, HOME_ALERTS)]
    return render(request, "home.html", alerts=alerts, stream_url=f"/api/v1/stream?render={lang}")


def _csrf(request: Request) -> str:
    return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(16)


def _form_page(request: Request, category: str, *, values: dict[str, Any] | None = None,
               errors: dict[str, str] | None = None, status: int = 200) -> Response:
    s = deps.settings(request)
    token = _csrf(request)
    response = render(
        request, "report_form.html", status=status, category=category,
        emergency=category == "emergency",
        meeting_points=[{"id": p.id, "name": p.name} for p in s.meeting_points],
        values=values or {}, errors=errors or {},
        default_audience=default_audience(category),
        limits={"text": intake.LIMITS["text"], "place": intake.LIMITS["place.text"],
                "contact": intake.LIMITS["contact"]},
        csrf_token=token)
    response.set_cookie(CSRF_COOKIE, token, samesite="strict", httponly=True)
    return response


@router.get("/report")
async def report_page(request: Request, category: str | None = None) -> Response:
    """Step 1: the pictogram grid; step 2 (with ?category=): the form."""
    if category in CATEGORIES:
        return _form_page(request, category)
    return render(request, "report_choose.html")


def _same_origin(request: Request, token: str) -> bool:
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        return False
    cookie = request.cookies.get(CSRF_COOKIE)
    if cookie:
        return hmac.compare_digest(cookie.encode(), token.encode())
    # No cookie (cookies off on an old phone): a same-origin Origin header suffices.
    return bool(origin) and origin != "null"


@router.post("/report")
async def report_submit(request: Request) -> Response:
    """Store the report, then show its receipt (303 to the receipt page)."""
    try:
        form = await request.form(max_files=0, max_fields=intake.MAX_FORM_FIELDS)
    except StarletteHTTPException:  # a file, or more fields than the form has: not ours
        msg = deps.translate(request, page_lang(request), "error.invalid")
        return render(request, "report_choose.html", status=400, error=msg)
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    category = values.get("category", "")
    if category not in CATEGORIES:
        msg = deps.translate(request, page_lang(request), "error.field.category")
        return render(request, "report_choose.html", status=422, error=msg)
    if not _same_origin(request, values.get("csrf", "")):
        msg = deps.translate(request, page_lang(request), "error.csrf")
        return _form_page(request, category, values=values, errors={"form": msg}, status=403)
    if not deps.allowed(request, "report_limiter"):
        msg = deps.translate(request, page_lang(request), "error.rate")
        return _form_page(request, category, values=values, errors={"form": msg}, status=429)
    # The one intake of the form and the API (node/portal/intake.py): the same
    # checks, limits and answers; a refusal shows the form again with every word kept.
    try:
        clean = intake.check(intake.from_form(values, page_lang(request)),
                             {p.id: p.name for p in deps.settings(request).meeting_points})
        done = await intake.store(deps.runtime(request), clean)
    except intake.Refused as exc:
        if exc.refunds:  # not stored: a resident correcting the form keeps the budget
            deps.refund(request, "report_limiter")
        return _refused_page(request, category, values, exc)
    receipt = done.report.body["receipt"]
    return RedirectResponse(f"/receipt/{receipt}", status_code=303)


#: Form fields named differently from the report's fields.
_FORM_FIELD = {"place.point": "place_point", "place.text": "place_text"}


def _refused_page(request: Request, category: str, values: dict[str, str],
                  exc: intake.Refused) -> Response:
    """The form again, with what the resident typed and why it was not taken."""
    field = _FORM_FIELD.get(exc.field, exc.field)
    lang = page_lang(request)
    if exc.key.startswith("error.field."):
        msg = deps.translate(request, lang, f"error.field.{field}", default=exc.reason)
    else:  # "error.store", "error.too_large": node/portal/intake.py
        msg = deps.translate(request, lang, exc.key, default=exc.reason)
    if exc.field == "report":
        # Said once at the top; for an empty report the fields that could fill
        # the gap are marked.
        errors = {"report": msg}
        if exc.status == intake.STATUS["invalid"]:
            errors.update({"text": "", "place_point": "", "place_text": ""})
    else:
        errors = {field: msg}
    response = _form_page(request, category, values=values, errors=errors, status=exc.status)
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


@router.get("/receipt/{code}")
async def receipt_page(request: Request, code: str) -> Response:
    """The receipt code, big, with a QR code of its status page."""
    deps.limit(request, "lookup_limiter")  # a lookup like /status: no guessing codes
    found = deps.runtime(request).require_store().receipt(normalise_receipt(code))
    if found is None:
        return render(request, "status.html", status=404, receipt=code[:16], report=None,
                      not_found=True)
    _, event = found
    receipt = event.body["receipt"]
    status_url = f"{str(request.base_url).rstrip('/')}/status?receipt={receipt}"
    audience = event.body["audience"]
    return render(request, "receipt.html", receipt=receipt,
                  qr_svg=qr_svg(status_url, label=receipt), status_url=status_url,
                  audience=audience, shown_to_neighbours=audience in ("neighbours", "both"))


@router.get("/status")
async def status_page(request: Request, receipt: str | None = None) -> Response:
    """Look up a receipt code."""
    if not receipt:
        return render(request, "status.html", receipt=None, report=None, not_found=False)
    deps.limit(request, "lookup_limiter")
    code = normalise_receipt(receipt)
    found = deps.runtime(request).require_store().receipt(code)
    if found is None:
        return render(request, "status.html", status=404, receipt=receipt[:16], report=None,
                      not_found=True)
    state, event = found
    return render(request, "status.html", receipt=code,
                  report=deps.report_status(state, event, deps.settings(request),
                                            page_lang(request),
                                            deps.runtime(request).require_store()
                                            .receipt_reply(code)),
                  not_found=False)
