"""Run central under uvicorn: one process, or a supervisor with N workers."""

from __future__ import annotations

import signal
import threading
from collections.abc import Generator
from contextlib import contextmanager

import uvicorn


class CentralServer(uvicorn.Server):
    """uvicorn's server, but SIGINT/SIGTERM are the normal way to stop: exit 0.

    (uvicorn re-raises the signal after a graceful shutdown, which makes every
    ``systemctl stop`` look like a crash.)
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


#: uvicorn's C parser: a worker takes batches of ~160 kB back to back, and h11
#: (pure Python) cost its event loop ~4 % of the worker's CPU more per event
#: (bench/README.md). Nodes, a few requests a minute, keep h11 (node/server.py).
HTTP_PARSER = "httptools"


def serve(host: str, port: int, workers: int) -> None:
    """Serve ``central.asgi:create`` until SIGINT/SIGTERM."""
    config = uvicorn.Config("central.asgi:create", factory=True, host=host, port=port,
                            workers=workers, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5, http=HTTP_PARSER)
    if workers <= 1:
        CentralServer(config).run()
        return
    uvicorn.run("central.asgi:create", factory=True, host=host, port=port, workers=workers,
                log_level="warning", access_log=False, timeout_graceful_shutdown=5,
                http=HTTP_PARSER)
