"""Run the node's app under uvicorn in this process."""

from __future__ import annotations

import signal
import threading
from collections.abc import Generator
from contextlib import contextmanager

import uvicorn

from .config import NodeSettings
from .portal.app import create_asgi


class NodeServer(uvicorn.Server):
    """uvicorn's server, but SIGINT/SIGTERM are the normal way to stop: exit 0.

    uvicorn re-raises the signal after a graceful shutdown, which turns every
    clean stop (Ctrl-C in the demo, ``systemctl stop``) into a failure exit.
    """

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def uvicorn_config(settings: NodeSettings) -> uvicorn.Config:
    """One worker, one event loop: the store has one writer by design."""
    return uvicorn.Config(
        create_asgi(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        access_log=False,  # SD cards: no line per request
        proxy_headers=False,
        timeout_graceful_shutdown=3,  # open SSE streams end after this
        lifespan="on",
        # uvicorn's pure-Python parser, whether or not httptools is installed
        # (central uses it): a portal takes a few requests a minute, and
        # bench/ingest.py measures the node against a bare app on this stack.
        http="h11",
    )


#: Tests set this (milliseconds): a callback that keeps the event loop's thread busy
#: longer is logged as a warning, which the tests' stop check refuses (issue "cost
#: flat": nothing blocks the loop; a slow page would delay every alarm behind it).
LOOP_BUDGET_ENV = "BART_LOOP_BUDGET_MS"
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
    log = logging.getLogger("bart.node.loop")
    run = asyncio.events.Handle._run

    def timed_run(self: asyncio.events.Handle) -> None:
        start = time.thread_time()
        try:
            run(self)
        finally:
            used = time.thread_time() - start
            if used > budget:
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
    NodeServer(uvicorn_config(settings)).run()
