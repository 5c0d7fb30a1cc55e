"""An SSE probe: reads a node's or central's event stream on a thread."""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx


class SseReader:
    """Reads ``GET /api/v1/stream`` on a thread; parsed messages land in a queue."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.headers = headers or {}
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        #: Every message received, in order (wait_for consumes ``events`` only).
        self.all: list[dict[str, Any]] = []
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(5.0, read=60.0))
        self._thread = threading.Thread(target=self._run, name="sse-reader", daemon=True)
        self._sock: socket.socket | None = None
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            with self._client.stream("GET", self.url, headers=self.headers) as r:
                assert r.status_code == 200, r.status_code
                stream = r.extensions.get("network_stream")
                self._sock = stream.get_extra_info("socket") if stream is not None else None
                fields: dict[str, str] = {}
                for line in r.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith(":"):
                        if "connected" in line:
                            self.connected.set()
                        continue
                    if line == "":
                        if "data" in fields:
                            msg = {"event": fields.get("event", "message"),
                                   "id": fields.get("id"), "data": json.loads(fields["data"])}
                            self.all.append(msg)
                            self.events.put(msg)
                        fields = {}
                        continue
                    name, _, value = line.partition(":")
                    fields[name] = value[1:] if value.startswith(" ") else value
        except Exception as exc:
            if not self._stop.is_set():
                self.error = exc

    def __enter__(self) -> SseReader:
        self._thread.start()
        assert self.connected.wait(5.0), f"SSE stream did not open ({self.error!r})"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        sock = self._sock
        if sock is not None:  # wake the reader blocked in recv() at once
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5.0)
        self._client.close()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool],
                 timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self.events.get(timeout=left)
            except queue.Empty:
                break
            if predicate(msg):
                return msg
        raise AssertionError(f"no matching SSE message within {timeout}s (error: {self.error!r})")

