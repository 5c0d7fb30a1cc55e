"""Baseline server for bench/ingest.py: parse a report, store nothing, answer 201.

The same pydantic model (``node.portal.api.ReportIn``) and the same uvicorn
settings as ``node.server.uvicorn_config`` (one worker, ``access_log=False``,
log level of ``BART_LOG_LEVEL=WARNING``), so that the ratio node/baseline shows
what validation, signing, the group-committed SQLite write and fan-out cost.

Run: ``.venv/bin/python bench/_baseline_app.py PORT``
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from node.portal.api import ReportIn

app = FastAPI()


@app.get("/healthz")
async def healthz() -> dict[str, Any]:
    """Ready."""
    return {"status": "ok"}


@app.post("/api/v1/reports", status_code=201)
async def post_report(report: ReportIn) -> JSONResponse:
    """Parse and validate the body like the node does, then answer without storing."""
    return JSONResponse({"id": "0", "receipt": "AAA-AAA", "status_url": "/status",
                         "shown_to_neighbours": report.audience != "authorities"},
                        status_code=201)


def main() -> None:
    """Serve on 127.0.0.1:PORT with the node's uvicorn settings."""
    config = uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                            access_log=False, proxy_headers=False,
                            timeout_graceful_shutdown=5, lifespan="on",
                            http="h11")
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
