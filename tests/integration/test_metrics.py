"""/metrics of a real node and a real central (issue 18, "Metrics"; docs/metrics.md).

``bart node run`` with ``metrics_port`` set and ``bart central run --metrics-port``,
scraped over HTTP on their own listeners and parsed with prometheus_client's
parser: the metrics exist, they move when reports come in and go up to central,
and the public ports (portal, central's workers) have no /metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from node.metrics import ANSWER_BUCKETS, EventCounts
from sync import KeyPair, make_event
from tests.support.base import free_port, wait_until
from tests.support.central import CentralProcess, init_central_process
from tests.support.metrics import Samples, scrape, value
from tests.support.node import configure, init_node, stop_and_check

REPORT = {"category": "nuisance", "text": "Harde muziek uit de kelderbox",
          "place": {"point": None, "text": "Hoefkade"}, "audience": "both"}
FAST_UPLINK = "uplink_max_age_s = 0.2\nuplink_backoff_max_s = 1.0\nuplink_poll_s = 2.0\n"



@pytest.fixture
def central(tmp_path: Path, database_url: str) -> Iterator[tuple[CentralProcess, int]]:
    url = "" if database_url.startswith("sqlite") else database_url
    proc = init_central_process(tmp_path, url)
    port = free_port()
    proc.start(extra=["--metrics-port", str(port)])
    yield proc, port
    if proc.proc is not None and proc.proc.poll() is None:
        proc.kill()


def test_node_and_central_metrics_move_on_their_own_listeners(
        tmp_path: Path, mosquitto_bin: str, central: tuple[CentralProcess, int]) -> None:
    hq, hq_metrics = central
    node = init_node(tmp_path, mosquitto_bin)
    node_metrics = free_port()
    configure(node, f"{FAST_UPLINK}metrics_port = {node_metrics}\n")
    hq.enrol(node)
    try:
        node.start()
        before = scrape(node_metrics)
        for name in ("bart_node_live_subscribers", "bart_node_team_watching",
                     "bart_node_disk_free_bytes", "bart_node_broker_connected",
                     "bart_node_store_commits_total", "bart_node_uplink_enabled",
                     "bart_node_uplink_backlog", "bart_node_uplink_watching",
                     "bart_node_mesh_peers", "bart_node_alarms_unanswered"):
            assert any(n == name for n, _ in before), name
        assert value(before, "bart_node_disk_free_bytes") > 0
        assert value(before, "bart_node_uplink_enabled") == 1
        assert value(before, "bart_node_broker_connected") == 1
        hq_before = scrape(hq_metrics)
        assert value(hq_before, "bart_central_nodes") == 1
        assert value(hq_before, "bart_central_nodes_silent") == 0
        assert value(hq_before, "bart_central_alarms_unanswered", desk="police") == 0
        assert value(hq_before, "bart_central_batches_pending") == 0

        with httpx.Client(base_url=node.base_url, timeout=10.0) as client:
            for _ in range(3):
                assert client.post("/api/v1/reports", json=REPORT).status_code == 201
            # The public portal and central's public port have no /metrics.
            assert client.get("/metrics").status_code == 404
        assert httpx.get(f"{hq.url}/metrics", timeout=5.0).status_code == 404
        assert httpx.get(f"http://127.0.0.1:{node_metrics}/", timeout=5.0).status_code == 404

        def moved() -> Samples | None:
            s = scrape(node_metrics)
            ok = (value(s, "bart_node_events_total", kind="report", via="local") == 3
                  and value(s, "bart_node_events_total", kind="alert", via="local") == 3
                  and value(s, "bart_node_uplink_backlog") == 0
                  and value(s, "bart_node_uplink_events_total") >= 6)
            return s if ok else None

        try:
            after = wait_until(moved, 20.0, 0.2, "node metrics moved")
        except AssertionError:
            raise AssertionError({k: v for k, v in scrape(node_metrics).items()
                                  if "events" in k[0] or "uplink" in k[0]}) from None
        assert value(after, "bart_node_store_commits_total") > value(
            before, "bart_node_store_commits_total")
        # Commit latency: every commit is in the histogram, with a plausible time.
        commits = value(after, "bart_node_store_commits_total")
        # (read while the writer may be between its two counts: one apart at most)
        timed = value(after, "bart_node_store_commit_seconds_count")
        assert commits > 0 and abs(timed - commits) <= 1, (timed, commits)
        assert 0 < value(after, "bart_node_store_commit_seconds_sum") < timed * 1.0
        assert value(after, "bart_node_store_commit_seconds_bucket", le="+Inf") == timed
        assert value(after, "bart_node_uplink_last_success_timestamp_seconds") > 1.7e9

        def hq_moved() -> Samples | None:
            s = scrape(hq_metrics)
            return s if value(s, "bart_central_events_total") >= value(
                hq_before, "bart_central_events_total") + 6 else None

        hq_after = wait_until(hq_moved, 20.0, 0.2, "central metrics moved")
        assert value(hq_after, "bart_central_batches_total") >= max(
            1, value(hq_before, "bart_central_batches_total"))
        seen = value(hq_after, "bart_central_node_last_seen_timestamp_seconds", node=node.name)
        assert seen > 1.7e9
        stop_and_check(node)
    finally:
        if node.proc is not None and node.proc.poll() is None:
            node.kill()
    assert hq.stop() == 0
    with pytest.raises(httpx.TransportError):  # the listener went with central
        httpx.get(f"http://127.0.0.1:{hq_metrics}/metrics", timeout=2.0)


T0 = 1_800_000_000_000


def test_alarm_answer_times_are_counted_once_per_alarm() -> None:
    keys = KeyPair.generate()
    counts = EventCounts("n1")
    alarm = make_event(keys, origin="n1", stream="public", seq=1, kind="alert", ts=T0,
                       body={"source": "button", "category": "emergency",
                             "severity": "extreme", "title": "", "text": "",
                             "place": {"point": None, "text": ""}, "areas": ["ESC-01"],
                             "button": "b1"})
    counts.count(alarm, "local")
    assert counts.open_alarms() == 1 and counts.alarms == {"local": 1}
    for seq, ts in ((2, T0 + 42_000), (3, T0 + 100_000)):  # the second answer does not count
        ack = make_event(keys, origin="central-x", stream="public", seq=seq, kind="ack",
                         ts=ts, body={"ref": alarm.id, "action": "seen", "by": "desk"})
        counts.count(ack, "central")
    buckets, n, total = counts.answer_histogram()["desk"]
    assert (n, total, counts.open_alarms()) == (1, 42.0, 0)
    assert buckets == [int(b >= 42.0) for b in ANSWER_BUCKETS]
    # Hidden by the team: closed, not answered (no time); a peer's alarm is not ours.
    for seq, origin in ((4, "n1"), (1, "peer-1")):
        counts.count(make_event(keys, origin=origin, stream="public", seq=seq, kind="alert",
                                ts=T0, body={**alarm.body}), "local" if origin == "n1" else "mesh")
    assert counts.open_alarms() == 1 and counts.alarms == {"local": 2, "mesh": 1}
    hidden = make_event(keys, origin="n1", stream="public", seq=5, kind="ack", ts=T0 + 1,
                        body={"ref": next(iter(counts._open)), "action": "hidden", "by": "x"})
    counts.count(hidden, "local")
    assert counts.open_alarms() == 0 and "team" not in counts.answer_histogram()
