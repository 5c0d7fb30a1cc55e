"""The team page in headless Chromium against a real ``bart node run`` with a mock button.

A phone-sized browser logs in with a one-time password, chooses a password,
and keeps the dashboard open: a panic-button hold (the gpiozero mock pin,
through the demo control) appears live, red and on top; a resident's report
appears live below it; until someone answers, the page's title, a banner and a
repeating beep say so; "Ik ga erheen" changes the row's state and the button's
light to "someone is coming", and the cue stops. Also without JavaScript
(plain form posts).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.base import require_binary, wait_until
from tests.support.browser import PHONE, page_errors, team_login
from tests.support.node import MEETING_POINTS, NodeProcess, init_node

pytestmark = pytest.mark.timeout(120)

try:
    from playwright.sync_api import Browser, Page, expect
    HAVE_PLAYWRIGHT = True
except ImportError:  # pragma: no cover - reported by the fixture
    HAVE_PLAYWRIGHT = False

BUTTON = "boog-deur"


@pytest.fixture(scope="module")
def button_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node with one wired panic button on mock pins, and the demo press control."""
    mosquitto = require_binary("mosquitto", "/usr/sbin/mosquitto")
    node = init_node(tmp_path_factory.mktemp("team-browser"), mosquitto)
    config = node.data_dir / "node.toml"
    # Plain settings go before the first table; the button joins the last meeting point.
    head, _, tables = config.read_text(encoding="utf-8").partition("\n[[meeting_points]]")
    config.write_text(
        head + '\ngpio = "mock"\ndemo = true\nhold_s = 0.5\npoint_port = 0\n'
        + "\n[[meeting_points]]" + tables
        + f'\n[[meeting_points.panic_buttons]]\nid = "{BUTTON}"\ndevice = "hub"\n'
        + "button_pin = 17\nled_pin = 23\n", encoding="utf-8")
    node.start()
    try:
        yield node
    finally:
        if node.proc is not None and node.proc.poll() is None:
            node.stop()


def log_in(page: Page, node: NodeProcess) -> str:
    """A new member from /team: the one-time password typed loosely on a phone."""
    name = team_login(page, node, start="/team", typed=str.lower)
    expect(page.locator("[data-testid=team-member]")).to_contain_text(name)
    return name


def light(node: NodeProcess) -> str:
    buttons = httpx.get(f"{node.base_url}/demo/buttons", timeout=5).json()["buttons"]
    state: str = next(b["light"] for b in buttons if b["id"] == BUTTON)
    return state


def test_alarm_appears_live_and_on_my_way_reaches_the_light(
        browser: Browser, button_node: NodeProcess, tmp_path: Path) -> None:
    context = browser.new_context(viewport=PHONE, base_url=button_node.base_url,
                                  locale="nl-NL")
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        errors = page_errors(page, resources=False)
        name = log_in(page, button_node)
        expect(page.locator("[data-testid=live]")).to_be_visible()  # the team stream is open
        page.evaluate("window.__notReloaded = true")

        assert httpx.post(f"{button_node.base_url}/demo/press/{BUTTON}",
                          timeout=5).status_code == 202
        alarm = page.locator("[data-testid=row][data-kind=alarm]")
        expect(alarm).to_have_count(1, timeout=5_000)
        expect(alarm).to_contain_text("Alarm: noodknop")
        wait_until(lambda: light(button_node) == "stored", 5.0, message="light stored")
        # The cue (docs/team.md): the title, a banner, a beep and vibration that
        # repeat until someone answers; the node counts the page as watching.
        expect(page.locator("[data-testid=cue]")).to_be_visible()
        assert page.title().startswith("(1) ALARM"), page.title()
        page.wait_for_function("Number(document.body.getAttribute('data-cues')) >= 1")
        expect(page.locator("[data-testid=sound]")).to_be_visible()
        health = httpx.get(f"{button_node.base_url}/healthz", timeout=5).json()
        assert health["team_watching"] >= 1, health

        text = f"Man probeert deuren {uuid.uuid4().hex[:6]}"
        r = httpx.post(f"{button_node.base_url}/api/v1/reports", timeout=5, json={
            "category": "suspicious", "text": text, "audience": "authorities",
            "place": {"point": MEETING_POINTS[0]["id"], "text": ""}, "contact": "06-55554444"})
        assert r.status_code == 201
        report = page.locator("[data-testid=row]", has_text=text)
        expect(report).to_have_count(1, timeout=5_000)
        expect(report.locator("[data-testid=row-contact]")).to_contain_text("06-55554444")
        # Alarms stay on top: the new report goes below the alarm.
        assert page.locator("#rows > li").first.get_attribute("data-kind") == "alarm"
        assert page.evaluate("window.__notReloaded") is True
        page.screenshot(path=str(tmp_path / "team-360x740.png"), full_page=True)

        alarm.locator("[data-testid=act-on_my_way]").click()
        page.wait_for_load_state()
        row = page.locator("[data-testid=row][data-kind=alarm]")
        expect(row).to_have_attribute("data-state", "on_my_way")
        expect(row.locator("[data-testid=row-state]")).to_contain_text(name)
        wait_until(lambda: light(button_node) == "coming", 5.0, message="light coming")
        # Answered: the cue stops.
        expect(page.locator("[data-testid=cue]")).to_be_hidden()
        assert page.get_attribute("body", "data-unanswered") == "0"
        assert not page.title().startswith("(")

        # Buttons are big enough for a thumb.
        box = row.locator("[data-testid=act-resolved]").bounding_box()
        assert box is not None and box["height"] >= 48
        assert errors == [], errors
    finally:
        context.close()


def test_team_page_without_javascript(browser: Browser, button_node: NodeProcess) -> None:
    context = browser.new_context(viewport=PHONE, base_url=button_node.base_url,
                                  java_script_enabled=False)
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        log_in(page, button_node)
        expect(page.locator("[data-testid=live]")).to_be_hidden()
        expect(page.locator("[data-testid=refresh]")).to_be_visible()
        text = f"Geluidsoverlast {uuid.uuid4().hex[:6]}"
        r = httpx.post(f"{button_node.base_url}/api/v1/reports", timeout=5, json={
            "category": "nuisance", "text": text, "audience": "authorities"})
        assert r.status_code == 201
        page.click("[data-testid=refresh]")
        row = page.locator("[data-testid=row]", has_text=text)
        expect(row).to_have_attribute("data-state", "new")
        row.locator("[data-testid=row-note]").fill("Ik bel aan bij nummer 12")
        row.locator("[data-testid=act-escalate]").click()  # opens the <details>
        row.locator("[data-testid=row-to]").select_option("municipality")
        row.locator("[data-testid=act-escalated]").click()
        page.wait_for_url(re.compile(r"/team$"))
        row = page.locator("[data-testid=row]", has_text=text)
        expect(row).to_have_attribute("data-state", "escalated")
        # Raise an alert for residents; it appears on their home page.
        title = f"Let op {uuid.uuid4().hex[:6]}"
        page.click("[data-testid=raise] summary")
        page.fill("[data-testid=alert-title]", title)
        page.check("[data-testid=alert-severity-severe]")
        page.click("[data-testid=alert-submit]")
        page.wait_for_url(re.compile(r"/team$"))
        page.goto("/")
        expect(page.locator("[data-testid=alert]", has_text=title)).to_have_count(1)
    finally:
        context.close()

