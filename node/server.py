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


def serve(settings: NodeSettings) -> None:
    """Serve until SIGINT/SIGTERM; the lifespan stops Mosquitto and the store."""
    NodeServer(uvicorn_config(settings)).run()
