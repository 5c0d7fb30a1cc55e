"""The uplink outlives a full disk (docs/chaos.md, finding 1).

Found by the chaos run: central's answer came while the node's disk was full,
the store refused to record it, and the exception ended the uplink's task for
good — the node never sent another batch, with room on the disk again, while
``/healthz`` said "ok". Here with a real node on a real 64 MiB tmpfs and a
real central: the failed step counts as a failed attempt (``/healthz`` says
so), and once there is room again everything reaches central, exactly once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from central import db
from tests.support.base import wait_until
from tests.support.central import init_central_process
from tests.support.disk import fill_disk
from tests.support.node import configure, init_node, stop_and_check

pytestmark = pytest.mark.timeout(180)

REPORT = {"category": "nuisance", "text": "Harde muziek uit de kelderbox",
          "place": {"point": None, "text": "Hoefkade"}, "audience": "authorities"}
FAST_UPLINK = ("uplink_max_age_s = 0.2\nuplink_backoff_max_s = 1.0\nuplink_poll_s = 2.0\n"
               "min_free_disk_mb = 0\n")


def _reports_at_central(engine: sa.Engine, origin: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(
            sa.select(sa.func.count()).select_from(db.events).where(
                db.events.c.origin == origin, db.events.c.kind == "report")).scalar_one())


def _post(base_url: str, n: int) -> None:
    with httpx.Client(base_url=base_url, timeout=10.0) as client:
        for _ in range(n):
            r = client.post("/api/v1/reports", json=REPORT)
            assert r.status_code == 201, r.text


def _uplink(base_url: str) -> dict[str, Any]:
    health: dict[str, Any] = httpx.get(f"{base_url}/healthz", timeout=5.0).json()
    return dict(health["uplink"])


def test_the_uplink_outlives_a_full_disk(tmp_path: Path, mosquitto_bin: str,
                                         small_disk: Path) -> None:
    central = init_central_process(tmp_path)
    central.start()
    node = init_node(small_disk, mosquitto_bin)
    node.log_path = tmp_path / "node.log"  # the log must not share the full disk
    configure(node, FAST_UPLINK)
    central.enrol(node)
    engine = db.make_engine(f"sqlite:///{central.data_dir / 'central.db'}")
    node.start()
    try:
        _post(node.base_url, 2)
        wait_until(lambda: _reports_at_central(engine, node.name) == 2, 30.0,
                   message="the first reports at central")
        central.stop()
        _post(node.base_url, 3)  # stored on the node; central is away
        filler = fill_disk(small_disk)
        central.start()  # takes the batch; the node cannot record central's answer
        wait_until(lambda: _uplink(node.base_url)["failures"] >= 2, 30.0,
                   message="failed attempts counted while the disk is full")
        up = _uplink(node.base_url)
        assert "full" in up["last_error"], up
        filler.unlink()  # room again
        _post(node.base_url, 2)
        wait_until(lambda: _reports_at_central(engine, node.name) == 7, 30.0,
                   message="every report at central once the disk has room")
        wait_until(lambda: _uplink(node.base_url)["failures"] == 0, 15.0,
                   message="the uplink healthy again")
        assert _uplink(node.base_url)["backlog"] == 0
    finally:
        engine.dispose()
        stop_and_check(node)
        central.stop()
