"""The node's Prometheus metrics (docs/metrics.md), read from the runtime when scraped.

Served on a listener of its own (``metrics_port``, 127.0.0.1 by default;
common/metrics.py), never on the public portal. Nothing is counted twice and
no request waits for a metric: the runtime keeps a few plain counters
(:class:`EventCounts`, one dict increment per stored event); everything else
is read from the running parts on scrape — on the event loop, in one short
callback, so the collector sees a consistent picture without locks — and the
disk's free space on the scrape's own thread. prometheus_client is imported
only when the listener is on: a node without ``metrics_port`` never loads it.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sync import Event

from .store import COMMIT_BUCKETS

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from broker import MqttClient
    from common.metrics import MetricsServer

    from .config import NodeSettings
    from .hub import Hub
    from .mesh.budget import OriginBudget
    from .mesh.engine import Mesh
    from .store import Store
    from .uplink import Uplink

log = logging.getLogger(__name__)

#: Upper bounds (seconds) of the alarm answer-time histogram's buckets.
ANSWER_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14_400.0)
#: Ack actions that are someone answering (a button's own "repeated" and "hidden" are not).
ANSWERS = frozenset({"seen", "on_my_way", "resolved", "escalated"})
#: Acks after which an alarm no longer waits (hidden by the team: closed, not answered).
CLOSING = ANSWERS | {"hidden"}
#: This node's alarms remembered while they wait for their first answer.
OPEN_ALARMS_MAX = 1024
#: Longest a scrape waits for the event loop.
SNAPSHOT_TIMEOUT_S = 2.0


@dataclass
class EventCounts:
    """Events stored since the node started, by kind and by the path they came in on;
    this node's panic alarms and how long each waited for its first answer.

    Called on the event loop right after each COMMIT (runtime.after_commit and the
    paths for events of central, peers and MQTT): a dict increment, nothing more
    unless the event is an alarm or an answer.
    """

    origin: str
    stored: dict[tuple[str, str], int] = field(default_factory=dict)
    alarms: dict[str, int] = field(default_factory=dict)
    answer_buckets: list[int] = field(default_factory=lambda: [0] * len(ANSWER_BUCKETS))
    answers: dict[str, tuple[int, float]] = field(default_factory=dict)
    _open: OrderedDict[str, int] = field(default_factory=OrderedDict)
    _answer_buckets: dict[str, list[int]] = field(default_factory=dict)

    def count(self, event: Event, via: str) -> None:
        """``event`` was committed; ``via`` is local, central, mesh or mqtt."""
        key = (event.kind, via)
        self.stored[key] = self.stored.get(key, 0) + 1
        if event.kind == "alert" and event.body.get("source") == "button":
            self.alarms[via] = self.alarms.get(via, 0) + 1
            if event.origin == self.origin:
                self._open[event.id] = event.ts
                while len(self._open) > OPEN_ALARMS_MAX:
                    self._open.popitem(last=False)
        elif event.kind == "ack" and event.body.get("action") in CLOSING:
            raised = self._open.pop(str(event.body.get("ref")), None)
            if raised is not None and event.body.get("action") in ANSWERS:
                self._answered("desk" if via == "central" else "team",
                               max(0.0, (event.ts - raised) / 1000))

    def _answered(self, by: str, seconds: float) -> None:
        n, total = self.answers.get(by, (0, 0.0))
        self.answers[by] = (n + 1, total + seconds)
        buckets = self._answer_buckets.setdefault(by, [0] * len(ANSWER_BUCKETS))
        for i, bound in enumerate(ANSWER_BUCKETS):
            if seconds <= bound:
                buckets[i] += 1

    def open_alarms(self) -> int:
        """This node's alarms (of those remembered) with no answer yet."""
        return len(self._open)

    def answer_histogram(self) -> dict[str, tuple[list[int], int, float]]:
        """Per answerer: cumulative bucket counts, count and sum (seconds)."""
        return {by: (list(self._answer_buckets[by]), n, total)
                for by, (n, total) in self.answers.items()}


@dataclass
class Snapshot:
    """What a scrape reads from the runtime, taken on the event loop."""

    stored: dict[tuple[str, str], int]
    alarms: dict[str, int]
    open_alarms: int
    answers: dict[str, tuple[list[int], int, float]]
    live: int
    team: int
    broker_connected: bool
    store_commits: int | None
    store_unflushed: int | None
    store_commit_counts: list[int] | None
    store_commit_seconds: float
    uplink: dict[str, Any] | None
    mesh_peers: int | None
    over_budget: dict[tuple[str, str], int]


class MetricsRuntime(Protocol):
    """What a scrape reads of the running node: its counters and the state of its
    parts, never more (``node.runtime.narrow_views`` has mypy check that the
    runtime provides it)."""

    @property
    def settings(self) -> NodeSettings: ...

    @property
    def event_counts(self) -> EventCounts: ...

    @property
    def store(self) -> Store | None: ...

    @property
    def uplink(self) -> Uplink | None: ...

    @property
    def hub(self) -> Hub: ...

    @property
    def team_hub(self) -> Hub: ...

    @property
    def mqtt(self) -> MqttClient | None: ...

    @property
    def mesh(self) -> Mesh | None: ...

    @property
    def origin_budget(self) -> OriginBudget: ...


def snapshot(runtime: MetricsRuntime) -> Snapshot:
    """Copy the runtime's numbers (call on the event loop: no locks needed)."""
    counts = runtime.event_counts
    store = runtime.store
    uplink = runtime.uplink
    up = None
    if uplink is not None and uplink.state.enabled:
        st = uplink.state
        up = {"backlog": st.backlog, "last_success_ms": st.last_success_ms,
              "watching": st.watching, "batches": st.batches_sent, "events": st.events_sent,
              "failures": st.failures, "carried": st.batches_carried}
    return Snapshot(
        stored=dict(counts.stored), alarms=dict(counts.alarms),
        open_alarms=counts.open_alarms(), answers=counts.answer_histogram(),
        live=runtime.hub.subscriber_count, team=runtime.team_hub.subscriber_count,
        broker_connected=bool(runtime.mqtt is not None and runtime.mqtt.connected),
        store_commits=store.commits if store is not None else None,
        store_unflushed=store.unflushed_commits if store is not None else None,
        store_commit_counts=list(store.commit_counts) if store is not None else None,
        store_commit_seconds=store.commit_seconds if store is not None else 0.0,
        uplink=up,
        mesh_peers=len(runtime.mesh.live_links()) if runtime.mesh is not None else None,
        over_budget=runtime.origin_budget.refused_counts())


class NodeCollector:
    """The node's metrics, read on each scrape (prometheus_client's Collector protocol)."""

    def __init__(self, runtime: MetricsRuntime, loop: asyncio.AbstractEventLoop) -> None:
        self.runtime = runtime
        self.loop = loop

    async def _snapshot(self) -> Snapshot:
        return snapshot(self.runtime)

    def collect(self) -> Iterable[Metric]:
        """Called on the metrics thread by prometheus_client for every scrape."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        snap = asyncio.run_coroutine_threadsafe(self._snapshot(), self.loop).result(
            SNAPSHOT_TIMEOUT_S)
        name = self.runtime.settings.name
        events = CounterMetricFamily(
            "bart_node_events", "Events stored since the node started, by kind and by how "
            "they came (local, central, mesh, mqtt)", labels=["kind", "via"])
        for (kind, via), n in sorted(snap.stored.items()):
            events.add_metric([kind, via], n)
        yield events
        alarms = CounterMetricFamily(
            "bart_node_alarms", "Panic-button alarms stored since the node started",
            labels=["via"])
        for via, n in sorted(snap.alarms.items()):
            alarms.add_metric([via], n)
        yield alarms
        yield GaugeMetricFamily("bart_node_alarms_unanswered",
                                f"Alarms of this node ({name}) raised since it started with "
                                "no answer yet", value=snap.open_alarms)
        answer = HistogramMetricFamily(
            "bart_node_alarm_answer_seconds", "Time from a panic alarm of this node to its "
            "first answer, by who answered (team, desk)", labels=["by"])
        for by, (buckets, n, total) in sorted(snap.answers.items()):
            pairs = [(_bound(b), c) for b, c in zip(ANSWER_BUCKETS, buckets, strict=True)]
            answer.add_metric([by], [*pairs, ("+Inf", n)], total)
        yield answer
        yield GaugeMetricFamily("bart_node_live_subscribers",
                                "Residents' live streams (SSE) open now", value=snap.live)
        yield GaugeMetricFamily("bart_node_team_watching",
                                "Team pages with their live stream open now", value=snap.team)
        yield GaugeMetricFamily("bart_node_broker_connected",
                                "1 when the node is connected to its Mosquitto",
                                value=int(snap.broker_connected))
        if snap.store_commits is not None and snap.store_unflushed is not None:
            yield CounterMetricFamily("bart_node_store_commits",
                                      "Store transactions committed since the node started",
                                      value=snap.store_commits)
            yield CounterMetricFamily("bart_node_store_unflushed_commits",
                                      "Of those, committed without a disk flush (relayed "
                                      "events, already durable work)", value=snap.store_unflushed)
        if snap.store_commit_counts is not None:
            commit = HistogramMetricFamily(
                "bart_node_store_commit_seconds", "Time of each store transaction from BEGIN "
                "to the end of its COMMIT, the disk flush included")
            running, pairs = 0, []
            for bound, n in zip(COMMIT_BUCKETS, snap.store_commit_counts, strict=False):
                running += n
                pairs.append((_bound(bound), running))
            commit.add_metric([], [*pairs, ("+Inf", sum(snap.store_commit_counts))],
                              snap.store_commit_seconds)
            yield commit
        yield from _uplink_metrics(snap.uplink)
        if snap.mesh_peers is not None:
            yield GaugeMetricFamily("bart_node_mesh_peers",
                                    "Mesh peers with a live session now",
                                    value=snap.mesh_peers)
        over = CounterMetricFamily(
            "bart_node_peer_events_over_budget", "Peers' public events refused (not stored, "
            "not passed on) because their origin sent more than its budget, by origin and "
            "how they came (mesh, catchup, mqtt)", labels=["origin", "via"])
        for (origin, via), n in sorted(snap.over_budget.items()):
            over.add_metric([origin, via], n)
        yield over
        free = shutil.disk_usage(self.runtime.settings.data_dir).free
        yield GaugeMetricFamily("bart_node_disk_free_bytes",
                                "Free space on the data directory's file system", value=free)


def _uplink_metrics(up: dict[str, Any] | None) -> Iterable[Metric]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    yield GaugeMetricFamily("bart_node_uplink_enabled", "1 when the node is enrolled and "
                            "its uplink to central runs", value=int(up is not None))
    if up is None:
        return
    yield GaugeMetricFamily("bart_node_uplink_backlog",
                            "Events not yet taken by central", value=up["backlog"])
    if up["last_success_ms"]:
        yield GaugeMetricFamily("bart_node_uplink_last_success_timestamp_seconds",
                                "When central last took a batch (Unix time)",
                                value=up["last_success_ms"] / 1000)
    yield GaugeMetricFamily("bart_node_uplink_failures",
                            "Failed uplink attempts in a row (0 when the last one worked)",
                            value=up["failures"])
    yield GaugeMetricFamily("bart_node_uplink_watching",
                            "Alarms of this node waiting for the desk's answer",
                            value=up["watching"])
    yield CounterMetricFamily("bart_node_uplink_batches",
                              "Batches central took since the node started",
                              value=up["batches"])
    yield CounterMetricFamily("bart_node_uplink_events",
                              "Events sent to central since the node started",
                              value=up["events"])
    yield CounterMetricFamily("bart_node_uplink_carried_batches",
                              "Batches a mesh peer carried to central for this node",
                              value=up["carried"])


def _bound(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def start_metrics(runtime: MetricsRuntime) -> MetricsServer | None:
    """Serve ``/metrics`` when ``metrics_port`` is set; None when off or the port is taken
    (logged: the node runs on without its metrics rather than not at all)."""
    s = runtime.settings
    if not s.metrics_port:
        return None
    # prometheus_client and the HTTP server only when metrics are on (issue 15, memory).
    from common.metrics import MetricsServer

    collector = NodeCollector(runtime, asyncio.get_running_loop())
    try:
        server = MetricsServer(collector, s.metrics_host, s.metrics_port)
    except OSError as exc:
        log.error("metrics not served on %s:%s (%s)", s.metrics_host, s.metrics_port, exc)
        return None
    log.info("metrics on http://%s:%s/metrics", server.host, server.port)
    return server
