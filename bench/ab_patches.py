"""Experimental node runner for A/B runs: ``bart`` with monkeypatches, no product edits.

Use with any benchmark::

    BART_BENCH_RUNNER=bench/ab_patches.py BENCH_PATCH=asciifast,nonce \\
        .venv/bin/python bench/ingest.py

``BENCH_PATCH`` is a comma-separated list of the patches below; empty runs the
node unchanged (the "A" of an A/B). Each patch is a sketch of a proposed fix
(see bench/README.md, "Findings"), not production code; they patch private
names and break when those change.

- ``nonce``: CSP nonces cut from a pooled ``os.urandom(4096)`` (one syscall per
  ~340 requests instead of one per request; each releases the GIL).
- ``receipt``: receipt codes from one ``os.urandom(6)`` instead of six
  ``secrets.choice`` calls (six syscalls, six GIL releases in the writer).
- ``asciifast``: ``clean_text`` returns plain ASCII text that is already clean
  unchanged without the per-character loop (same result; checked on
  tests/data/reports.jsonl and 200k random strings).
- ``nolocal``: the node subscribes with MQTT v5 No Local, so its own alerts do
  not come back to it to be decoded and dropped as already seen.
- ``aiopaho``: paho driven by the asyncio loop (add_reader/add_writer) instead
  of its own thread: no socketpair wake-up per publish, no thread hop per
  received message or PUBACK.
- ``timeout311``: ``Subscription.next`` waits with ``asyncio.timeout`` instead of
  ``asyncio.wait_for`` (no extra Task per event, one loop iteration not three).
- ``nopublish``: no MQTT publish of local events (an upper bound of what a
  cheaper fan-out could gain; not a fix).
- ``fakesubmit``: reports are not stored nor published (HTTP + app cost only).
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from collections.abc import Callable
from typing import Any

PATCHES = frozenset(filter(None, os.environ.get("BENCH_PATCH", "").split(",")))


def _nonce() -> None:
    import node.portal.guards as guards

    class Pool:
        buf = b""

        @classmethod
        def token_urlsafe(cls, n: int) -> str:
            if len(cls.buf) < n:
                cls.buf = os.urandom(4096)
            out, cls.buf = cls.buf[:n], cls.buf[n:]
            return base64.urlsafe_b64encode(out).rstrip(b"=").decode()

    vars(guards)["secrets"] = Pool


def _receipt() -> None:
    import node.reports as reports

    alphabet = reports._ALPHABET

    def new_receipt() -> str:
        chars = "".join(alphabet[b & 31] for b in os.urandom(6))
        return f"{chars[:3]}-{chars[3:]}"

    reports.new_receipt = new_receipt


def _asciifast() -> None:
    import sync.bodies as bodies

    slow: Callable[..., str] = vars(bodies)["clean_text"]

    def clean_text(text: str, *, multiline: bool = True) -> str:
        if (text.isascii() and text == text.strip() and "  " not in text
                and (text.isprintable()
                     or (multiline and text.replace("\n", "").isprintable()
                         and "\n\n\n" not in text and " \n" not in text
                         and "\n " not in text))):
            return text
        return slow(text, multiline=multiline)

    vars(bodies)["clean_text"] = clean_text


def _nolocal() -> None:
    from paho.mqtt.subscribeoptions import SubscribeOptions

    import broker.client as client

    def options(qos: int) -> SubscribeOptions:
        return SubscribeOptions(qos=qos, noLocal=True)

    vars(client)["SubscribeOptions"] = options


def _aiopaho() -> None:
    import paho.mqtt.client as mqtt

    from broker.client import MqttClient
    from broker.errors import PublishError

    async def start(self: Any) -> None:
        if self._started:
            return
        loop = self._loop = asyncio.get_running_loop()
        self._started = True
        paho = self._paho

        async def misc() -> None:
            while paho.loop_misc() == mqtt.MQTT_ERR_SUCCESS:
                await asyncio.sleep(1)

        def opened(client: Any, _u: Any, sock: Any) -> None:
            loop.add_reader(sock, client.loop_read)
            self._misc_task = loop.create_task(misc())

        paho.on_socket_open = opened
        paho.on_socket_close = lambda _c, _u, sock: loop.remove_reader(sock)
        paho.on_socket_register_write = lambda c, _u, s: loop.add_writer(s, c.loop_write)
        paho.on_socket_unregister_write = lambda _c, _u, sock: loop.remove_writer(sock)
        paho.connect(self.host, self.port, keepalive=self._keepalive, clean_start=True)

    async def close(self: Any) -> None:
        if self._closed:
            return
        self._closed, self._connected = True, False
        self._connected_event.clear()
        if self._started:
            self._paho.disconnect()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(PublishError("client closed before acknowledgement"))
        self._pending.clear()

    def to_loop(self: Any, callback: Any, *args: Any) -> None:
        callback(*args)  # paho callbacks now run on the loop already

    MqttClient.start = start  # type: ignore[method-assign]
    MqttClient.close = close  # type: ignore[method-assign]
    MqttClient._to_loop = to_loop  # type: ignore[method-assign]


def _timeout311() -> None:
    from node.hub import Subscription

    async def next_event(self: Any, timeout: float) -> Any:
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            pass
        try:
            async with asyncio.timeout(timeout):
                return await self.queue.get()
        except TimeoutError:
            return None

    Subscription.next = next_event  # type: ignore[method-assign]


def _nopublish() -> None:
    from node.runtime import NodeRuntime

    async def publish_event(self: Any, event: Any) -> None:
        return None

    NodeRuntime._publish_event = publish_event  # type: ignore[method-assign]


def _fakesubmit() -> None:
    from node.reports import Submitted
    from node.runtime import NodeRuntime
    from sync import KeyPair
    from sync.event import make_event

    fake = make_event(KeyPair.generate(), origin="x", stream="private", seq=1, kind="report",
                      ts=1_800_000_000_000,
                      body={"category": "nuisance", "text": "x", "audience": "authorities",
                            "place": {"point": None, "text": ""}, "receipt": "AAA-AAA"})

    async def submit_report(self: Any, clean: Any) -> Submitted:
        return Submitted(fake, None)

    NodeRuntime.submit_report = submit_report  # type: ignore[method-assign]


ALL = {"nonce": _nonce, "receipt": _receipt, "asciifast": _asciifast, "nolocal": _nolocal,
       "aiopaho": _aiopaho, "timeout311": _timeout311, "nopublish": _nopublish,
       "fakesubmit": _fakesubmit}

if __name__ == "__main__":
    if unknown := PATCHES - set(ALL):
        sys.exit(f"unknown BENCH_PATCH entries: {', '.join(sorted(unknown))}")
    for name in sorted(PATCHES):
        ALL[name]()
    from bart.cli import main

    sys.exit(main())
