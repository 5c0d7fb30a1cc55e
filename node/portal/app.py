"""The node's web app: resident pages, JSON API, live stream, health.

``create_app(settings)`` builds everything from the settings and starts the
node (store, Mosquitto, MQTT client) in the lifespan; nothing is created at
import time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from common import apidocs
from common.ratelimit import RateLimiter

from ..config import NodeSettings
from ..errors import NodeError
from ..runtime import NodeRuntime
from ..team import routes as team_routes
from ..team.session import close_accounts, open_accounts
from . import api, captive, errorpages, resident
from .captive import CaptiveClients, CaptivePolicy, CaptivePortal
from .guards import LimitBody, SecurityHeaders
from .i18n import Catalogue
from .ingest import ReportIngest
from .render import Renderer
from .stream import LiveStream

log = logging.getLogger(__name__)

API_DESCRIPTION = """\
JSON API of a Bart node. Residents' pages use the same operations.

* Reports are stored durably before the answer (201 only after COMMIT).
* `GET /api/v1/stream` is a Server-Sent Events stream of public events.
* Bad input gets 422 (invalid) or 413 (too large), and nothing is stored.
"""


def create_app(settings: NodeSettings, *, runtime: NodeRuntime | None = None) -> FastAPI:
    """Build the node's FastAPI app for ``settings``."""
    rt = runtime or NodeRuntime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await rt.start()
        # Off the loop, once: compiling the templates, and team.db's migration
        # and dummy scrypt hash (~50 ms of CPU each on a Pi-class core).
        await asyncio.to_thread(app.state.renderer.warm)
        await asyncio.to_thread(open_accounts, app, settings)
        log.info("node %s started (%s, area %s)", settings.name, settings.data_dir,
                 settings.area)
        try:
            yield
        finally:
            close_accounts(app)
            await rt.stop()

    app = FastAPI(
        title=f"Bart node {settings.name}",
        version=_version(),
        description=API_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served from the package by common.apidocs (FastAPI's uses a CDN)
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.runtime = rt
    app.state.settings = settings
    app.state.renderer = Renderer(Catalogue.load())
    app.state.captive_policy = CaptivePolicy.from_settings(settings)
    app.state.captive_clients = CaptiveClients(settings.captive_grace_s)
    app.state.report_limiter = RateLimiter(settings.reports_per_minute)
    app.state.lookup_limiter = RateLimiter.lookups(enabled=settings.reports_per_minute > 0)
    app.include_router(api.router)
    app.include_router(apidocs.router)  # /api/docs and /favicon.ico
    app.include_router(captive.router)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = api.add_schemas(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    if settings.demo:
        # Imported only for a demo node: its routes cost ~0.1 MB (issue 15, memory).
        from . import demo

        app.include_router(demo.router)
    app.include_router(resident.router)
    app.include_router(team_routes.router)

    # Browsers get the portal's own page in their language; /api/ stays JSON.
    app.add_exception_handler(RequestValidationError, errorpages.on_invalid)
    app.add_exception_handler(StarletteHTTPException, errorpages.on_http_error)
    app.add_exception_handler(NodeError, errorpages.on_node_error)

    app.add_middleware(LimitBody, limit=settings.max_request_bytes,
                       page=errorpages.render_error_bytes)
    app.add_middleware(SecurityHeaders)
    # Outermost: probes and foreign hosts are answered before anything else runs.
    app.add_middleware(CaptivePortal, policy=app.state.captive_policy,
                       clients=app.state.captive_clients, catalogue=app.state.renderer.catalogue)
    return app


def create_asgi(settings: NodeSettings) -> ASGIApp:
    """What the server runs: the app, with ``POST /api/v1/reports`` and the live
    stream ``GET /api/v1/stream`` served in front of the framework's own middleware
    stack (see :mod:`node.portal.ingest` and :mod:`node.portal.stream`), and the
    captive portal's Host check in front of them all (see :mod:`node.portal.captive`)."""
    app = create_app(settings)
    ingest = ReportIngest(app, fastapi=app, limit=settings.max_request_bytes)
    stream = LiveStream(ingest, fastapi=app)
    return CaptivePortal(stream, policy=app.state.captive_policy,
                         clients=app.state.captive_clients,
                         catalogue=app.state.renderer.catalogue)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bart")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"
