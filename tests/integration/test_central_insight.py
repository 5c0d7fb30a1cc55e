"""The insight page on both backends (a SQLite file and a real PostgreSQL server),
through the real app (in-process HTTP).

Reports and team answers reach central as nodes send them (sealed batches,
ingest, the projector with the default triage rules); desks answer through
central's handling functions at chosen times. The page must count them per
week, category and area, give the response-time percentiles of the
definitions in docs/central.md, show node uptime from the batches, draw every
chart as accessible SVG, and download each table as the same CSV; a police
member sees only police figures.
"""

from __future__ import annotations

import csv
import doctest
import io
import re
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from central import db, handling, insight, insight_svg, open311
from central.ingest import Ingest
from central.projector import Projector
from central.staff.accounts import StaffMember
from central.triage import router_for
from sync import KeyPair, make_event
from tests.support.ingest import batch, enrol
from tests.support.staff import Env, client_for, member, open_env

MIN = 60_000
HOUR = insight.HOUR_MS
ADMIN = StaffMember(key="", name="Beheer", role="admin", must_change=False, created=0,
                    last_login=None)


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> Iterator[Env]:
    with open_env(tmp_path, database_url) as central_env:
        yield central_env


class Tables(HTMLParser):
    """The cells of every ``<table data-testid=…>`` of a page (th and td as text)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table":
            self._table = (found.get("data-testid") or "").removeprefix("table-")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("th", "td") and self._table is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "td") and self._table is not None and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables_of(html: str) -> dict[str, list[list[str]]]:
    parser = Tables()
    parser.feed(html)
    return parser.tables


def row_of(table: list[list[str]], first: str) -> list[str]:
    found = [row for row in table if row and row[0] == first]
    assert found, f"no row {first!r} in {table}"
    return found[0]


class Node:
    """A real enrolled node that sends its events in sealed batches."""

    def __init__(self, env: Env, name: str, area: str) -> None:
        self.env, self.name = env, name
        self.keys: KeyPair = enrol(env.engine, env.central, name, area=area)
        self.seq = {"private": 0, "public": 0}
        self.batch_seq = 0

    def event(self, kind: str, ts: int, body: dict[str, Any], stream: str = "private") -> Any:
        self.seq[stream] += 1
        return make_event(self.keys, origin=self.name, stream=stream, seq=self.seq[stream],
                          kind=kind, ts=ts, body=body)

    def report(self, category: str, text: str, ts: int) -> Any:
        return self.event("report", ts, {"category": category, "text": text,
                                         "audience": "authorities", "receipt": "K7F-3QX",
                                         "place": {"point": None, "text": "plein"}})

    def ack(self, ref: str, action: str, ts: int) -> Any:
        return self.event("ack", ts, {"ref": ref, "action": action, "by": "Buurtteam"},
                          stream="public")

    def send(self, events: list[Any]) -> None:
        self.batch_seq += 1
        Ingest(self.env.engine, self.env.central).handle(
            batch(self.keys, self.name, self.batch_seq, events, self.env.central))
        Projector(self.env.engine, router_for(self.env.central.data_dir)).drain()


def seed(env: Env) -> dict[str, Any]:
    """Reports of two nodes in weeks 8, 9 and 10 of the 12, team answers, desk actions."""
    now = int(time.time() * 1000)
    starts = insight.week_starts(now)
    escamp, ypenburg = Node(env, "bs-escamp", "ESCAMP"), Node(env, "bs-ypenburg", "YPENBURG")
    w8, w9, w10 = (starts[i] + 2 * HOUR for i in (8, 9, 10))
    noise = [escamp.report("nuisance", "Harde muziek", w9 + j * MIN) for j in range(10)]
    suspicious = [escamp.report("suspicious", "Man kijkt in auto's", w10 + j * MIN)
                  for j in range(3)]
    escamp.send(noise + suspicious)
    # The team answers every noise report j after j+1 minutes; 'hidden' is no answer.
    escamp.send([escamp.ack(r.id, "on_my_way", r.ts + (j + 1) * MIN) for j, r in enumerate(noise)]
                + [escamp.ack(noise[1].id, "hidden", noise[1].ts)]
                + [escamp.ack(suspicious[0].id, "seen", suspicious[0].ts + 20 * MIN)])
    social = [ypenburg.report("social", "Zorgen om de buurvrouw", w10 + j * MIN) for j in range(2)]
    emergency = ypenburg.report("emergency", "Brand", w8)
    ypenburg.send([*social, emergency])
    # The desk takes noise[9] after 30 s (before the team's 10 min) and handles it after 2 h.
    handling.change_state(env.engine, ADMIN, noise[9].id, "in_progress", 1, noise[9].ts + MIN // 2)
    handling.change_state(env.engine, ADMIN, noise[9].id, "handled", 2, noise[9].ts + 2 * HOUR)
    # Batch history of escamp: enrolled 10 days ago, batches in three earlier hours.
    with env.engine.begin() as conn:
        conn.execute(db.nodes.update().where(db.nodes.c.name == "bs-escamp")
                     .values(enrolled_at=now - 10 * 24 * HOUR))
        for k, (back, extra) in enumerate([(1, 0), (2, 0), (2, MIN), (50, 0)]):
            conn.execute(db.batches.insert().values(
                node="bs-escamp", batch_seq=1000 + k, count=1, new=1,
                received_at=(now // HOUR - back) * HOUR + 10 * MIN + extra))
    return {"starts": starts, "noise": noise}


def csv_of(client: TestClient, table: str, **params: str) -> list[list[str]]:
    r = client.get("/staff/insight.csv", params={"table": table, **params})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"].startswith(f'attachment; filename="bart-{table}-')
    return list(csv.reader(io.StringIO(r.text.removeprefix("\ufeff"))))


def test_insight_counts_times_uptime_svg_and_csv(env: Env) -> None:
    seeded = seed(env)
    weeks = [insight.week_label(s) for s in seeded["starts"]]
    admin = member(env, "Ans Beheer", "admin")
    page = admin.get("/staff/insight", params={"lang": "en"})
    assert page.status_code == 200
    html = page.text
    found = tables_of(html)
    assert set(found) == {"categories", "areas", "response", "uptime"}

    cats = found["categories"]
    assert cats[0][0] == "Week" and cats[0][-1] == "Total" and len(cats[0]) == 6
    assert [row[0] for row in cats[1:]] == weeks
    assert row_of(cats, weeks[9])[1:] == ["10", "0", "0", "0", "10"]
    assert row_of(cats, weeks[10])[1:] == ["0", "3", "2", "0", "5"]
    assert row_of(cats, weeks[8])[1:] == ["0", "0", "0", "1", "1"]
    assert sum(int(row[-1]) for row in cats[1:]) == 16

    areas = found["areas"]
    assert [row[0] for row in areas[1:]] == ["ESCAMP", "YPENBURG"]
    assert row_of(areas, "ESCAMP")[1:] == ["10", "3", "0", "0", "13"]
    assert row_of(areas, "YPENBURG")[1:] == ["0", "0", "2", "1", "3"]

    # Week 9: first answers 0.5 (desk), 1..9 min (team; 'hidden' does not count):
    # nearest rank of [0.5, 1, 2, …, 9]: p50 = the 5th = 4.0, p90 = the 9th = 8.0;
    # one report handled after 2 h.
    response = found["response"]
    assert row_of(response, weeks[9])[1:] == ["10", "10", "4.0", "8.0", "1", "120.0", "120.0"]
    assert row_of(response, weeks[10])[1:] == ["5", "1", "20.0", "20.0", "0", "", ""]
    assert row_of(response, weeks[8])[1:] == ["1", "0", "", "", "0", "", ""]

    with env.engine.connect() as conn:
        received = conn.execute(sa.select(db.batches.c.node, db.batches.c.received_at)).all()
    now = int(time.time() * 1000)
    hours = {r.received_at // HOUR for r in received if r.node == "bs-escamp"
             and r.received_at >= (now // HOUR - 167) * HOUR}
    uptime = found["uptime"]
    escamp = row_of(uptime, "bs-escamp")
    assert escamp[1] == "ESCAMP" and escamp[2] == f"{len(hours)}/168"
    assert escamp[3] == f"{100 * len(hours) / 168:.1f}" and len(hours) >= 4
    assert escamp[4].endswith("/11")
    ypenburg = row_of(uptime, "bs-ypenburg")
    assert ypenburg[2] == "1/1" and ypenburg[3] == "100.0" and ypenburg[6]
    assert "lower bound" in html  # the uptime measure says what it is

    # Charts: inline SVG, role=img, labelled by their title and description.
    svgs = re.findall(r"<svg [^>]*>.*?</svg>", html, flags=re.S)
    assert len(svgs) == 5
    for svg in svgs:
        assert 'role="img"' in svg
        ids = re.search(r'aria-labelledby="([^ "]+) ([^"]+)"', svg)
        assert ids, svg[:200]
        assert re.search(rf'<title id="{ids.group(1)}">[^<]+</title>', svg)
        assert re.search(rf'<desc id="{ids.group(2)}">[^<]+</desc>', svg)
    assert "16 reports in 12 weeks" in html
    assert html.count("<rect") > 20
    # No script of its own beyond the shared live one, nothing from elsewhere, printable.
    assert "@media print" in html and "<script src" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)

    for key in ("categories", "areas", "response", "uptime"):
        assert csv_of(admin, key, lang="en") == found[key], key

    # Dutch by default; the CSV follows the page's language.
    dutch = admin.get("/staff/insight", params={"lang": "nl"})
    assert "Meldingen per week en categorie" in dutch.text
    assert csv_of(admin, "categories", lang="nl")[0][0] == "Week"
    assert csv_of(admin, "uptime", lang="nl")[0][0] == "Buurtcomputer"

    # An admin may look at one desk.
    police_only = tables_of(admin.get("/staff/insight", params={"desk": "police"}).text)
    assert sum(int(row[-1]) for row in police_only["categories"][1:]) == 4


def test_each_desk_sees_only_its_own_figures(env: Env) -> None:
    seeded = seed(env)
    weeks = [insight.week_label(s) for s in seeded["starts"]]
    police = member(env, "Piet Politie", "police")
    found = tables_of(police.get("/staff/insight", params={"lang": "en"}).text)
    assert row_of(found["categories"], weeks[9])[1:] == ["0", "0", "0", "0", "0"]
    assert row_of(found["categories"], weeks[10])[1:] == ["0", "3", "0", "0", "3"]
    assert row_of(found["categories"], weeks[8])[1:] == ["0", "0", "0", "1", "1"]
    assert row_of(found["areas"], "ESCAMP")[1:] == ["0", "3", "0", "0", "3"]
    assert row_of(found["areas"], "YPENBURG")[1:] == ["0", "0", "0", "1", "1"]
    assert row_of(found["response"], weeks[9])[1:] == ["0", "0", "", "", "0", "", ""]
    assert row_of(found["response"], weeks[10])[1:] == ["3", "1", "20.0", "20.0", "0", "", ""]
    # Asking for the other desk changes nothing for a member who is no admin.
    other = police.get("/staff/insight", params={"lang": "en", "desk": "municipality"})
    assert tables_of(other.text) == found
    assert csv_of(police, "categories", lang="en", desk="municipality") == found["categories"]
    assert "Police" in other.text and "every desk" not in other.text

    municipality = member(env, "Gea Gemeente", "municipality")
    mine = tables_of(municipality.get("/staff/insight", params={"lang": "en"}).text)
    assert sum(int(row[2]) for row in mine["categories"][1:]) == 0  # no suspicious
    assert row_of(mine["categories"], weeks[9])[1:] == ["10", "0", "0", "0", "10"]
    assert row_of(mine["response"], weeks[9])[1:] == ["10", "10", "4.0", "8.0", "1", "120.0",
                                                      "120.0"]


def test_insight_needs_a_login_and_a_known_table(env: Env) -> None:
    anonymous = client_for(env)
    assert anonymous.get("/staff/insight").status_code == 303
    assert anonymous.get("/staff/insight.csv", params={"table": "areas"}).status_code == 303
    admin = member(env, "Ans Beheer", "admin")
    empty = admin.get("/staff/insight")
    assert empty.status_code == 200 and 'data-testid="nav-insight"' in empty.text
    assert len(re.findall(r'role="img"', empty.text)) == 5  # charts of nothing still draw
    assert admin.get("/staff/insight.csv", params={"table": "../etc"}).status_code == 404
    assert "areas" not in tables_of(empty.text)  # "no data yet" instead of an empty table
    assert csv_of(admin, "areas") == [["Gebied", "Overlast", "Verdacht", "Zorgen om iemand",
                                       "Noodgeval", "Totaal"]]


def test_csv_cells_are_not_formulas() -> None:
    table = insight.Table("areas", "x", ["=cmd", "a"], [["+1", "@x"], ["-", "ok"]])
    assert list(insight.csv_rows(table)) == [["'=cmd", "a"], ["'+1", "'@x"], ["'-", "ok"]]


def test_doctests() -> None:
    for module in (insight, insight_svg, open311):
        assert doctest.testmod(module).failed == 0, module.__name__
