"""The ``/metrics`` listener of node and central: Prometheus text on its own port.

A small HTTP server on a thread of its own, apart from the public portal and
central's workers: it answers ``GET /metrics`` (Prometheus text format, from
``prometheus_client``) and 404 to anything else. The metrics themselves come
from a collector that reads the running parts when scraped (node/metrics.py,
central/metrics.py); nothing here is on a request's path.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


class MetricsServer:
    """``GET /metrics`` for one collector on ``host:port``; :meth:`close` stops it."""

    def __init__(self, collector: Collector, host: str, port: int) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            server_version = "bart-metrics"
            sys_version = ""

            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self._send(404, b"not found: only /metrics is served here\n",
                               "text/plain; charset=utf-8")
                    return
                try:
                    body = generate_latest(registry)
                except Exception as exc:  # a scrape that fails says so, the node goes on
                    log.error("metrics scrape failed: %s", exc)
                    self._send(500, b"metrics failed, see the log\n",
                               "text/plain; charset=utf-8")
                    return
                self._send(200, body, CONTENT_TYPE_LATEST)

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # no line per scrape (SD cards)

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.host, self.port = host, int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        name="metrics-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and free the port (safe to call twice)."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(5)
        self._httpd.server_close()
