"""MqttClient against the real Mosquitto: QoS 1 round trips, ACLs, reconnects."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from broker import (
    BrokerProcess,
    BrokerSettings,
    MqttClient,
    MqttUser,
    PublishError,
    TopicError,
    event_topic,
    health_topic,
)
from tests.support.base import free_port

pytestmark = pytest.mark.timeout(30)

T = TypeVar("T")
NODE = MqttUser("node", "node-secret", "service")
SIREN = MqttUser("siren", "siren-secret", "integration")
ALERT = event_topic("n1", "public", "alert")
REPORT = event_topic("n1", "private", "report")


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 25))  # type: ignore[arg-type]


@pytest.fixture
def broker(mosquitto_bin: str, tmp_path: Path) -> Iterator[BrokerProcess]:
    settings = BrokerSettings(state_dir=tmp_path / "mqtt", port=free_port(),
                              users=(NODE, SIREN), max_packet_size=4096)
    with BrokerProcess(settings, mosquitto_bin, restart_min=0.05, restart_max=0.5) as proc:
        yield proc


def client(broker: BrokerProcess, user: MqttUser | None, name: str, **kw: Any) -> MqttClient:
    return MqttClient(host="127.0.0.1", port=broker.port, username=user and user.name,
                      password=user and user.password, client_id=name,
                      reconnect_min=0.05, reconnect_max=0.5, **kw)


class Inbox:
    """Collects (topic, payload) and the thread each handler ran on."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes]] = []
        self.threads: set[int] = set()
        self.changed = asyncio.Event()

    def __call__(self, topic: str, payload: bytes) -> None:
        self.items.append((topic, payload))
        self.threads.add(threading.get_ident())
        self.changed.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        async def until() -> None:
            while len(self.items) < count:
                self.changed.clear()
                await self.changed.wait()
        try:
            await asyncio.wait_for(until(), timeout)
        except TimeoutError:
            return False
        return True


async def started(*clients: MqttClient) -> None:
    for c in clients:
        await c.start()
    for c in clients:
        assert await c.wait_connected(5), c.client_id


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if check():
            return True
        await asyncio.sleep(0.02)
    return check()


def paho_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("paho-mqtt-client")}


def test_qos1_round_trip_handler_on_the_loop(broker: BrokerProcess) -> None:
    before = paho_threads()

    async def main() -> None:
        inbox = Inbox()
        async with client(broker, NODE, "sub") as sub, client(broker, NODE, "pub") as pub:
            await started(sub, pub)
            sub.subscribe("bart/v1/+/public/#", inbox)
            await asyncio.sleep(0.2)  # SUBACK
            await pub.publish(ALERT, b'{"v":1}')
            assert await inbox.wait_for(1)
            assert inbox.items == [(ALERT, b'{"v":1}')]
            assert inbox.threads == {threading.get_ident()}
        assert not sub.connected
        await sub.close()  # idempotent

    run(main())
    assert paho_threads() == before


def test_many_publishes_are_bounded_and_all_acknowledged(broker: BrokerProcess) -> None:
    async def main() -> None:
        inbox = Inbox()
        async with client(broker, NODE, "sub") as sub, \
                client(broker, NODE, "pub", max_inflight=20) as pub:
            await started(sub, pub)
            sub.subscribe("bart/v1/#", inbox)
            await asyncio.sleep(0.2)
            await asyncio.gather(*(pub.publish(ALERT, str(i).encode()) for i in range(1000)))
            assert await inbox.wait_for(1000)
            assert sorted(int(p) for _, p in inbox.items) == list(range(1000))

    run(main())


def test_overlapping_subscriptions_reach_each_handler_once(broker: BrokerProcess) -> None:
    async def main() -> None:
        all_events, public, public_again = Inbox(), Inbox(), Inbox()
        async with client(broker, NODE, "c") as c:
            c.subscribe("bart/v1/#", all_events)
            c.subscribe("bart/v1/+/public/#", public)
            c.subscribe("bart/v1/+/public/#", public_again)
            await started(c)
            await asyncio.sleep(0.2)
            await c.publish(ALERT, b"a")
            await c.publish(REPORT, b"r")
            assert await all_events.wait_for(2) and await public.wait_for(1)
            await asyncio.sleep(0.2)
        assert sorted(all_events.items) == sorted([(ALERT, b"a"), (REPORT, b"r")])
        assert public.items == public_again.items == [(ALERT, b"a")]

    run(main())


def test_integration_user_reads_public_and_health_only(broker: BrokerProcess) -> None:
    async def main() -> None:
        everything, private = Inbox(), Inbox()
        async with client(broker, NODE, "node") as node, client(broker, SIREN, "siren") as siren:
            await started(node, siren)
            await node.publish(health_topic("n1"), b'{"v":1}', retain=True)
            siren.subscribe("bart/v1/#", everything)
            siren.subscribe("bart/v1/+/private/#", private)
            await asyncio.sleep(0.2)
            await node.publish(REPORT, b"private")
            await node.publish(ALERT, b"public")
            assert await everything.wait_for(2)
            await asyncio.sleep(0.3)
        expected = [(ALERT, b"public"), (health_topic("n1"), b'{"v":1}')]
        assert sorted(everything.items) == sorted(expected)
        assert private.items == []

    run(main())


def test_integration_user_cannot_publish(broker: BrokerProcess) -> None:
    async def main() -> None:
        inbox = Inbox()
        async with client(broker, NODE, "node") as node, client(broker, SIREN, "siren") as siren:
            await started(node, siren)
            node.subscribe("bart/v1/#", inbox)
            await asyncio.sleep(0.2)
            for topic in (ALERT, "bart/v1/x/public/alert", health_topic("n1"), "other/topic"):
                with pytest.raises(PublishError, match="refused"):
                    await siren.publish(topic, b"forged")
            assert siren.connected
            await node.publish(ALERT, b"genuine")
            assert await inbox.wait_for(1)
            await asyncio.sleep(0.2)
        assert inbox.items == [(ALERT, b"genuine")]

    run(main())


def test_wrong_password_never_connects(broker: BrokerProcess) -> None:
    async def main() -> None:
        async with client(broker, MqttUser("node", "wrong", "service"), "bad") as bad:
            assert not await bad.wait_connected(1.0)
            with pytest.raises(PublishError, match="not connected"):
                await bad.publish(ALERT, b"x")
        async with client(broker, None, "anon") as anon:
            assert not await anon.wait_connected(0.5)

    run(main())


def test_publish_refusals_before_sending(broker: BrokerProcess) -> None:
    async def main() -> None:
        c = client(broker, NODE, "c")
        with pytest.raises(PublishError):
            await c.publish(ALERT, b"not started")
        async with c:
            await started(c)
            with pytest.raises(TopicError):
                await c.publish("bart/v1/+/public/alert", b"x")
            with pytest.raises(TopicError):
                c.subscribe("bart/#/x", Inbox())
            # Larger than the broker's max_packet_size (4096, announced in CONNACK):
            with pytest.raises(PublishError, match="exceed"):
                await c.publish(ALERT, b"x" * 5000)
            assert c.connected
            await c.publish(ALERT, b"x" * 1000)
        with pytest.raises(PublishError):
            await c.publish(ALERT, b"closed")

    run(main())


def test_no_broker_means_not_connected_and_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        c = MqttClient(host="127.0.0.1", port=free_port(), username=None, password=None,
                       client_id="lonely", reconnect_min=0.05, reconnect_max=0.1)
        await c.start()
        assert not await c.wait_connected(0.8)
        with pytest.raises(PublishError):
            await c.publish(ALERT, b"x")
        await c.close()

    with caplog.at_level(logging.DEBUG, logger="broker.client"):
        run(main())
    attempts = [r for r in caplog.records
                if r.name == "broker.client" and "cannot connect" in r.getMessage()]
    assert len(attempts) >= 3  # it kept trying ...
    assert [r.levelno for r in attempts].count(logging.WARNING) == 1  # ... but warned once


def test_reconnects_and_resubscribes_after_broker_is_killed(broker: BrokerProcess) -> None:
    async def main() -> None:
        inbox = Inbox()
        async with client(broker, NODE, "sub") as sub, client(broker, NODE, "pub") as pub:
            sub.subscribe("bart/v1/+/public/#", inbox)
            await started(sub, pub)
            await asyncio.sleep(0.2)
            await pub.publish(ALERT, b"before")
            assert await inbox.wait_for(1)

            pid = broker.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            assert await eventually(lambda: not sub.connected and not pub.connected, 5)
            assert await eventually(lambda: broker.restarts == 1, 10)
            assert await sub.wait_connected(10) and await pub.wait_connected(10)
            # The subscription was made again by the client itself; retry until SUBACK.
            async def delivered() -> bool:
                await pub.publish(ALERT, b"after")
                return await inbox.wait_for(2, 0.5)
            for _ in range(20):
                if await delivered():
                    break
            assert (ALERT, b"after") in inbox.items

    run(main())
