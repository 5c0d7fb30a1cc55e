"""The public Open311 GeoReport v2 feed on both backends (a SQLite file and a real
PostgreSQL server), through the real app (in-process HTTP).

Reports reach central as a node sends them (sealed batches, ingest, the
projector with the default triage rules) or, for the property test that
needs many of them, as ingest stores them (event row plus triage row). The
feed must never carry a police report, a contact, a receipt code or words the
resident did not allow; filters and keyset paging must hold; the documents
must have the GeoReport v2 fields and types.
"""

from __future__ import annotations

import base64
import random
import re
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from central import db, handling, open311
from central.ingest import Ingest
from central.projector import Projector
from central.staff.accounts import StaffMember
from central.triage import router_for
from sync import KeyPair, make_event
from tests.support.ingest import batch, enrol
from tests.support.staff import Env, client_for, open_env

ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
KEYS = KeyPair.generate()
_seq = {"n": 0}
ADMIN = StaffMember(key="", name="Test Beheer", role="admin", must_change=False, created=0,
                    last_login=None)

#: GeoReport v2 "GET Service Requests" fields (wiki.open311.org/GeoReport_v2) and
#: the JSON types the feed gives them (None: the field may be null).
REQUEST_FIELDS: dict[str, tuple[type, ...]] = {
    "service_request_id": (str,), "status": (str,), "status_notes": (str, type(None)),
    "service_name": (str,), "service_code": (str,), "description": (str, type(None)),
    "agency_responsible": (str, type(None)), "service_notice": (str, type(None)),
    "requested_datetime": (str,), "updated_datetime": (str, type(None)),
    "expected_datetime": (str, type(None)), "address": (str, type(None)),
    "address_id": (str, type(None)), "zipcode": (str, type(None)),
    "media_url": (str, type(None)),
}
OPTIONAL_FIELDS = {"lat": (float,), "long": (float,), "extended_attributes": (dict,)}
SERVICE_FIELDS: dict[str, tuple[type, ...]] = {
    "service_code": (str,), "service_name": (str,), "description": (str,),
    "metadata": (bool,), "type": (str,), "keywords": (str,), "group": (str,),
}
W3C = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)$")


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> Iterator[Env]:
    with open_env(tmp_path, database_url) as central_env:
        yield central_env


def letters() -> str:
    """A unique marker of letters only (digits could look like a phone number)."""
    return "".join(chr(97 + int(c, 16)) for c in uuid.uuid4().hex[:14])


def receipt(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(3)) + "-" + "".join(
        rng.choice(ALPHABET) for _ in range(3))


def store_report(env: Env, *, category: str, route: str, audience: str, text: str,
                 place_text: str, point: str | None, contact: str, receipt_code: str,
                 ts: int, origin: str = "bs-escamp") -> str:
    """A report event of a node and its triage row, as ingest and the projector store them."""
    _seq["n"] += 1
    event = make_event(KEYS, origin=origin, stream="private", seq=_seq["n"], kind="report",
                       ts=ts, body={"category": category, "text": text, "audience": audience,
                                    "receipt": receipt_code, "contact": contact,
                                    "place": {"point": point, "text": place_text}})
    now = int(time.time() * 1000)
    with env.engine.begin() as conn:
        conn.execute(db.events.insert().values(
            id=event.id, origin=event.origin, stream=event.stream, seq=event.seq, ts=event.ts,
            kind=event.kind, body=event.body_json().decode(),
            sig=base64.b64encode(event.sig).decode(), via=origin, received_at=now))
        conn.execute(db.reports.insert().values(
            event_id=event.id, origin=origin, receipt=receipt_code, category=category,
            ts=event.ts, route=route, rule=f"default-{route}", state="new", updated_at=now,
            version=1))
    return event.id


def all_pages(client: TestClient, path: str, **params: str) -> tuple[list[dict[str, Any]],
                                                                     list[str]]:
    """Every request of ``path`` following the Link headers; and every body read."""
    found: list[dict[str, Any]] = []
    bodies: list[str] = []
    url: str | None = path
    query: dict[str, str] | None = params
    for _ in range(500):
        assert url is not None
        r = client.get(url, params=query)
        assert r.status_code == 200, r.text
        bodies.append(r.text)
        found += r.json()
        link = r.headers.get("link")
        if not link:
            return found, bodies
        url, query = re.fullmatch(r'<([^>]+)>; rel="next"', link).group(1), None  # type: ignore[union-attr]
    raise AssertionError("paging never ended")


def check_request(item: dict[str, Any]) -> None:
    """The fields and types of GeoReport v2's GET Service Requests, nothing else."""
    for name, types in REQUEST_FIELDS.items():
        assert name in item, name
        assert isinstance(item[name], types), (name, item[name])
    for name in set(item) - set(REQUEST_FIELDS):
        assert name in OPTIONAL_FIELDS and isinstance(item[name], OPTIONAL_FIELDS[name]), name
    assert item["status"] in ("open", "closed")
    assert item["service_code"] in {s.code for s in open311.SERVICES}
    assert W3C.match(item["requested_datetime"]) and W3C.match(item["updated_datetime"])


# ------------------------------------------------------------------ privacy (property)


_report = st.fixed_dictionaries({
    "category": st.sampled_from(["nuisance", "suspicious", "social", "emergency"]),
    "route": st.sampled_from(["police", "municipality"]),
    "audience": st.sampled_from(["neighbours", "authorities", "both"]),
    "point": st.sampled_from([None, "speeltuin"]),
    "phone_in_text": st.booleans(),
    "age_h": st.integers(min_value=0, max_value=24 * 80),
})


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(_report, min_size=1, max_size=14), st.randoms(use_true_random=False))
def test_feed_never_carries_police_reports_contacts_receipts_or_unshared_words(
        env: Env, seeded: list[dict[str, Any]], rng: random.Random) -> None:
    """Many reports of both desks with contact data: every feed response is checked."""
    now = int(time.time() * 1000)
    secrets: list[str] = []
    expected: dict[str, dict[str, Any]] = {}
    with env.engine.connect() as conn:  # earlier examples' reports stay; learn which are in
        for row in conn.execute(open311._select()):
            expected[row.event_id] = {}
    police: list[str] = []
    for spec in seeded:
        words, place, person = letters(), letters(), letters()
        text = f"Melding {words} bij de hoek"
        if spec["phone_in_text"]:
            phone = f"06-{rng.randint(10_000_000, 99_999_999)}"
            text += f" bel {phone} of {person}@example.nl"
            secrets.append(phone)
        contact = f"{person}-contact 06-{rng.randint(10_000_000, 99_999_999)}"
        code = receipt(rng)
        report_id = store_report(
            env, category=spec["category"], route=spec["route"], audience=spec["audience"],
            text=text, place_text=f"Straat {place}", point=spec["point"], contact=contact,
            receipt_code=code, ts=now - spec["age_h"] * 3_600_000)
        secrets += [person, code, contact]
        in_feed = spec["route"] == "municipality" and spec["category"] in ("nuisance", "social")
        if not in_feed:
            if spec["route"] == "police":
                police.append(report_id)
            secrets += [words, place]
            continue
        shown = spec["category"] == "nuisance" and spec["audience"] == "both"
        expected[report_id] = {"words": words, "place": place, "shown": shown,
                               "point": spec["point"] if spec["category"] == "nuisance" else None}
        if not shown:
            secrets += [words, place]
    client = client_for(env)
    # requests.json over all pages (the last 90 days by default), small pages.
    found, bodies = all_pages(client, "/open311/v2/requests.json", page_size="5",
                              extensions="true")
    ids = [item["service_request_id"] for item in found]
    assert len(ids) == len(set(ids))
    for report_id, want in expected.items():
        if want and report_id not in ids:
            raise AssertionError(f"{report_id} missing from the feed")
    assert not set(ids) & set(police)
    for item in found:
        check_request(item)
        want = expected.get(item["service_request_id"])
        assert want is not None, "a report the feed must not carry"
        if not want:
            continue
        if want["shown"]:
            assert want["words"] in (item["description"] or "")
            assert item["address"] == f"Straat {want['place']}"
        else:
            assert item["description"] is None
            assert item["address"] == want["point"]
    # Every id one by one, also the police ones (404), in JSON and XML.
    for report_id in [*[i for i in ids if expected.get(i)][:6], *police[:6]]:
        for fmt in ("json", "xml"):
            r = client.get(f"/open311/v2/requests/{report_id}.{fmt}")
            bodies.append(r.text)
            assert r.status_code == (404 if report_id in police else 200), r.text
    xml = client.get("/open311/v2/requests.xml", params={"page_size": "1000"})
    assert xml.status_code == 200
    bodies.append(xml.text)
    assert {el.text for el in ET.fromstring(xml.content).iter("service_request_id")} == set(ids)
    everything = "\n".join(bodies)
    for secret in secrets:
        assert secret not in everything, f"{secret!r} leaked into the feed"
    assert "@example.nl" not in everything


# ------------------------------------------------------------------ the real path


def test_reports_of_a_node_reach_the_feed_through_ingest_and_triage(env: Env) -> None:
    """Sealed batch -> ingest -> projector (default rules) -> feed: only the municipality's."""
    keys = enrol(env.engine, env.central, "bs-ypenburg", area="YPENBURG")
    now = int(time.time() * 1000)
    bodies = [
        ("nuisance", "De lantaarnpaal is kapot", "both"),          # public-space rule
        ("nuisance", "Harde muziek elke nacht", "both"),           # nuisance rule
        ("social", "Mevrouw op nummer 4 komt niet meer buiten", "authorities"),
        ("suspicious", "Man kijkt in auto's", "authorities"),      # police
        ("emergency", "Brand in de schuur", "both"),               # police
        ("nuisance", "Iemand dreigt met een mes", "both"),         # police by keyword
    ]
    events = [make_event(keys, origin="bs-ypenburg", stream="private", seq=i, kind="report",
                         ts=now - i * 60_000, body={
                             "category": cat, "text": text, "audience": audience,
                             "receipt": "K7F-3QX", "contact": "jan@example.nl",
                             "place": {"point": None, "text": "Laan van Ypenburg"}})
              for i, (cat, text, audience) in enumerate(bodies, start=1)]
    Ingest(env.engine, env.central).handle(batch(keys, "bs-ypenburg", 1, events, env.central))
    Projector(env.engine, router_for(env.central.data_dir)).drain()
    client = client_for(env)
    r = client.get("/open311/v2/requests.json", params={"extensions": "true"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
    items = r.json()
    assert [i["service_request_id"] for i in items] == [events[0].id, events[1].id, events[2].id]
    lamp, music, social = items
    assert lamp["description"] == "De lantaarnpaal is kapot"
    assert lamp["address"] == "Laan van Ypenburg"
    assert lamp["extended_attributes"] == {"area": "YPENBURG", "signalen": {
        "main": "overlast-in-de-openbare-ruimte", "main_name": "Overlast in de openbare ruimte",
        "sub": "overig-openbare-ruimte", "sub_name": "Overig openbare ruimte"}}
    assert music["extended_attributes"]["signalen"]["sub"] == "overige-overlast-door-personen"
    assert social["service_name"] == "Zorgen om iemand"
    assert social["description"] is None and social["address"] is None
    assert "K7F-3QX" not in r.text and "jan@example.nl" not in r.text
    assert all(i["status"] == "open" and i["agency_responsible"] == "Gemeente" for i in items)
    assert "extended_attributes" not in client.get("/open311/v2/requests.json").json()[0]


# ------------------------------------------------------------------ filters and paging


def test_filters_status_dates_ids_and_keyset_paging(env: Env) -> None:
    rng = random.Random(7)
    now = int(time.time() * 1000)
    ids = []
    for i in range(23):
        ids.append(store_report(
            env, category="nuisance" if i % 3 else "social", route="municipality",
            audience="both", text=f"melding {letters()}", place_text="plein", point=None,
            contact="x", receipt_code=receipt(rng), ts=now - i * 3_600_000))
    old = store_report(env, category="nuisance", route="municipality", audience="both",
                       text="oud", place_text="plein", point=None, contact="x",
                       receipt_code=receipt(rng), ts=now - 100 * 86_400_000)
    # Handle two reports at central: they are closed, and updated_datetime moves.
    for report_id in ids[:2]:
        handling.change_state(env.engine, ADMIN, report_id, "in_progress", 1, now)
        handling.change_state(env.engine, ADMIN, report_id, "handled", 2, now + 1000)
    client = client_for(env)

    found, _ = all_pages(client, "/open311/v2/requests.json", page_size="4")
    assert [i["service_request_id"] for i in found] == ids  # newest first, each once
    assert old not in [i["service_request_id"] for i in found]  # older than 90 days
    first = client.get("/open311/v2/requests.json", params={"page_size": "4"})
    assert 'rel="next"' in first.headers["link"] and len(first.json()) == 4
    last = client.get("/open311/v2/requests.json", params={"page_size": "23"})
    assert "link" not in last.headers

    closed = client.get("/open311/v2/requests.json", params={"status": "closed"}).json()
    assert {i["service_request_id"] for i in closed} == set(ids[:2])
    assert all(i["status_notes"] == "Afgehandeld" for i in closed)
    opened = client.get("/open311/v2/requests.json", params={"status": "open"}).json()
    assert len(opened) == 21
    both = client.get("/open311/v2/requests.json", params={"status": "open,closed"}).json()
    assert len(both) == 23

    social = client.get("/open311/v2/requests.json", params={"service_code": "social"}).json()
    assert [i["service_request_id"] for i in social] == ids[0::3]

    start = open311.iso(now - int(5.5 * 3_600_000))
    end = open311.iso(now - int(1.5 * 3_600_000))
    window = client.get("/open311/v2/requests.json",
                        params={"start_date": start, "end_date": end}).json()
    assert [i["service_request_id"] for i in window] == ids[2:6]
    since = client.get("/open311/v2/requests.json",
                       params={"start_date": "2000-01-01T00:00:00Z", "page_size": "1000"})
    assert old in [i["service_request_id"] for i in since.json()]

    picked = client.get("/open311/v2/requests.json", params={
        "service_request_id": f"{ids[5]},{old}", "status": "closed"}).json()
    assert {i["service_request_id"] for i in picked} == {ids[5], old}  # overrides the rest

    one = client.get(f"/open311/v2/requests/{ids[0]}.json").json()
    assert len(one) == 1 and one[0]["status"] == "closed"
    assert one[0]["updated_datetime"] == open311.iso(now + 1000)

    for params in ({"page_size": "0"}, {"page_size": "1001"}, {"status": "pending"},
                   {"start_date": "gisteren"}, {"start_date": "2026-01-01T00:00:00"},
                   {"start_date": open311.iso(now), "end_date": open311.iso(now - 1000)},
                   {"before": "nope"}):
        r = client.get("/open311/v2/requests.json", params=params)
        assert r.status_code == 400, params
        assert r.json()[0]["code"] == 400 and r.json()[0]["description"]
    bad = client.get("/open311/v2/requests.xml", params={"status": "x"})
    assert bad.status_code == 400 and ET.fromstring(bad.content).tag == "errors"
    assert client.get(f"/open311/v2/requests/{uuid.uuid4()}.json").status_code == 404
    assert client.get("/open311/v2/requests.csv").status_code == 404


# ------------------------------------------------------------------ format


def test_documents_have_the_georeport_v2_fields_in_json_and_xml(env: Env) -> None:
    now = int(time.time() * 1000)
    report_id = store_report(env, category="nuisance", route="municipality", audience="both",
                             text="Afval <script>alert(1)</script> & meer",
                             place_text="Hoek Leyweg", point="speeltuin", contact="c",
                             receipt_code="AAA-BBB", ts=now)
    client = client_for(env)
    services = client.get("/open311/v2/services.json")
    assert services.status_code == 200
    assert services.headers["content-type"].startswith("application/json")
    codes = []
    for service in services.json():
        assert set(service) == set(SERVICE_FIELDS)
        for name, types in SERVICE_FIELDS.items():
            assert isinstance(service[name], types), name
        assert service["metadata"] is False and service["type"] == "realtime"
        codes.append(service["service_code"])
    assert codes == ["nuisance", "social"]  # never a police category
    nuisance = services.json()[0]
    assert nuisance["group"] == "Overlast van en door personen of groepen"
    assert "overig-openbare-ruimte" in nuisance["keywords"].split(",")

    xml = client.get("/open311/v2/services.xml")
    assert xml.headers["content-type"].startswith("text/xml")
    assert xml.content.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    root = ET.fromstring(xml.content)
    assert root.tag == "services"
    assert [s.findtext("service_code") for s in root.findall("service")] == codes
    assert root.find("service/metadata").text == "false"  # type: ignore[union-attr]

    item = client.get("/open311/v2/requests.json").json()[0]
    check_request(item)
    assert item["description"] == "Afval <script>alert(1)</script> & meer"
    assert item["requested_datetime"] == open311.iso(now)
    assert item["requested_datetime"][-6:] in ("+01:00", "+02:00")
    doc = ET.fromstring(client.get("/open311/v2/requests.xml").content)
    assert doc.tag == "service_requests"
    request = doc.find("request")
    assert request is not None
    assert request.findtext("service_request_id") == report_id
    assert request.findtext("description") == item["description"]  # escaped and parsed back
    assert [child.tag for child in request] == list(item)  # null: an empty element
    assert all((child.text or None) == item[child.tag] for child in request)


def test_docs_name_the_endpoints_and_cite_signalen() -> None:
    text = (Path(__file__).parents[2] / "docs" / "central.md").read_text()
    for path in ("GET /open311/v2/services.json", "GET /open311/v2/requests.json",
                 "GET /open311/v2/requests/{id}.json", "GET /staff/insight",
                 "GET /staff/insight.csv"):
        assert f"`{path}" in text, path
    assert "api/app/signals/apps/signals/fixtures/categories.json" in text
    for signalen in {s for s in open311.SIGNALEN.values()}:
        assert f"`{signalen.main}`" in text and f"`{signalen.sub}`" in text
