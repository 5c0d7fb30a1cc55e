"""Error answers: the portal's own page for browsers, JSON for programs.

A resident who follows an old link, sends a form that is too large or comes
too often gets a page of the portal in their language (with the way back),
never raw JSON or a traceback. Under ``/api/`` (and ``/healthz``) the answer
stays JSON, as documented in docs/http-api.md. "Browser" means: it asks for
``text/html`` (every browser does for a page or a form; ``curl``, ``httpx``
and ``fetch`` do not unless told).
"""

from __future__ import annotations

import logging
from typing import Final

from fastapi import Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

log = logging.getLogger(__name__)

#: Status codes that get the portal's own page, and what the page says.
MESSAGES: Final = {
    404: "error.not_found",
    413: "error.too_large",
    422: "error.invalid",
    429: "error.rate",
    500: "error.server",
    503: "error.unavailable",
}
_JSON_PREFIXES: Final = ("/api/", "/healthz")


def wants_html(scope: Scope) -> bool:
    """Is this a browser asking for a page (not a program, not the JSON API)?

    >>> wants_html({"path": "/nope", "headers": [(b"accept", b"text/html,*/*;q=0.8")]})
    True
    >>> wants_html({"path": "/api/v1/x", "headers": [(b"accept", b"text/html")]})
    False
    >>> wants_html({"path": "/nope", "headers": [(b"accept", b"*/*")]})
    False
    """
    path: str = scope.get("path", "")
    if path.startswith(_JSON_PREFIXES):
        return False
    for name, value in scope.get("headers", ()):
        if name == b"accept":
            return b"text/html" in value
    return False


def error_page(request: Request, status: int, *,
               headers: dict[str, str] | None = None) -> Response:
    """The portal's error page for ``status``, in the request's language."""
    from . import deps
    from .resident import page_lang, render  # resident imports this module
    message = deps.translate(request, page_lang(request), MESSAGES.get(status, "error.server"))
    response = render(request, "error.html", status=status, status_code=status,
                      message=message)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def render_error_bytes(scope: Scope, status: int) -> bytes | None:
    """The error page as bytes for ASGI middleware (None: answer with JSON)."""
    if not wants_html(scope) or "app" not in scope:
        return None
    response = error_page(Request(scope), status)
    return bytes(response.body)


async def on_http_error(request: Request, exc: Exception) -> Response:
    """404, 422, 429, ... raised by a route or by routing itself."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code in MESSAGES and wants_html(request.scope):
        return error_page(request, exc.status_code, headers=dict(exc.headers or {}))
    return await http_exception_handler(request, exc)


async def on_invalid(request: Request, exc: Exception) -> Response:
    """A request that does not fit its route's parameters (422)."""
    assert isinstance(exc, RequestValidationError)
    if wants_html(request.scope):
        return error_page(request, 422)
    errors = [
        {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"),
         "message": e.get("msg", "invalid")}
        for e in exc.errors()
    ]
    return JSONResponse({"detail": "invalid input; nothing was stored", "errors": errors},
                        status_code=422)


async def on_node_error(request: Request, exc: Exception) -> Response:
    """The node could not do it now (store closed or failing): 503, try again."""
    log.error("%s %s: %s", request.method, request.url.path, exc)
    if wants_html(request.scope):
        return error_page(request, 503, headers={"Retry-After": "5"})
    return JSONResponse({"detail": "the node cannot do this now; try again"},
                        status_code=503, headers={"Retry-After": "5"})
