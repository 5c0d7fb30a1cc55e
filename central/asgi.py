"""ASGI factory for ``bart central run`` workers (uvicorn ``--factory``).

Each worker process loads central from ``$BART_CENTRAL_DIR`` (set by the CLI)
and opens its own database engine: workers share nothing but the database.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from .app import create_app
from .identity import load_central


def create() -> FastAPI:
    """Build the application of one worker."""
    central = load_central(Path(os.environ["BART_CENTRAL_DIR"]),
                           database_url=os.environ.get("BART_CENTRAL_DATABASE_URL") or None)
    return create_app(central)
