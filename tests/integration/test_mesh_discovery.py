"""Discovery on real sockets: loopback mDNS in this process, nothing mocked.

Every Discovery and raw zeroconf responder here uses ``interfaces=["127.0.0.1"]``
(as python-zeroconf's own tests do) and shares UDP port 5353 with whatever else
on this host speaks mDNS on loopback (SO_REUSEPORT). Names carry a random
suffix, so that another test run at the same time cannot collide with this
one; checks look at our own names only.

tests/system/test_mesh_discovery_netns.py runs nodes in network namespaces
(multicast across a real link, dig as an independent client, vanishing
without a goodbye, a name already taken). A name conflict is not tested
here: probes ask for unicast answers (QU) to port 5353, and the kernel hands
a unicast datagram to just one of the sockets sharing that port, not
necessarily the prober's when another process speaks mDNS on loopback too.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from node.mesh.discovery import (
    SERVICE_TYPE,
    Advert,
    Discovery,
    Found,
    service_name,
)

pytestmark = pytest.mark.timeout(60)

LOOPBACK = ["127.0.0.1"]
FP_A, FP_B, FP_X = "QX7K-3MFA-P2RT", "AB2C-DEFG-HJK9", "ZZZZ-2222-MMMM"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 45))


@pytest.fixture(autouse=True)
def no_thread_left() -> Iterator[None]:
    """Inside a running loop zeroconf starts no thread; none may outlive a test."""
    before = set(threading.enumerate())
    yield
    left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not left, left


class Watch:
    """Collects a Discovery's on_change calls; waits for a condition on the peers."""

    def __init__(self) -> None:
        self.peers: dict[str, Found] = {}
        self.history: list[dict[str, Found]] = []
        self._changed = asyncio.Event()

    def __call__(self, peers: dict[str, Found]) -> None:
        self.peers = peers
        self.history.append(peers)
        self._changed.set()

    async def until(self, condition: Callable[[dict[str, Found]], bool],
                    timeout: float = 10) -> float:
        """Seconds it took until ``condition(peers)`` held."""
        started = time.monotonic()
        async with asyncio.timeout(timeout):
            while not condition(self.peers):
                self._changed.clear()
                await self._changed.wait()
        return time.monotonic() - started


def raw_info(name: str, props: dict[str, str | None], port: int = 8884) -> AsyncServiceInfo:
    """An advert of our service type made with plain zeroconf, as any program could."""
    return AsyncServiceInfo(SERVICE_TYPE, service_name(name), port=port, properties=props,
                            server=service_name(name), parsed_addresses=["127.0.0.1"])


def test_two_nodes_find_each_other_and_a_goodbye_removes_one() -> None:
    name_a, name_b = unique("node-a"), unique("node-b")
    watch_a, watch_b = Watch(), Watch()
    a = Discovery(Advert(name_a, "ESC-01", 18884, FP_A), watch_a, interfaces=LOOPBACK,
                  clock=lambda: 1234.5)
    b = Discovery(Advert(name_b, "LDV-02", 28884, FP_B, proto=1), watch_b, interfaces=LOOPBACK)

    async def scenario() -> None:
        started = time.monotonic()
        try:
            await asyncio.gather(a.start(), b.start())
            start_s = time.monotonic() - started
            await asyncio.gather(watch_a.until(lambda p: name_b in p),
                                 watch_b.until(lambda p: name_a in p))
            found_s = time.monotonic() - started
            assert watch_a.peers[name_b] == Found(
                name=name_b, area="LDV-02", port=28884, fp=FP_B, proto=1,
                addresses=("127.0.0.1",), last_seen=1234.5)
            seen_by_b = watch_b.peers[name_a]
            assert (seen_by_b.area, seen_by_b.port, seen_by_b.fp, seen_by_b.proto,
                    seen_by_b.addresses) == ("ESC-01", 18884, FP_A, 1, ("127.0.0.1",))
            assert abs(seen_by_b.last_seen - time.time()) < 30
            assert a.peers == watch_a.peers and name_a not in a.peers  # never itself

            # Measured here: start ~1.7 s (probing, then announcing), found as soon as
            # started, close ~0.25 s, the goodbye noticed at once.
            assert start_s < 5 and found_s < 8
            closed = time.monotonic()
            await b.close()
            assert time.monotonic() - closed < 2
            await watch_a.until(lambda p: name_b not in p, timeout=3)
            assert not b.running and b.peers == {}
        finally:
            await asyncio.gather(a.close(), b.close())

    run(scenario())


def test_malformed_foreign_and_own_adverts_are_ignored_and_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    me = unique("node-me")
    good = unique("node-good")
    bad = {
        unique("node-badport"): "port: 'eighty' is not a decimal port",
        unique("node-nofp"): "fp: missing from the TXT record",
        unique("node-proto2"): "mesh protocol 2 is not spoken here",
        unique("node-other"): "is not the instance name",
        unique("Node_Upper"): "not a node name",
        unique("node-srv"): "differs from SRV port",
    }
    names = list(bad)

    def props(name: str, **changes: str | None) -> dict[str, str | None]:
        base: dict[str, str | None] = {"node": name, "area": "ESC-01", "port": "8884",
                                       "fp": FP_X, "proto": "1"}
        base.update(changes)
        return {k: v for k, v in base.items() if v != "DROP"}

    infos = [
        raw_info(good, props(good)),
        raw_info(names[0], props(names[0], port="eighty")),
        raw_info(names[1], props(names[1], fp="DROP")),
        raw_info(names[2], props(names[2], proto="2")),
        raw_info(names[3], props(names[3], node=unique("node-else"))),
        raw_info(names[4], props(names[4])),
        raw_info(names[5], props(names[5]), port=9999),
    ]
    watch = Watch()
    discovery = Discovery(Advert(me, "ESC-01", 8884, FP_A), watch, interfaces=LOOPBACK)

    def warnings_for(name: str) -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.levelname == "WARNING" and repr(name) in r.getMessage()]

    async def scenario() -> None:
        raw = AsyncZeroconf(interfaces=LOOPBACK)
        try:
            await discovery.start()
            for waiter in await asyncio.gather(*(
                    raw.async_register_service(info, cooperating_responders=True)
                    for info in infos)):
                await waiter
            await watch.until(lambda p: good in p)
            async with asyncio.timeout(10):
                while not all(warnings_for(name) for name in bad):
                    await asyncio.sleep(0.05)
            for name, reason in bad.items():
                assert len(warnings_for(name)) == 1, (name, warnings_for(name))
                assert reason in warnings_for(name)[0]
            assert set(discovery.peers) & ({me, *bad}) == set()
            assert discovery.peers[good].fp == FP_X

            # The bad advert changes but stays bad: logged again, quietly.
            debug_before = len([r for r in caplog.records if r.levelname == "DEBUG"
                                and repr(names[0]) in r.getMessage()])
            infos[1] = raw_info(names[0], props(names[0], port="eighty-one"))
            await (await raw.async_update_service(infos[1]))
            async with asyncio.timeout(10):
                while len([r for r in caplog.records if r.levelname == "DEBUG"
                           and repr(names[0]) in r.getMessage()]) == debug_before:
                    await asyncio.sleep(0.05)
            assert len(warnings_for(names[0])) == 1

            # A good advert that turns bad is dropped, and comes back when it heals.
            infos[0] = raw_info(good, props(good, area="not an area"))
            await (await raw.async_update_service(infos[0]))
            await watch.until(lambda p: good not in p)
            infos[0] = raw_info(good, props(good, area="ESC-09"))
            await (await raw.async_update_service(infos[0]))
            await watch.until(lambda p: good in p and p[good].area == "ESC-09")
            assert discovery.running
        finally:
            await raw.async_close()
            await discovery.close()

    with caplog.at_level(logging.DEBUG, logger="node.mesh.discovery"):
        run(scenario())


def test_start_and_close_are_idempotent_and_it_can_start_again() -> None:
    name_a, name_b = unique("node-a"), unique("node-b")
    watch = Watch()
    a = Discovery(Advert(name_a, "ESC-01", 8884, FP_A), watch, interfaces=LOOPBACK)
    b = Discovery(Advert(name_b, "ESC-01", 8885, FP_B), interfaces=LOOPBACK)

    async def scenario() -> None:
        async with a:
            assert a.running
            await asyncio.gather(a.start(), a.start())  # no second advert, no error
            async with b:
                await watch.until(lambda p: name_b in p)
            assert not b.running
            await watch.until(lambda p: name_b not in p, timeout=5)
            await b.close()
            await b.start()  # a closed Discovery starts again, under the same name
            try:
                await watch.until(lambda p: name_b in p)
            finally:
                await b.close()
        assert not a.running
        await a.close()

    run(scenario())


def test_a_live_peer_stays_while_its_records_expire_and_are_asked_again() -> None:
    # With a TTL of 2 s and a check every 0.3 s, each side's records of the other
    # expire three times in 7 s; every time the check asks again and the peer
    # answers: it must never be reported lost.
    name_a, name_b = unique("node-a"), unique("node-b")
    watch_a, watch_b = Watch(), Watch()
    a = Discovery(Advert(name_a, "ESC-01", 8884, FP_A), watch_a, interfaces=LOOPBACK,
                  ttl=2, check_s=0.3)
    b = Discovery(Advert(name_b, "ESC-01", 8885, FP_B), watch_b, interfaces=LOOPBACK,
                  ttl=2, check_s=0.3)

    async def scenario() -> None:
        try:
            await asyncio.gather(a.start(), b.start())
            await asyncio.gather(watch_a.until(lambda p: name_b in p),
                                 watch_b.until(lambda p: name_a in p))
            first_seen = a.peers[name_b].last_seen
            since_a, since_b = len(watch_a.history), len(watch_b.history)
            await asyncio.sleep(7)
            # (Other tests' nodes on this host's loopback may come and go meanwhile.)
            assert all(name_b in peers for peers in watch_a.history[since_a:])
            assert all(name_a in peers for peers in watch_b.history[since_b:])
            assert name_b in a.peers and name_a in b.peers
            assert a.peers[name_b].last_seen > first_seen + 5  # confirmed by the checks
        finally:
            await asyncio.gather(a.close(), b.close())

    run(scenario())
