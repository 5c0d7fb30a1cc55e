"""The resident's report flow in headless Chromium against a real ``bart node run``.

With JavaScript (live alerts over SSE, no reload) and without it (plain form
posts and redirects), at a small phone's viewport (360x740).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import PHONE, page_errors
from tests.support.node import MEETING_POINTS, RECEIPT_PATTERN, NodeProcess

pytestmark = pytest.mark.timeout(60)

try:
    from playwright.sync_api import (
        Browser,
        Page,
        expect,
    )
    HAVE_PLAYWRIGHT = True
except ImportError:  # pragma: no cover - reported by the fixture
    HAVE_PLAYWRIGHT = False


@pytest.fixture
def phone(browser: Browser, running_node: NodeProcess) -> Iterator[Any]:
    """A fresh browser context the size of a small phone, with JavaScript."""
    context = browser.new_context(viewport=PHONE, base_url=running_node.base_url,
                                  locale="nl-NL")
    context.set_default_timeout(10_000)
    try:
        yield context
    finally:
        context.close()


def fill_report(page: Page, text: str, *, point: str, audience: str) -> str:
    """Steps 1 and 2 from the report page; returns the receipt code shown."""
    page.goto("/report")
    page.click("[data-testid=category-suspicious]")
    page.wait_for_url(re.compile(r"/report\?category=suspicious"))
    page.fill("[data-testid=text]", text)
    page.select_option("[data-testid=place_point]", point)
    page.check(f"[data-testid=audience-{audience}]")
    page.click("[data-testid=submit]")
    page.wait_for_url(re.compile(r"/receipt/"))
    receipt = page.locator("[data-testid=receipt]")
    expect(receipt).to_be_visible()
    code = receipt.inner_text().strip()
    assert re.fullmatch(RECEIPT_PATTERN, code), code
    assert page.url.endswith(f"/receipt/{code}")
    expect(page.locator("[data-testid=qr] svg")).to_have_count(1)
    return code


def test_report_flow_and_live_alerts(phone: Any, running_node: NodeProcess,
                                     tmp_path: Path) -> None:
    home = phone.new_page()
    home_errors = page_errors(home, resources=False)
    home.goto("/")
    expect(home.locator("[data-testid=report-button]")).to_be_visible()
    expect(home.locator("[data-testid=live]")).to_be_visible()  # EventSource is open
    home.evaluate("window.__notReloaded = true")
    home.screenshot(path=str(tmp_path / "home-360x740.png"), full_page=True)

    flow = phone.new_page()
    flow_errors = page_errors(flow, resources=False)
    flow.goto("/")
    flow.click("[data-testid=report-button]")
    flow.wait_for_url(re.compile(r"/report$"))
    text = f"Verdacht busje met draaiende motor {uuid.uuid4().hex[:8]}"
    code = fill_report(flow, text, point=MEETING_POINTS[0]["id"], audience="neighbours")
    flow.screenshot(path=str(tmp_path / "receipt-360x740.png"), full_page=True)
    assert (tmp_path / "home-360x740.png").stat().st_size > 0
    assert (tmp_path / "receipt-360x740.png").stat().st_size > 0

    # The resident's own report reaches the open home page live, marked not verified.
    own = home.locator("[data-testid=alert]", has_text=text)
    expect(own).to_have_count(1, timeout=5_000)
    expect(own.locator("[data-testid=not-verified]")).to_be_visible()
    expect(own).to_contain_text(MEETING_POINTS[0]["name"])

    # A signed alert of a trusted peer, published over MQTT, appears without reload.
    peer_text = f"Let op: inbraakpoging in de Zonnebloemstraat {uuid.uuid4().hex[:8]}"
    event = running_node.peer_alert(peer_text, title="Buurtteam meldt")
    running_node.publish_events(event)
    item = home.locator("[data-testid=alert]", has_text=peer_text)
    expect(item).to_be_visible(timeout=5_000)
    expect(item.locator("[data-testid=verified]")).to_be_visible()
    assert home.locator("#alerts > li").first.get_attribute("id") == f"alert-{event.id}"
    assert home.evaluate("window.__notReloaded") is True, "the page was reloaded"

    # The status page of the receipt knows the report.
    flow.click("[data-testid=status-link]")
    expect(flow.locator("[data-testid=status-receipt]")).to_have_text(code)
    assert home_errors == [] and flow_errors == [], (home_errors, flow_errors)


def test_emergency_tile_shows_call_112_first(phone: Any) -> None:
    page = phone.new_page()
    errors = page_errors(page, resources=False)
    page.goto("/report")
    page.click("[data-testid=category-emergency]")
    box = page.locator("[data-testid=call-112-first]")
    expect(box).to_be_visible()
    expect(box).to_contain_text("112")
    call = page.locator("[data-testid=emergency-call-112]")
    expect(call).to_have_attribute("href", "tel:112")
    # First: before the form in the document and above it on screen.
    before_form = page.evaluate(
        """() => {
            const box = document.querySelector('[data-testid=call-112-first]');
            const form = document.querySelector('form[action="/report"]');
            return !!(box.compareDocumentPosition(form) & Node.DOCUMENT_POSITION_FOLLOWING);
        }""")
    assert before_form
    box_y = box.bounding_box()
    text_y = page.locator("[data-testid=text]").bounding_box()
    assert box_y is not None and text_y is not None and box_y["y"] < text_y["y"]
    assert box_y["y"] < PHONE["height"], "the 112 box must be on the first screen"
    assert errors == []


def test_report_flow_without_javascript(browser: Browser, running_node: NodeProcess,
                                        tmp_path: Path) -> None:
    context = browser.new_context(viewport=PHONE, base_url=running_node.base_url,
                                  java_script_enabled=False)
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        page.goto("/")
        expect(page.locator("[data-testid=live]")).to_be_hidden()
        expect(page.locator("[data-testid=refresh]")).to_be_visible()
        text = f"Hangjongeren bij het buurthuis zonder JS {uuid.uuid4().hex[:8]}"
        code = fill_report(page, text, point=MEETING_POINTS[1]["id"], audience="both")
        page.screenshot(path=str(tmp_path / "receipt-nojs-360x740.png"), full_page=True)
        page.goto("/")
        item = page.locator("[data-testid=alert]", has_text=text)
        expect(item).to_have_count(1)
        expect(item).to_contain_text(MEETING_POINTS[1]["name"])
        page.goto(f"/status?receipt={code.lower().replace('-', '')}")
        expect(page.locator("[data-testid=status-receipt]")).to_have_text(code)
    finally:
        context.close()
