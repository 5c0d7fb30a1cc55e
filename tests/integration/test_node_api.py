"""A real ``bart node run`` from the outside: HTTP API, resident pages, MQTT.

Everything goes through the node's sockets (httpx, paho); the node runs as a
subprocess with its own Mosquitto. DESIGN.md §3-§4: reports are private,
their public warnings carry no contact data, bad input is refused with a clear
4xx and stores nothing, forged events never reach residents.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.topics import event_topic
from sync import KeyPair, decode_event
from tests.support.base import wait_until
from tests.support.node import AREA, MEETING_POINTS, RECEIPT_PATTERN, NodeProcess
from tests.support.processes import mosquitto_pids_for
from tests.support.sse import SseReader

pytestmark = pytest.mark.timeout(60)

REPORTS_JSONL = Path(__file__).resolve().parents[1] / "data" / "reports.jsonl"
TIMEOUT = httpx.Timeout(10.0)


# -- helpers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http(running_node: NodeProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=running_node.base_url, timeout=TIMEOUT) as client:
        yield client


def marker(label: str = "m") -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}"


def report(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"category": "suspicious", "text": marker("tekst"),
                            "place": {"point": MEETING_POINTS[0]["id"], "text": "bij het hek"},
                            "audience": "both", "called_112": False}
    body.update(fields)
    return body


def post_report(http: httpx.Client, **fields: Any) -> dict[str, Any]:
    r = http.post("/api/v1/reports", json=report(**fields))
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


def event_count(node: NodeProcess) -> int:
    return int(node.health()["store"]["events"])


def alerts(http: httpx.Client) -> list[dict[str, Any]]:
    r = http.get("/api/v1/alerts", params={"limit": 200})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["alerts"]
    return items


def csp_nonce(response: httpx.Response) -> str:
    csp = response.headers.get("content-security-policy", "")
    match = re.search(r"script-src 'nonce-([A-Za-z0-9_\-+/=]+)'", csp)
    assert match, f"no script nonce in CSP {csp!r}"
    return match.group(1)


class PageScan(HTMLParser):
    """What the security checks need from a page: scripts, styles, on* attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[dict[str, str | None]] = []
        self.styles: list[dict[str, str | None]] = []
        self.handlers: list[tuple[str, str]] = []
        self.tags: list[str] = []
        self.text_parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "script":
            self.scripts.append(dict(attrs))
        if tag == "style":
            self.styles.append(dict(attrs))
        for name, _ in attrs:
            if name.lower().startswith("on"):
                self.handlers.append((tag, name))

    handle_startendtag = handle_starttag

    def handle_data(self, data: str) -> None:
        self.text_parts.append(data)


class FormScan(HTMLParser):
    """The report form as re-rendered: the textarea's text and the inputs' values."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.values: dict[str, str] = {}
        self.textarea: str | None = None
        self._in_textarea = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "input" and a.get("type") == "text" and a.get("name"):
            self.values[str(a["name"])] = a.get("value") or ""
        if tag == "textarea" and a.get("data-testid") == "text":
            self._in_textarea, self.textarea = True, ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "textarea":
            self._in_textarea = False

    def handle_data(self, data: str) -> None:
        if self._in_textarea and self.textarea is not None:
            self.textarea += data


def scan(html: str) -> PageScan:
    parser = PageScan()
    parser.feed(html)
    parser.close()
    return parser


def assert_page_is_safe(response: httpx.Response) -> PageScan:
    """Inline scripts and styles carry this response's nonce; no on* handlers anywhere."""
    nonce = csp_nonce(response)
    page = scan(response.text)
    for attrs in page.scripts:
        assert attrs.get("nonce") == nonce, f"script without the CSP nonce: {attrs}"
        assert "src" not in attrs, f"external script: {attrs}"
    for attrs in page.styles:
        assert attrs.get("nonce") == nonce, f"style without the CSP nonce: {attrs}"
    assert not page.handlers, f"live event-handler attributes: {page.handlers}"
    return page


# -- health ----------------------------------------------------------------------------


def test_healthz_shape(http: httpx.Client, running_node: NodeProcess) -> None:
    r = http.get("/healthz")
    assert r.status_code == 200
    h = r.json()
    assert h["status"] == "ok"
    assert h["node"] == running_node.name and h["area"] == AREA
    assert isinstance(h["uptime_s"], int) and h["uptime_s"] >= 0
    assert h["broker"] == {"running": True, "restarts": 0, "connected": True,
                           "port": running_node.mqtt_port}
    assert h["store"]["ok"] is True and isinstance(h["store"]["events"], int)
    assert h["disk"]["ok"] is True and h["disk"]["free_bytes"] > 0
    assert isinstance(h["live_subscribers"], int)


# -- reports ---------------------------------------------------------------------------


def test_report_gets_receipt_and_status_without_private_fields(http: httpx.Client) -> None:
    text, contact = marker("geheim"), marker("06-contact")
    r = http.post("/api/v1/reports", json=report(text=text, contact=contact,
                                                 called_112_by="Buurvrouw Els"))
    assert r.status_code == 201, r.text
    created = r.json()
    assert set(created) == {"id", "receipt", "status_url", "shown_to_neighbours"}
    receipt = created["receipt"]
    assert re.fullmatch(RECEIPT_PATTERN, receipt)
    assert created["status_url"] == f"/status?receipt={receipt}"
    assert r.headers["location"] == f"/api/v1/reports/{receipt}"
    assert created["shown_to_neighbours"] is True

    s = http.get(f"/api/v1/reports/{receipt}")
    assert s.status_code == 200, s.text
    status = s.json()
    assert status["receipt"] == receipt
    assert status["state"] == "received"
    assert status["category"] == "suspicious"
    assert set(status) == {"receipt", "state", "category", "ts", "time", "date", "reply"}
    assert status["reply"] is None  # no answer from a desk yet
    for secret in (text, contact, "Buurvrouw Els"):
        assert secret not in s.text

    # What people type: lower case, without the dash.
    typed = receipt.lower().replace("-", "")
    assert http.get(f"/api/v1/reports/{typed}").json()["receipt"] == receipt


@pytest.mark.parametrize("audience", ["neighbours", "both"])
def test_neighbour_report_is_an_unverified_alert_without_contact(
        http: httpx.Client, audience: str) -> None:
    text, contact = marker("zichtbaar"), marker("06-privé")
    created = post_report(http, text=text, audience=audience, contact=contact,
                          called_112_by="Jan Contactpersoon")
    assert created["shown_to_neighbours"] is True
    r = http.get("/api/v1/alerts", params={"limit": 200})
    assert r.status_code == 200
    assert r.json()["area"] == AREA
    mine = [a for a in r.json()["alerts"] if a["text"] == text]
    assert len(mine) == 1, mine
    alert = mine[0]
    assert alert["verified"] is False
    assert alert["source"] == "resident"
    assert alert["ref"] == created["id"]
    assert alert["place_name"] == f"{MEETING_POINTS[0]['name']} – bij het hek"  # once
    for key in ("contact", "receipt"):
        assert key not in alert
    # SAAR shows who already called 112 -- only when 112 was called (not here).
    assert alert["called_112_by"] == ""
    for secret in (contact, "Jan Contactpersoon", created["receipt"]):
        assert secret not in r.text, f"{secret!r} leaked into /api/v1/alerts"

    home = http.get("/")
    assert home.status_code == 200
    assert text in home.text
    assert f'id="alert-{alert["id"]}"' in home.text
    for secret in (contact, "Jan Contactpersoon", created["receipt"]):
        assert secret not in home.text


def test_authorities_report_is_never_public(http: httpx.Client) -> None:
    text = marker("alleen-voor-politie")
    created = post_report(http, text=text, audience="authorities")
    assert created["shown_to_neighbours"] is False
    assert http.get(f"/api/v1/reports/{created['receipt']}").status_code == 200
    r = http.get("/api/v1/alerts", params={"limit": 200})
    assert text not in r.text
    assert all(a.get("ref") != created["id"] for a in r.json()["alerts"])
    for lang in ("nl", "en"):
        assert text not in http.get("/", params={"lang": lang}).text


def test_unknown_receipt_is_404(http: httpx.Client) -> None:
    for code in ("ZZZ-ZZZ", "AAA-222", "nope", "x" * 40):
        r = http.get(f"/api/v1/reports/{code}")
        assert r.status_code == 404, (code, r.status_code, r.text)
        assert r.json()["detail"]


# -- refused input ---------------------------------------------------------------------

BIG = 100 * 1024


def _json(body: Any) -> bytes:
    return json.dumps(body).encode()


def _chunks(data: bytes, size: int = 4096) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


BAD_REQUESTS: dict[str, tuple[int, Any]] = {
    "bad category": (422, lambda: _json(report(category="burglary"))),
    "unknown top-level field": (422, lambda: _json({**report(), "priority": "high"})),
    "unknown place field": (422, lambda: _json(report(place={"point": None, "gps": "52,4"}))),
    "text over 1000 chars": (422, lambda: _json(report(text="a" * 1001))),
    "unknown meeting point": (422, lambda: _json(report(place={"point": "nergens",
                                                                "text": ""}))),
    "bad audience": (422, lambda: _json(report(audience="everyone"))),
    "not json": (422, lambda: b"{category: suspicious"),
    "100 KB body": (413, lambda: _json(report(text="a" * BIG))),
    "100 KB chunked body": (413, lambda: _chunks(_json(report(text="a" * BIG)))),
}


def send_bad(http: httpx.Client, name: str) -> httpx.Response:
    _, make = BAD_REQUESTS[name]
    return http.post("/api/v1/reports", content=make(),
                     headers={"content-type": "application/json"})


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_report_is_refused(http: httpx.Client, running_node: NodeProcess,
                               name: str) -> None:
    expected, _ = BAD_REQUESTS[name]
    before = event_count(running_node)
    r = send_bad(http, name)
    if name.endswith("chunked body"):
        assert "content-length" not in {k.lower() for k in r.request.headers}
    assert r.status_code == expected, f"{name}: {r.status_code} {r.text[:300]}"
    detail = r.json()
    assert detail["detail"]
    if expected == 422:
        assert detail["errors"] and all({"field", "message"} <= set(e) for e in detail["errors"])
    assert event_count(running_node) == before


def test_bad_reports_store_nothing(http: httpx.Client, running_node: NodeProcess) -> None:
    before = event_count(running_node)
    statuses = {name: send_bad(http, name).status_code for name in BAD_REQUESTS}
    assert all(400 <= code < 500 for code in statuses.values()), statuses
    assert event_count(running_node) == before
    assert http.get("/healthz").json()["status"] == "ok"


def _adversarial() -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in REPORTS_JSONL.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    return [r for r in rows if r.get("adversarial")]


def test_adversarial_reports_are_stored_or_refused_and_shown_escaped(
        fresh_node: NodeProcess) -> None:
    rows = _adversarial()
    assert len(rows) >= 10
    outcomes: list[tuple[int, dict[str, Any], dict[str, Any] | None]] = []
    with httpx.Client(base_url=fresh_node.base_url, timeout=TIMEOUT) as http:
        for row in rows:
            body = {k: v for k, v in row.items() if k != "adversarial"}
            if isinstance(body.get("place"), str):
                body["place"] = {"point": None, "text": body["place"]}
            r = http.post("/api/v1/reports", json=body)
            created = r.json() if r.status_code == 201 else None
            outcomes.append((r.status_code, row, created))
        server_errors = [(code, row["text"][:60]) for code, row, _ in outcomes if code >= 500]
        assert not server_errors, server_errors
        odd = [(code, row["text"][:60]) for code, row, _ in outcomes
               if code != 201 and not 400 <= code < 500]
        assert not odd, odd
        stored = [(row, c) for code, row, c in outcomes if code == 201 and c is not None]
        assert stored, "no adversarial report was stored at all"

        by_ref = {a["ref"]: a for a in alerts(http)}
        home = http.get("/")
        assert home.status_code == 200
        page = assert_page_is_safe(home)
        assert "iframe" not in page.tags and "img" not in page.tags
        for row, created in stored:
            assert re.fullmatch(RECEIPT_PATTERN, created["receipt"])
            public = row["audience"] in ("neighbours", "both")
            assert created["shown_to_neighbours"] is public
            if public:
                alert = by_ref.get(created["id"])
                assert alert is not None, f"missing alert for {row['text'][:40]!r}"
                assert f'id="alert-{alert["id"]}"' in home.text
            else:
                assert created["id"] not in by_ref
        # The script tags, links and handlers typed by residents are text, not markup.
        for needle in ("<script>alert", "<img", "<iframe", "<svg onload",
                       '<a href="javascript:'):
            assert needle not in home.text
        text = "".join(page.text_parts)
        assert "<script>alert(1)</script>" in text, "the typed markup should be shown as text"
        assert event_count(fresh_node) == sum(
            2 if row["audience"] != "authorities" else 1 for row, _ in stored)


# -- resident pages without JavaScript -----------------------------------------------------


def form_fields(**fields: str) -> dict[str, str]:
    data = {"category": "suspicious", "text": marker("formulier"),
            "place_point": MEETING_POINTS[1]["id"], "place_text": "achter de school",
            "audience": "neighbours", "called_112": "no", "called_112_by": "",
            "contact": "", "csrf": "", "lang": "nl"}
    data.update(fields)
    return data


def test_form_post_without_javascript_redirects_to_receipt(running_node: NodeProcess) -> None:
    base = running_node.base_url
    with httpx.Client(base_url=base, timeout=TIMEOUT, follow_redirects=False) as http:
        fields = form_fields()
        r = http.post("/report", data=fields, headers={"Origin": base})
        assert r.status_code == 303, r.text[:500]
        location = r.headers["location"]
        match = re.fullmatch(r"/receipt/([A-HJ-NP-Z2-9]{3}-[A-HJ-NP-Z2-9]{3})", location)
        assert match, location
        code = match.group(1)
        page = http.get(location)
        assert page.status_code == 200
        assert code in page.text
        assert "<svg" in page.text
        assert 'data-testid="receipt"' in page.text
        assert_page_is_safe(page)
        assert http.get(f"/api/v1/reports/{code}").json()["state"] == "received"
        assert fields["text"] in http.get("/").text


def test_form_post_with_csrf_cookie_from_the_form_page(running_node: NodeProcess) -> None:
    base = running_node.base_url
    with httpx.Client(base_url=base, timeout=TIMEOUT, follow_redirects=False) as http:
        form = http.get("/report", params={"category": "nuisance"})
        assert form.status_code == 200
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token and http.cookies.get("bart_csrf") == token.group(1)
        r = http.post("/report", data=form_fields(category="nuisance", csrf=token.group(1)),
                      headers={"Origin": base})
        assert r.status_code == 303, r.text[:300]
        # A cross-site post is refused and nothing is stored.
        before = event_count(running_node)
        evil = http.post("/report", data=form_fields(csrf=token.group(1)),
                         headers={"Origin": "http://evil.example"})
        assert evil.status_code == 403
        assert event_count(running_node) == before


@pytest.mark.parametrize("bad", [
    {"text": "Mijn woorden <blijven> staan & zo " + "x" * 1000},
    {"place_point": "nergens", "text": "Bij de <grote> boom & de bank"},
    {"audience": "iedereen", "text": "Let op: 'verdacht' \"busje\""},
])
def test_invalid_form_is_shown_again_with_what_was_typed(
        running_node: NodeProcess, bad: dict[str, str]) -> None:
    base = running_node.base_url
    before = event_count(running_node)
    with httpx.Client(base_url=base, timeout=TIMEOUT, follow_redirects=False) as http:
        fields = form_fields(place_text="naast de <bakker>", contact="06-99999999", **bad)
        r = http.post("/report", data=fields, headers={"Origin": base})
        assert r.status_code == 422, r.text[:300]
        form = FormScan()
        form.feed(r.text)
        assert form.textarea == fields["text"]
        assert form.values.get("place_text") == fields["place_text"]
        assert form.values.get("contact") == "06-99999999"
        assert 'class="err"' in r.text
        assert_page_is_safe(r)
    assert event_count(running_node) == before


# -- headers and size ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/report", "/report?category=emergency",
                                  "/report?category=social", "/status",
                                  "/status?receipt=ZZZ-ZZZ"])
def test_csp_nonce_on_every_inline_script(http: httpx.Client, path: str) -> None:
    first = http.get(path)
    assert first.status_code in (200, 404)
    csp = first.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'nonce-" in csp
    assert "unsafe-inline" not in csp
    assert first.headers["x-content-type-options"] == "nosniff"
    assert_page_is_safe(first)
    second = http.get(path)
    assert csp_nonce(first) != csp_nonce(second), "the nonce must change per response"


def test_home_page_first_load_under_100_kb(running_node: NodeProcess) -> None:
    with httpx.Client(timeout=TIMEOUT, headers={"Accept-Encoding": "identity"}) as fresh:
        r = fresh.get(f"{running_node.base_url}/")
    assert r.status_code == 200
    page = scan(r.text)
    # No external resources: the first load is this one response.
    assert not [s for s in page.scripts if s.get("src")]
    assert "<link" not in r.text and "<img" not in r.text
    assert len(r.content) < 100 * 1024, len(r.content)


# -- MQTT ------------------------------------------------------------------------------------


def test_report_is_published_private_and_public_and_integration_sees_only_public(
        http: httpx.Client, running_node: NodeProcess) -> None:
    node = running_node
    text, contact = marker("mqtt"), marker("06-mqtt")
    private_topic = event_topic(node.name, "private", "report")
    public_topic = event_topic(node.name, "public", "alert")
    with node.service_client("test-service-sub") as service, \
            node.mqtt_client("integration", node.integration_password,
                             "test-integration-sub") as integ:
        service.wait_connected()
        integ.wait_connected()
        service.subscribe("bart/v1/#")
        integ.subscribe("#", "bart/v1/+/private/#", private_topic, "bart/v1/+/public/#")
        created = post_report(http, text=text, contact=contact, audience="both")

        got: dict[str, Any] = {}

        def seen_both() -> bool:
            for topic, payload in service.drain(0.1):
                if topic in (private_topic, public_topic):
                    event = decode_event(payload)
                    if event.id == created["id"] or event.body.get("ref") == created["id"]:
                        got[topic] = (event, payload)
            return len(got) == 2

        wait_until(seen_both, 10.0, 0.0, "report and alert on MQTT")
        report_event, _ = got[private_topic]
        alert_event, alert_payload = got[public_topic]
        assert report_event.kind == "report" and report_event.stream == "private"
        assert report_event.body["receipt"] == created["receipt"]
        assert report_event.body["contact"] == contact
        assert alert_event.kind == "alert" and alert_event.body["text"] == text
        assert contact.encode() not in alert_payload
        assert created["receipt"].encode() not in alert_payload

        # The integration user gets the public alert (so it was listening) ...
        def integration_has_alert() -> bool:
            return any(t == public_topic and decode_event(p).body.get("ref") == created["id"]
                       for t, p in integ.drain(0.1))

        received = integ.drain(1.0)
        assert any(t == public_topic and decode_event(p).body.get("ref") == created["id"]
                   for t, p in received) or integration_has_alert()
        # ... and never anything private.
        received += integ.drain(0.5)
        leaked = [t for t, _ in received if "/private/" in t]
        assert not leaked, leaked
        assert all(contact.encode() not in p for _, p in received)


def test_anonymous_and_wrong_password_mqtt_refused(running_node: NodeProcess) -> None:
    with running_node.mqtt_client(None, None, "test-anon") as anon:
        assert anon.first_connack().is_failure
    with running_node.mqtt_client("bart-node", "wrong", "test-wrong") as wrong:
        assert wrong.first_connack().is_failure
    with running_node.mqtt_client("integration", running_node.integration_password,
                                  "test-integ-pub") as integ:
        integ.wait_connected()
        # Read-only: its publish of a (validly signed) alert must not reach residents.
        event = running_node.peer_alert(marker("integratie-schrijft"))
        info = integ.client.publish(event_topic(event.origin, "public", "alert"),
                                    event.encode(), qos=1)
        info.wait_for_publish(5)
    time.sleep(0.5)
    with httpx.Client(base_url=running_node.base_url, timeout=TIMEOUT) as http:
        assert all(a["id"] != event.id for a in alerts(http))


def test_forged_alerts_are_never_shown_and_a_valid_one_exactly_once(
        http: httpx.Client, running_node: NodeProcess) -> None:
    node = running_node
    stranger = KeyPair.generate()
    wrong_key = node.peer_alert(marker("vals-sleutel"), keys=stranger)
    unknown_origin = node.peer_alert(marker("onbekend"), keys=stranger, origin="stranger-9")
    genuine = node.peer_alert(marker("origineel"))
    tampered = replace(genuine, body={**genuine.body, "text": marker("vervalst")})
    other = node.peer_alert(marker("titel"))
    tampered_title = replace(other, body={**other.body, "title": "Politie: blijf binnen"})
    valid = node.peer_alert(marker("echt"))
    forged = (wrong_key, unknown_origin, tampered, tampered_title)
    before = event_count(node)

    with SseReader(f"{node.base_url}/api/v1/stream") as sse:
        node.publish_events(*forged)
        node.publish_events(valid, repeat=3)
        wait_until(lambda: any(a["id"] == valid.id for a in alerts(http)), 10.0, 0.1,
                   "valid peer alert in /api/v1/alerts")
        sse.wait_for(lambda m: m["id"] == valid.id, 5.0)
        time.sleep(1.0)  # let the repeats and anything else queued arrive
        streamed = list(sse.all)

    listed = alerts(http)
    assert [a["id"] for a in listed].count(valid.id) == 1
    assert [m["id"] for m in streamed].count(valid.id) == 1
    shown = next(a for a in listed if a["id"] == valid.id)
    assert shown["verified"] is True and shown["origin"] == node.peer_origin
    assert shown["text"] == valid.body["text"]
    for bad in forged:
        assert all(a["id"] != bad.id for a in listed), f"forged alert {bad.id} listed"
        assert all(m["id"] != bad.id for m in streamed), f"forged alert {bad.id} streamed"
    raw = http.get("/api/v1/alerts", params={"limit": 200}).text + http.get("/").text
    for text in (wrong_key.body["text"], unknown_origin.body["text"], tampered.body["text"],
                 "Politie: blijf binnen"):
        assert text not in raw
    assert event_count(node) == before + 1


def test_alert_refused_by_the_store_is_not_shown_live_either(
        http: httpx.Client, running_node: NodeProcess) -> None:
    """Two validly signed peer alerts with the same (origin, stream, seq).

    The store keeps the first and refuses the second (SeqConflict). Residents
    must not be shown, live, an alert the node did not keep and that vanishes
    on reload (DESIGN.md §4: a replayed or conflicting message is refused).
    """
    node = running_node
    first = node.peer_alert(marker("eerste"))
    second = node.peer_alert(marker("dubbel-seq"), seq=first.seq)
    sentinel = node.peer_alert(marker("daarna"))
    with SseReader(f"{node.base_url}/api/v1/stream") as sse:
        node.publish_events(first)
        sse.wait_for(lambda m: m["id"] == first.id, 5.0)
        wait_until(lambda: any(a["id"] == first.id for a in alerts(http)), 5.0, 0.1,
                   "first alert stored")
        node.publish_events(second, sentinel)
        sse.wait_for(lambda m: m["id"] == sentinel.id, 5.0)
        wait_until(lambda: any(a["id"] == sentinel.id for a in alerts(http)), 5.0, 0.1,
                   "sentinel stored")
        streamed = [m["id"] for m in sse.all]
    assert all(a["id"] != second.id for a in alerts(http)), "the store kept the conflicting one"
    assert second.id not in streamed, (
        "an alert the store refused (seq conflict) was pushed live to residents")


# -- Mosquitto dies under the node -------------------------------------------------------------


def test_node_survives_mosquitto_sigkill(fresh_node: NodeProcess) -> None:
    node = fresh_node
    pids = mosquitto_pids_for(node.data_dir)
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)

    with httpx.Client(base_url=node.base_url, timeout=TIMEOUT) as http:
        t0 = time.monotonic()
        r = http.post("/api/v1/reports", json=report(text=marker("tijdens-storing")))
        assert r.status_code == 201, r.text
        assert time.monotonic() - t0 < 5.0, "a report waited for the broker"
        receipt = r.json()["receipt"]

        def restarted() -> dict[str, Any] | None:
            h = http.get("/healthz").json()
            ok = h["broker"]["restarts"] >= 1 and h["broker"]["connected"]
            return h if ok and h["status"] == "ok" else None

        health = wait_until(restarted, 15.0, 0.2, "broker restarted and node reconnected")
        assert health["broker"]["running"] is True
        new_pids = mosquitto_pids_for(node.data_dir)
        assert len(new_pids) == 1 and new_pids[0] != pids[0]
        assert http.get(f"/api/v1/reports/{receipt}").json()["state"] == "received"

        with SseReader(f"{node.base_url}/api/v1/stream") as sse:
            alert = node.peer_alert(marker("na-herstart"))
            node.publish_events(alert)
            msg = sse.wait_for(lambda m: m["id"] == alert.id, 5.0)
            assert msg["event"] == "alert" and msg["data"]["text"] == alert.body["text"]
