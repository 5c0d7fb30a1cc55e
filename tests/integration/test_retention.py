"""Retention at central (issue 18): handled reports are anonymised ``retention_days``
after they were handled; the insight page's figures stay exactly the same.

On a SQLite file and a real PostgreSQL server; reports are made with times in the
past and handled through central's own handling code with a backdated clock.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from central import db, handling, insight
from central.ingest import Ingest
from central.projector import Projector
from central.retention import run_retention
from central.staff.accounts import StaffMember
from central.staff.db import report_notes, staff_audit
from sync import Event, KeyPair, make_event
from tests.support.base import bart_command
from tests.support.ingest import batch, enrol, new_central

DAY = 86_400_000
DESK = StaffMember(key="desk", name="Desk Haaglanden", role="admin", must_change=False,
                   created=0, last_login=None)


def _reports(keys: KeyPair, now: int, n: int) -> list[Event]:
    out = []
    for seq in range(1, n + 1):
        body: dict[str, object] = {"category": ("nuisance", "suspicious", "social")[seq % 3],
                "text": f"Buurman op nummer {seq} schreeuwt", "audience": "authorities",
                "place": {"point": None, "text": f"voor huisnummer {seq}"},
                "called_112": seq % 4 == 0, "receipt": "K7F-3QX", "lang": "nl"}
        if seq % 2:
            body["contact"] = f"06-1234{seq:04d}"
        if seq % 4 == 0:
            body["called_112_by"] = "Fatima"
        out.append(make_event(keys, origin="wereld", stream="private", seq=seq,
                              kind="report", ts=now - 50 * DAY + seq * 60_000, body=body))
    return out


def _bodies(engine: sa.Engine) -> dict[str, dict[str, object]]:
    with engine.connect() as conn:
        return {r.id: json.loads(r.body) for r in conn.execute(
            sa.select(db.events.c.id, db.events.c.body).where(db.events.c.kind == "report"))}


@pytest.mark.timeout(180)
def test_handled_reports_are_anonymised_and_insight_counts_stay(
        tmp_path: Path, database_url: str) -> None:
    central = new_central(tmp_path, database_url)
    toml = central.data_dir / "central.toml"
    assert "retention_days = 365" in toml.read_text("utf-8")  # the default, written out
    toml.write_text(toml.read_text("utf-8").replace("retention_days = 365",
                                                    "retention_days = 30"), "utf-8")
    engine = db.make_engine(central.database_url)
    try:
        now = time.time_ns() // 1_000_000
        keys = enrol(engine, central, "wereld")
        events = _reports(keys, now, 40)
        ids = [e.id for e in events]
        # About reports 1 (to be anonymised) and 21 (handled lately): the neighbours' copy
        # and a team's answer with a note.
        about = []
        for n, rid in enumerate((ids[0], ids[20])):
            about.append(make_event(keys, origin="wereld", stream="public", seq=n + 1,
                                    kind="alert", ts=now - 49 * DAY, body={
                                        "source": "resident", "category": "nuisance",
                                        "severity": "minor", "title": "Overlast",
                                        "text": "Buurman op nummer 7", "called_112": True,
                                        "called_112_by": "Fatima", "ref": rid,
                                        "place": {"point": None, "text": "nr. 7"}}))
            about.append(make_event(keys, origin="wereld", stream="private", seq=41 + n,
                                    kind="ack", ts=now - 49 * DAY, body={
                                        "ref": rid, "action": "seen", "by": "Piet",
                                        "note": "Sprak mevrouw Jansen van nr. 7"}))
        Ingest(engine, central).handle(batch(keys, "wereld", 1, events + about, central))
        Projector(engine).drain()
        old, recent, still_open = ids[:20], ids[20:30], ids[30:]
        for rid, when in [(r, now - 45 * DAY) for r in old] + [(r, now - 5 * DAY)
                                                               for r in recent]:
            handling.change_state(engine, DESK, rid, "in_progress", 1, when - 3_600_000)
            handling.add_note(engine, DESK, rid, "Bewoner van nr. 12 belde terug", when - 60_000)
            handling.reply_to_resident(engine, DESK, rid, "Dank u, mevrouw Jansen", when - 1000)
            handling.change_state(engine, DESK, rid, "handled", 2, when)
        handling.change_state(engine, DESK, still_open[0], "in_progress", 1, now - 44 * DAY)

        def figures() -> list[insight.Figures]:
            return [insight.collect(engine, route, now)
                    for route in (None, "police", "municipality")]

        with engine.connect() as conn:
            tab_counts = sorted(conn.execute(sa.select(db.report_counts)).all())
        before, bodies = figures(), _bodies(engine)
        assert sum(before[0].by_week.values()) == 40

        dry = run_retention(engine, 30, apply=False, now_ms=now)
        assert (dry.reports, dry.contacts, dry.open_older, dry.applied) == (20, 10, 10, False)
        assert _bodies(engine) == bodies  # a dry run changes nothing

        env = {k: v for k, v in os.environ.items() if not k.startswith("BART_")}
        cli = [*bart_command(), "central", "retention", "--data-dir", str(central.data_dir),
               "--database-url", central.database_url]
        said = subprocess.run([*cli, "--dry-run"], capture_output=True, text=True, env=env,
                              timeout=120, check=False)
        assert said.returncode == 0, said.stderr
        assert "20 would be anonymised" in said.stdout and "10 of them with contact" in \
            said.stdout
        neither = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=120,
                                 check=False)
        assert neither.returncode == 1 and "--dry-run" in neither.stderr
        done = subprocess.run([*cli, "--apply"], capture_output=True, text=True, env=env,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert "20 anonymised; 10 of them with contact details" in done.stdout, done.stdout

        after = _bodies(engine)
        for rid in old:
            body = after[rid]
            assert body["text"] == "" and not body.get("contact")
            assert body.get("called_112_by", "") == ""
            assert body["place"] == {"point": None, "text": ""}
            assert isinstance(body["anonymised"], int)
            for key in ("category", "audience", "called_112", "receipt", "lang"):
                assert body[key] == bodies[rid][key], key
        for rid in recent + still_open:  # handled lately, or not handled: untouched
            assert after[rid] == bodies[rid]
        text = json.dumps([after[r] for r in old])
        assert "06-1234" not in text and "huisnummer" not in text and "Fatima" not in text
        with engine.connect() as conn:
            others = {r.id: json.loads(r.body) for r in conn.execute(sa.select(
                db.events.c.id, db.events.c.body).where(db.events.c.kind.in_(("alert",
                                                                              "ack"))))}
        copy, answer, copy_recent, answer_recent = (others[e.id] for e in about)
        assert (copy["text"], copy["called_112_by"], copy["place"]["text"]) == ("", "", "")
        assert (copy["ref"], copy["category"], copy["called_112"]) == (ids[0], "nuisance", True)
        assert (answer["note"], answer["action"], answer["by"]) == ("", "seen", "Piet")
        assert copy_recent["text"] and answer_recent["note"]
        with engine.connect() as conn:
            notes = dict(conn.execute(sa.select(report_notes.c.report_id, report_notes.c.text)
                                      ).all())
            replies = dict(conn.execute(sa.select(db.report_updates.c.report_id,
                                                  db.report_updates.c.reply)
                                        .where(db.report_updates.c.reply.isnot(None))).all())
            quoted = {r.subject: r.detail for r in conn.execute(sa.select(staff_audit).where(
                staff_audit.c.action.in_(("note", "reply"))))}
            runs = conn.execute(sa.select(staff_audit).where(
                staff_audit.c.action.like("retention%")).order_by(staff_audit.c.id)).all()
            assert sorted(conn.execute(sa.select(db.report_counts)).all()) == tab_counts
        assert all(notes[r] == "" and replies[r] == "" and quoted[r] == "" for r in old)
        assert all(notes[r] and replies[r] and quoted[r] for r in recent)

        # The insight page's figures are exactly what they were.
        assert figures() == before

        # One audit line per run, by "retention"; a second run finds nothing more.
        assert [(r.action, r.staff.split(":")[0]) for r in runs] == [
            ("retention_dry_run", "retention"), ("retention_dry_run", "cli"),
            ("retention", "cli")]
        assert "anonymised 20 reports" in runs[2].detail
        again = run_retention(engine, 30, apply=True, now_ms=now)
        assert again.reports == 0
    finally:
        engine.dispose()


@pytest.mark.timeout(120)
def test_one_report_is_anonymised_on_request(tmp_path: Path, database_url: str) -> None:
    central = new_central(tmp_path, database_url)
    engine = db.make_engine(central.database_url)
    try:
        now = time.time_ns() // 1_000_000
        keys = enrol(engine, central, "wereld")
        events = _reports(keys, now, 3)
        Ingest(engine, central).handle(batch(keys, "wereld", 1, events, central))
        Projector(engine).drain()
        with engine.begin() as conn:  # two reports share a receipt code, one has its own
            conn.execute(db.reports.update().where(db.reports.c.event_id == events[2].id)
                         .values(receipt="ABC-DEF"))
        handling.add_note(engine, DESK, events[2].id, "Belde met mevrouw Jansen", now)
        before = _bodies(engine)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BART_")}
        cli = [*bart_command(), "central", "retention", "--data-dir", str(central.data_dir),
               "--database-url", central.database_url, "--report"]

        def run(ident: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*cli, ident], capture_output=True, text=True, env=env,
                                  timeout=120, check=False)

        unknown = run("ZZZ-ZZZ")
        assert unknown.returncode == 1 and "no report has" in unknown.stderr
        shared = run("K7F-3QX")
        assert shared.returncode == 1 and "more than one report" in shared.stderr
        assert _bodies(engine) == before
        done = run("abc-def")  # a new report, not handled: on request it goes all the same
        assert done.returncode == 0, done.stderr
        assert f"Report {events[2].id} anonymised" in done.stdout
        after = _bodies(engine)
        assert after[events[2].id]["text"] == "" and "anonymised" in after[events[2].id]
        assert {k: v for k, v in after.items() if k != events[2].id} == \
            {k: v for k, v in before.items() if k != events[2].id}
        by_id = run(events[0].id)
        assert by_id.returncode == 0 and "its contact details removed too" in by_id.stdout
        with engine.connect() as conn:
            assert conn.execute(sa.select(report_notes.c.text)).scalar_one() == ""
            lines = conn.execute(sa.select(staff_audit.c.subject).where(
                staff_audit.c.action == "anonymise_report")).scalars().all()
        assert sorted(lines) == sorted([events[2].id, events[0].id])
    finally:
        engine.dispose()
