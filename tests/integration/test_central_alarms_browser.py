"""The alarm desk in headless Debian Chromium (Playwright): central's app under
a real uvicorn server on a SQLite file, a node's sealed batches through
Ingest and the Projector, a police member with /staff/reports open.

- a panic alarm arrives: without a reload the page fetches its main again,
  the alarm is on top, the title says "(1) ALARM", the cue runs and the
  "Geluid aan" button shows; the desk answers ("Er komt iemand") and the
  title and cue go back; a colleague's answer does the same on an open page;
- without JavaScript: no timed refresh, a reload link.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import staff_first_login
from tests.support.desk import Node, Served, http_member, project
from tests.support.staff import PASSWORD, Env, csrf_of, open_env

TITLE = "Meldingen"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with open_env(tmp_path, f"sqlite:///{tmp_path / 'central.db'}") as central_env:
        yield central_env


def log_in(page: Any, url: str, env: Env, name: str, role: str) -> None:
    """A new member logs in with the one-time password and chooses their own."""
    otp = env.accounts.add(name, role)
    page.goto(f"{url}/staff/reports")
    assert page.url.endswith("/staff/login")
    staff_first_login(page, name, otp, PASSWORD)


def body_data(page: Any, name: str) -> int:
    return int(page.evaluate(f"Number(document.body.dataset.{name} || 0)"))


@pytest.mark.timeout(120)
def test_an_alarm_appears_live_with_title_and_cue_until_the_desk_answers(
        env: Env, browser: Any) -> None:
    node = Node(env)
    with Served(env) as served:
        context = browser.new_context(locale="nl-NL", viewport={"width": 1280, "height": 900})
        try:
            page = context.new_page()
            log_in(page, served.url, env, "Anouk de Vries", "police")
            page.wait_for_function("() => document.body.dataset.mark !== undefined", timeout=5000)
            assert page.title().startswith(TITLE)
            assert body_data(page, "unanswered") == 0 and body_data(page, "cues") == 0
            assert page.locator('[data-testid="alarm"]').count() == 0
            assert page.is_visible('[data-testid="sound"]')
            assert page.inner_text('[data-testid="sound"]') == "Geluid aan"
            navigations: list[str] = []
            page.on("framenavigated", lambda f: navigations.append(f.url))

            alarm = node.panic(place="Speeltuin De Klimboom")
            node.send(alarm)
            project(env)
            arrived = time.monotonic()
            page.wait_for_function(
                "() => document.querySelector('[data-testid=alarm]') !== null"
                " && document.title.startsWith('(1) ALARM')"
                " && Number(document.body.dataset.cues || 0) >= 1"
                " && Number(document.body.dataset.reloads || 0) >= 1", timeout=3000)
            assert time.monotonic() - arrived < 3.0
            assert navigations == []  # no reload: the page fetched its main again
            first = page.locator("main ul.list > li").first
            assert first.get_attribute("data-testid") == "alarm"
            assert first.get_attribute("data-id") == alarm.id
            assert "Speeltuin De Klimboom" in first.inner_text()
            assert body_data(page, "unanswered") == 1
            assert page.is_visible('[data-testid="sound"]')
            page.click('[data-testid="sound"]')
            assert page.get_attribute('[data-testid="sound"]', "aria-pressed") == "true"

            # The desk answers: the page posts and comes back; nothing unanswered.
            page.click('[data-testid="answer-on_my_way"]')
            page.wait_for_url("**/staff/reports*")
            page.wait_for_function("() => document.body.dataset.unanswered === '0'", timeout=3000)
            assert not page.title().startswith("(")
            assert page.title().startswith(TITLE)
            assert page.get_attribute(f'[data-id="{alarm.id}"]', "data-state") == "on_my_way"
            assert body_data(page, "cues") == 0

            # A colleague answers a second alarm while the page stays open: title
            # back and the repeating cue stops, without a reload.
            second = node.panic(button="kerk-deur", place="Kerkplein")
            node.send(second)
            project(env)
            page.wait_for_function("() => document.title.startsWith('(1) ALARM')"
                                   " && document.body.dataset.cues === '1'", timeout=3000)
            colleague = http_member(env, served.url, "Pieter Jansen", "police")
            try:
                form = colleague.get("/staff/reports")
                r = colleague.post(f"/staff/alarms/{second.id}/answer", data={
                    "csrf": csrf_of(form.text), "action": "seen", "seen": "new"})
                assert r.status_code == 303
            finally:
                colleague.close()
            page.wait_for_function(
                "() => document.body.dataset.unanswered === '0' && !document.title.startsWith('(')"
                f" && document.querySelector('[data-id=\"{second.id}\"]')"
                ".dataset.state === 'seen'", timeout=3000)
            cues, since = body_data(page, "cues"), len(navigations)
            time.sleep(10.5)  # one cue interval: it does not sound again
            assert body_data(page, "cues") == cues
            assert navigations[since:] == []
        finally:
            context.close()


@pytest.mark.timeout(60)
def test_without_javascript_no_timed_refresh_and_a_reload_link(env: Env, browser: Any) -> None:
    node = Node(env)
    with Served(env) as served:
        context = browser.new_context(locale="nl-NL", java_script_enabled=False)
        try:
            page = context.new_page()
            log_in(page, served.url, env, "Anouk de Vries", "police")
            assert page.locator('meta[http-equiv="refresh" i]').count() == 0
            reload_link = page.locator("main a.btn", has_text="Vernieuwen")
            assert reload_link.is_visible()
            assert not page.is_visible('[data-testid="sound"]')  # only with the script
            alarm = node.panic()
            node.send(alarm)
            project(env)
            time.sleep(2.0)
            assert page.locator('[data-testid="alarm"]').count() == 0  # the page stays
            reload_link.click()
            page.wait_for_selector(f'[data-id="{alarm.id}"]')
            page.click('[data-testid="answer-seen"]')
            page.wait_for_url("**/staff/reports*")
            assert page.get_attribute(f'[data-id="{alarm.id}"]', "data-state") == "seen"
        finally:
            context.close()
