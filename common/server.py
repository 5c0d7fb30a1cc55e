"""The uvicorn server class node and central both run (issue 16: one copy).

uvicorn re-raises SIGINT/SIGTERM after a graceful shutdown, which turns every
clean stop (Ctrl-C, ``systemctl stop``) into a failure exit. :class:`Server`
takes those signals as the normal way to stop: it shuts down and exits 0.
Imports no Bart package.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Generator, Sequence
from contextlib import contextmanager
from typing import Any

import uvicorn

#: The signals that stop a server normally.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Server(uvicorn.Server):
    """uvicorn's server whose SIGINT/SIGTERM end it with exit 0.

    Outside the main thread (tests, ``bart demo``) it installs no handlers: only
    the main thread may, and the owner stops it with ``should_exit``.
    """

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


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


def import_fastapi_deferred() -> bool:
    """Import FastAPI with the pydantic models it defines built on first use, not now.

    FastAPI defines some fifty models of the OpenAPI document
    (``fastapi.openapi.models``) at import; a server uses them only when someone
    asks for ``/api/openapi.json`` or the API docs page. Built at once they hold
    ~1.5 MiB for as long as the process runs (issue 15). pydantic's
    ``defer_build`` is set on :class:`pydantic.BaseModel`'s configuration only
    while FastAPI is imported, so that the classes FastAPI defines inherit it and
    no others do (the application's own models and FastAPI's per-route models
    are built as before). False when FastAPI was imported already (nothing is
    changed then). Central's workers and the node's portal (node/portal/__init__.py) do so.
    """
    if "fastapi" in sys.modules:
        return False
    from pydantic import BaseModel

    config = BaseModel.model_config
    before = config.get("defer_build")
    config["defer_build"] = True
    try:
        import fastapi  # noqa: F401
    finally:
        if before is None:
            config.pop("defer_build", None)
        else:
            config["defer_build"] = before
    return True


__all__ = ["STOP_SIGNALS", "Server", "import_fastapi_deferred", "proxy_options"]
