"""Alerts have a life residents can see: new -> someone coming -> resolved -> gone.

A real ``bart node run`` with ``resolved_alert_keep_s = 4``; a trusted peer
(a neighbouring centre's team) sends a signed panic alarm and then signed
answers over the node's real Mosquitto. Checked on the home page without
JavaScript (each reload), in the JSON API, and live in headless Chromium (no
reload: the item changes in place and leaves by itself).
"""

from __future__ import annotations

import contextlib
import html
import sqlite3
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from node.portal.i18n import SUPPORTED, Catalogue
from sync import Event, make_event
from tests.support.base import require_binary, wait_until
from tests.support.node import NodeProcess, configure, init_node
from tests.support.sse import SseReader

with contextlib.suppress(ImportError):  # a missing Playwright is reported by the fixture
    from playwright.sync_api import Browser, expect

pytestmark = pytest.mark.timeout(90)
KEEP_S = 4.0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    mosquitto = require_binary("mosquitto", "/usr/sbin/mosquitto")
    n = init_node(tmp_path_factory.mktemp("alerts"), mosquitto)
    configure(n, f"resolved_alert_keep_s = {KEEP_S}")
    n.start()
    try:
        yield n
    finally:
        if n.proc is not None and n.proc.poll() is None:
            n.stop()


@pytest.fixture(scope="module")
def messages() -> Catalogue:
    return Catalogue.load(strict=True)


def alarm(node: NodeProcess) -> Event:
    return node.peer_alert("", source="button", category="emergency", severity="extreme",
                           title=f"Noodknop {uuid.uuid4().hex[:6]}")


def answer(node: NodeProcess, alert: Event, action: str) -> Event:
    return make_event(node.peer, origin=node.peer_origin, stream="public",
                      seq=node.next_peer_seq(), kind="ack", ts=int(time.time() * 1000),
                      body={"ref": alert.id, "action": action, "by": "Team De Boog"})


def api_alert(node: NodeProcess, alert: Event) -> dict[str, Any] | None:
    alerts = httpx.get(f"{node.base_url}/api/v1/alerts", params={"limit": 200},
                       timeout=5).json()["alerts"]
    return next((a for a in alerts if a["id"] == alert.id), None)


def home_item(node: NodeProcess, alert: Event, lang: str = "nl") -> str | None:
    page = httpx.get(f"{node.base_url}/", params={"lang": lang}, timeout=5).text
    start = page.find(f'<li id="alert-{alert.id}"')
    if start < 0:
        return None
    return html.unescape(page[start:page.index("</li>", start)])


def test_life_cycle_without_javascript(node: NodeProcess, messages: Catalogue) -> None:
    nl = messages.translator("nl")
    event = alarm(node)
    node.publish_events(event)
    wait_until(lambda: api_alert(node, event) is not None, 5.0, message="alarm stored")
    item = home_item(node, event)
    assert item is not None
    assert "ph-new" in item and nl("alert.phase.new") in item
    assert nl("severity.extreme") in item  # live: "Heel ernstig"
    assert api_alert(node, event)["phase"] == "new"  # type: ignore[index]

    node.publish_events(answer(node, event, "seen"), answer(node, event, "on_my_way"))
    wait_until(lambda: (api_alert(node, event) or {}).get("phase") == "coming", 5.0,
               message="phase coming")
    for lang in SUPPORTED:
        item = home_item(node, event, lang)
        assert item is not None and messages.translator(lang)("alert.phase.coming") in item

    node.publish_events(answer(node, event, "resolved"))
    wait_until(lambda: (api_alert(node, event) or {}).get("phase") == "resolved", 5.0,
               message="phase resolved")
    resolved_at = time.monotonic()
    item = home_item(node, event)
    assert item is not None
    assert nl("alert.phase.resolved") in item
    # No longer shown as if it were live: no "Heel ernstig", no red emergency border.
    assert nl("severity.extreme") not in item
    assert "sev-extreme" not in item and "cat-emergency" not in item
    assert 'data-gone-in="' in item
    # Gone after resolved_alert_keep_s: from the page and from the API.
    wait_until(lambda: home_item(node, event) is None, KEEP_S + 5.0, message="gone")
    assert time.monotonic() - resolved_at >= KEEP_S - 1.5
    assert api_alert(node, event) is None


def test_a_peer_event_is_shown_only_after_its_commit(node: NodeProcess) -> None:
    """Stored before shown: while another writer holds the SQLite file, a
    peer's alarm reaches no page; once stored, it and an answer sent right
    behind it reach the stream in order, the answer with the phase it moves
    (the page could otherwise be told of an answer to an alert it cannot
    find, and stay at "no answer yet")."""
    with SseReader(f"{node.base_url}/api/v1/stream") as sse:
        lock = sqlite3.connect(node.db_path, isolation_level=None, timeout=5)
        lock.execute("BEGIN IMMEDIATE")  # a real second writer: our COMMITs wait
        try:
            event = alarm(node)
            node.publish_events(event, answer(node, event, "on_my_way"))
            time.sleep(0.5)  # anything shown early has had time to show
            assert all(m["id"] != event.id for m in sse.all), "shown before its COMMIT"
        finally:
            lock.rollback()
            lock.close()
        first = sse.wait_for(lambda m: m["data"].get("id") == event.id, 10)
        assert first["data"]["phase"] in ("new", "coming")
        if first["data"]["phase"] == "new":
            sse.wait_for(lambda m: m["data"].get("id") == event.id
                         and m["data"]["phase"] == "coming", 10)
    assert (api_alert(node, event) or {}).get("phase") == "coming"


def test_an_alarm_nobody_answered_stays(node: NodeProcess) -> None:
    event = alarm(node)
    node.publish_events(event)
    wait_until(lambda: api_alert(node, event) is not None, 5.0, message="alarm stored")
    node.publish_events(answer(node, event, "seen"))
    time.sleep(KEEP_S + 1.0)
    item = home_item(node, event)
    assert item is not None and "ph-new" in item


def test_life_cycle_live_in_the_browser(browser: Browser, node: NodeProcess,
                                        messages: Catalogue) -> None:
    en = messages.translator("en")
    context = browser.new_context(viewport={"width": 360, "height": 640},
                                  base_url=node.base_url)
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto("/?lang=en")
        expect(page.locator("[data-testid=live]")).to_be_visible()
        page.evaluate("window.__notReloaded = true")
        event = alarm(node)
        node.publish_events(event)
        item = page.locator(f"#alert-{event.id}")
        expect(item.locator("[data-testid=alert-phase]")).to_have_text(en("alert.phase.new"))
        expect(item).to_contain_text(en("severity.extreme"))

        node.publish_events(answer(node, event, "on_my_way"))
        expect(item.locator("[data-testid=alert-phase]")).to_have_text(
            en("alert.phase.coming"), timeout=5_000)
        node.publish_events(answer(node, event, "resolved"))
        expect(item.locator("[data-testid=alert-phase]")).to_contain_text(
            en("alert.phase.resolved"), timeout=5_000)
        expect(item).not_to_contain_text(en("severity.extreme"))
        assert page.locator(f"#alert-{event.id}").count() == 1
        expect(item).to_have_count(0, timeout=int((KEEP_S + 4) * 1000))
        assert page.evaluate("window.__notReloaded") is True, "the page was reloaded"
        assert errors == []
    finally:
        context.close()
