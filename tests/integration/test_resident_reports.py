"""A report must say something, and goes only where it is safe by default.

Real HTTP against a real ``bart node run`` (store, Mosquitto, portal):

* an untouched form (a pictogram and nothing else) is refused with 422: the
  form comes back in the page's language (all five), says what is missing,
  keeps what was typed, and nothing is stored or shown to the neighbours;
  the JSON API refuses it with a clear error;
* "suspicious" and "social" go to the authorities only unless the resident
  chooses otherwise (the form's preselected answer and the API's default),
  and the receipt says in plain words who sees the report.
"""

from __future__ import annotations

import html
import re
import sqlite3
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from node.portal.i18n import SUPPORTED, Catalogue
from tests.support.node import MEETING_POINTS, NodeProcess

pytestmark = pytest.mark.timeout(60)
TIMEOUT = 10.0


@pytest.fixture(scope="module")
def messages() -> Catalogue:
    return Catalogue.load(strict=True)


@pytest.fixture
def http(running_node: NodeProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=running_node.base_url, timeout=TIMEOUT,
                      follow_redirects=False) as client:
        yield client


def event_count(node: NodeProcess) -> int:
    with sqlite3.connect(f"file:{node.db_path}?mode=ro", uri=True) as db:
        count: int = db.execute("SELECT count(*) FROM events").fetchone()[0]
    return count


def form_token(http: httpx.Client, category: str, lang: str) -> tuple[str, str]:
    """The form page (sets the CSRF cookie); returns its HTML and its token."""
    page = http.get("/report", params={"category": category, "lang": lang})
    assert page.status_code == 200
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token
    return page.text, token.group(1)


def post_form(http: httpx.Client, lang: str, **fields: str) -> httpx.Response:
    category = fields.get("category", "suspicious")
    _, token = form_token(http, category or "nuisance", lang)
    data = {"category": category, "text": "", "place_point": "", "place_text": "",
            "called_112": "no", "called_112_by": "", "contact": "", "csrf": token,
            "lang": lang}
    data.update(fields)
    return http.post(f"/report?lang={lang}", data=data,
                     headers={"Origin": str(http.base_url).rstrip("/")})


def checked_audience(page: str) -> str:
    found = re.search(r'name="audience" value="(\w+)" checked', page)
    assert found, "no audience preselected"
    return found.group(1)


@pytest.mark.parametrize("lang", SUPPORTED)
def test_untouched_form_is_refused_in_the_page_language_and_keeps_input(
        http: httpx.Client, running_node: NodeProcess, messages: Catalogue, lang: str) -> None:
    before = event_count(running_node)
    contact = f"06-{uuid.uuid4().hex[:6]}"
    r = post_form(http, lang, category="suspicious", contact=contact, called_112="yes",
                  called_112_by="de buurvrouw", audience="neighbours")
    assert r.status_code == 422, r.text[:400]
    page = html.unescape(r.text)
    t = messages.translator(lang)
    assert f'<html lang="{lang}"' in page
    assert t("error.field.report") in page
    assert t("report.errors.title") in page
    # What was typed or chosen is still there.
    assert f'value="{contact}"' in page and 'value="de buurvrouw"' in page
    assert 'value="yes" checked' in page and 'value="neighbours" checked' in page
    # The fields that could fill the gap are marked for screen readers.
    assert re.search(r'id="f-text"[^>]*aria-invalid="true"', page)
    assert re.search(r'id="f-place"[^>]*aria-invalid="true"', page)
    assert event_count(running_node) == before, "an empty report was stored"


def test_blank_words_do_not_count_but_any_one_thing_does(
        http: httpx.Client, running_node: NodeProcess) -> None:
    before = event_count(running_node)
    assert post_form(http, "nl", category="nuisance", text="  \n ",
                     place_text="   ").status_code == 422
    assert event_count(running_node) == before
    for fields in ({"text": "Harde muziek"}, {"place_point": MEETING_POINTS[0]["id"]},
                   {"place_text": "hoek Tolstraat"}):
        r = post_form(http, "nl", category="nuisance", audience="authorities", **fields)
        assert r.status_code == 303, (fields, r.text[:300])
        assert r.headers["location"].startswith("/receipt/")


def test_form_without_a_picture_says_so(http: httpx.Client, messages: Catalogue) -> None:
    for lang in SUPPORTED:
        r = post_form(http, lang, category="", text="iets")
        assert r.status_code == 422
        assert messages.translator(lang)("error.field.category") in html.unescape(r.text)
        assert 'data-testid="category-suspicious"' in r.text  # the pictures again


def api_post(http: httpx.Client, **body: Any) -> httpx.Response:
    return http.post("/api/v1/reports", json=body)


@pytest.mark.parametrize("body", [
    {"category": "suspicious"},
    {"category": "nuisance", "text": "   ", "place": {"point": None, "text": " "}},
    {"category": "social", "text": "", "place": {}, "audience": "both", "contact": "06-1"},
])
def test_api_refuses_an_empty_report_with_a_clear_error(
        http: httpx.Client, running_node: NodeProcess, body: dict[str, Any]) -> None:
    before = event_count(running_node)
    r = api_post(http, **body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/json")
    data = r.json()
    assert data["detail"] == "invalid input; nothing was stored"
    assert data["errors"][0]["field"] == "report"
    assert "a few words" in data["errors"][0]["message"]
    assert event_count(running_node) == before


def test_live_stream_gets_no_empty_card(http: httpx.Client, running_node: NodeProcess) -> None:
    alerts_before = http.get("/api/v1/alerts", params={"limit": 200}).json()["alerts"]
    assert api_post(http, category="nuisance", audience="both").status_code == 422
    alerts = http.get("/api/v1/alerts", params={"limit": 200}).json()["alerts"]
    assert len(alerts) == len(alerts_before)


# -- safe defaults ---------------------------------------------------------------------


@pytest.mark.parametrize(("category", "expected"), [
    ("suspicious", "authorities"), ("social", "authorities"),
    ("nuisance", "both"), ("emergency", "both"),
])
def test_form_preselects_the_safe_audience(http: httpx.Client, category: str,
                                           expected: str) -> None:
    page, _ = form_token(http, category, "nl")
    assert checked_audience(page) == expected


@pytest.mark.parametrize(("category", "public"), [
    ("suspicious", False), ("social", False), ("nuisance", True), ("emergency", True),
])
def test_api_default_audience_per_category(http: httpx.Client, category: str,
                                           public: bool) -> None:
    text = f"standaard {category} {uuid.uuid4().hex[:8]}"
    r = api_post(http, category=category, text=text)
    assert r.status_code == 201, r.text
    assert r.json()["shown_to_neighbours"] is public
    shown = [a for a in http.get("/api/v1/alerts", params={"limit": 200}).json()["alerts"]
             if a["text"] == text]
    assert len(shown) == (1 if public else 0)


def test_resident_may_still_choose_the_neighbours(http: httpx.Client) -> None:
    text = f"bewust openbaar {uuid.uuid4().hex[:8]}"
    r = api_post(http, category="suspicious", text=text, audience="both")
    assert r.status_code == 201 and r.json()["shown_to_neighbours"] is True
    r = post_form(http, "nl", category="social", text=text + " formulier", audience="both")
    assert r.status_code == 303


@pytest.mark.parametrize("lang", SUPPORTED)
@pytest.mark.parametrize("audience", ["authorities", "both", "neighbours"])
def test_receipt_says_who_sees_the_report(http: httpx.Client, messages: Catalogue,
                                          lang: str, audience: str) -> None:
    r = post_form(http, lang, category="nuisance", text="Afval op straat", audience=audience)
    assert r.status_code == 303, r.text[:300]
    receipt = http.get(r.headers["location"], params={"lang": lang})
    assert receipt.status_code == 200
    page = html.unescape(receipt.text)
    t = messages.translator(lang)
    assert t("receipt.who_sees") in page
    assert t(f"receipt.audience.{audience}") in page
    assert f'data-audience="{audience}"' in page
