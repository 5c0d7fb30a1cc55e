"""Every resident and team page fits a phone in all five languages, right-to-left too.

Headless Debian Chromium in phone emulation (360x640, touch, mobile viewport)
against a real ``bart node run``: for nl, en, tr, ar and pl, the home page, the
pictogram grid, the report form, a receipt, the status page, the team login
and the team dashboard never scroll sideways (``scrollWidth <= 360``), and
the form's submit button is what a finger at its centre touches. Then an
Arabic report is made by tapping, from the home page to the receipt.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.browser import page_errors, team_login
from tests.support.node import MEETING_POINTS, RECEIPT_PATTERN, NodeProcess

pytestmark = pytest.mark.timeout(180)

with contextlib.suppress(ImportError):  # a missing Playwright is reported by the fixture
    from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize, expect

WIDTH = 360
PHONE: ViewportSize = {"width": WIDTH, "height": 640}
LANGS = ("nl", "en", "tr", "ar", "pl")


def phone_context(browser: Browser, node: NodeProcess, *, js: bool = True) -> BrowserContext:
    """A small Android phone: 360x640 CSS pixels, touch, mobile viewport."""
    context = browser.new_context(viewport=PHONE, base_url=node.base_url, is_mobile=True,
                                  has_touch=True, device_scale_factor=2,
                                  java_script_enabled=js)
    context.set_default_timeout(10_000)
    return context


@pytest.fixture
def phone(browser: Browser, running_node: NodeProcess) -> Iterator[BrowserContext]:
    context = phone_context(browser, running_node)
    try:
        yield context
    finally:
        context.close()


def scroll_width(page: Page) -> int:
    width: int = page.evaluate("document.documentElement.scrollWidth")
    return width


def submit_is_tappable(page: Page, selector: str) -> bool:
    """After scrolling it into view, is the element at the button's centre the button?"""
    button = page.locator(selector)
    button.scroll_into_view_if_needed()
    hit: bool = button.evaluate(
        """el => {
            const r = el.getBoundingClientRect();
            const x = r.left + r.width / 2, y = r.top + r.height / 2;
            if (x < 0 || y < 0 || x > innerWidth || y > innerHeight) return false;
            const at = document.elementFromPoint(x, y);
            return at === el || el.contains(at);
        }""")
    return hit


def make_receipt(node: NodeProcess, lang: str) -> str:
    reply = httpx.post(f"{node.base_url}/api/v1/reports", timeout=10, json={
        "category": "nuisance", "text": f"Harde muziek {uuid.uuid4().hex[:6]}",
        "place": {"point": MEETING_POINTS[0]["id"], "text": ""},
        "audience": "authorities", "lang": lang})
    assert reply.status_code == 201, reply.text
    receipt: str = reply.json()["receipt"]
    return receipt


def test_no_page_scrolls_sideways_and_submit_is_tappable(
        browser: Browser, running_node: NodeProcess, tmp_path: Path) -> None:
    context = phone_context(browser, running_node)
    widths: dict[str, dict[str, int]] = {}
    problems: list[str] = []
    try:
        page = context.new_page()
        errors = page_errors(page)
        for lang in LANGS:
            code = make_receipt(running_node, lang)
            pages = {
                "home": f"/?lang={lang}",
                "choose": f"/report?lang={lang}",
                "form": f"/report?category=suspicious&lang={lang}",
                "emergency": f"/report?category=emergency&lang={lang}",
                "receipt": f"/receipt/{code}?lang={lang}",
                "status": f"/status?receipt={code}&lang={lang}",
                "team-login": f"/team/login?lang={lang}",
            }
            widths[lang] = {}
            for name, url in pages.items():
                page.goto(url)
                expect(page.locator("html")).to_have_attribute("lang", lang)
                widths[lang][name] = scroll_width(page)
                if name in ("form", "emergency") and not submit_is_tappable(
                        page, "[data-testid=submit]"):
                    problems.append(f"{lang} {name}: the submit button is covered")
                if name == "team-login" and not submit_is_tappable(
                        page, "[data-testid=login-submit]"):
                    problems.append(f"{lang} team login: the submit button is covered")
            if lang == "ar":
                page.goto("/report?category=suspicious&lang=ar")
                page.screenshot(path=str(tmp_path / "form-ar-360x640.png"))
        # The dashboard, logged in once, in every language.
        team_login(page, running_node)
        for lang in LANGS:
            page.goto(f"/team?lang={lang}")
            expect(page.locator("html")).to_have_attribute("lang", lang)
            widths[lang]["team"] = scroll_width(page)
        print("scrollWidth per language and page:", widths)
        too_wide = {f"{lang}/{name}": w for lang, row in widths.items()
                    for name, w in row.items() if w > WIDTH}
        assert not too_wide, f"pages wider than the phone: {too_wide}"
        assert not problems, problems
        assert errors == [], errors
    finally:
        context.close()


def test_arabic_report_by_tapping(phone: BrowserContext, running_node: NodeProcess,
                                  tmp_path: Path) -> None:
    page = phone.new_page()
    errors = page_errors(page)
    page.goto("/?lang=ar")
    expect(page.locator("html")).to_have_attribute("dir", "rtl")
    page.locator("[data-testid=report-button]").tap()
    page.wait_for_url(re.compile(r"/report$"))
    page.locator("[data-testid=category-suspicious]").tap()
    page.wait_for_url(re.compile(r"/report\?category=suspicious"))
    assert scroll_width(page) <= WIDTH
    # The form is on the screen, not pushed off to one side.
    box = page.locator("[data-testid=text]").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= WIDTH, box
    text = f"سيارة غريبة أمام المدرسة {uuid.uuid4().hex[:6]}"
    page.locator("[data-testid=text]").tap()
    page.keyboard.type(text)
    page.select_option("[data-testid=place_point]", MEETING_POINTS[1]["id"])
    page.locator("[data-testid=audience-authorities]").tap()
    submit = page.locator("[data-testid=submit]")
    submit.scroll_into_view_if_needed()
    assert submit_is_tappable(page, "[data-testid=submit]")
    submit.tap()
    page.wait_for_url(re.compile(r"/receipt/"))
    code = page.locator("[data-testid=receipt]").inner_text().strip()
    assert re.fullmatch(RECEIPT_PATTERN, code), code
    expect(page.locator("html")).to_have_attribute("lang", "ar")
    assert scroll_width(page) <= WIDTH
    page.screenshot(path=str(tmp_path / "receipt-ar-360x640.png"), full_page=True)
    found = httpx.get(f"{running_node.base_url}/api/v1/reports/{code}", timeout=5)
    assert found.status_code == 200 and found.json()["category"] == "suspicious"
    assert errors == [], errors
