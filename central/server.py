"""Run central under uvicorn: the options every central HTTP process uses.

``bart central run`` serves in its own process with ``--workers 1``
(:func:`serve`); with more, each worker is a child process of its own
(central/supervise.py, central/worker.py) with the same :func:`options`.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Any, Final

import uvicorn

from common.heap import malloc_trim, settle_memory
from common.server import Server, proxy_options

#: uvicorn's ticks (0.1 s) between looks at whether a worker served since its last trim (2 s).
TRIM_TICKS: Final = 20


class CentralServer(Server):
    """uvicorn's server, but SIGINT/SIGTERM are the normal way to stop: exit 0
    (:class:`common.server.Server`)."""


class ServingProcess(CentralServer):
    """The server of a process that does nothing else: once it serves, start-up's
    memory is settled (:func:`common.heap.settle_memory`) and ``ready`` is called.

    Afterwards, every :data:`TRIM_TICKS` ticks, a worker that served requests since
    it last looked and has none open hands the heap that requests freed back to the
    system (glibc's ``malloc_trim``, a few ms): what a burst of pages, logins and
    CAP documents left free would otherwise stay in its RSS (issue 15).
    """

    def __init__(self, config: uvicorn.Config, ready: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self._ready = ready
        self._trimmed_at = 0

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            settle_memory()
            if self._ready is not None:
                self._ready()

    async def on_tick(self, counter: int) -> bool:
        if counter % TRIM_TICKS == 0 and self.started and not self.server_state.tasks:
            served = self.server_state.total_requests
            if served != self._trimmed_at:
                self._trimmed_at = served
                malloc_trim()
        return await super().on_tick(counter)


#: The application factory every central HTTP process serves.
APP: Final = "central.asgi:create"
#: uvicorn's C parser: a worker takes batches of ~160 kB back to back, and h11
#: (pure Python) cost its event loop ~4 % of the worker's CPU more per event
#: (bench/README.md). Nodes, a few requests a minute, keep h11 (node/server.py).
HTTP_PARSER = "httptools"
#: Seconds a stopping worker lets open requests finish.
GRACEFUL_S = 5


def options(host: str, port: int, trusted_proxies: Sequence[str] = ()) -> dict[str, Any]:
    """uvicorn's settings for serving :data:`APP` on ``host:port``."""
    return dict(factory=True, host=host, port=port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=GRACEFUL_S, http=HTTP_PARSER,
                **proxy_options(trusted_proxies))


def serve(host: str, port: int, trusted_proxies: Sequence[str] = ()) -> None:
    """Serve :data:`APP` in this process until SIGINT/SIGTERM."""
    ServingProcess(uvicorn.Config(APP, **options(host, port, trusted_proxies))).run()
