"""``/api/docs`` and ``/favicon.ico``, served by the program itself, for use offline.

FastAPI's own docs page loads Swagger UI from a CDN, which a node without
internet cannot reach and which the CSP refuses anyway (a blank page). The
Swagger UI files come from the ``fastapi-offline`` package instead (a PyPI
package that ships them; only its static files are used) and are served here
under ``/api/docs/static/``; the page's scripts and style carry the request's
CSP nonce (``request.scope["state"]["csp_nonce"]``, set by the app's security
middleware), which lets this one page load them from the program itself
(``'self'``): node/portal/guards.py and central/staff/web.py.

Node and central both include :data:`router` (``app.include_router``) and set
``docs_url=None`` on their FastAPI app. The browser asks every site for
``/favicon.ico``; answering it keeps a first visit free of console errors.
"""

from __future__ import annotations

import importlib.resources
import json
from functools import cache
from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

router = APIRouter(include_in_schema=False)

DOCS_PATH: Final = "/api/docs"
STATIC_PATH: Final = "/api/docs/static"
#: The files the page needs, and their types (nothing else is served).
FILES: Final = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}


@cache
def _asset(name: str) -> bytes:
    return (importlib.resources.files("fastapi_offline") / "static" / name).read_bytes()


def _page(title: str, openapi_url: str, nonce: str) -> str:
    config = json.dumps({"url": openapi_url, "dom_id": "#swagger-ui",
                         "deepLinking": True, "validatorUrl": None})
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} – API</title>
<link rel="icon" type="image/png" href="{STATIC_PATH}/favicon.png">
<link rel="stylesheet" href="{STATIC_PATH}/swagger-ui.css" nonce="{nonce}">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{STATIC_PATH}/swagger-ui-bundle.js" nonce="{nonce}"></script>
<script nonce="{nonce}">
window.ui = SwaggerUIBundle(Object.assign({config}, {{
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  layout: "BaseLayout"
}}));
</script>
</body>
</html>
"""


FAVICON: Final = importlib.resources.files("common") / "static" / "favicon.ico"


@cache
def _favicon() -> bytes:
    return FAVICON.read_bytes()


@router.get("/favicon.ico")
async def favicon() -> Response:
    """Bart's small icon (32x32, from the package)."""
    return Response(_favicon(), media_type="image/x-icon",
                    headers={"Cache-Control": "public, max-age=86400"})


@router.get(DOCS_PATH)
async def docs(request: Request) -> HTMLResponse:
    """Swagger UI of this program's API, with nothing loaded from elsewhere."""
    from html import escape

    nonce = request.scope.get("state", {}).get("csp_nonce", "")
    title = escape(str(request.app.title))
    return HTMLResponse(_page(title, str(request.app.openapi_url), nonce),
                        headers={"Cache-Control": "no-store"})


@router.get(STATIC_PATH + "/{name}")
async def static(name: str) -> Response:
    """One of Swagger UI's files, from the installed package."""
    media = FILES.get(name)
    if media is None:
        return Response(status_code=404)
    return Response(_asset(name), media_type=media,
                    headers={"Cache-Control": "public, max-age=86400"})
