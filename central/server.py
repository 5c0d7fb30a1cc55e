"""Run central under uvicorn: one process, or a supervisor with N workers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import uvicorn

from common.server import Server, proxy_options


class CentralServer(Server):
    """uvicorn's server, but SIGINT/SIGTERM are the normal way to stop: exit 0
    (:class:`common.server.Server`)."""


#: uvicorn's C parser: a worker takes batches of ~160 kB back to back, and h11
#: (pure Python) cost its event loop ~4 % of the worker's CPU more per event
#: (bench/README.md). Nodes, a few requests a minute, keep h11 (node/server.py).
HTTP_PARSER = "httptools"


def serve(host: str, port: int, workers: int, trusted_proxies: Sequence[str] = ()) -> None:
    """Serve ``central.asgi:create`` until SIGINT/SIGTERM."""
    options: dict[str, Any] = dict(factory=True, host=host, port=port, log_level="warning",
                                   access_log=False, timeout_graceful_shutdown=5,
                                   http=HTTP_PARSER, **proxy_options(trusted_proxies))
    if workers <= 1:
        CentralServer(uvicorn.Config("central.asgi:create", workers=workers, **options)).run()
        return
    uvicorn.run("central.asgi:create", workers=workers, **options)
