"""Error pages are the portal's own, in the resident's language; the API stays JSON.

Real HTTP against a real ``bart node run``: 404, 413, 422 and 429 as a
browser asks (``Accept: text/html``) give the portal's page with the
words of the page's language, the status code and the way back; under
``/api/`` the same errors stay JSON. ``/favicon.ico`` answers with an icon,
and a first visit in Chromium logs no console error at all.
"""

from __future__ import annotations

import contextlib
import html
import re
from collections.abc import Iterator

import httpx
import pytest

from node.portal.i18n import SUPPORTED, Catalogue
from tests.support.base import require_binary
from tests.support.node import NodeProcess, init_node

with contextlib.suppress(ImportError):  # a missing Playwright is reported by the fixture
    from playwright.sync_api import Browser

pytestmark = pytest.mark.timeout(60)
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node with the rate limits on (as in production)."""
    mosquitto = require_binary("mosquitto", "/usr/sbin/mosquitto")
    n = init_node(tmp_path_factory.mktemp("errors"), mosquitto)
    # The tests' default is 0 (no limit); any other value turns on 60 lookups a minute.
    n.env_extra["BART_REPORTS_PER_MINUTE"] = "1000"
    n.start()
    try:
        yield n
    finally:
        if n.proc is not None and n.proc.poll() is None:
            n.stop()


@pytest.fixture(scope="module")
def messages() -> Catalogue:
    return Catalogue.load(strict=True)


def assert_page(r: httpx.Response, status: int, lang: str, key: str,
                messages: Catalogue) -> None:
    t = messages.translator(lang)
    assert r.status_code == status, r.text[:300]
    assert r.headers["content-type"].startswith("text/html")
    page = html.unescape(r.text)
    assert f'<html lang="{lang}"' in page
    assert t("error.title") in page and t(key) in page
    assert t("error.code", code=status) in page
    assert 'data-testid="error-back"' in page and 'href="tel:112"' in page
    assert "Traceback" not in page and '"detail"' not in page
    # The page's styles run under the CSP (the nonce of this answer).
    nonce = re.search(r"'nonce-([^']+)'", r.headers["content-security-policy"])
    assert nonce and f'<style nonce="{nonce.group(1)}">' in r.text


@pytest.mark.parametrize("lang", SUPPORTED)
def test_404_page_in_every_language(node: NodeProcess, messages: Catalogue, lang: str) -> None:
    r = httpx.get(f"{node.base_url}/bestaat-niet?lang={lang}", headers=BROWSER, timeout=5)
    assert_page(r, 404, lang, "error.not_found", messages)
    # Accept-Language alone decides too.
    r = httpx.get(f"{node.base_url}/oude/link", timeout=5,
                  headers={**BROWSER, "Accept-Language": f"{lang};q=1"})
    assert_page(r, 404, lang, "error.not_found", messages)


def test_api_errors_stay_json(node: NodeProcess) -> None:
    for url in ("/api/v1/nope", "/api/v1/reports/AAA-AAA"):
        r = httpx.get(f"{node.base_url}{url}", headers=BROWSER, timeout=5)
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/json"
        assert "detail" in r.json()
    r = httpx.get(f"{node.base_url}/api/v1/alerts?limit=0", headers=BROWSER, timeout=5)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.limit"
    # A program (no text/html) gets JSON outside /api/ as well.
    r = httpx.get(f"{node.base_url}/bestaat-niet", timeout=5)
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}


@pytest.mark.parametrize("lang", SUPPORTED)
def test_422_is_the_form_again_in_the_language(node: NodeProcess, messages: Catalogue,
                                               lang: str) -> None:
    """A form post that does not fit is the portal's page: the pictures again,
    saying what is missing (the filled-in form is in test_resident_reports)."""
    r = httpx.post(f"{node.base_url}/report?lang={lang}", headers=BROWSER, timeout=5,
                   data={"category": "", "text": "iets"})
    assert r.status_code == 422
    page = html.unescape(r.text)
    assert f'<html lang="{lang}"' in page
    assert messages.translator(lang)("error.field.category") in page


@pytest.mark.parametrize("lang", SUPPORTED)
def test_413_page_for_a_huge_form(node: NodeProcess, messages: Catalogue, lang: str) -> None:
    r = httpx.post(f"{node.base_url}/report?lang={lang}", headers=BROWSER, timeout=5,
                   data={"category": "nuisance", "text": "x" * 40_000})
    assert_page(r, 413, lang, "error.too_large", messages)
    api = httpx.post(f"{node.base_url}/api/v1/reports", headers=BROWSER, timeout=5,
                     json={"category": "nuisance", "text": "x" * 40_000})
    assert api.status_code == 413 and "detail" in api.json()


def test_429_page_for_too_many_lookups(node: NodeProcess, messages: Catalogue) -> None:
    # Receipt lookups: 60 a minute per device; the 429 of the last ones is a page.
    last = None
    for _ in range(70):
        last = httpx.get(f"{node.base_url}/status?receipt=AAA-AAA&lang=pl", headers=BROWSER,
                         timeout=5)
        if last.status_code == 429:
            break
    assert last is not None
    assert_page(last, 429, "pl", "error.rate", messages)
    assert last.headers["retry-after"] == "60"
    # The budget refills one lookup a second: on a loaded machine one may have come
    # back since, so the API is asked until its answer is the budget's too.
    for _ in range(10):
        api = httpx.get(f"{node.base_url}/api/v1/reports/AAA-AAA", headers=BROWSER, timeout=5)
        if api.status_code == 429:
            break
    assert api.status_code == 429 and api.headers["content-type"] == "application/json"


def test_favicon(node: NodeProcess) -> None:
    r = httpx.get(f"{node.base_url}/favicon.ico", timeout=5)
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/x-icon"
    assert r.content[:4] == b"\x00\x00\x01\x00" and len(r.content) < 2048


def test_first_visit_logs_no_console_error(browser: Browser, node: NodeProcess) -> None:
    context = browser.new_context(viewport={"width": 360, "height": 640},
                                  base_url=node.base_url)
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("response", lambda r: errors.append(f"{r.status} {r.url}")
                if r.status >= 400 else None)
        icon = []
        page.on("response", lambda r: icon.append(r.status)
                if r.url.endswith("/favicon.ico") else None)
        page.goto("/")
        page.goto("/report")
        page.wait_for_timeout(500)
        assert errors == [], errors
        # In the browser a wrong address is the portal's page, not JSON.
        page.goto("/bestaat-niet?lang=ar")
        assert page.locator("[data-testid=error-code]").inner_text().strip()
        assert page.locator("html").get_attribute("dir") == "rtl"
    finally:
        context.close()
