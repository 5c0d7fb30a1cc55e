"""Hostile input against a running node: its documented 4xx, never a 500 (issue 17).

A real ``bart node run`` (real Mosquitto, SQLite file, uvicorn) is sent the
bodies the issue names — nesting 5,000 deep, lone surrogate escapes in a key or
a value, invalid UTF-8, duplicate keys, NaN/Infinity, huge integers, oversize
bodies, an unknown field — on ``POST /api/v1/reports`` and the resident form
``POST /report``, then hypothesis-generated ones. Every answer is a 2xx/3xx or
a documented 4xx; the node's log holds no traceback, and ``stop_and_check``
fails the module if any request logged "Exception in ASGI application".
The limits in the OpenAPI schema's ``ReportIn`` are the ones enforced.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.central import init_central_process
from tests.support.disk import fill_disk
from tests.support.node import MEETING_POINTS, NodeProcess, configure, init_node, stop_and_check

API = "/api/v1/reports"
#: What the API documents for a report it refuses (docs/http-api.md).
API_REFUSALS = {413, 415, 422}
GOOD = {"category": "nuisance", "text": "Harde muziek bij het plein", "audience": "both"}


@pytest.fixture(scope="module")
def node(running_node: NodeProcess) -> Iterator[NodeProcess]:
    """The module's node; at the end, nothing in its log may be a traceback."""
    start = running_node.log_path.stat().st_size
    yield running_node
    with running_node.log_path.open("rb") as log:
        log.seek(start)
        text = log.read().decode("utf-8", "replace")
    assert "Traceback" not in text, text[text.find("Traceback"):][:3000]


@pytest.fixture(scope="module")
def http(node: NodeProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=node.base_url, timeout=30.0) as client:
        yield client


def reports_stored(node: NodeProcess) -> int:
    with sqlite3.connect(f"file:{node.db_path}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT count(*) FROM events WHERE kind = 'report'").fetchone()[0])


def post(http: httpx.Client, body: bytes, ctype: str = "application/json") -> httpx.Response:
    return http.post(API, content=body, headers={"content-type": ctype})


def deep(depth: int) -> bytes:
    return b'{"category":"nuisance","text":' + b"[" * depth + b"]" * depth + b"}"


NAMED = {
    "nested 5,000 deep": deep(5000),
    # 5,000 objects deep would pass the body limit (413): 3,000 of them fit.
    "nested 3,000 deep, objects": b'{"":' * 3000 + b"1" + b"}" * 3000,
    "lone surrogate in a key": b'{"category":"nuisance","\\ud800":"x"}',
    "lone surrogate in a value": b'{"category":"nuisance","text":"hallo \\ud800"}',
    "lone low surrogate in place": b'{"category":"nuisance","place":{"text":"\\udfff"}}',
    "invalid UTF-8": b'{"category":"nuisance","text":"\xff\xfe caf\xe9"}',
    "UTF-8 encoded surrogate": b'{"category":"nuisance","text":"\xed\xa0\x80"}',
    "duplicate keys": b'{"category":"nuisance","category":"emergency","text":"x"}',
    "NaN": b'{"category":"nuisance","text":"x","called_112":NaN}',
    "Infinity": b'{"category":"nuisance","text":"x","called_112":-Infinity}',
    "float": b'{"category":"nuisance","text":"x","called_112":1.0}',
    "huge integer": b'{"category":"nuisance","text":"x","called_112":' + b"9" * 5000 + b"}",
    "unknown field receipt": json.dumps({**GOOD, "receipt": "AAA-AAA"}).encode(),
    "unknown field in place": json.dumps({**GOOD, "place": {"text": "x", "lat": 52}}).encode(),
    "not an object": b'["nuisance"]',
    "empty": b"",
}


@pytest.mark.parametrize("name", list(NAMED))
def test_named_hostile_bodies_get_422_and_store_nothing(node: NodeProcess, http: httpx.Client,
                                                        name: str) -> None:
    before = reports_stored(node)
    r = post(http, NAMED[name])
    assert r.status_code == 422, (name, r.status_code, r.text[:300])
    data = r.json()
    assert data["detail"] == "invalid input; nothing was stored"
    assert data["errors"][0]["field"] in {"$", "body", "place", "text", "called_112"}
    assert "Traceback" not in r.text
    assert reports_stored(node) == before


def test_oversize_and_wrong_type_are_413_and_415(node: NodeProcess, http: httpx.Client) -> None:
    before = reports_stored(node)
    big = json.dumps({**GOOD, "text": "x" * 100_000}).encode()
    assert post(http, big).status_code == 413
    assert post(http, json.dumps(GOOD).encode(), "text/plain").status_code == 415
    assert reports_stored(node) == before


def _schema(http: httpx.Client) -> dict[str, Any]:
    doc = http.get("/api/openapi.json").json()
    return dict(doc["components"]["schemas"])


def test_the_schema_shows_the_limits_that_are_enforced(http: httpx.Client) -> None:
    """Each maxLength of ReportIn: that many characters are stored, one more is 422 —
    and additionalProperties: false is what the node does."""
    schemas = _schema(http)
    report, place = schemas["ReportIn"], schemas["PlaceIn"]
    assert report["additionalProperties"] is False and place["additionalProperties"] is False
    limits = {name: report["properties"][name]["maxLength"]
              for name in ("text", "called_112_by", "contact")}
    limits["place.text"] = place["properties"]["text"]["maxLength"]
    for name, most in limits.items():
        for length, status in ((most, 201), (most + 1, 422)):
            value = "ab" * (length // 2) + "a" * (length % 2)  # nothing for cleaning to drop
            body: dict[str, Any] = {**GOOD, "called_112": name == "called_112_by"}
            if name == "place.text":
                body["place"] = {"text": value}
            else:
                body[name] = value
            r = post(http, json.dumps(body).encode())
            assert r.status_code == status, (name, length, r.text[:200])
            if status == 422:
                assert r.json()["errors"][0]["field"] == name


def form_post(http: httpx.Client, node: NodeProcess, body: bytes) -> httpx.Response:
    # Same origin and no cookie: what an old phone with cookies off sends (resident.py).
    http.cookies.clear()  # the form pages set a CSRF cookie; this "phone" keeps none
    return http.post("/report", content=body, headers={
        "content-type": "application/x-www-form-urlencoded", "accept": "text/html",
        "origin": node.base_url, "host": f"127.0.0.1:{node.http_port}"})


FORM_NAMED = {
    "surrogate, percent-encoded": b"category=nuisance&text=%ED%A0%80hallo",
    "invalid UTF-8": b"category=nuisance&text=%FF%FE%C3",
    "text far too long": b"category=nuisance&text=" + b"ab" * 2500,
    "unknown meeting point": b"category=nuisance&place_point=nergens",
    "bad audience": b"category=nuisance&text=x&audience=iedereen",
    "empty report": b"category=nuisance&text=+++",
    "a receipt of its own": b"category=nuisance&receipt=AAA-AAA&text=",
    "no category": b"text=hallo",
    "category twice": b"category=nuisance&category=%ED%A0%80&text=hallo",
    "many fields": b"category=nuisance&text=x&" + b"&".join(b"f%d=1" % i for i in range(200)),
    "not a form at all": b"\xff\x00{}[]" * 100,
}


@pytest.mark.parametrize("name", list(FORM_NAMED))
def test_the_form_answers_hostile_fields_with_its_page(node: NodeProcess, http: httpx.Client,
                                                        name: str) -> None:
    r = form_post(http, node, FORM_NAMED[name])
    assert r.status_code in (303, 400, 422), (name, r.status_code, r.text[:300])
    if r.status_code in (400, 422):
        assert r.headers["content-type"].startswith("text/html")
        assert 'data-testid="errors"' in r.text and "Traceback" not in r.text


def test_the_form_keeps_every_word_when_refused(node: NodeProcess, http: httpx.Client) -> None:
    words = "Scooters racen elke avond over het fietspad"
    r = form_post(http, node, f"category=nuisance&text={words.replace(' ', '+')}"
                              f"&place_point=nergens".encode())
    assert r.status_code == 422 and words in r.text


# -- a full disk: one answer on both paths, and the resident's words kept ------------------

def test_a_full_disk_is_503_on_both_paths_and_the_form_keeps_every_word(
        tmp_path: Path, mosquitto_bin: str, small_disk: Path) -> None:
    node = init_node(small_disk, mosquitto_bin)
    node.log_path = tmp_path / "node.log"  # the log must not share the full disk
    configure(node, "min_free_disk_mb = 0")
    node.start()
    try:
        words = "Er lekt water uit de container bij de ingang"
        form = f"category=nuisance&text={words.replace(' ', '+')}".encode()
        filler = fill_disk(small_disk)
        with httpx.Client(base_url=node.base_url, timeout=30.0) as http:
            before = reports_stored(node)
            page = form_post(http, node, form)
            assert page.status_code == 503, page.text[:300]
            assert page.headers["retry-after"] == "5"
            assert words in page.text  # nothing the resident typed is lost
            assert "nog niet opgeslagen" in page.text  # error.store, in Dutch
            api = post(http, json.dumps({**GOOD, "text": words}).encode())
            assert api.status_code == 503 and api.headers["retry-after"] == "5"
            assert api.json() == {"detail": "the report could not be stored; try again"}
            filler.unlink()
            # Space again: the same words are taken, on both paths.
            deadline = time.monotonic() + 30
            while (page := form_post(http, node, form)).status_code == 503 \
                    and time.monotonic() < deadline:
                time.sleep(0.5)
            assert page.status_code == 303, page.text[:300]
            assert post(http, json.dumps(GOOD).encode()).status_code == 201
            assert reports_stored(node) == before + 2
    finally:
        stop_and_check(node)
    assert "Traceback" not in node.log_path.read_text(errors="replace")


# -- hypothesis: generated hostile bodies against the running node -------------------------

SEED = json.dumps({**GOOD, "place": {"point": MEETING_POINTS[0]["id"], "text": "Plein"},
                   "called_112": False, "called_112_by": "", "contact": "", "lang": "nl"})
KEYS = st.sampled_from(["category", "text", "place", "audience", "called_112", "contact",
                        "lang", "receipt", "\ud800", "point", ""])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                    st.text(max_size=30), st.sampled_from(["\ud800", "nuisance", "both"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(KEYS, inner, max_size=4), max_leaves=12)


@st.composite
def hostile_body(draw: st.DrawFn) -> bytes:
    how = draw(st.sampled_from(["value", "bytes", "mutate", "nest", "int"]))
    if how == "value":  # a report with one field of any JSON value (NaN, floats, surrogates)
        doc = json.loads(SEED)
        doc[draw(KEYS)] = draw(VALUES)
        return json.dumps(doc, allow_nan=True).encode()
    if how == "bytes":
        return draw(st.binary(max_size=200))
    if how == "nest":
        n = draw(st.integers(500, 6000))
        return b'{"category":"nuisance","text":' + b"[" * n + b"]" * n + b"}"
    if how == "int":
        return SEED[:-1].encode() + b',"x":' + b"9" * draw(st.integers(10, 6000)) + b"}"
    data = bytearray(SEED.encode())
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data) - 1))
        data[at:at + draw(st.integers(0, 3))] = draw(st.sampled_from(
            [b"\xff", b"\\ud800", b"NaN", b"1e999", b'"', b"{", b"}", b",", b"\xed\xa0\x80"]))
    return bytes(data)


FORM_FIELDS = st.sampled_from([b"category", b"text", b"place_point", b"place_text",
                               b"audience", b"called_112", b"called_112_by", b"contact",
                               b"receipt", b"csrf", b"x"])
FORM_VALUES = st.one_of(
    st.binary(max_size=40).map(lambda b: "".join(f"%{c:02X}" for c in b).encode()),
    st.sampled_from([b"nuisance", b"emergency", b"speeltuin", b"yes", b"both", b"%ED%A0%80",
                     b"%FF", b"ab" * 600, b"+" * 300, b"%00", b"%E2%80%AE"]),
    st.text(max_size=30).map(lambda t: t.encode("utf-8", "surrogatepass").replace(b"&", b"")))


@st.composite
def hostile_form(draw: st.DrawFn) -> bytes:
    """A urlencoded body: the form's fields (and others) with hostile values."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    pairs = draw(st.lists(st.tuples(FORM_FIELDS, FORM_VALUES), max_size=12))
    if draw(st.booleans()):
        pairs.insert(0, (b"category", b"nuisance"))
    return b"&".join(k + b"=" + v for k, v in pairs)


#: Bodies sent per run; each is one real HTTP request (~5-20 ms on a loaded machine).
HTTP_EXAMPLES = 400


def test_generated_hostile_bodies_never_get_a_5xx(node: NodeProcess,
                                                  http: httpx.Client) -> None:
    """Figures for the issue: bodies sent and answers by status (printed); no 5xx."""
    seen: Counter[int] = Counter()

    @settings(max_examples=HTTP_EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(body=hostile_body())
    def one(body: bytes) -> None:
        r = post(http, body)
        seen[r.status_code] += 1
        assert r.status_code == 201 or r.status_code in API_REFUSALS, \
            (body[:200], r.status_code, r.text[:300])
        assert r.headers["content-type"] == "application/json"
        r.json()

    one()
    print(f"hostile API bodies sent: {sum(seen.values())}, "
          f"answers: {dict(sorted(seen.items()))}")
    assert sum(seen.values()) >= HTTP_EXAMPLES // 2
    assert not [code for code in seen if code >= 500]
    forms: Counter[int] = Counter()

    @settings(max_examples=HTTP_EXAMPLES // 2, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(body=hostile_form())
    def form(body: bytes) -> None:
        r = form_post(http, node, body)
        forms[r.status_code] += 1
        assert r.status_code in (303, 400, 422), (body[:200], r.status_code, r.text[:300])
        if r.status_code != 303:
            assert r.headers["content-type"].startswith("text/html")

    form()
    print(f"hostile forms sent: {sum(forms.values())}, answers: {dict(sorted(forms.items()))}")
    assert not [code for code in forms if code >= 500]
    # The node is still well after all of it.
    deadline = time.monotonic() + 30
    while node.health().get("status") != "ok" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert node.health()["status"] == "ok"


# -- MQTT: hostile payloads on the node's event topics ---------------------------------------

def test_hostile_mqtt_payloads_are_refused_and_the_node_goes_on(node: NodeProcess,
                                                                 http: httpx.Client) -> None:
    """What a broken or hostile publisher sends on an event topic is refused (logged as
    "refused MQTT message"), never raised; a good alert afterwards is shown."""
    good = node.peer_alert("Let op: na de storm ligt er glas op het plein")
    topic = f"bart/v1/{node.peer_origin}/public/alert"
    sent = 0
    with node.service_client(f"hostile-{time.monotonic_ns()}") as client:
        client.wait_connected()

        @settings(max_examples=HTTP_EXAMPLES // 4, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(payload=st.one_of(hostile_body(), st.binary(max_size=200),
                                 st.builds(_mutate, st.just(good.encode()),
                                           st.lists(st.tuples(st.integers(0, 400),
                                                              st.binary(max_size=6)),
                                                    min_size=1, max_size=3))))
        def one(payload: bytes) -> None:
            nonlocal sent
            client.publish(topic, payload)
            sent += 1

        one()
        client.publish(topic, good.encode())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        shown = [a["id"] for a in http.get("/api/v1/alerts").json()["alerts"]]
        if good.id in shown:
            break
        time.sleep(0.2)
    assert good.id in shown, "the good alert after the hostile payloads was not shown"
    assert "refused MQTT message (malformed)" in node.log_path.read_text(errors="replace")
    print(f"hostile MQTT payloads published: {sent}")


def _mutate(data: bytes, edits: list[tuple[int, bytes]]) -> bytes:
    out = bytearray(data)
    for at, new in edits:
        out[at % len(out):at % len(out) + len(new)] = new
    return bytes(out)


# -- central: the same promise for what nodes send it ---------------------------------------

VECTORS = Path(__file__).parent.parent / "vectors"


@st.composite
def hostile_batch(draw: st.DrawFn) -> bytes:
    """A sealed batch vector with bytes flipped, cut or inserted, or other bytes."""
    data = bytearray((VECTORS / "batch-v1.bin").read_bytes())
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=400))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data) - 1))
        data[at:at + draw(st.integers(0, 8))] = draw(st.binary(max_size=8))
    return bytes(data)


def test_central_answers_hostile_enrolments_and_batches_with_4xx(tmp_path: Path) -> None:
    """A real ``bart central run``: hostile enrolment requests and sealed batches get a
    4xx; its log holds no "Exception in ASGI application" (CentralProcess.stop)."""
    central = init_central_process(tmp_path)
    central.start()
    seen: Counter[tuple[str, int]] = Counter()
    try:
        with httpx.Client(base_url=central.url, timeout=30.0) as client:

            @settings(max_examples=HTTP_EXAMPLES // 2, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
            @given(enrol=hostile_body(), batch=hostile_batch())
            def one(enrol: bytes, batch: bytes) -> None:
                r = client.post("/api/v1/enroll", content=enrol,
                                headers={"content-type": "application/json"})
                seen["enroll", r.status_code] += 1
                assert 400 <= r.status_code < 500, (enrol[:200], r.status_code, r.text[:300])
                r = client.post("/api/v1/batches", content=batch,
                                headers={"content-type": "application/vnd.bart.batch"})
                seen["batches", r.status_code] += 1
                assert 400 <= r.status_code < 500, (batch[:80], r.status_code, r.text[:300])
                assert "Traceback" not in r.text

            one()
    finally:
        central.stop()  # fails on "Exception in ASGI application" in its log
    print(f"central: hostile requests by path and answer: {dict(sorted(seen.items()))}")
    assert not [key for key in seen if key[1] >= 500]
    assert "Traceback" not in central.log_path.read_text(errors="replace")
