"""The alarm desk at central on both backends (a SQLite file and a real
PostgreSQL server): sealed batches of an enrolled node with real keys through
Ingest and the Projector, staff logged in through the real app (in-process
HTTP), and the live stream over a real uvicorn server.

- a panic alarm becomes one ``alarms`` row, seen by the police desk (and the
  admin), not by the municipality; a team's escalation keeps it one row;
- a team's escalation of a resident report reaches the municipality; the
  desk's answers move the report and travel back in the node's sync reply;
- the desk's answer on a panic alarm is a central-signed public ack in the
  next sync reply; answers go forward only, a stale form says who answered;
- team answers move ``team_state`` (never back), projecting again changes
  nothing, an escalation before its subject still makes a row;
- ``/staff/live`` sends ``event: desk`` at once and within a second of a change.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from central import alarms, db
from central.staff.db import staff_audit
from tests.support.desk import AREA, NODE, Node, Served, http_member, now_ms, project
from tests.support.staff import Env, client_for, csrf_of, member, open_env


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> Iterator[Env]:
    with open_env(tmp_path, database_url) as central_env:
        yield central_env


def alarm_rows(env: Env) -> list[Any]:
    with env.engine.connect() as conn:
        return list(conn.execute(sa.select(db.alarms).order_by(db.alarms.c.ts)))


def the_alarm(env: Env) -> Any:
    rows = alarm_rows(env)
    assert len(rows) == 1, rows
    return rows[0]


def api_ids(client: TestClient) -> list[str]:
    r = client.get("/staff/api/alarms")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    return [a["id"] for a in r.json()["alarms"]]


def answer(client: TestClient, alarm_id: str, action: str, seen: str | None = None,
           csrf: str | None = None) -> Any:
    """Post the answer form as the reports page has it (its csrf and seen state)."""
    page = client.get("/staff/reports")
    form: dict[str, str] = {"action": action}
    if csrf != "":
        form["csrf"] = csrf if csrf is not None else csrf_of(page.text)
    if seen is None:
        found = re.search(rf'action="/staff/alarms/{alarm_id}/answer".*?name="seen" '
                          r'value="([a-z_]+)"', page.text, re.S)
        assert found, page.text[:2000]
        seen = found.group(1)
    form["seen"] = seen
    return client.post(f"/staff/alarms/{alarm_id}/answer", data=form)


def central_acks(env: Env) -> list[Any]:
    with env.engine.connect() as conn:
        return list(conn.execute(sa.select(db.events).where(
            db.events.c.origin == env.central.origin, db.events.c.kind == "ack")
            .order_by(db.events.c.seq)))


def audit_lines(env: Env, action: str) -> list[Any]:
    with env.engine.connect() as conn:
        return list(conn.execute(sa.select(staff_audit).where(staff_audit.c.action == action)
                                 .order_by(staff_audit.c.id)))


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# -- a panic alarm ---------------------------------------------------------------------


def test_a_panic_alarm_is_one_row_first_on_the_police_desk_only(env: Env) -> None:
    node = Node(env)
    police = member(env, "Anouk de Vries", "police")
    town = member(env, "Sanne de Boer", "municipality")
    admin = member(env, "Bram Admin", "admin")
    node.send(node.report(category="suspicious", text="Man bij auto's"))
    project(env)
    mark = alarms.desk_mark(env.engine)
    alarm = node.panic()
    node.send(alarm)
    assert alarm_rows(env) == []  # ingest stores; the projector makes the row
    assert project(env) == 1
    row = the_alarm(env)
    assert (row.id, row.origin, row.kind, row.subject, row.desk, row.place, row.what,
            row.state, row.team_state, row.handler, row.escalated_at) == (
        alarm.id, NODE, "panic", "alert", "police", "Speeltuin De Klimboom", "button", "new",
        "new", None, None)
    assert row.ts == alarm.ts
    assert alarms.desk_mark(env.engine) > mark

    assert api_ids(police) == [alarm.id]
    assert api_ids(admin) == [alarm.id]
    assert api_ids(town) == []
    page = police.get("/staff/reports")
    assert page.status_code == 200
    html = page.text
    # First on the page: the alarm's row comes before the list of reports.
    first = html.index('data-testid="alarm"')
    assert first < html.index('data-testid="reports"')
    assert f'data-id="{alarm.id}"' in html and 'role="alert"' in html
    assert "Speeltuin De Klimboom" in html and "Nog niet beantwoord" in html
    for act in ("seen", "on_my_way", "resolved"):
        assert f'data-testid="answer-{act}"' in html
    assert 'data-testid="alarm"' not in town.get("/staff/reports").text
    assert f'data-id="{alarm.id}"' in admin.get("/staff/reports").text
    # No timed refresh: the live stream does it (base.html), a reload link without JS.
    assert 'http-equiv="refresh"' not in html and "<noscript>" in html


def test_the_teams_escalation_keeps_the_alarm_one_row_with_the_note(env: Env) -> None:
    node = Node(env)
    police = member(env, "Anouk de Vries", "police")
    alarm = node.panic()
    node.send(alarm)
    project(env)
    acks = node.team_ack(alarm, "escalated", note="Man met mes bij het hek", to="police")
    node.send(*acks)
    project(env)
    row = the_alarm(env)
    assert (row.kind, row.subject, row.desk, row.state) == ("panic", "alert", "police", "new")
    assert row.escalated_at == acks[0].ts
    assert row.note == "Man met mes bij het hek"  # from the private ack; the public has none
    page = text_of(police.get("/staff/reports").text)
    assert "Man met mes bij het hek" in page
    found = police.get("/staff/api/alarms").json()["alarms"]
    assert [(a["id"], a["escalated_at"], a["note"]) for a in found] == [
        (alarm.id, acks[0].ts, "Man met mes bij het hek")]


def test_an_escalated_report_goes_to_the_municipality_and_answers_move_it(env: Env) -> None:
    node = Node(env)
    town = member(env, "Sanne de Boer", "municipality")
    police = member(env, "Anouk de Vries", "police")
    report = node.report(category="nuisance", text="Feest met harde muziek", place="plein")
    node.send(report)
    project(env)
    (esc,) = node.team_ack(report, "escalated", by="Mehmet", note="Al drie keer gevraagd",
                           to="municipality")
    node.send(esc)
    project(env)
    row = the_alarm(env)
    assert (row.id, row.kind, row.subject, row.desk, row.place, row.what, row.note,
            row.team_state, row.escalated_at) == (
        report.id, "escalation", "report", "municipality", "plein", "nuisance",
        "Al drie keer gevraagd", "escalated", esc.ts)
    assert api_ids(town) == [report.id] and api_ids(police) == []
    html = town.get("/staff/reports").text
    assert f'href="/staff/reports/{report.id}"' in html
    assert town.get(f"/staff/reports/{report.id}").status_code == 200

    r = answer(town, report.id, "on_my_way")
    assert r.status_code == 303 and r.headers["location"].startswith("/staff/reports")
    with env.engine.connect() as conn:
        rep = conn.execute(sa.select(db.reports).where(db.reports.c.event_id == report.id)).one()
        ups = list(conn.execute(sa.select(db.report_updates).order_by(db.report_updates.c.id)))
    assert (rep.state, rep.handler) == ("in_progress", "Sanne de Boer")
    assert [(u.report_id, u.origin, u.receipt, u.state) for u in ups] == [
        (report.id, NODE, "K7F-3QX", "in_progress")]
    alarm = the_alarm(env)
    assert (alarm.state, alarm.handler) == ("on_my_way", "Sanne de Boer")
    # The node's next sync reply carries the report's new state (no ack event for a report).
    ack, events = node.sync()
    assert [(u.report, u.receipt, u.state) for u in ack.updates] == [
        (report.id, "K7F-3QX", "in_progress")]
    assert events == [] and central_acks(env) == []
    node.updates_after = ack.updates[-1].id

    assert answer(town, report.id, "resolved").status_code == 303
    with env.engine.connect() as conn:
        rep = conn.execute(sa.select(db.reports).where(db.reports.c.event_id == report.id)).one()
    assert rep.state == "handled" and the_alarm(env).state == "resolved"
    ack, _ = node.sync()
    assert [(u.report, u.state) for u in ack.updates] == [(report.id, "handled")]
    assert [a.detail for a in audit_lines(env, "alarm")] == [
        "new -> on_my_way", "on_my_way -> resolved"]
    # Resolved: still on the list (greyed) for an hour, no answer buttons left.
    html = town.get("/staff/reports").text
    assert f'data-id="{report.id}" data-state="resolved"' in html
    assert f'/staff/alarms/{report.id}/answer' not in html


def test_an_escalation_to_the_other_desk_lets_that_desk_open_the_report(env: Env) -> None:
    """Decision: the report stays routed where triage put it; the desk a team escalated
    it to sees it too and can act on it (open, take, answer the resident)."""
    node = Node(env)
    town = member(env, "Sanne de Boer", "municipality")
    report = node.report(category="suspicious", text="Iemand probeert deuren")
    node.send(report)
    project(env)
    node.send(*node.team_ack(report, "escalated", to="municipality"))
    project(env)
    assert api_ids(town) == [report.id]
    assert f'href="/staff/reports/{report.id}"' in town.get("/staff/reports").text
    assert town.get(f"/staff/reports/{report.id}").status_code == 200


def test_the_desks_answer_on_a_panic_alarm_is_a_signed_ack_in_the_next_reply(env: Env) -> None:
    node = Node(env)
    police = member(env, "Anouk de Vries", "police")
    alarm = node.panic()
    node.send(alarm)
    project(env)
    mark = alarms.desk_mark(env.engine)
    before = now_ms()
    r = answer(police, alarm.id, "on_my_way")
    assert r.status_code == 303, r.text
    assert alarms.desk_mark(env.engine) > mark
    row = the_alarm(env)
    assert (row.state, row.handler) == ("on_my_way", "Anouk de Vries")
    assert row.answered_at is not None and row.answered_at >= before
    (stored,) = central_acks(env)
    assert (stored.origin, stored.stream, stored.kind) == (env.central.origin, "public", "ack")
    assert json.loads(stored.body) == {"ref": alarm.id, "action": "on_my_way", "by": "police",
                                       "note": "", "to": None}
    (line,) = audit_lines(env, "alarm")
    assert (line.staff, line.subject, line.detail) == ("Anouk de Vries", alarm.id,
                                                       "new -> on_my_way")
    # The next sync reply carries it, signed by central (Node.sync verifies it).
    _, events = node.sync()
    assert [(e.origin, e.kind, e.body["ref"], e.body["action"], e.body["by"])
            for e in events] == [(env.central.origin, "ack", alarm.id, "on_my_way", "police")]
    assert events[0].id == stored.id
    node.central_head = events[-1].seq
    assert node.sync()[1] == []  # not again once the node holds it
    # The answer shows on the page and in the API; the state tag is no longer red.
    found = police.get("/staff/api/alarms").json()["alarms"]
    assert [(a["state"], a["handler"]) for a in found] == [("on_my_way", "Anouk de Vries")]
    html = police.get("/staff/reports").text
    assert "Onderweg" in html and 'data-testid="answer-on_my_way"' not in html
    assert 'data-testid="answer-resolved"' in html
    # Central's own ack, should a node send it back up, is no team answer.
    with env.engine.connect() as conn:
        assert conn.execute(sa.select(db.alarms.c.team_state)).scalar() == "new"


def test_answers_go_forward_only_and_a_stale_form_says_who_answered(env: Env) -> None:
    node = Node(env)
    anouk = member(env, "Anouk de Vries", "police")
    pieter = member(env, "Pieter Jansen", "police")
    town = member(env, "Sanne de Boer", "municipality")
    alarm = node.panic()
    node.send(alarm)
    project(env)
    stale_page = anouk.get("/staff/reports").text  # Anouk looks (seen: new) …
    assert answer(pieter, alarm.id, "on_my_way").status_code == 303  # … Pieter answers first
    r = anouk.post(f"/staff/alarms/{alarm.id}/answer",
                   data={"csrf": csrf_of(stale_page), "action": "seen", "seen": "new"})
    assert r.status_code == 409
    assert "Pieter Jansen" in text_of(r.text) and "Onderweg" in text_of(r.text)
    # Backward (or the same again) is refused with words, whatever the form says.
    for action in ("seen", "on_my_way", "new", "bogus"):
        r = answer(anouk, alarm.id, action, seen="on_my_way")
        assert r.status_code == 422, (action, r.status_code)
        assert "<main>" in r.text and len(text_of(r.text)) > 40
    # No CSRF token: 403, nothing done.
    r = answer(anouk, alarm.id, "resolved", csrf="")
    assert r.status_code == 403
    r = answer(anouk, alarm.id, "resolved", csrf="forged-token")
    assert r.status_code == 403
    # The other desk, an unknown id, a malformed id: 404.
    r = answer(town, alarm.id, "resolved", seen="on_my_way")
    assert r.status_code == 404 and "<main>" in r.text
    r = answer(anouk, str(uuid.uuid4()), "resolved", seen="new")
    assert r.status_code == 404 and "<main>" in r.text
    assert answer(anouk, "short", "resolved", seen="new").status_code == 404
    row = the_alarm(env)
    assert (row.state, row.handler) == ("on_my_way", "Pieter Jansen")
    assert len(central_acks(env)) == 1 and len(audit_lines(env, "alarm")) == 1
    # Skipping forward is allowed; the first handler stays the handler.
    assert answer(anouk, alarm.id, "resolved").status_code == 303
    row = the_alarm(env)
    assert (row.state, row.handler) == ("resolved", "Pieter Jansen")
    assert [json.loads(e.body)["action"] for e in central_acks(env)] == [
        "on_my_way", "resolved"]
    assert answer(anouk, alarm.id, "resolved", seen="resolved").status_code == 422


def test_concurrent_answers_one_wins_the_others_are_stale(env: Env) -> None:
    node = Node(env)
    alarm = node.panic()
    node.send(alarm)
    project(env)
    names = [f"Agent {i}" for i in range(6)]
    for name in names:
        env.accounts.add(name, "police")
    members = {name: env.accounts.get(name) for name in names}
    results: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(names))

    def go(name: str) -> None:
        who = members[name]
        assert who is not None
        barrier.wait()
        try:
            alarms.answer(env.engine, env.central, who, alarm.id, "seen", "new", now_ms())
            out = "ok"
        except alarms.Stale as exc:
            out = f"stale:{exc.state}"
        with lock:
            results.append(out)

    threads = [threading.Thread(target=go, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["ok"] + ["stale:seen"] * (len(names) - 1)
    assert len(central_acks(env)) == 1 and len(audit_lines(env, "alarm")) == 1


# -- team answers, projecting again, escalations before their subject -----------------


def test_team_answers_move_team_state_forward_and_projecting_again_changes_nothing(
        env: Env) -> None:
    node = Node(env)
    police = member(env, "Anouk de Vries", "police")
    alarm = node.panic()
    node.send(alarm)
    project(env)
    seen = node.team_ack(alarm, "seen")
    node.send(*seen)
    mark = alarms.desk_mark(env.engine)
    project(env)
    assert the_alarm(env).team_state == "seen"
    assert alarms.desk_mark(env.engine) > mark  # the desk's pages show the team's answer
    coming = node.team_ack(alarm, "on_my_way", by="Mehmet")
    node.send(*coming)
    project(env)
    assert the_alarm(env).team_state == "on_my_way"
    assert "Buurtteam: onderweg" in police.get("/staff/reports").text
    # The team's answers do not answer for the desk.
    assert the_alarm(env).state == "new"
    assert api_ids(police) == [alarm.id]

    # Every batch projected again (as after a crash, or two projectors on one
    # SQLite file): the rows stay exactly as they are and the desk hears nothing.
    before = [r._asdict() for r in alarm_rows(env)]
    mark = alarms.desk_mark(env.engine)
    with env.engine.begin() as conn:
        for seq, events in ((1, [alarm]), (2, seen), (3, coming)):
            conn.execute(db.batches.update().where(db.batches.c.node == NODE,
                                                   db.batches.c.batch_seq == seq)
                         .values(pending=json.dumps([e.id for e in events])))
    assert project(env) == 3
    assert [r._asdict() for r in alarm_rows(env)] == before
    assert alarms.desk_mark(env.engine) == mark
    # Only the older batch again, after the newer one: the team state does not go back.
    with env.engine.begin() as conn:
        conn.execute(db.batches.update().where(db.batches.c.node == NODE,
                                               db.batches.c.batch_seq == 2)
                     .values(pending=json.dumps([e.id for e in seen])))
    project(env)
    assert the_alarm(env).team_state == "on_my_way"

    node.send(*node.team_ack(alarm, "resolved"))
    project(env)
    assert the_alarm(env).team_state == "resolved"
    # A team alert without a button and acks on it make no alarm.
    warning = node.event("public", "alert", {"source": "team", "title": "Let op",
                                             "areas": [AREA]})
    node.send(warning, *node.team_ack(warning, "seen"))
    project(env)
    assert [r.id for r in alarm_rows(env)] == [alarm.id]


def test_an_escalation_before_its_subject_makes_a_row_the_subject_fills_in(env: Env) -> None:
    node = Node(env)
    neighbour = Node(env, "buurman")
    police = member(env, "Anouk de Vries", "police")
    # A neighbour's button alarm reached this node over the mesh, and its team
    # escalated it before the neighbour's batch reached central.
    far = neighbour.panic(button="kerk-deur", place="Kerkplein")
    node.send(*node.team_ack(far, "escalated", note="Buren bellen ons", to="police"))
    project(env)
    row = the_alarm(env)
    assert (row.id, row.desk, row.state, row.escalated_at is not None, row.note) == (
        far.id, "police", "new", True, "Buren bellen ons")
    assert row.subject == "alert"
    assert api_ids(police) == [far.id]
    neighbour.send(far)
    project(env)
    row = the_alarm(env)
    assert (row.kind, row.subject, row.place, row.what, row.origin, row.note) == (
        "panic", "alert", "Kerkplein", "button", "buurman", "Buren bellen ons")
    assert row.ts == far.ts and row.escalated_at is not None

    # A neighbour's team alert (no button) escalated first: an alert too, whose
    # answer travels back as an ack; its place when it arrives.
    warning = neighbour.event("public", "alert", {
        "source": "team", "category": "suspicious", "title": "Inbraak?", "text": "",
        "place": {"point": None, "text": "Achterpad Lindelaan"}, "areas": [AREA]})
    node.send(*node.team_ack(warning, "escalated", to="police"))
    project(env)
    with env.engine.connect() as conn:
        got = conn.execute(sa.select(db.alarms).where(db.alarms.c.id == warning.id)).one()
    assert (got.kind, got.subject, got.place) == ("escalation", "alert", "")
    neighbour.send(warning)
    project(env)
    with env.engine.connect() as conn:
        got = conn.execute(sa.select(db.alarms).where(db.alarms.c.id == warning.id)).one()
    assert (got.kind, got.subject, got.place, got.what) == (
        "escalation", "alert", "Achterpad Lindelaan", "suspicious")
    assert answer(police, warning.id, "seen").status_code == 303
    assert [json.loads(e.body)["ref"] for e in central_acks(env)] == [warning.id]


# -- the live stream (a real uvicorn server) -------------------------------------------


class LiveReader:
    """Reads ``GET /staff/live`` on a thread: (monotonic time, event, data) in a queue."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.got: queue.Queue[tuple[float, str, dict[str, Any]]] = queue.Queue()
        self.status: int | None = None
        self.content_type = ""
        self.opened = threading.Event()
        self._stop = threading.Event()
        self._response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._run, name="live-reader", daemon=True)

    def _run(self) -> None:
        with self.client.stream("GET", "/staff/live",
                                timeout=httpx.Timeout(10.0, read=60.0)) as r:
            self._response = r
            self.status, self.content_type = r.status_code, r.headers.get("content-type", "")
            self.opened.set()
            fields: dict[str, str] = {}
            try:
                for line in r.iter_lines():
                    if self._stop.is_set():
                        return
                    if line == "":
                        if "data" in fields:
                            self.got.put((time.monotonic(), fields.get("event", "message"),
                                          json.loads(fields["data"])))
                        fields = {}
                        continue
                    if line.startswith(":"):
                        continue
                    key, _, value = line.partition(":")
                    fields[key] = value[1:] if value.startswith(" ") else value
            except httpx.HTTPError:
                if not self._stop.is_set():
                    raise

    def __enter__(self) -> LiveReader:
        self._thread.start()
        assert self.opened.wait(10.0), "the live stream did not open"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._response is not None:
            self._response.close()
        self._thread.join(5.0)

    def next(self, timeout: float) -> tuple[float, str, dict[str, Any]]:
        try:
            return self.got.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event on /staff/live within {timeout}s") from None


@pytest.mark.timeout(90)
def test_the_live_stream_tells_the_desk_at_once_and_within_a_second(env: Env) -> None:
    node = Node(env)
    with Served(env) as served:
        police = http_member(env, served.url, "Anouk de Vries", "police")
        town = http_member(env, served.url, "Sanne de Boer", "municipality")
        anonymous = httpx.Client(base_url=served.url, timeout=10.0)
        try:
            r = anonymous.get("/staff/live")
            assert r.status_code == 303 and r.headers["location"] == "/staff/login"
            assert anonymous.get("/staff/api/alarms").status_code == 303
            opened = time.monotonic()
            with LiveReader(police) as live, LiveReader(town) as other:
                assert live.status == 200 and live.content_type.startswith("text/event-stream")
                at, kind, data = live.next(3.0)
                assert kind == "desk" and at - opened < 2.0
                assert data == {"mark": alarms.desk_mark(env.engine), "new": 0}
                assert other.next(3.0)[2]["new"] == 0
                alarm = node.panic()
                node.send(alarm)
                time.sleep(1.5)
                assert live.got.empty()  # stored, not projected: the desk shows nothing yet
                projected = time.monotonic()
                project(env)
                at, kind, data = live.next(3.0)
                assert kind == "desk" and at - projected < 1.0, at - projected
                assert data == {"mark": alarms.desk_mark(env.engine), "new": 1}
                assert other.next(3.0)[2]["new"] == 0  # not the municipality's alarm
                page = police.get("/staff/reports")
                r = police.post(f"/staff/alarms/{alarm.id}/answer", data={
                    "csrf": csrf_of(page.text), "action": "seen", "seen": "new"})
                assert r.status_code == 303
                answered = time.monotonic()
                at, _, data = live.next(3.0)
                assert data["new"] == 0 and at - answered < 1.0
        finally:
            for c in (police, town, anonymous):
                c.close()


def test_api_and_live_need_a_session(env: Env) -> None:
    client = client_for(env)
    for path in ("/staff/live", "/staff/api/alarms"):
        r = client.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/staff/login", path
    r = client.post(f"/staff/alarms/{uuid.uuid4()}/answer", data={"action": "seen"})
    assert r.status_code == 303 and r.headers["location"] == "/staff/login"


def test_a_false_alarm_the_team_closed_stops_the_desks_cue(env: Env) -> None:
    """The team resolved it on the spot (a child pressed the button): the desk's row
    stays, says who closed it, and no longer counts as unanswered."""
    from central.staff.alarms import new_by_desk

    node = Node(env)
    police = member(env, "Tess Visser", "police")
    alarm = node.panic()
    node.send(alarm)
    project(env)
    assert new_by_desk(env.engine).get("police") == 1
    node.send(*node.team_ack(alarm, "resolved"))
    project(env)
    assert new_by_desk(env.engine).get("police", 0) == 0
    page = police.get("/staff/reports").text
    row = page.split(f'data-id="{alarm.id}"')[1].split("</li>")[0]
    assert "Afgesloten door het buurtteam" in row and 'role="alert"' not in row
    # The desk may still answer it.
    assert answer(police, alarm.id, "seen").status_code == 303
