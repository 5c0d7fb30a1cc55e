"""Wired panic buttons on a real node: mock pin held → alarm stored → shown → light."""

from __future__ import annotations

import shutil
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from node.alarms import button_alarm_body
from node.buttons import arm_task, armed_buttons, disarm_task, press_task, recover_armed
from node.store import Store
from sync import Event, KeyPair
from tests.support.node import configure, init_node, stop_and_check

BART = str(Path(sys.executable).parent / "bart")

BUTTONS_TOML = """
[[meeting_points]]
id = "klimboom"
name = "Speeltuin De Klimboom"

[[meeting_points.panic_buttons]]
id = "klimboom-hek"
device = "hub"
button_pin = 17
led_pin = 23
"""


@pytest.fixture
def button_node(tmp_path: Path, mosquitto_bin: str) -> Iterator[str]:
    node = init_node(tmp_path, mosquitto_bin)
    configure(node, 'gpio = "mock"\ndemo = true\nhold_s = 0.5\npoint_port = 0', BUTTONS_TOML)
    node.start()
    try:
        yield node.base_url
    finally:
        stop_and_check(node)


def _wait(predicate, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


@pytest.mark.timeout(60)
def test_hold_raises_one_alarm_and_light_shows_stored(button_node: str) -> None:
    buttons = httpx.get(button_node + "/demo/buttons").json()["buttons"]
    assert buttons == [{"id": "klimboom-hek", "meeting_point": "klimboom", "device": "hub",
                        "light": "idle"}]
    assert httpx.post(button_node + "/demo/press/klimboom-hek").status_code == 202

    def alarms() -> list[dict]:
        return [a for a in httpx.get(button_node + "/api/v1/alerts").json()["alerts"]
                if a["source"] == "button"]

    found = _wait(alarms)
    assert len(found) == 1
    alarm = found[0]
    assert alarm["button"] == "klimboom-hek" and alarm["place_name"] == "Speeltuin De Klimboom"
    assert alarm["severity"] == "extreme" and alarm["verified"] is True
    light = _wait(lambda: httpx.get(button_node + "/demo/buttons").json()["buttons"][0]["light"]
                  == "stored")
    assert light
    # A second hold within the cool-down repeats the alarm; it raises no new one.
    assert httpx.post(button_node + "/demo/press/klimboom-hek").status_code == 202
    time.sleep(1.2)
    assert len(alarms()) == 1
    assert httpx.post(button_node + "/demo/press/no-such-button").status_code == 404


@contextmanager
def _node_in_process(tmp_path: Path, hold_s: float = 0.5) -> Iterator[tuple[Any, Store, Any]]:
    """An in-process node (real Mosquitto, store, HTTP server) with one wired
    button: (button service, store, mock pin 17). Its service's prepared alarm
    is visible, so a test can follow it from press to store."""
    import threading

    from node.server import NodeServer, uvicorn_config
    from node.setup import init_node as setup_node
    from tests.support.base import free_port

    settings, _ = setup_node(
        tmp_path / "node", name="hold-node", area="ESC-01", http_port=free_port(),
        mqtt_port=free_port(), gpio="mock", hold_s=hold_s, cooldown_s=0.0, point_port=0,
        meeting_points=[{"id": "klimboom", "name": "Speeltuin", "panic_buttons": [
            {"id": "klimboom-hek", "device": "hub", "button_pin": 17, "led_pin": 23}]}])
    server = NodeServer(uvicorn_config(settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert _wait(lambda: server.started, 20)
        app = server.config.loaded_app
        while not hasattr(app, "state"):
            app = app.app
        runtime = app.state.runtime
        yield runtime.buttons, runtime.store, runtime.buttons.factory.pin(17)
    finally:
        server.should_exit = True
        thread.join(20)
    assert not thread.is_alive()


def _alarms(store: Store) -> list[Event]:
    return [e for e in store.recent("alert") if e.body.get("button") == "klimboom-hek"]


@pytest.mark.timeout(60)
def test_the_alarm_is_signed_during_the_hold_and_stored_at_its_deadline(
        tmp_path: Path, mosquitto_bin: str) -> None:
    with _node_in_process(tmp_path) as (service, store, pin):
        def armed() -> list[tuple[str, str]]:
            return _armed(store.path)

        # A press released before hold_s: armed (on disk) during the hold,
        # disarmed at the release, never stored as an event.
        pin.drive_low()
        first = _wait(armed)
        assert first and first[0][0] == "klimboom-hek"
        pin.drive_high()
        assert _wait(lambda: armed() == [])
        time.sleep(0.8)
        assert _alarms(store) == []
        # A hold: the alarm armed at the start of the hold is the one stored,
        # in a COMMIT that does not wait for the disk (the armed row is on it).
        unflushed = store.unflushed_commits
        pin.drive_low()
        again = _wait(lambda: [row for row in armed() if row != first[0]])
        assert again
        stored = _wait(lambda: _alarms(store))
        pin.drive_high()
        assert [e.id for e in stored] == [again[0][1]]
        assert stored[0].verify(store.keys.signing_public) is None
        assert armed() == [] and "klimboom-hek" not in service._prepared
        assert store.unflushed_commits == unflushed + 1


@pytest.mark.timeout(60)
def test_an_alarm_whose_arming_is_still_queued_at_the_deadline_is_stored_once_as_signed(
        tmp_path: Path, mosquitto_bin: str) -> None:
    # The writer is kept busy from before the press until after the deadline:
    # the arming and the alarm reach it together. The alarm signed during the
    # hold is the one stored, once, and no armed row is left behind. (That
    # such a COMMIT is flushed is the store's rule for any group holding
    # uncovered work: tests/integration/test_store.py.)
    import threading

    with _node_in_process(tmp_path, hold_s=2.0) as (service, store, pin):
        release, busy = threading.Event(), threading.Event()

        def hold_the_writer(_tx: Any) -> None:
            busy.set()
            release.wait(20)

        blocker = store.submit(hold_the_writer)
        assert busy.wait(5)
        pin.drive_low()
        prepared = _wait(lambda: service._prepared.get("klimboom-hek"))
        assert prepared, "the press settles and its alarm is made and signed"
        made = prepared[1]
        assert not prepared[2].done()  # the arming waits behind the busy writer
        assert _wait(lambda: "klimboom-hek" not in service._prepared, 5)  # the deadline
        assert _alarms(store) == [] and _armed(store.path) == []
        release.set()
        blocker.result(10)
        stored = _wait(lambda: _alarms(store))
        pin.drive_high()
        assert [e.id for e in stored] == [made.id]  # the very alarm signed during the hold
        assert stored[0].verify(store.keys.signing_public) is None
        assert _armed(store.path) == []
        time.sleep(0.3)
        assert len(_alarms(store)) == 1


@pytest.mark.timeout(60)
def test_an_alarm_whose_arming_failed_is_stored_with_a_flush(
        tmp_path: Path, mosquitto_bin: str) -> None:
    # The arming's INSERT is refused by the database (a trigger stands in for
    # a full or failing disk): nothing covers the alarm, so the COMMIT that
    # stores it at the deadline must wait for the disk, alone in its group.
    with _node_in_process(tmp_path) as (service, store, pin):
        with closing(sqlite3.connect(store.path)) as conn:
            conn.execute("CREATE TRIGGER refuse_arming BEFORE INSERT ON armed_alarms "
                         "BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
            conn.commit()
        unflushed = store.unflushed_commits
        pin.drive_low()
        prepared = _wait(lambda: service._prepared.get("klimboom-hek"))
        assert prepared
        made = prepared[1]
        assert _wait(lambda: prepared[2].done())
        assert prepared[2].exception() is not None  # the arming failed
        stored = _wait(lambda: _alarms(store))
        pin.drive_high()
        assert [e.id for e in stored] == [made.id]
        assert store.unflushed_commits == unflushed  # no flush skipped


def _armed(db: Path) -> list[tuple[str, str]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT button, id FROM armed_alarms").fetchall()


def _button_alarms(db: Path) -> list[str]:
    with closing(sqlite3.connect(db)) as conn:
        return [row[0] for row in conn.execute(
            "SELECT id FROM events WHERE kind = 'alert' "
            "AND json_extract(body, '$.button') = 'klimboom-hek' ORDER BY seq")]


BODY = button_alarm_body("klimboom-hek", "klimboom", "ESC-01")


def _arm(store: Store, button: str = "klimboom-hek", body: dict[str, Any] = BODY) -> Event:
    """What a settled press does: the alarm made, signed and armed on disk."""
    armed = store.prepare_local("alert", "public", body, store.clock_ms())
    store.write_sync(arm_task(button, armed))
    return armed


def _recover_all(store: Store) -> list[Event | None]:
    return [store.write_sync(recover_armed(b)) for b in store.write_sync(armed_buttons)]


def test_armed_alarms_left_at_start_up_are_stored_as_armed_or_made_anew(
        tmp_path: Path) -> None:
    keys, db = KeyPair.generate(), tmp_path / "node.db"
    with Store(db, origin="n1", keys=keys) as store:
        armed = _arm(store)
        other = _arm(store, "poort")
        store.write_sync(disarm_task("poort", other.id))  # released early
    # The node stops without storing it (a power cut took the COMMIT):
    with Store(db, origin="n1", keys=keys) as store:
        assert _recover_all(store) == [armed]  # the very event, seq 1
        assert store.get_event(armed.id) == armed and _armed(db) == []
        assert _recover_all(store) == []
        # Armed with a seq another event has taken since: never stored, so made anew.
        late = _arm(store)
        store.write_sync(lambda tx: tx.append_local("alert", "public", BODY))
        [made] = _recover_all(store)
        assert made is not None and made.id != late.id and made.seq == 3
        assert made.body == late.body and made.verify(keys.signing_public) is None
        assert store.count_events() == 3 and _armed(db) == []


def test_a_lost_unflushed_commit_brings_back_the_very_alarm_that_was_shown(
        tmp_path: Path) -> None:
    # What a power cut does to the COMMIT that stored an armed alarm without a
    # flush: the WAL frames written after the last flush are gone. Here they
    # are cut off a copy of the files; the copy then starts as a node would.
    keys, db = KeyPair.generate(), tmp_path / "node.db"
    with Store(db, origin="n1", keys=keys) as store:
        armed = _arm(store)
        flushed = Path(f"{db}-wal").stat().st_size
        task = press_task("klimboom-hek", "klimboom", "alarm", "ESC-01", None, armed)
        shown = store.submit(task, already_durable=True).result(10)
        assert shown is armed and store.unflushed_commits == 1
        assert Path(f"{db}-wal").stat().st_size > flushed
        cut = tmp_path / "cut"
        cut.mkdir()
        shutil.copy(db, cut / "node.db")
        with open(f"{db}-wal", "rb") as wal:
            (cut / "node.db-wal").write_bytes(wal.read(flushed))
    with Store(cut / "node.db", origin="n1", keys=keys) as store:
        assert store.count_events() == 0 and _armed(cut / "node.db") == [
            ("klimboom-hek", armed.id)]
        assert _recover_all(store) == [armed]  # same id, same seq: what peers saw
    with Store(db, origin="n1", keys=keys) as store:  # no cut: stored once, nothing armed
        assert _recover_all(store) == [] and store.get_event(armed.id) == armed


def test_two_alarms_armed_with_one_seq_are_stored_with_a_flush(tmp_path: Path) -> None:
    keys = KeyPair.generate()
    with Store(tmp_path / "node.db", origin="n1", keys=keys) as store:
        first = _arm(store)
        second = _arm(store, "poort", {**BODY, "button": "poort"})
        assert first.seq == second.seq == 1  # two buttons held at once
        task = press_task("klimboom-hek", "klimboom", "alarm", "ESC-01", None, first)
        assert store.submit(task, already_durable=True).result(10) is first
        # Were that COMMIT lost, recovery could not tell which seq-1 alarm was shown.
        assert store.unflushed_commits == 0 and _armed(tmp_path / "node.db") == [
            ("poort", second.id)]


@pytest.mark.timeout(90)
def test_a_power_cut_during_a_hold_raises_its_alarm_when_the_node_is_back(
        tmp_path: Path, mosquitto_bin: str) -> None:
    node = init_node(tmp_path, mosquitto_bin)
    configure(node, 'gpio = "mock"\ndemo = true\nhold_s = 3.0\npoint_port = 0',
              BUTTONS_TOML)
    node.start()
    try:
        press = node.base_url + "/demo/press/klimboom-hek"
        # A short press: armed, disarmed at the release; a power cut after it
        # raises nothing.
        assert httpx.post(press, params={"hold_s": 0.5}).status_code == 202
        assert _wait(lambda: _armed(node.db_path))
        assert _wait(lambda: _armed(node.db_path) == [])
        node.kill()
        node.start()
        time.sleep(0.5)
        assert _button_alarms(node.db_path) == [] and _armed(node.db_path) == []
        # A clean stop during a hold is no power cut: the hold did not complete.
        assert httpx.post(press).status_code == 202
        assert _wait(lambda: _armed(node.db_path))
        assert node.stop() == 0
        assert _armed(node.db_path) == []
        node.start()
        time.sleep(0.5)
        assert _button_alarms(node.db_path) == []
        # Power cut within the first second of a 3 s hold: nothing stored yet,
        # the alarm is armed.
        assert httpx.post(press).status_code == 202
        armed = _wait(lambda: _armed(node.db_path))
        assert armed
        node.kill()
        assert _button_alarms(node.db_path) == []
        node.start()  # the alarm is stored, shown and the light says so
        assert _button_alarms(node.db_path) == [armed[0][1]] and _armed(node.db_path) == []
        shown = httpx.get(node.base_url + "/api/v1/alerts").json()["alerts"]
        assert [a["id"] for a in shown if a["source"] == "button"] == [armed[0][1]]
        assert _wait(lambda: httpx.get(node.base_url + "/demo/buttons").json()
                     ["buttons"][0]["light"] == "stored")
        assert "alarm of a hold in progress when the node stopped" in node.log_tail()
        # A completed hold then a power cut: one alarm, not recovered twice.
        assert httpx.post(press, params={"hold_s": 3.3}).status_code == 202
        assert _wait(lambda: len(_button_alarms(node.db_path)) == 2, 8)
        node.kill()
        node.start()
        time.sleep(0.5)
        assert len(_button_alarms(node.db_path)) == 2 and _armed(node.db_path) == []
        # An armed row that cannot be stored (its seq taken, its body no longer
        # valid: say, after an upgrade) is logged and kept; the node starts.
        assert node.stop() == 0
        with closing(sqlite3.connect(node.db_path)) as conn, conn:
            conn.execute(
                "INSERT INTO armed_alarms (button, id, origin, stream, seq, ts, kind, body, "
                "sig, armed_at) VALUES ('poort', '019a0000-0000-7000-8000-000000000000', "
                "?, 'public', 1, 1, 'alert', '{}', ?, 1)", (node.name, b"x" * 64))
        node.start()
        assert _armed(node.db_path) == [("poort", "019a0000-0000-7000-8000-000000000000")]
        assert "armed alarm left at start-up could not be stored" in node.log_tail()
        assert len(_button_alarms(node.db_path)) == 2
    finally:
        stop_and_check(node)
