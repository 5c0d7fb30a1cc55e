"""``POST /api/v1/batches``: central's hottest path, as a lean ASGI handler.

A batch of 1,000 events costs its worker about 11 ms of CPU; FastAPI's
per-request machinery (routing, request and response objects, the exception
middlewares) and anyio's thread hand-off added another 0.3 ms to the 0.4 ms
uvicorn and the hand-off to a thread need anyway (measured with batches of
158 kB: 0.69–0.78 ms of the worker's event loop per request against
0.42–0.43 ms here). So this one endpoint is answered here, in front of the
routes, with the same rules: content type, body limit (declared or counted),
the refusals of :class:`central.ingest.Ingest` as JSON ``{"error", "detail"}``,
``Cache-Control: no-store``. Anything unexpected propagates to the
framework's server-error middleware (500, logged). The same pattern serves the
node's ``POST /api/v1/reports`` (:mod:`node.portal.ingest`).

Ingest runs on a thread of its own small pool, so the event loop stays free
for staff pages and polls, and at most :data:`INGEST_THREADS` batches (each
up to ``max_batch_bytes``, its payload up to 48 MiB) are opened at once per
worker.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Final

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import IngestRefused
from .ingest import Ingest

log = logging.getLogger(__name__)

PATH: Final = "/api/v1/batches"
BATCH_TYPE: Final = b"application/vnd.bart.batch"
#: Batches opened at once by one worker process (PostgreSQL: one connection each).
INGEST_THREADS: Final = 8
_HEADERS: Final = [(b"content-type", b"application/json"), (b"cache-control", b"no-store"),
                   (b"x-content-type-options", b"nosniff")]


def _error(status: int, code: str, message: str) -> tuple[int, bytes]:
    return status, orjson.dumps({"error": code, "detail": message})


class BatchIngest:
    """ASGI middleware answering ``POST /api/v1/batches``; everything else passes on."""

    def __init__(self, app: ASGIApp, *, ingest: Ingest, limit: int) -> None:
        self.app = app
        self.ingest = ingest
        self.limit = limit
        self.pool = ThreadPoolExecutor(INGEST_THREADS, thread_name_prefix="bart-ingest")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != PATH:
            await self.app(scope, receive, send)
            return
        headers = list(_HEADERS)
        if scope["method"] != "POST":
            status, data = _error(405, "method_not_allowed", "POST a sealed batch here")
            headers.append((b"allow", b"POST"))
        else:
            status, data = await self._handle(scope, receive)
        headers.append((b"content-length", str(len(data)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    def _refuse(self, status: int, code: str, message: str) -> tuple[int, bytes]:
        """A refusal made here, before ingest: counted like ingest's own (/metrics)."""
        self.ingest.metrics.refusal(code)
        return _error(status, code, message)

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        ctype, length = b"", b"0"
        for name, value in scope["headers"]:
            if name == b"content-type":
                ctype = value.split(b";")[0].strip().lower()  # media types ignore case
            elif name == b"content-length":
                length = value
        if ctype != BATCH_TYPE:
            return self._refuse(415, "unsupported_media_type", f"send {BATCH_TYPE.decode()}")
        if not length.isdigit() or int(length) > self.limit:
            return self._refuse(413, "too_large", f"body larger than {self.limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away mid-body
                client = scope.get("client")
                log.info("batch upload from %s ended after %d bytes", client[0] if client
                         else "?", size)
                return self._refuse(400, "incomplete", "the request ended early")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return self._refuse(413, "too_large", f"body larger than {self.limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        loop = asyncio.get_running_loop()
        try:
            reply = await loop.run_in_executor(self.pool, self.ingest.receive, b"".join(chunks))
        except IngestRefused as exc:  # logged by Ingest.receive
            return _error(exc.status, exc.code, str(exc))
        return 200, reply.encode()
