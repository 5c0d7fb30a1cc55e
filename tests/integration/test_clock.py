"""A wrong wall clock on a real node (issue 17), made on the node's process only by
an ``LD_PRELOAD`` library that shifts the wall clock (the monotonic clock stays
real; why not libfaketime: see WALLSHIFT_C):

- a node whose clock reads 2023 (a Pi without RTC and NTP) still stores
  reports (before: every report answered 500 while /healthz said "ok"),
  stamps them after what it stored before (no reordering), lets alerts
  expire by the node's time (no expired alert comes back), and says so in
  /healthz and in ``bart node doctor``;
- a clock that jumps back 3 days while the node runs does not move the
  uplink's next attempt (before: 259,199 s away); the node stamps with
  central's signed time and /healthz says the clock is behind;
- the doctor finds a clock behind the newest stored event (real SQLite file).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from node.config import NodeSettings
from node.doctor import Doctor
from sync.event import MIN_TS
from tests.support.base import bart_command, wait_until
from tests.support.central import CentralProcess, init_central_process
from tests.support.node import NodeProcess, configure, init_node, stop_and_check
from tests.support.team import TeamBrowser
from tests.support.wallclock import wallshift

REPORT = {"category": "suspicious", "text": "Iemand probeert deuren", "audience": "both",
          "place": {"text": "bij het hek"}, "called_112": False}
POLL_S = 2.0
DAY_S = 86_400
def start_any(node: NodeProcess, timeout: float = 40.0) -> dict[str, Any]:
    """``bart node run`` until /healthz answers with a connected broker, whatever its
    status (a wrong clock makes it "degraded")."""
    log = node.log_path.open("ab")
    try:
        node.proc = subprocess.Popen(
            [*bart_command(), "node", "run", "--data-dir", str(node.data_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=node.env(), start_new_session=True)
    finally:
        log.close()

    def up() -> dict[str, Any] | None:
        assert node.proc is not None
        if node.proc.poll() is not None:
            raise AssertionError(f"node exited with {node.proc.returncode}:\n{node.log_tail()}")
        health = node.health()
        return health if health["broker"]["connected"] else None

    result: dict[str, Any] = wait_until(up, timeout, 0.1, "node up")
    return result


def own_events(node: NodeProcess) -> list[tuple[int, int]]:
    with sqlite3.connect(f"file:{node.db_path}?mode=ro", uri=True) as conn:
        return [(int(seq), int(ts)) for seq, ts in conn.execute(
            "SELECT seq, ts FROM events WHERE origin = ? AND stream = 'private' ORDER BY seq",
            (node.name,))]


def alert_ids(node: NodeProcess) -> set[str]:
    r = httpx.get(f"{node.base_url}/api/v1/alerts", params={"limit": 200}, timeout=10.0)
    assert r.status_code == 200, r.text
    return {str(a["id"]) for a in r.json()["alerts"]}


@pytest.fixture
def stopped(tmp_path: Path, mosquitto_bin: str) -> Iterator[NodeProcess]:
    node = init_node(tmp_path, mosquitto_bin)
    yield node
    if node.proc is not None and node.proc.poll() is None:
        node.kill()


@pytest.mark.timeout(240)
def test_a_node_whose_clock_reads_2023_stores_reports_in_order(stopped: NodeProcess) -> None:
    node = stopped
    node.start()  # a right clock first: one report, stamped now
    with httpx.Client(base_url=node.base_url, timeout=10.0) as http:
        assert http.post("/api/v1/reports", json=REPORT).status_code == 201
    stop_and_check(node)
    [(_, before)] = own_events(node)

    offset = node.data_dir.parent / "wall-offset"
    back = dt.datetime(2023, 6, 1, 12, tzinfo=dt.UTC).timestamp() - time.time()
    offset.write_text(f"{int(back)}\n")
    node.env_extra = wallshift(node.data_dir.parent, offset)  # the clock reads 2023-06-01
    health = start_any(node)
    clock = health["clock"]
    assert health["status"] == "degraded" and clock["ok"] is False, health
    assert "2023-06-01" in clock["finding"] and "before 2024" in clock["finding"], clock
    assert clock["node_ms"] >= before and clock["source"] == "floor", clock

    with httpx.Client(base_url=node.base_url, timeout=10.0) as http:
        for _ in range(3):
            r = http.post("/api/v1/reports", json=REPORT)
            assert r.status_code == 201, r.text  # was 500: ts before 2024 refused
    events = own_events(node)
    assert [seq for seq, _ in events] == [1, 2, 3, 4]
    stamps = [ts for _, ts in events]
    assert stamps == sorted(stamps) and stamps[1] >= before >= MIN_TS, stamps

    # Expiry by the node's time: an alert that expired an hour ago (real time) stays
    # gone, one that expires in an hour is shown. By the 2023 wall clock both would show.
    now = int(time.time() * 1000)
    expired = node.peer_alert("verlopen", expires=now - 3_600_000)
    live = node.peer_alert("geldig", expires=now + 3_600_000)
    node.publish_events(expired, live)
    wait_until(lambda: live.id in alert_ids(node), 15.0, message="the live alert shown")
    assert expired.id not in alert_ids(node)

    # A team alert's expiry is counted from the node's time too: 4 hours after its stamp,
    # shown to residents (by the 2023 wall clock it would have expired years before).
    member = TeamBrowser(node, "Lid klok")
    try:
        member.first_login()
        r = member.post("/team/alert", title="Inbraakgolf", text="Sluit ramen en deuren.",
                        severity="severe", expires="4")
        assert r.status_code == 303, r.text
    finally:
        member.close()
    alerts = httpx.get(f"{node.base_url}/api/v1/alerts", timeout=10.0).json()["alerts"]
    team = next(a for a in alerts if a["title"] == "Inbraakgolf")
    assert 3.9 * 3_600_000 < team["expires"] - team["ts"] <= 4 * 3_600_000 + 5_000, team
    assert team["ts"] >= stamps[-1]

    # The doctor says so (the running node's verdict), with how to fix it.
    doctor = subprocess.run(
        [*bart_command(), "node", "doctor", "--offline", "--json", "--data-dir",
         str(node.data_dir)], capture_output=True, text=True, env=node.env(), timeout=60,
        check=False)
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["node clock"]["status"] == "fail", checks
    assert "2023-06-01" in checks["node clock"]["detail"]
    assert "sudo date -s" in checks["node clock"]["fix"]
    stop_and_check(node)


@pytest.fixture
def central(tmp_path: Path) -> Iterator[CentralProcess]:
    proc = init_central_process(tmp_path)
    proc.start()
    yield proc
    if proc.proc is not None and proc.proc.poll() is None:
        proc.kill()


@pytest.mark.timeout(240)
def test_a_clock_jumping_back_3_days_does_not_stop_the_uplink(
        stopped: NodeProcess, central: CentralProcess, tmp_path: Path) -> None:
    node = stopped
    configure(node, f"uplink_max_age_s = 0.2\nuplink_backoff_max_s = 1.0\n"
                    f"uplink_poll_s = {POLL_S}\n")
    central.enrol(node)
    offset = tmp_path / "wall-offset"
    offset.write_text("0\n")
    node.env_extra = wallshift(tmp_path, offset)
    node.start()
    wait_until(lambda: node.health()["uplink"]["last_success_ms"], 30.0,
               message="a first exchange with central")

    offset.write_text(f"{-3 * DAY_S}\n")  # the wall clock jumps back 3 days
    jumped = time.monotonic()
    def finding() -> dict[str, Any] | None:
        h = node.health()
        return None if h["clock"]["ok"] else h

    health = wait_until(finding, 15.0, message="the clock finding")
    assert "3 days behind" in health["clock"]["finding"], health["clock"]
    assert health["clock"]["source"] == "central" and health["status"] == "degraded"

    sent = health["uplink"]["batches_sent"]
    waits: list[float] = []

    def polled_twice() -> bool:
        h = node.health()
        waits.append(float(h["uplink"]["next_attempt_in_s"]))
        return bool(int(h["uplink"]["batches_sent"]) >= sent + 2)

    wait_until(polled_twice, 6 * POLL_S + 15.0, 0.1, message="two polls after the jump")
    print(f"\nafter a 3-day jump back: next uplink attempt at most {max(waits):.2f} s away "
          f"(poll {POLL_S} s); two polls within {time.monotonic() - jumped:.1f} s")
    assert max(waits) <= POLL_S, waits  # was 259,199 s

    r = httpx.post(f"{node.base_url}/api/v1/reports", json=REPORT, timeout=10.0)
    assert r.status_code == 201, r.text
    wait_until(lambda: node.health()["uplink"]["backlog"] == 0
               and node.health()["uplink"]["events_sent"] >= 1, 30.0,
               message="the report reached central")
    [*_, (_, stamp)] = own_events(node)
    real = int(time.time() * 1000)
    assert abs(stamp - real) < 60_000, (stamp, real)  # central's time, not 3 days back
    stop_and_check(node)


def test_doctor_finds_a_clock_behind_the_newest_stored_event(stopped: NodeProcess) -> None:
    node = stopped
    node.start()
    with httpx.Client(base_url=node.base_url, timeout=10.0) as http:
        assert http.post("/api/v1/reports", json=REPORT).status_code == 201
    stop_and_check(node)
    [(_, newest)] = own_events(node)
    settings = NodeSettings.load(node.data_dir)
    stamp = dt.datetime.fromtimestamp(newest / 1000, dt.UTC)

    def clock_check(now: dt.datetime) -> dict[str, str]:
        doctor = Doctor(data_dir=node.data_dir, settings=settings, offline=True,
                        clock=lambda: now, not_before=None)
        check = doctor.check_clock()
        return {"status": check.status, "detail": check.detail, "fix": check.fix}

    assert clock_check(stamp + dt.timedelta(seconds=5))["status"] == "ok"
    behind = clock_check(stamp - dt.timedelta(days=3))
    assert behind["status"] == "fail", behind
    assert "before the newest event this node stored" in behind["detail"]
    assert "sudo date -s" in behind["fix"]
