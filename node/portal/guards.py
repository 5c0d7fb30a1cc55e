"""Request guards: body size limit, security headers, per-client rate limit."""

from __future__ import annotations

import base64
import os
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DOCS_PATH = "/api/docs"


class LimitBody:
    """ASGI middleware: refuse bodies over ``limit`` bytes with 413, declared or not.

    The body is read here, up to the limit, before the app sees the request:
    an error raised while the app itself reads would be turned into a 400 by
    FastAPI's body parsing. Bodies are small (16 KB by default), so holding one
    in memory costs nothing.
    """

    def __init__(self, app: ASGIApp, limit: int,
                 page: Callable[[Scope, int], bytes | None] | None = None) -> None:
        self.app = app
        self.limit = limit
        # For a browser: the portal's own error page (None from it: JSON).
        self.page = page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.limit + 1
                if declared > self.limit:
                    await self._too_large(scope, send)
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._too_large(scope, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


    async def _too_large(self, scope: Scope, send: Send) -> None:
        page = self.page(scope, 413) if self.page is not None else None
        if page is not None:
            body, ctype = page, b"text/html; charset=utf-8"
        else:
            body = (b'{"detail":"request body is larger than %d bytes; nothing was stored"}'
                    % self.limit)
            ctype = b"application/json"
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", ctype),
                                (b"content-length", str(len(body)).encode()),
                                (b"cache-control", b"no-store"),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class _NoncePool:
    """CSP nonces cut from a pooled ``os.urandom`` block (one system call per ~340)."""

    def __init__(self) -> None:
        self._buf = b""

    def nonce(self) -> str:
        if len(self._buf) < 12:
            self._buf = os.urandom(4096)
        raw, self._buf = self._buf[:12], self._buf[12:]
        return base64.urlsafe_b64encode(raw).decode("ascii")


class SecurityHeaders:
    """ASGI middleware: a per-request CSP nonce and strict headers on every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._pool = _NoncePool()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = self._pool.nonce()
        scope.setdefault("state", {})["csp_nonce"] = nonce
        # The API docs page (Swagger UI from the package, common/apidocs.py)
        # may also load scripts and styles from this node itself; every other
        # page: only what carries the nonce.
        own = "'self' " if scope.get("path") == DOCS_PATH else ""
        csp = (f"default-src 'none'; script-src {own}'nonce-{nonce}'; "
               f"style-src {own}'nonce-{nonce}'; "
               "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
               "base-uri 'none'; frame-ancestors 'none'").encode()

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", csp),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


class RateLimiter:
    """Token bucket per client address; bounded number of tracked clients."""

    def __init__(self, per_minute: int, *, burst: int | None = None,
                 clock: Callable[[], float] = time.monotonic, max_clients: int = 4096) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst if burst is not None else max(per_minute // 2, 1))
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, client: str) -> bool:
        """Take one token for ``client``; False when it has none left."""
        if self.rate <= 0:
            return True
        now = self.clock()
        tokens, last = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        ok = tokens >= 1.0
        self._buckets[client] = (tokens - 1.0 if ok else tokens, now)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return ok
