"""Central's HTTP application (FastAPI): ingest, enrolment, roster, health.

Workers are stateless: everything lives in the database, so any number of
``bart central run`` processes may serve one PostgreSQL database. Staff pages,
broadcasts and the CAP feed add their routes through their modules' ``install``.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from common import apidocs
from common.clock import now_ms
from sync.canonical import parse_json
from sync.enrolment import parse_request
from sync.errors import InvalidField

from . import batch_http, db, feeds
from .enrol import current_roster, enrol_with_code
from .errors import EnrolmentRefused, IngestRefused
from .identity import Central
from .ingest import Ingest
from .staff import routes as staff

log = logging.getLogger(__name__)

BATCH_TYPE = batch_http.BATCH_TYPE.decode()
BATCH_PATH = batch_http.PATH
MAX_ENROL_BYTES = 16 * 1024


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": message}, status_code=status,
                        headers={"Cache-Control": "no-store"})


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise IngestRefused(413, "too_large", f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise IngestRefused(413, "too_large", f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(central: Central, engine: Engine | None = None) -> FastAPI:
    """The central application over ``engine`` (default: the configured database).

    Triage is not done here but by the projector (``central/projector.py``),
    which ``bart central run`` starts beside the workers.
    """
    engine = engine or db.make_engine(central.database_url)
    ingest = Ingest(engine, central)
    # docs_url=None: FastAPI's docs page loads Swagger UI from a CDN; common.apidocs
    # serves it from the package (offline), with /favicon.ico.
    app = FastAPI(title="Bart central", version="1", docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json")
    app.include_router(apidocs.router)
    app.state.central = central
    app.state.engine = engine
    app.state.ingest = ingest

    @app.exception_handler(IngestRefused)
    async def _refused(_request: Request, exc: IngestRefused) -> JSONResponse:
        return _error(exc.status, exc.code, str(exc))

    @app.post("/api/v1/enroll", summary="Enrol a node with a one-time code")
    async def post_enroll(request: Request) -> Response:
        raw = await _read_body(request, MAX_ENROL_BYTES)
        try:
            req = parse_request(parse_json(raw, MAX_ENROL_BYTES), need_code=True)
        except InvalidField as exc:
            return _error(422, "malformed", str(exc))
        try:
            answer = await run_in_threadpool(enrol_with_code, engine, central, req)
        except EnrolmentRefused as exc:
            log.warning("enrolment of %s refused: %s", req.node, exc)
            status = 409 if exc.code in ("key_enrolled", "node_exists") else 403
            return _error(status, exc.code, str(exc))
        return JSONResponse(answer, headers={"Cache-Control": "no-store"})

    @app.get("/api/v1/roster", summary="The current signed roster")
    def get_roster() -> Response:
        with db.reading(engine) as conn:
            roster = current_roster(conn)
        if roster is None:
            return _error(404, "no_roster", "no node has been enrolled yet")
        return JSONResponse(roster)

    @app.get("/healthz", summary="Liveness and database reachability")
    def healthz() -> Response:
        try:
            with db.reading(engine) as conn:
                nodes = conn.execute(sa.select(sa.func.count()).select_from(db.nodes)).scalar()
                # Batches whose reports the projector has not triaged yet.
                pending = conn.execute(sa.select(sa.func.count()).select_from(db.batches)
                                       .where(db.batches.c.pending.isnot(None))).scalar()
        except sa.exc.SQLAlchemyError as exc:
            return _error(503, "database", str(exc.__class__.__name__))
        return JSONResponse({"ok": True, "origin": central.origin, "kid": central.kid,
                             "nodes": nodes, "triage_pending_batches": pending,
                             "time": now_ms()})

    # Staff pages with broadcasts, and the CAP feed, register their own routes.
    staff.install(app, central, engine)
    feeds.install(app, central, engine)
    # Batches are answered in front of the routes (central/batch_http.py).
    app.add_middleware(batch_http.BatchIngest, ingest=ingest,
                       limit=central.settings.max_batch_bytes)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document_batches(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _document_batches(schema: dict[str, Any]) -> dict[str, Any]:
    """``POST /api/v1/batches`` in the OpenAPI schema (served by BatchIngest)."""
    def answer(text: str) -> dict[str, Any]:
        return {"description": text}

    schema.setdefault("paths", {})[BATCH_PATH] = {"post": {
        "summary": "Receive a sealed batch from a node",
        "description": "The body is a sealed batch (docs/protocol.md, \"Sealed batches\"). "
                       "Refusals are JSON {\"error\": code, \"detail\": text}; nothing is "
                       "stored for a refused batch, and a replay gets the original "
                       "acknowledgement.",
        "operationId": "post_batch",
        "requestBody": {"required": True, "content": {BATCH_TYPE: {
            "schema": {"type": "string", "format": "binary"}}}},
        "responses": {
            "200": answer("the signed acknowledgement and what the node lacks"),
            "400": answer("malformed framing, wrong key id, bad tag"),
            "401": answer("the batch signature does not verify"),
            "403": answer("unknown or revoked node"),
            "413": answer("too large"), "415": answer(f"not {BATCH_TYPE}"),
            "422": answer("an event is malformed or its own signature does not verify"),
        }}}
    return schema
