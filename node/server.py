"""Run the node's app under uvicorn in this process."""

from __future__ import annotations

import uvicorn

from .config import NodeSettings
from .portal.app import create_app


def uvicorn_config(settings: NodeSettings) -> uvicorn.Config:
    """One worker, one event loop: the store has one writer by design."""
    return uvicorn.Config(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        access_log=False,  # SD cards: no line per request
        proxy_headers=False,
        timeout_graceful_shutdown=5,
        lifespan="on",
    )


def serve(settings: NodeSettings) -> None:
    """Serve until SIGINT/SIGTERM; the lifespan stops Mosquitto and the store."""
    uvicorn.Server(uvicorn_config(settings)).run()
