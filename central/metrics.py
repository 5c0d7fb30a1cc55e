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
- unanswered alarms per desk: ``idx_alarms_desk_state``;
- who projects: on PostgreSQL the holder of the projector lock, from
  ``pg_locks`` (central/cluster.py), so every central process reports the
  same holder; on SQLite, this central's own projector process.

Two numbers are made where the work is, in the HTTP workers: ingest latency
and refusals by reason (:class:`IngestMetrics`). Workers are processes of
their own, so they count in prometheus_client's multiprocess mode: each
writes its numbers to files in a directory this process makes for its run
(``PROMETHEUS_MULTIPROC_DIR``, set before the workers start) and the scrape
adds them up. A counter of a worker that died keeps counting in the sum.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client.core import Metric
    from sqlalchemy.engine import Engine

    from .cluster import Holder

# The HTTP workers import this module for IngestMetrics (central/ingest.py);
# prometheus_client, SQLAlchemy and the listener are imported where the metrics
# are made and served (1-2 MB of a worker that serves none otherwise).

#: The desks alarms go to (always reported, 0 when none wait).
DESKS = ("police", "municipality")
#: A run's directory for the workers' numbers: ``/tmp/bart-central-metrics-PID-…``.
RUN_DIR_PREFIX = "bart-central-metrics-"
#: prometheus_client's multiprocess mode reads its directory from this variable.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Ingest latency buckets (seconds): a batch of 1,000 events takes ~15 ms on
#: a quiet machine (bench/README.md); seconds mean a struggling database.
INGEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class IngestMetrics:
    """What the HTTP workers measure: ingest latency and refused batches by reason.

    One per process (:func:`ingest_metrics`). Under ``bart central run
    --metrics-port`` the values go to the run's multiprocess directory;
    without it nobody can read them, and :class:`UnreadIngestMetrics` stands in.
    """

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.latency = Histogram(
            "bart_central_ingest_seconds",
            "Time from a sealed batch reaching ingest to its signed answer (accepted batches)",
            buckets=INGEST_BUCKETS, registry=None)
        self.refused = Counter("bart_central_batches_refused",
                               "Batches refused, by the reason sent to the node",
                               ["reason"], registry=None)

    def refusal(self, reason: str) -> None:
        """Count one refused batch; ``reason`` is the refusal's error code."""
        self.refused.labels(reason[:40]).inc()


class _Unobserved:
    def observe(self, _value: float) -> None:
        pass


class UnreadIngestMetrics:
    """:class:`IngestMetrics` of a central that serves no metrics: counts nothing
    (no scrape could read them) and imports no prometheus_client."""

    latency = _Unobserved()

    def refusal(self, reason: str) -> None:
        pass


_ingest: IngestMetrics | UnreadIngestMetrics | None = None
_ingest_lock = threading.Lock()


def ingest_metrics() -> IngestMetrics | UnreadIngestMetrics:
    """This process's :class:`IngestMetrics`, made at the first call.

    prometheus_client picks where values live when it is imported; this
    process may have imported it before ``bart central run`` set
    :data:`MULTIPROC_ENV`, so the choice is made again here, once. Without
    :data:`MULTIPROC_ENV` (no ``--metrics-port``) nobody reads them:
    :class:`UnreadIngestMetrics`.
    """
    global _ingest
    with _ingest_lock:
        if _ingest is None:
            if os.environ.get(MULTIPROC_ENV):
                from prometheus_client import values

                values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
                _ingest = IngestMetrics()
            else:
                _ingest = UnreadIngestMetrics()
        return _ingest


class CentralCollector:
    """Central's metrics, read from the database on each scrape."""

    def __init__(self, database_url: str, workers_dir: Path | None,
                 projectors: Callable[[], Iterable[int]]) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        from . import db

        self.engine: Engine = db.make_engine(database_url, pool_size=1)
        self.workers = (MultiProcessCollector(None, str(workers_dir))  # type: ignore[no-untyped-call]
                        if workers_dir is not None else None)
        self.projectors = projectors

    def close(self) -> None:
        """Let go of the database connection."""
        self.engine.dispose()

    def collect(self) -> Iterable[Metric]:
        """Called on the metrics thread by prometheus_client for every scrape."""
        import sqlalchemy as sa
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from . import db
        from .alarms import TEAM_CLOSED
        from .cluster import lock_holders
        from .health import node_health

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
            holders = lock_holders(conn) if self.engine.dialect.name == "postgresql" else None
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
        yield from self._projector(holders)
        if self.workers is not None:
            yield from self.workers.collect()  # type: ignore[no-untyped-call]

    def _projector(self, holders: list[Holder] | None) -> Iterable[Metric]:
        """Who projects: PostgreSQL's lock holder, or (SQLite) this central's projector."""
        from prometheus_client.core import GaugeMetricFamily

        from .cluster import host_name

        mine = set(self.projectors())
        holder = GaugeMetricFamily("bart_central_projector_holder",
                                   "The process holding the projector lock (1 per holder; "
                                   "PostgreSQL)", labels=["host", "pid"])
        if holders is None:  # SQLite: one machine, the projector needs no lock
            active = here = min(1, len(mine))
            for pid in sorted(mine):
                holder.add_metric([host_name(), str(pid)], 1)
        else:
            active = len(holders)
            here = int(any(h.host == host_name() and h.pid in mine for h in holders))
            for h in holders:
                holder.add_metric([h.host, str(h.pid)], 1)
        yield GaugeMetricFamily("bart_central_projector_active",
                                "Projectors routing reports now, in all central processes on "
                                "this database (1 is right; 0: nothing is triaged)",
                                value=active)
        yield GaugeMetricFamily("bart_central_projector_here",
                                "1 when this central process's projector holds the lock "
                                "and projects; 0 when it stands by", value=here)
        yield holder


def _remove_orphans() -> None:
    """Remove the run directories of centrals that were killed (their pid is gone)."""
    for path in Path(tempfile.gettempdir()).glob(f"{RUN_DIR_PREFIX}*"):
        pid = path.name[len(RUN_DIR_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists() or not path.is_dir():
            continue
        shutil.rmtree(path, ignore_errors=True)


class CentralMetrics:
    """The listener and its collector; :meth:`close` stops both.

    Made by ``bart central run`` before its HTTP workers start: it sets
    :data:`MULTIPROC_ENV` to a fresh directory (unless the environment
    already names one), which the workers inherit and fill.
    """

    def __init__(self, database_url: str, host: str, port: int,
                 projectors: Callable[[], Iterable[int]]) -> None:
        from common.metrics import MetricsServer

        self._own_dir: Path | None = None
        shared = os.environ.get(MULTIPROC_ENV)
        if shared:
            workers_dir = Path(shared)
            workers_dir.mkdir(parents=True, exist_ok=True)
        else:
            _remove_orphans()
            workers_dir = self._own_dir = Path(tempfile.mkdtemp(
                prefix=f"{RUN_DIR_PREFIX}{os.getpid()}-"))
            os.environ[MULTIPROC_ENV] = str(workers_dir)
        try:
            self.collector = CentralCollector(database_url, workers_dir, projectors)
            try:
                self.server = MetricsServer(self.collector, host, port)
            except BaseException:
                self.collector.close()
                raise
        except BaseException:
            self._forget_dir()
            raise

    def _forget_dir(self) -> None:
        if self._own_dir is not None:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None

    def close(self) -> None:
        """Stop serving, close the database connection, remove the run's directory."""
        self.server.close()
        self.collector.close()
        self._forget_dir()
