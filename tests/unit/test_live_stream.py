"""The live stream's lean handler (node/portal/stream.py) against the node's real app.

``create_asgi`` (the very stack the server runs) is driven over ASGI directly,
as uvicorn drives it: the messages the app sends are collected, and the client
"goes away" with an ``http.disconnect``. The node's runtime is not started: a
stream without ``Last-Event-ID`` needs only its hub. Alerts reaching an open
stream are tested against ``bart node run`` (tests/integration/test_node_api.py,
test_resident_alerts.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from node.config import NodeSettings
from node.hub import Hub
from node.portal.app import create_asgi
from node.portal.stream import LiveStream
from node.setup import init_node

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> NodeSettings:
    data_dir = tmp_path_factory.mktemp("stream") / "node"
    node, _keys = init_node(data_dir, name="n1", area="ESC-01", http_host="127.0.0.1",
                            http_port=8080)
    return node


def scope(query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None,
          path: str = "/api/v1/stream") -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1", "method": "GET", "scheme": "http", "path": path,
            "raw_path": path.encode(), "query_string": query, "root_path": "",
            "headers": [(b"host", b"127.0.0.1:8080"), *(headers or [])],
            "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8080)}


class Client:
    """One request to the app, as uvicorn makes it; ``leave()`` disconnects."""

    def __init__(self, app: Any, request: dict[str, Any]) -> None:
        self.sent: list[dict[str, Any]] = []
        self.got_body = asyncio.Event()
        self._gone = asyncio.Event()
        self._asked = 0
        self.task = asyncio.get_running_loop().create_task(
            app(request, self._receive, self._send))

    async def _receive(self) -> dict[str, Any]:
        self._asked += 1
        if self._asked == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body":
            self.got_body.set()

    def leave(self) -> None:
        self._gone.set()

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.sent[0]["headers"]}

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])


def parts(settings: NodeSettings) -> tuple[Any, Hub]:
    app = create_asgi(settings)
    lean = app
    while not isinstance(lean, LiveStream):
        lean = lean.app  # type: ignore[attr-defined]
    return app, lean.fastapi.state.runtime.hub


def test_a_stream_is_served_by_the_lean_handler_and_freed_when_its_client_goes(
        settings: NodeSettings) -> None:
    async def go() -> None:
        app, hub = parts(settings)
        client = Client(app, scope(b"render=nl"))
        await asyncio.wait_for(client.got_body.wait(), 10)
        assert client.status == 200
        assert client.body == b"retry: 3000\n: connected\n\n"
        assert hub.subscriber_count == 1
        # The same answer the framework's route gives (tests/integration/test_node_api.py).
        h = client.headers
        assert h["content-type"] == "text/event-stream; charset=utf-8"
        assert h["cache-control"] == "no-store" and h["x-accel-buffering"] == "no"
        assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY"
        assert h["referrer-policy"] == "no-referrer"
        assert "'nonce-" in h["content-security-policy"]
        # Gone at once, not at the next keep-alive (15 s): no subscription, no task left.
        client.leave()
        await asyncio.wait_for(client.task, 2)
        assert hub.subscriber_count == 0
        assert not client.task.cancelled()

    asyncio.run(go())


def test_what_the_lean_handler_does_not_take_goes_to_the_framework(
        settings: NodeSettings) -> None:
    async def go() -> None:
        app, hub = parts(settings)
        for query, headers in [(b"render=NL", []), (b"render=nl%0A", []),
                               (b"", [(b"last-event-id", b"x" * 65)])]:
            client = Client(app, scope(query, headers))
            await asyncio.wait_for(client.task, 10)
            assert client.status == 422, (query, headers, client.body)
        # A query the framework's route ignores: served there, the same stream.
        client = Client(app, scope(b"render=nl&_=1"))
        await asyncio.wait_for(client.got_body.wait(), 10)
        assert client.status == 200 and client.body == b"retry: 3000\n: connected\n\n"
        assert client.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert hub.subscriber_count == 1
        client.leave()
        await asyncio.wait_for(client.task, 5)
        assert hub.subscriber_count == 0

    asyncio.run(go())


def test_the_server_stopping_ends_a_stream_with_its_cancellation(
        settings: NodeSettings) -> None:
    async def go() -> None:
        app, hub = parts(settings)
        client = Client(app, scope())
        await asyncio.wait_for(client.got_body.wait(), 10)
        client.task.cancel()  # what uvicorn does after its graceful-shutdown timeout
        with pytest.raises(asyncio.CancelledError):
            await client.task
        assert hub.subscriber_count == 0

    asyncio.run(go())


def test_a_subscription_waits_times_out_and_a_slow_one_is_dropped() -> None:
    from node.hub import Subscription
    from sync import KeyPair
    from sync.event import make_event

    keys = KeyPair.generate()
    alerts = [make_event(keys, origin="n1", stream="public", seq=n, kind="alert",
                         body={"source": "team", "title": f"Test {n}"}, ts=1_800_000_000_000)
              for n in range(1, 5)]

    async def go() -> None:
        hub = Hub(queue_size=2)
        async with hub.subscribe() as sub:
            assert isinstance(sub, Subscription)
            loop = asyncio.get_running_loop()
            began = loop.time()
            assert await sub.next(0.05) is None  # nothing came: None after the timeout
            assert loop.time() - began >= 0.04
            waiting = loop.create_task(sub.next(5))
            await asyncio.sleep(0)
            assert hub.publish(alerts[0]) and await asyncio.wait_for(waiting, 1) is alerts[0]
            for alert in alerts[1:]:  # two fit; the third finds the subscriber too slow
                hub.publish(alert)
            assert sub.dropped and hub.subscriber_count == 0
        assert hub.subscriber_count == 0

    asyncio.run(go())
