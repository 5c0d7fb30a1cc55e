"""Central's Prometheus metrics (docs/metrics.md), read from the database when scraped.

Served by the supervising ``bart central run`` process on ``--metrics-port``
(common/metrics.py), apart from the HTTP workers: whatever their number, the
numbers come from the one database they share. Every query is bounded by an
index or by the number of nodes, never by the number of events:

- events held: the sum of ``heads.max_seq`` (one row per origin and stream);
- batches taken: the sum of ``nodes.last_batch_seq``;
- projector lag: the batches with ``pending`` set (their partial index), and
  the age of the oldest of them;
- nodes and silent nodes: the ``nodes`` table (central/health.py's rule);
- unanswered alarms per desk: ``idx_alarms_desk_state``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy.engine import Engine

from common.metrics import MetricsServer

from . import db
from .alarms import TEAM_CLOSED
from .health import node_health

#: The desks alarms go to (always reported, 0 when none wait).
DESKS = ("police", "municipality")


class CentralCollector:
    """Central's metrics, read from the database on each scrape."""

    def __init__(self, database_url: str) -> None:
        self.engine: Engine = db.make_engine(database_url, pool_size=1)

    def close(self) -> None:
        """Let go of the database connection."""
        self.engine.dispose()

    def collect(self) -> Iterable[Metric]:
        """Called on the metrics thread by prometheus_client for every scrape."""
        now = time.time_ns() // 1_000_000
        b, a = db.batches, db.alarms
        with db.reading(self.engine) as conn:
            events = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(db.heads.c.max_seq),
                                                             0))).scalar_one()
            pending, oldest = conn.execute(
                sa.select(sa.func.count(), sa.func.min(b.c.received_at))
                .where(b.c.pending.isnot(None))).one()
            waiting = conn.execute(
                sa.select(a.c.desk, sa.func.count(), sa.func.min(a.c.ts))
                .where(a.c.state == "new", a.c.team_state.not_in(TEAM_CLOSED))
                .group_by(a.c.desk)).all()
        nodes = node_health(self.engine, now)
        yield CounterMetricFamily("bart_central_events",
                                  "Events held by central (sum of every stream's highest seq)",
                                  value=int(events))
        yield CounterMetricFamily("bart_central_batches",
                                  "Batches taken from nodes (sum of their last batch seq)",
                                  value=sum(n.last_batch_seq for n in nodes))
        yield GaugeMetricFamily("bart_central_batches_pending",
                                "Batches whose reports the projector has not routed yet",
                                value=int(pending))
        yield GaugeMetricFamily("bart_central_projector_lag_seconds",
                                "Age of the oldest batch the projector has not finished "
                                "(0 when none waits)",
                                value=max(0.0, (now - int(oldest)) / 1000) if oldest else 0.0)
        live = [n for n in nodes if n.revoked_at is None]
        yield GaugeMetricFamily("bart_central_nodes", "Enrolled nodes, not revoked",
                                value=len(live))
        yield GaugeMetricFamily("bart_central_nodes_silent",
                                "Nodes not heard from for longer than their silent_after_s",
                                value=sum(n.silent for n in live))
        seen = GaugeMetricFamily("bart_central_node_last_seen_timestamp_seconds",
                                 "When central last heard from the node (Unix time)",
                                 labels=["node"])
        backlog = GaugeMetricFamily("bart_central_node_backlog",
                                    "Events the node still had to send, as of its last batch",
                                    labels=["node"])
        for n in live:
            if n.last_seen is not None:
                seen.add_metric([n.name], n.last_seen / 1000)
            if n.backlog is not None:
                backlog.add_metric([n.name], n.backlog)
        yield seen
        yield backlog
        by_desk = {str(desk): (int(count), int(first)) for desk, count, first in waiting}
        count = GaugeMetricFamily("bart_central_alarms_unanswered",
                                  "Alarms no desk member and no team has answered yet",
                                  labels=["desk"])
        age = GaugeMetricFamily("bart_central_alarm_oldest_unanswered_seconds",
                                "Age of the oldest unanswered alarm (0 when none waits)",
                                labels=["desk"])
        for desk in sorted({*DESKS, *by_desk}):
            waits, first = by_desk.get(desk, (0, now))
            count.add_metric([desk], waits)
            age.add_metric([desk], max(0.0, (now - first) / 1000))
        yield count
        yield age


class CentralMetrics:
    """The listener and its collector; :meth:`close` stops both."""

    def __init__(self, database_url: str, host: str, port: int) -> None:
        self.collector = CentralCollector(database_url)
        try:
            self.server = MetricsServer(self.collector, host, port)
        except BaseException:
            self.collector.close()
            raise

    def close(self) -> None:
        """Stop serving and close the database connection."""
        self.server.close()
        self.collector.close()
