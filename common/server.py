"""The uvicorn server class node and central both run (issue 16: one copy).

uvicorn re-raises SIGINT/SIGTERM after a graceful shutdown, which turns every
clean stop (Ctrl-C, ``systemctl stop``) into a failure exit. :class:`Server`
takes those signals as the normal way to stop: it shuts down and exits 0.
Imports no Bart package.
"""

from __future__ import annotations

import signal
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


__all__ = ["STOP_SIGNALS", "Server", "proxy_options"]
