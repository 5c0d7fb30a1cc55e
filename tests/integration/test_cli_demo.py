"""The README's first command: `bart demo` runs central and three nodes, and stops on Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.output import OutputReader

BART = str(Path(sys.executable).parent / "bart")


def _processes_under(path: str, name: str = "") -> list[int]:
    """Live processes whose command line names ``path`` (and ``name``, if given)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if path in cmd and name in cmd and state != "Z":
            found.append(int(pid))
    return found


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except (httpx.HTTPError, sqlite3.Error):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout} s")
        time.sleep(0.1)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BART, "demo", *args], capture_output=True, text=True, timeout=30,
                          env=env)


def _central_has(db: Path, sql: str, *params: Any) -> list[Any]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.mark.timeout(180)
def test_demo_runs_central_and_three_nodes(mosquitto_bin: str, tmp_path: Path) -> None:
    """`bart demo` as a user runs it: central, three nodes, point devices; press a button
    on the second node; cut its uplink, report, see it wait; restore, see it at central;
    Ctrl-C stops everything."""
    data = tmp_path / "demo"
    # Our own address file: another demo on this machine must not answer our commands.
    env = {**os.environ, "BART_DEMO_STATE": str(tmp_path / "demo-state.json")}
    started = time.monotonic()
    proc = subprocess.Popen([BART, "demo", "--data-dir", str(data)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env=env)
    out = OutputReader(proc)
    try:
        text = out.wait_for("Press Ctrl-C to stop.", 90)
        print(f"bart demo ready after {time.monotonic() - started:.1f} s (wall, this test); "
              f"its own figure: {re.search(r'ready in ([0-9.]+) s', text).group(1)} s")
        central = re.search(r"Staff pages\s+(http://127\.0\.0\.1:\d+)/staff/login", text)
        assert central, text
        central_url = central.group(1)
        nodes = re.findall(r"Resident portal\s+(http://127\.0\.0\.1:\d+)/", text)
        assert len(nodes) == 3, text
        staff = re.findall(r"log in as '([^']+)' \((police|municipality|admin)\) with "
                           r"one-time password (\S+)", text)
        assert sorted(role for _, role, _ in staff) == ["admin", "municipality", "police"]
        assert len(re.findall(r"Team page\s+\S+/team\s+log in as 'Demo' with one-time "
                              r"password \S+", text)) == 3, text
        db = data / "central" / "central.db"

        # Everything answers; each /demo page links every node and central.
        assert httpx.get(f"{central_url}/healthz", timeout=5).status_code == 200
        assert httpx.get(f"{central_url}/staff/login", timeout=5).status_code == 200
        names = ["Buurthuis De Kleine Wereld", "Wijkcentrum De Zandloper",
                 "Buurtcentrum De Propeller"]
        for url, name in zip(nodes, names, strict=True):
            home = httpx.get(url + "/", timeout=5)
            assert home.status_code == 200 and name in home.text
            assert len(home.content) < 100_000
            health = httpx.get(url + "/healthz", timeout=5).json()
            assert health["status"] == "ok" and health["uplink"]["enabled"], health
            page = httpx.get(url + "/demo", timeout=5).text
            assert f"{central_url}/staff/login" in page
            for other in nodes:
                assert f'href="{other}/demo"' in page and f'href="{other}/team"' in page
        # The demo seeds resident warnings through the real report path...
        assert len(httpx.get(nodes[0] + "/api/v1/alerts", timeout=5).json()["alerts"]) >= 2
        # ... which reach central over the real uplink; staff accounts exist there.
        _wait(lambda: _central_has(db, "SELECT COUNT(*) FROM reports")[0][0] >= 4, 30,
              "the seeded reports at central")
        assert sorted(r[0] for r in _central_has(db, "SELECT role FROM staff")) == [
            "admin", "municipality", "police"]
        assert len(_central_has(db, "SELECT name FROM nodes WHERE last_seen IS NOT NULL")) == 3
        for node in ("escamp-kleine-wereld", "escamp-zandloper", "ypenburg-propeller"):
            assert _processes_under(str(data / node), "mosquitto"), node
        assert len(_processes_under(str(data), "point run")) == 7

        # A panic button of the second node (on a point device) raises its alarm there.
        second = nodes[1]
        pressed = _cli(env, "press", "kompasplein-gevel")
        assert pressed.returncode == 0, pressed.stderr
        _wait(lambda: [a for a in httpx.get(second + "/api/v1/alerts", timeout=5).json()
                       ["alerts"] if a.get("button") == "kompasplein-gevel"], 30,
              "the button's alarm on the second node")

        # The demo controls refuse a post without the CSRF token, or from another site.
        evil = {"Origin": "http://evil.example"}
        assert httpx.post(second + "/demo/uplink", data={"action": "cut"},
                          timeout=5).status_code == 403
        with httpx.Client(timeout=5) as client:
            token = client.get(second + "/demo/uplink").json()["csrf"]
            assert client.post(second + "/demo/uplink", data={"action": "cut", "csrf": token},
                               headers=evil).status_code == 403
            assert client.post(second + "/demo/press/kompasplein-gevel", data={"csrf": token},
                               headers=evil).status_code == 403
            # A browser posts our pages' forms with "Origin: null" (no-referrer): the
            # token decides. Cut and restore once the way the /demo page does.
            for action in ("cut", "restore"):
                reply = client.post(second + "/demo/uplink", headers={"Origin": "null"},
                                    data={"action": action, "csrf": token})
                assert reply.status_code == 200, reply.text
                assert reply.json()["uplink"]["paused"] == (action == "cut")
        assert not httpx.get(second + "/healthz", timeout=5).json()["uplink"]["paused"]

        # The second node alone: its mesh links cut (else a neighbour could carry its
        # batches to central, docs/mesh.md "Carry") and its uplink cut from the CLI:
        # a report is stored and waits.
        for other in ("1", "3"):
            alone = _cli(env, "link", "2", other, "cut")
            assert alone.returncode == 0, alone.stderr
        cut = _cli(env, "uplink", "escamp-zandloper", "cut")
        assert cut.returncode == 0, cut.stderr
        assert httpx.get(second + "/healthz", timeout=5).json()["uplink"]["paused"]
        report = httpx.post(second + "/api/v1/reports", timeout=5, json={
            "category": "suspicious", "text": "Iemand probeert fietsen open te breken.",
            "place": {"point": "tolweg", "text": ""}})
        assert report.status_code == 201, report.text
        report_id = report.json()["id"]
        _wait(lambda: httpx.get(second + "/healthz", timeout=5).json()["uplink"]["backlog"] > 0,
              10, "a backlog on the cut node")
        page = httpx.get(second + "/demo", timeout=5).text
        backlog = re.search(r'data-testid="uplink-backlog">(\d+)<', page)
        assert backlog and int(backlog.group(1)) > 0, page
        time.sleep(1.5)  # three times the demo's batch age: it would have gone by now
        assert not _central_has(db, "SELECT id FROM events WHERE id = ?", report_id)

        # Restore: what waited arrives at central, and the backlog is gone.
        restored = _cli(env, "uplink", "2", "restore")
        assert restored.returncode == 0, restored.stderr
        _wait(lambda: _central_has(db, "SELECT id FROM events WHERE id = ?", report_id), 20,
              "the report at central after the restore")
        _wait(lambda: httpx.get(second + "/healthz", timeout=5).json()["uplink"]["backlog"]
              == 0, 10, "an empty backlog after the restore")

        # Ctrl-C stops everything: exit 0, no process of the demo left.
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        out.thread.join(5)
        assert proc.returncode == 0, out.text
        assert "Bart demo stopped." in out.text
        assert not (tmp_path / "demo-state.json").exists()
        left = _processes_under(str(data))
        assert not left, f"processes left after Ctrl-C: {left}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in _processes_under(str(data)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def _mesh(url: str) -> dict[str, Any]:
    view: dict[str, Any] = httpx.get(f"{url}/api/v1/mesh", timeout=5).json()
    return view


def _peers(url: str) -> list[str]:
    return [p["name"] for p in _mesh(url)["peers"]]


def _heads(url: str) -> dict[str, int]:
    """Per origin, the gapless head of the public stream this node holds."""
    return {o: s["public"] for o, s in _mesh(url)["vector"].items()}


def _warn_neighbours(url: str, text: str) -> None:
    """A report on node 1 whose warning goes to the neighbours: a public event made there."""
    reply = httpx.post(f"{url}/api/v1/reports", timeout=5, json={
        "category": "suspicious", "text": text, "place": {"point": "klimboom", "text": ""},
        "audience": "neighbours"})
    assert reply.status_code == 201, reply.text


@pytest.mark.timeout(180)
def test_demo_nodes_mesh_and_a_link_cuts_and_heals(mosquitto_bin: str, tmp_path: Path) -> None:
    """The demo's three nodes are each other's peers; `bart demo link 1 2 cut` makes
    node 1's events go to node 2 through node 3; `heal` makes everyone whole again;
    a second run on the same data (every port new) meshes again."""
    data = tmp_path / "demo"
    env = {**os.environ, "BART_DEMO_STATE": str(tmp_path / "demo-state.json")}
    names = ["escamp-kleine-wereld", "escamp-zandloper", "ypenburg-propeller"]

    def start() -> tuple[subprocess.Popen[str], OutputReader, list[str]]:
        proc = subprocess.Popen([BART, "demo", "--data-dir", str(data)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True, env=env)
        out = OutputReader(proc)
        text = out.wait_for("Press Ctrl-C to stop.", 90)
        nodes = re.findall(r"Resident portal\s+(http://127\.0\.0\.1:\d+)/", text)
        assert len(nodes) == 3, text
        # Within seconds of "ready", every node has the other two as peers.
        for url, name in zip(nodes, names, strict=True):
            others = sorted(set(names) - {name})
            _wait(lambda u=url, o=others: _peers(u) == o, 15, f"{name}'s two peers")
        return proc, out, nodes

    def stop(proc: subprocess.Popen[str], out: OutputReader) -> None:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        out.thread.join(5)
        assert proc.returncode == 0, out.text

    proc, out, nodes = start()
    try:
        one, two, three = nodes
        cut = _cli(env, "link", "1", "2", "cut")
        assert cut.returncode == 0, cut.stderr
        assert "cut" in cut.stdout and "bart demo link 1 2 heal" in cut.stdout, cut.stdout
        assert _peers(one) == ["ypenburg-propeller"] and _peers(two) == ["ypenburg-propeller"]
        assert _mesh(one)["blocked"] == ["escamp-zandloper"]
        assert _mesh(two)["blocked"] == ["escamp-kleine-wereld"]
        page = httpx.get(f"{one}/demo", timeout=5).text
        assert 'data-testid="mesh-state-escamp-zandloper">verbroken (demo)<' in page

        # Made on node 1 while cut: node 3 gets it from node 1, node 2 from node 3 (2 hops).
        before = _heads(one)["escamp-kleine-wereld"]
        _warn_neighbours(one, "Iemand rommelt aan de fietsen bij de speeltuin.")
        head = _wait(lambda: _heads(one)["escamp-kleine-wereld"] > before and
                     _heads(one)["escamp-kleine-wereld"], 5, "the warning on node 1")
        for url in (three, two):
            _wait(lambda u=url: _heads(u).get("escamp-kleine-wereld") == head, 10,
                  f"node 1's warning on {url}")
        assert _mesh(three)["reach"]["escamp-kleine-wereld"] == 1
        assert _mesh(two)["reach"]["escamp-kleine-wereld"] == 2
        assert "escamp-kleine-wereld" not in _peers(two)

        # Node 1 alone (its link with node 3 cut too): what it makes waits there...
        assert _cli(env, "link", "escamp-kleine-wereld", "3", "cut").returncode == 0
        assert _peers(one) == []
        _warn_neighbours(one, "Nog iemand bij de fietsen van de speeltuin.")
        alone = _wait(lambda: _heads(one)["escamp-kleine-wereld"] > head and
                      _heads(one)["escamp-kleine-wereld"], 5, "the second warning on node 1")
        time.sleep(1.0)
        assert _heads(two)["escamp-kleine-wereld"] == head
        assert _heads(three)["escamp-kleine-wereld"] == head
        # ... healed, node 2 catches up at once and node 3 through it; all hold the same.
        for other in ("2", "3"):
            healed = _cli(env, "link", "1", other, "heal")
            assert healed.returncode == 0 and "healed" in healed.stdout, healed.stderr
        _wait(lambda: _heads(two)["escamp-kleine-wereld"] == alone, 5, "catch-up on node 2")
        for url, name in zip(nodes, names, strict=True):
            _wait(lambda u=url, n=name: _peers(u) == sorted(set(names) - {n}), 10,
                  f"{name}'s peers after the heal")
        _wait(lambda: _heads(one) == _heads(two) == _heads(three), 15,
              "the same public events on every node")
        assert _mesh(one)["blocked"] == [] and _mesh(two)["blocked"] == []

        # Wrong use is said in words.
        same = _cli(env, "link", "1", "1", "cut")
        assert same.returncode == 1 and "with itself" in same.stderr
        stop(proc, out)

        # Again on the same data: every port is new, the nodes mesh again.
        proc, out, nodes = start()
        stop(proc, out)
        assert not _processes_under(str(data))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in _processes_under(str(data)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def test_init_refuses_existing_node_and_keys_show(tmp_path: Path) -> None:
    args = [BART, "node", "init", "--name", "test-node", "--area", "ESC-01",
            "--data-dir", str(tmp_path)]
    first = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert first.returncode == 0, first.stderr
    fingerprint = re.search(r"fingerprint: (\S+)", first.stdout)
    assert fingerprint
    again = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr
    show = subprocess.run([BART, "keys", "show", "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=30)
    assert show.returncode == 0 and fingerprint.group(1) in show.stdout
    assert oct((tmp_path / "keys" / "signing.key").stat().st_mode)[-3:] == "600"
    assert oct((tmp_path / "secrets" / "mqtt.json").stat().st_mode)[-3:] == "600"
    status = subprocess.run([BART, "status", "--data-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=30)
    assert status.returncode == 3 and "not running" in status.stderr


def test_run_without_init_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run([BART, "node", "run", "--data-dir", str(tmp_path / "none")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "bart node init" in result.stderr


NOT_WORDS = ("Traceback", "Errno", "202", "httpx.", "{")


@pytest.mark.timeout(180)
def test_a_second_demo_is_refused_and_every_demo_command_answers_in_words(
        mosquitto_bin: str, tmp_path: Path) -> None:
    """A second `bart demo` on the machine refuses and names the running one (its pid,
    its URL, how to stop it) and leaves its state file alone; `press`, `uplink` and
    `link` answer in sentences, their mistakes too; after Ctrl-C they say no demo runs."""
    state = tmp_path / "demo-state.json"
    env = {**os.environ, "BART_DEMO_STATE": str(state)}
    data = tmp_path / "demo"
    proc = subprocess.Popen([BART, "demo", "--data-dir", str(data)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env=env)
    out = OutputReader(proc)
    try:
        text = out.wait_for("Press Ctrl-C to stop.", 90)
        first = re.findall(r"Resident portal\s+(http://127\.0\.0\.1:\d+)/", text)[0]
        held = state.read_text()

        # -- a second demo: refused at once, before it starts anything
        started = time.monotonic()
        second = subprocess.run([BART, "demo", "--data-dir", str(tmp_path / "other")],
                                capture_output=True, text=True, timeout=60, env=env)
        took = time.monotonic() - started
        assert second.returncode == 3, second.stdout + second.stderr
        err = second.stderr
        assert f"a demo is running already on this machine (pid {proc.pid}" in err, err
        assert f"{first}/demo" in err and f"kill {proc.pid}" in err and "Ctrl-C" in err, err
        assert str(data) in err, err  # its data directory
        assert "Traceback" not in err and len(err.strip().splitlines()) == 2, err
        assert not (tmp_path / "other").exists() and state.read_text() == held
        assert not _processes_under(str(tmp_path / "other"))
        print(f"second bart demo refused in {took:.2f} s")

        # -- every subcommand answers in words
        pressed = _cli(env, "press", "klimboom-hek")
        assert pressed.returncode == 0, pressed.stderr
        assert pressed.stdout.startswith("Pressed klimboom-hek of escamp-kleine-wereld, held "), (
            pressed.stdout)
        assert f"{first}/team" in pressed.stdout
        for word in NOT_WORDS:
            assert word not in pressed.stdout, pressed.stdout
        for args, words in ((["uplink", "1", "cut"], "Uplink of escamp-kleine-wereld cut"),
                            (["uplink", "1", "restore"], "restored"),
                            (["link", "1", "2", "cut"], "Mesh link between"),
                            (["link", "1", "2", "heal"], "healed")):
            done = _cli(env, *args)
            assert done.returncode == 0 and words in done.stdout, (args, done.stdout,
                                                                   done.stderr)
        # -- and so do their mistakes: one line of what, one of how
        for args, code, words in (
                (["press", "nope"], 1, "no button 'nope' in the running demo"),
                (["uplink", "9", "cut"], 1, "no node '9' in the running demo"),
                (["link", "2", "2", "cut"], 1, "has no mesh link with itself"),
                (["press", "klimboom-hek", "--url", "ftp://x"], 1, "is not an http URL")):
            wrong = _cli(env, *args)
            assert wrong.returncode == code, (args, wrong.stdout, wrong.stderr)
            assert words in wrong.stderr and "fix: " in wrong.stderr, (args, wrong.stderr)
            assert "Traceback" not in wrong.stderr
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
        out.thread.join(5)
    assert proc.returncode == 0, out.text

    # -- after Ctrl-C: no demo, said as such (exit 3); a state file of a demo that died
    # without clearing it (its pid gone) is no demo either
    gone = _cli(env, "press", "klimboom-hek")
    assert gone.returncode == 3 and "no demo is running on this machine" in gone.stderr
    assert "fix: start one: bart demo" in gone.stderr
    state.write_text(held)  # the pid in it has ended
    assert _cli(env, "link", "1", "2", "cut").returncode == 3
    left = _processes_under(str(data))
    assert not left, left
