"""Run central under uvicorn: one process, or a supervisor with N workers."""

from __future__ import annotations

import signal
import threading
from collections.abc import Generator, Sequence
from contextlib import contextmanager
from typing import Any

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


def proxy_options(trusted_proxies: Sequence[str]) -> dict[str, Any]:
    """uvicorn's proxy settings: ``X-Forwarded-For``/``-Proto`` only from ``trusted_proxies``.

    uvicorn's own default believes them from 127.0.0.1 (``FORWARDED_ALLOW_IPS``), so a
    client behind a local proxy that passes the header on could choose the address the
    login throttle counts (issue 17). Empty: no proxy headers at all.

    >>> proxy_options([])
    {'proxy_headers': False, 'forwarded_allow_ips': []}
    >>> proxy_options(["10.0.0.0/8"])
    {'proxy_headers': True, 'forwarded_allow_ips': ['10.0.0.0/8']}
    """
    return {"proxy_headers": bool(trusted_proxies), "forwarded_allow_ips": list(trusted_proxies)}


def serve(host: str, port: int, workers: int, trusted_proxies: Sequence[str] = ()) -> None:
    """Serve ``central.asgi:create`` until SIGINT/SIGTERM."""
    options: dict[str, Any] = dict(factory=True, host=host, port=port, log_level="warning",
                                   access_log=False, timeout_graceful_shutdown=5,
                                   http=HTTP_PARSER, **proxy_options(trusted_proxies))
    if workers <= 1:
        CentralServer(uvicorn.Config("central.asgi:create", workers=workers, **options)).run()
        return
    uvicorn.run("central.asgi:create", workers=workers, **options)
