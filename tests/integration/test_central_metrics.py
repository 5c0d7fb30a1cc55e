"""Central's /metrics from the HTTP workers and the projector (issue 18; docs/metrics.md).

A real ``bart central run --workers 2 --metrics-port N`` on each backend takes
sealed batches over HTTP from an enrolled node (the batch sender of
tests.support.ingest) and refuses bad ones; the scrape, parsed with
prometheus_client's parser, adds up both worker processes: ingest latency
(one observation per accepted batch), refusals by the reason the node was
sent, the projector that runs (SQLite: this central's own; PostgreSQL: the
holder of the advisory lock, from pg_locks), nodes silent.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from central import db
from central.identity import load_central
from sync import KeyPair
from tests.support.base import free_port, wait_until
from tests.support.central import CentralProcess, init_central_process
from tests.support.ingest import batch, enrol, reports
from tests.support.metrics import Samples, scrape, value

BATCH_TYPE = "application/vnd.bart.batch"


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


#: A killed central's metrics directory: pid 2**22 + 1 is above Linux's pid_max. One per
#: pytest process: two xdist workers' centrals each remove every orphan at start, and a
#: shared one made again by the other worker after that would still be there.
ORPHAN = Path(tempfile.gettempdir()) / f"bart-central-metrics-4194305-test-{os.getpid()}"


@pytest.fixture
def central(tmp_path: Path, database_url: str) -> Iterator[tuple[CentralProcess, int]]:
    url = "" if database_url.startswith("sqlite") else database_url
    ORPHAN.mkdir(exist_ok=True)
    (ORPHAN / "counter_4194305.db").write_bytes(b"\0" * 64)
    proc = init_central_process(tmp_path, url, workers=2)
    port = free_port()
    try:
        proc.start(60.0, extra=["--metrics-port", str(port)])
        yield proc, port
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.stop()


def post(url: str, body: bytes, ctype: str = BATCH_TYPE) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/batches", content=body, headers={"content-type": ctype},
                      timeout=30.0)


@pytest.mark.timeout(300)
def test_workers_latency_refusals_projector_and_silent_nodes(
        central: tuple[CentralProcess, int]) -> None:
    proc, port = central
    c = load_central(proc.data_dir)
    engine = db.make_engine(c.database_url)
    try:
        keys = enrol(engine, c, "buurthuis-west")
        enrol(engine, c, "buurthuis-oost")  # never heard from
        before = scrape(port)
        assert value(before, "bart_central_ingest_seconds_count") == 0
        # Accepted batches, spread by the kernel over both workers.
        accepted = 8
        for seq in range(1, accepted + 1):
            events = reports(keys, "buurthuis-west", range(seq * 3 - 2, seq * 3 + 1))
            r = post(proc.url, batch(keys, "buurthuis-west", seq, events, c))
            assert r.status_code == 200, r.text
        # Refused: wrong media type, an unknown node, a forged signature.
        assert post(proc.url, b"x", "application/json").status_code == 415
        stranger = KeyPair.generate()
        assert post(proc.url, batch(stranger, "buurthuis-vreemd", 1,
                                    reports(stranger, "buurthuis-vreemd", range(1, 2)),
                                    c)).status_code == 403
        forged = batch(stranger, "buurthuis-west", 99,
                       reports(stranger, "buurthuis-west", range(100, 101)), c)
        for _ in range(2):
            r = post(proc.url, forged)
            assert r.status_code == 401 and r.json()["error"] == "bad_signature", r.text
        # A node quiet for an hour (its silent_after_s is 900 s).
        with engine.begin() as conn:
            conn.execute(db.nodes.update().where(db.nodes.c.name == "buurthuis-oost")
                         .values(enrolled_at=int(time.time() * 1000) - 3_600_000))

        def settled() -> Samples | None:
            s = scrape(port)
            done = value(s, "bart_central_batches_pending") == 0 and value(
                s, "bart_central_ingest_seconds_count") == accepted
            return s if done else None

        s = wait_until(settled, 30.0, 0.2, "the batches ingested and projected")
        # Latency: one observation per accepted batch, whichever worker took it.
        assert value(s, "bart_central_ingest_seconds_bucket", le="+Inf") == accepted
        assert 0 < value(s, "bart_central_ingest_seconds_sum") < accepted * 10
        assert value(s, "bart_central_batches_refused_total",
                     reason="unsupported_media_type") == 1
        assert value(s, "bart_central_batches_refused_total", reason="unknown_node") == 1
        assert value(s, "bart_central_batches_refused_total", reason="bad_signature") == 2
        assert value(s, "bart_central_nodes") == 2
        assert value(s, "bart_central_nodes_silent") == 1
        assert value(s, "bart_central_projector_lag_seconds") == 0
        # The projector: one runs, this central's, named by host and pid.
        assert value(s, "bart_central_projector_active") == 1
        assert value(s, "bart_central_projector_here") == 1
        holders = [dict(labels) for (name, labels), v in s.items()
                   if name == "bart_central_projector_holder" and v == 1]
        assert len(holders) == 1, holders
        assert proc.proc is not None and parent_of(int(holders[0]["pid"])) == proc.proc.pid
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(db.reports)
                                ).scalar_one() == accepted * 3
        assert not ORPHAN.exists()  # a killed central's directory, removed at start
        # Both workers count into the run's directory; it goes when central stops.
        shared = {multiproc_dir(pid) for pid in children(proc.proc.pid)} - {None}
        assert len(shared) == 1, shared
        folder = Path(str(shared.pop()))
        assert len(list(folder.glob("histogram_*.db"))) >= 2, list(folder.iterdir())
        assert proc.stop() == 0
        assert not folder.exists()
    finally:
        engine.dispose()


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if parent_of(int(stat.parent.name)) == pid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return out


def multiproc_dir(pid: int) -> str | None:
    """PROMETHEUS_MULTIPROC_DIR in the environment process ``pid`` started with."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"PROMETHEUS_MULTIPROC_DIR="):
            return item.split(b"=", 1)[1].decode()
    return None


@pytest.mark.timeout(300)
def test_projector_gone_shows_as_not_running(central: tuple[CentralProcess, int]) -> None:
    """The alert "projector not running anywhere" has a metric that drops to 0."""
    _, port = central
    holder = wait_until(lambda: [dict(labels) for (name, labels), v in scrape(port).items()
                                 if name == "bart_central_projector_holder" and v == 1],
                        30.0, 0.2, "a projector holder")
    os.kill(int(holder[0]["pid"]), signal.SIGKILL)
    # Until its supervisor restarts it (~2 s), nothing projects.
    gone = wait_until(lambda: value(scrape(port), "bart_central_projector_active") == 0 or None,
                      10.0, 0.05, "projector_active 0 after the kill")
    assert gone
    back = wait_until(lambda: value(scrape(port), "bart_central_projector_active") == 1 or None,
                      30.0, 0.2, "a restarted projector")
    assert back
