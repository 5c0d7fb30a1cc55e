"""Request guards: body size limit, security headers (the per-client rate limit is
:class:`common.ratelimit.RateLimiter`, shared with central)."""

from __future__ import annotations

import base64
import os
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


class NoncePool:
    """CSP nonces cut from a pooled ``os.urandom`` block (one system call per ~340)."""

    def __init__(self) -> None:
        self._buf = b""

    def nonce(self) -> str:
        if len(self._buf) < 12:
            self._buf = os.urandom(4096)
        raw, self._buf = self._buf[:12], self._buf[12:]
        return base64.urlsafe_b64encode(raw).decode("ascii")


def security_headers(nonce: str, path: str | None) -> list[tuple[bytes, bytes]]:
    """The headers every answer carries: a CSP with ``nonce``, and strict framing,
    sniffing and referrer rules."""
    # The API docs page (Swagger UI from the package, common/apidocs.py)
    # may also load scripts and styles from this node itself; every other
    # page: only what carries the nonce.
    own = "'self' " if path == DOCS_PATH else ""
    csp = (f"default-src 'none'; script-src {own}'nonce-{nonce}'; "
           f"style-src {own}'nonce-{nonce}'; "
           "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
           "base-uri 'none'; frame-ancestors 'none'").encode()
    return [
        (b"content-security-policy", csp),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
    ]


class SecurityHeaders:
    """ASGI middleware: a per-request CSP nonce and strict headers on every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._pool = NoncePool()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = self._pool.nonce()
        scope.setdefault("state", {})["csp_nonce"] = nonce
        extra = security_headers(nonce, scope.get("path"))

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)


__all__ = ["DOCS_PATH", "LimitBody", "NoncePool", "SecurityHeaders", "security_headers"]
