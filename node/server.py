"""Run the node's app under uvicorn in this process."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import json
import logging
import socket
from collections.abc import Sequence
from contextlib import suppress
from typing import Final

import h11
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from common.heap import malloc_trim, settle_memory
from common.ratelimit import (
    BODY_TIMEOUT_S,
    HEADER_TIMEOUT_S,
    MAX_CONNECTIONS_PER_CLIENT,
    MAX_STREAMS,
    MAX_STREAMS_PER_CLIENT,
)
from common.server import Server, proxy_options

from .config import NodeSettings
from .portal.app import create_asgi

log = logging.getLogger(__name__)


class NodeServer(Server):
    """uvicorn's server, but SIGINT/SIGTERM are the normal way to stop: exit 0,
    and the node says it is up only once its portal's socket is bound.

    uvicorn re-raises the signal after a graceful shutdown, which turns every
    clean stop (Ctrl-C in the demo, ``systemctl stop``) into a failure exit.
    """

    def __init__(self, config: uvicorn.Config, *, name: str = "") -> None:
        super().__init__(config)
        self.name = name

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit:  # the lifespan or the bind failed: uvicorn said why
            return
        settle_memory()  # before the budget counts: a one-off ~0.1-0.2 s at start
        log.info("node %s is up: portal http://%s:%d/", self.name, self.config.host,
                 self.config.port)
        arm_loop_budget()  # requests are served from now: the budget counts
        # What the first minutes allocate once (the uplink's first exchange, lazy
        # imports of the first pages) is handed back once more, off the loop.
        loop = asyncio.get_running_loop()
        loop.call_later(SETTLE_AGAIN_S, loop.run_in_executor, None, _trim_memory)



#: Open connections in all: far below the file limit the node gives itself
#: (:data:`NOFILE`), so SQLite, Mosquitto's client and the mesh always get theirs.
MAX_CONNECTIONS: Final = 1000
#: The soft open-file limit the node raises itself to (the unit sets the same, LimitNOFILE).
NOFILE: Final = 4096
#: File descriptors kept apart from HTTP connections (store, broker, mesh, logs).
FD_RESERVE: Final = 256
#: After this many connections, the node hands freed memory back once they have gone.
TRIM_AFTER: Final = 200
#: Seconds after the portal is up when freed memory is handed back once more.
SETTLE_AGAIN_S: Final = 10.0
#: The paths of live streams (Server-Sent Events), capped per client and in all.
STREAM_PATHS: Final = frozenset({"/api/v1/stream", "/team/stream"})

TOO_MANY_CONNECTIONS = ("Too many open connections from this device. Close a few pages "
                        "and try again.")
NODE_FULL = "The node is serving as many connections as it can. Try again in a minute."
TOO_SLOW = "The request took too long to arrive. Try again."


def raise_open_file_limit(target: int = NOFILE) -> int:
    """Raise this process's soft RLIMIT_NOFILE to ``target`` (at most the hard limit).

    A Pi's default soft limit is 1024: with the portal, SQLite, Mosquitto's client
    and the mesh, that runs out long before the connection caps do ("Too many open
    files" for everyone). Returns the soft limit now in force.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = target if hard == resource.RLIM_INFINITY else min(target, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError) as exc:  # a container may refuse: keep what we have
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, want, exc)
    return int(soft)


def _trim_memory() -> None:
    """Hand freed heap back to the system (glibc ``malloc_trim``; elsewhere nothing).

    Thousands of connections leave their memory in the allocator's free lists when
    they go; without this the node's RSS stays at its peak (73 → 155 MiB after 2,000
    streams, issue 17).
    """
    gc.collect()
    malloc_trim()


class ConnectionGuard:
    """Counts open HTTP connections per client address and in all.

    :meth:`admit` says whether a new connection may stay (None) or the status to
    refuse it with: 429 when its address has :data:`MAX_CONNECTIONS_PER_CLIENT`
    open, 503 when the node has ``total`` open. Trusted proxies (``exempt``)
    carry many residents' connections and have no per-client cap.

    >>> guard = ConnectionGuard(per_client=2, total=3)
    >>> [guard.admit(a) for a in ("10.0.0.7", "10.0.0.7", "10.0.0.7", "10.0.0.8", "10.0.0.9")]
    [None, None, 429, None, 503]
    >>> guard.release("10.0.0.7"); guard.admit("10.0.0.9") is None
    True
    >>> proxied = ConnectionGuard(per_client=1, total=10, exempt=["10.0.0.0/24"])
    >>> [proxied.admit(a) for a in ("10.0.0.5", "10.0.0.5", "10.0.1.5", "10.0.1.5")]
    [None, None, None, 429]
    """

    def __init__(self, *, per_client: int = MAX_CONNECTIONS_PER_CLIENT,
                 total: int = MAX_CONNECTIONS, exempt: Sequence[str] = ()) -> None:
        self.per_client = per_client
        self.total = total
        self._exempt = [ipaddress.ip_network(e, strict=False) for e in exempt]
        self.open: dict[str, int] = {}
        self.count = 0
        self.peak = 0
        self.refused = 0
        self._trim: asyncio.TimerHandle | None = None

    def _is_exempt(self, host: str) -> bool:
        if not self._exempt:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in net for net in self._exempt)

    def admit(self, host: str) -> int | None:
        """Count a new connection from ``host``; None, or the status to refuse it with."""
        if self.count >= self.total:
            self.refused += 1
            return 503
        held = self.open.get(host, 0)
        if held >= self.per_client and not self._is_exempt(host):
            self.refused += 1
            return 429
        self.open[host] = held + 1
        self.count += 1
        self.peak = max(self.peak, self.count)
        return None

    def trim_soon(self, loop: asyncio.AbstractEventLoop, delay: float = 2.0) -> None:
        """Hand freed memory back ``delay`` seconds after the last of a crowd has gone
        (each call pushes it out: the crowd's objects are freed only as it leaves)."""
        if self._trim is not None:
            self._trim.cancel()

        def trim() -> None:
            self._trim = None
            self.peak = self.count
            loop.run_in_executor(None, _trim_memory)

        self._trim = loop.call_later(delay, trim)

    def release(self, host: str) -> None:
        """An admitted connection from ``host`` has closed."""
        held = self.open.get(host, 0) - 1
        if held > 0:
            self.open[host] = held
        else:
            self.open.pop(host, None)
        self.count = max(0, self.count - 1)


def _plain(status: int, text: str, retry_after: int) -> bytes:
    body = (text + "\n").encode()
    reason = {408: "Request Timeout", 429: "Too Many Requests",
              503: "Service Unavailable"}[status]
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nretry-after: {retry_after}\r\n"
            "cache-control: no-store\r\nconnection: close\r\n\r\n").encode() + body


def guarded_protocol(guard: ConnectionGuard, *, header_timeout: float = HEADER_TIMEOUT_S,
                     body_timeout: float = BODY_TIMEOUT_S) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the node's connection limits (issue 17).

    * a connection over :class:`ConnectionGuard`'s caps gets a plain 429/503 and is
      closed before anything is parsed;
    * a request's headers must arrive within ``header_timeout`` seconds of the
      connection (or of its first byte after a keep-alive pause), its body within
      ``body_timeout`` after them: half-open requests (slowloris) do not hold a
      connection for ever. Answered streams have no timeout.
    """

    class GuardedH11Protocol(H11Protocol):
        _host: str | None = None
        _timer: asyncio.TimerHandle | None = None
        _phase = ""
        _refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            host = self.client[0] if self.client else ""
            refusal = guard.admit(host)
            if refusal is not None:
                self._refused = True
                self._bounce(_plain(refusal, TOO_MANY_CONNECTIONS if refusal == 429
                                    else NODE_FULL, 10 if refusal == 429 else 60))
                return
            self._host = host
            self._arm("headers", header_timeout)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return  # read and dropped until the client closes (or the timer does)
            super().data_received(data)
            self._follow()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._host is not None:
                guard.release(self._host)
                self._host = None
                if guard.peak >= TRIM_AFTER and guard.count <= guard.peak // 10:
                    guard.trim_soon(self.loop)
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._follow()

        # -- deadlines ---------------------------------------------------------------

        def _follow(self) -> None:
            """Arm or end the deadline for the state the client's request is in."""
            if self.transport.is_closing():
                self._disarm()
                return
            state = self.conn.their_state
            if state is h11.IDLE:
                # Part of a next request has come (between requests, with nothing
                # buffered, uvicorn's keep-alive timeout applies instead).
                if self.conn.trailing_data[0] and self._phase != "headers":
                    self._arm("headers", header_timeout)
            elif state is h11.SEND_BODY:
                if self._phase != "body":
                    self._arm("body", body_timeout)
            else:
                self._disarm()

        def _arm(self, phase: str, seconds: float) -> None:
            self._disarm()
            self._phase = phase
            self._timer = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None
            self._phase = ""

        def _expired(self) -> None:
            phase, self._timer, self._phase = self._phase, None, ""
            if self.transport.is_closing():
                return
            if phase == "headers" and self.conn.our_state is h11.IDLE:
                self._bounce(_plain(408, TOO_SLOW, 1))
            else:
                self.transport.close()  # the app sees a disconnect; nothing was stored

        def _bounce(self, answer: bytes) -> None:
            """Answer without reading the request, then close: half-close first, so that
            unread request bytes do not turn the close into a reset that loses the answer."""
            self.transport.write(answer)
            with suppress(OSError, RuntimeError, NotImplementedError):
                self.transport.write_eof()
            self._refused = True
            self.loop.call_later(2.0, self.transport.abort)

    return GuardedH11Protocol


class StreamLimit:
    """ASGI middleware: live streams (:data:`STREAM_PATHS`) capped per client and in all.

    A stream holds a connection and memory for as long as the page is open; one
    client opening thousands must not crowd out everybody else's (issue 17). Over
    the cap: 429 (this device) or 503 (the node), in plain words, as JSON.
    """

    def __init__(self, app: ASGIApp, *, per_client: int = MAX_STREAMS_PER_CLIENT,
                 total: int = MAX_STREAMS) -> None:
        self.app = app
        self.per_client = per_client
        self.total = total
        self.open: dict[str, int] = {}
        self.count = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") not in STREAM_PATHS:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        host = str(client[0]) if client else "unknown"
        if self.count >= self.total:
            await _json(send, 503, "the node serves as many live streams as it can; "
                        "the page still works: reload it in a minute", 60)
            return
        if self.open.get(host, 0) >= self.per_client:
            await _json(send, 429, f"too many live streams from this device (at most "
                        f"{self.per_client}); close a tab and try again", 30)
            return
        self.open[host] = self.open.get(host, 0) + 1
        self.count += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.count -= 1
            left = self.open.get(host, 1) - 1
            if left > 0:
                self.open[host] = left
            else:
                self.open.pop(host, None)


async def _json(send: Send, status: int, detail: str, retry_after: int) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"retry-after", str(retry_after).encode()),
                            (b"cache-control", b"no-store"),
                            # A refused stream gives its connection back at once.
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def uvicorn_config(settings: NodeSettings, *, nofile: int | None = None) -> uvicorn.Config:
    """One worker, one event loop: the store has one writer by design.

    Connections are capped per client and in all (:class:`ConnectionGuard`, sized
    to ``nofile``, the open-file limit), half-open requests time out, and live
    streams are capped (:class:`StreamLimit`). ``X-Forwarded-For`` counts only
    from ``trusted_proxies`` (none by default).
    """
    limit = nofile if nofile is not None else raise_open_file_limit()
    guard = ConnectionGuard(total=max(64, min(MAX_CONNECTIONS, limit - FD_RESERVE)),
                            exempt=settings.trusted_proxies)
    return uvicorn.Config(
        StreamLimit(create_asgi(settings)),
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        access_log=False,  # SD cards: no line per request
        **proxy_options(settings.trusted_proxies),
        timeout_graceful_shutdown=3,  # open SSE streams end after this
        lifespan="on",
        # uvicorn's pure-Python parser (h11), whether or not httptools is installed
        # (central uses it): a portal takes a few requests a minute, and
        # bench/ingest.py measures the node against a bare app on this stack. The
        # subclass adds the connection caps and request deadlines.
        http=guarded_protocol(guard),
    )


#: Tests set this (milliseconds): a callback that keeps the event loop's thread busy
#: longer is logged as a warning, which the tests' stop check refuses (issue "cost
#: flat": nothing blocks the loop; a slow page would delay every alarm behind it).
LOOP_BUDGET_ENV = "BART_LOOP_BUDGET_MS"
#: Start-up (the lifespan: migrations, keys, broker start) runs before the portal
#: serves anyone; the budget counts from when it does (NodeServer.startup).
_budget_armed = False


def arm_loop_budget() -> None:
    """From now on, callbacks over the budget are logged (the node serves)."""
    global _budget_armed
    _budget_armed = True
LOOP_HELD = "event loop held"


def watch_loop_budget() -> None:
    """Log every event-loop callback that used more CPU than ``$BART_LOOP_BUDGET_MS``.

    CPU time of the loop's thread (``time.thread_time``), not wall time: a busy
    machine that preempts the process does not count, a callback that computes
    or reads for long does. Off unless the variable is set (tests and benches).
    """
    import asyncio.events
    import logging
    import os
    import time

    raw = os.environ.get(LOOP_BUDGET_ENV, "")
    if not raw.isdigit() or getattr(asyncio.events.Handle, "_bart_watched", False):
        return
    budget = int(raw) / 1000
    log = logging.getLogger(__name__)
    run = asyncio.events.Handle._run

    def timed_run(self: asyncio.events.Handle) -> None:
        start = time.thread_time()
        try:
            run(self)
        finally:
            used = time.thread_time() - start
            if used > budget and _budget_armed:
                # A task's wake-up names only a future: name the task's coroutine too.
                owner = getattr(getattr(self, "_callback", None), "__self__", None)
                coro = owner.get_coro() if isinstance(owner, asyncio.Task) else None
                log.warning("%s for %.0f ms of CPU (budget %s ms) by %r%s", LOOP_HELD,
                            used * 1000, raw, self, f" in {coro!r}" if coro else "")

    asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]
    asyncio.events.Handle._bart_watched = True  # type: ignore[attr-defined]


def serve(settings: NodeSettings) -> None:
    """Serve until SIGINT/SIGTERM; the lifespan stops Mosquitto and the store."""
    watch_loop_budget()
    NodeServer(uvicorn_config(settings, nofile=raise_open_file_limit()),
               name=settings.name).run()
