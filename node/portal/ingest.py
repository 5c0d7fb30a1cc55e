"""``POST /api/v1/reports``: the node's hottest path, as a lean ASGI handler.

Every report costs two Ed25519 signatures, a group-committed SQLite write and
two QoS 1 publishes; the web framework's per-request machinery (routing,
dependency solving, request and response objects, exception middlewares) cost
as much again (measured: about 270 µs of 735 µs per report). So this one
endpoint is served here, in front of FastAPI, with the same rules as every
other request: body limit, content type, per-device rate limit, the event
model's own validator, an answer only after the COMMIT, and the same security
headers. The checks and the error mapping are :mod:`node.portal.intake`'s,
shared with the resident form. ``ReportIn`` in :mod:`node.portal.api`
documents the body in OpenAPI.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from common.ratelimit import RateLimiter

from . import intake

log = logging.getLogger(__name__)

PATH = "/api/v1/reports"
# A JSON answer is never rendered as a page: no CSP or frame headers needed here.
_HEADERS = [(b"content-type", b"application/json"), (b"x-content-type-options", b"nosniff"),
            (b"cache-control", b"no-store")]


class ReportIngest:
    """ASGI middleware answering ``POST /api/v1/reports``; everything else passes on."""

    def __init__(self, app: ASGIApp, *, fastapi: Any, limit: int) -> None:
        self.app = app
        self.fastapi = fastapi  # its state holds runtime, settings and rate limiter
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        status, body, extra = await self._handle(scope, receive)
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        headers = [*_HEADERS, (b"content-length", str(len(data)).encode()), *extra]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def _handle(self, scope: Scope,
                      receive: Receive) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]:
        client = scope.get("client")
        state = self.fastapi.state
        limiter: RateLimiter = state.report_limiter
        if not limiter.allow(client[0] if client else "unknown"):
            return 429, {"detail": "too many reports; wait a minute and try again"}, \
                [(b"retry-after", b"60")]
        ctype = b""
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                return 413, {"detail": f"request body is larger than {self.limit} bytes; "
                             "nothing was stored"}, [(b"connection", b"close")]
            if name == b"content-type":
                ctype = value.split(b";")[0].strip().lower()
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return 400, {"detail": "the request ended early; nothing was stored"}, []
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return 413, {"detail": f"request body is larger than {self.limit} bytes; "
                             "nothing was stored"}, [(b"connection", b"close")]
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if ctype != b"application/json":
            # Also keeps other sites' plain HTML forms out (they cannot send JSON).
            return 415, {"detail": "send the report as application/json"}, []
        # The one intake of the form and the API (node/portal/intake.py).
        try:
            raw = intake.from_json(b"".join(chunks), self.limit)
            clean = intake.check(raw, {p.id: p.name for p in state.settings.meeting_points})
            done = await intake.store(state.runtime, clean)
        except intake.Refused as exc:
            if exc.refunds:  # as the form: only what is stored counts
                limiter.refund(client[0] if client else "unknown")
            extra = [] if exc.retry_after is None else \
                [(b"retry-after", str(exc.retry_after).encode())]
            return exc.status, intake.answer(exc), extra
        receipt = done.report.body["receipt"]
        return 201, {"id": done.report.id, "receipt": receipt,
                     "status_url": f"/status?receipt={receipt}",
                     "shown_to_neighbours": done.warning is not None}, \
            [(b"location", f"{PATH}/{receipt}".encode())]
