"""``GET /api/v1/stream`` (Server-Sent Events) as a lean ASGI handler.

A live stream stays open as long as a resident's page does: the node holds
hundreds at a time. Served by the framework, each one kept ~37 KB of its
per-request machinery alive for as long as it lasted (FastAPI's dependency
solving and AsyncExitStacks, Starlette's request, its streaming response's
anyio task group and cancel scopes, the middlewares' closures): 3.7 MB for 100
streams (issue 15, memory). So the stream is served here, in front of the
framework's middleware stack, as :class:`node.portal.ingest.ReportIngest`
serves reports: the messages are :func:`node.portal.api.live_events`' (the
same as the documented route's), the headers the same as the framework's
answer had (the security headers included); one small task per stream
notices a client that goes away.

A request this handler does not take as it is (a query other than one valid
``render``, a ``Last-Event-ID`` too long or given twice) passes on to the
framework's route, which answers it (422) as before.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from .api import MAX_EVENT_ID, RENDER, live_events
from .guards import NoncePool, security_headers

PATH = "/api/v1/stream"
_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-store"), (b"x-accel-buffering", b"no")]


class LiveStream:
    """ASGI middleware answering ``GET /api/v1/stream``; everything else passes on."""

    def __init__(self, app: ASGIApp, *, fastapi: Any) -> None:
        self.app = app
        self.fastapi = fastapi  # its state holds runtime, settings and renderer
        self._nonces = NoncePool()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        args = (_arguments(scope) if scope["type"] == "http" and scope["path"] == PATH
                and scope["method"] == "GET" else None)
        if args is None:
            await self.app(scope, receive, send)
            return
        render, last_event_id = args
        scope["app"] = self.fastapi  # what node.portal.deps reads the node from
        task = asyncio.current_task()
        assert task is not None
        gone = False

        async def watch() -> None:
            """End the stream as soon as the client goes away (not at the next
            keep-alive): its subscription and connection are freed at once."""
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            task.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        feed = live_events(Request(scope), render, last_event_id, None)
        headers = [*_HEADERS, *security_headers(self._nonces.nonce(), PATH)]
        try:
            try:
                await send({"type": "http.response.start", "status": 200,
                            "headers": headers})
                async for chunk in feed:
                    await send({"type": "http.response.body", "body": chunk,
                                "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                watcher.cancel()
                await feed.aclose()
        except asyncio.CancelledError:
            # The watcher's cancel can only land at one of the awaits above (this
            # task waits at one of them whenever the watcher runs).
            if not gone:
                raise  # the server is stopping
            task.uncancel()


def _arguments(scope: Scope) -> tuple[str | None, str | None] | None:
    """``render`` and ``Last-Event-ID`` of a request this handler takes, else None."""
    render: str | None = None
    raw = scope.get("query_string", b"")
    if raw:
        try:
            pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True,
                              strict_parsing=True)
        except ValueError:
            return None
        if len(pairs) != 1 or pairs[0][0] != "render" or not RENDER.fullmatch(pairs[0][1]):
            return None
        render = pairs[0][1]
    last: str | None = None
    for name, value in scope["headers"]:
        if name == b"last-event-id":
            if last is not None or len(value) > MAX_EVENT_ID:
                return None
            last = value.decode("latin-1")
    return render, last
