"""axe-core on every resident, team and staff page, and targets a thumb can hit.

One real ``bart central run`` (SQLite) and one real ``bart node run`` enrolled
to it, with a panic button on gpiozero's mock pins; headless Debian Chromium
(Playwright) and axe-core 4.x as shipped by ``axe-playwright-python``.

The world the pages show is made through the real parts: a panic-button hold
(the demo control) that reaches the team page and central's police desk; a
trusted peer's alarm that a team answered "resolved"; a neighbourhood alert;
a central broadcast; resident reports, one with a desk's reply that travelled
back to the node; a team member who closes a report on the dashboard.

Checked, each page at phone size (360x640, touch, mobile viewport) and desktop
size (1280x800):

* resident pages in nl, en, tr, ar and pl: home, pictogram choice, report
  form, the form's 422 page, receipt, status (form, without and with a reply),
  the 404 and 429 error pages, the captive portal's page;
* team pages in the five languages: login, password, dashboard;
* staff pages in nl and en: login, password, reports (alarms on top), one
  report, nodes, broadcasts (list and new form, the form's 422), one
  broadcast, audit, accounts, insight, 404.

axe runs with the WCAG 2.0/2.1 A and AA rules and axe's best practices; a
serious or critical violation fails. The table of counts per page, language
and size is printed (``pytest -s`` shows it).

Target size, on phones: every visible link, button, ``summary`` and submit
input is at least 44 CSS pixels tall (its bounding box). Exempt, as WCAG 2.2
SC 2.5.8 "Target Size (Minimum)" exempts them ("Inline: the target is in a
sentence or its size is otherwise constrained by the line-height of non-target
text"): a link that is laid out inline (``display: inline``) inside a block
that has words of its own around the link, i.e. a link inside running text.
A link alone in its paragraph is not in a sentence and must be tall enough.
Also exempt, by the same criterion's "user agent control" exception: a page
without any author CSS, whose sizes are all the browser's own (none is left:
the captive portal's short answer to a probe has its own small style now).

The same tests write the README's screenshots to docs/screenshots/ (every run
overwrites them): the resident home on a phone in Dutch and in Arabic with a
live alarm, the Arabic report form, the team page with an alarm, and central's
police desk with the alarm on top.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.base import require, require_binary, wait_until
from tests.support.browser import (
    TEAM_PASSWORD,
    browser_context,
    staff_first_login,
    team_login,
    team_member,
)
from tests.support.central import CentralProcess, init_central_process, staff_http_login
from tests.support.html import csrf_of
from tests.support.node import NodeProcess, configure, finish, init_node

pytestmark = pytest.mark.timeout(300)

with contextlib.suppress(ImportError):  # a missing Playwright is reported by the fixture
    from playwright.sync_api import Browser, BrowserContext, Page, expect

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "docs" / "screenshots"
LANGS = ("nl", "en", "tr", "ar", "pl")
STAFF_LANGS = ("nl", "en")
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
FAILING = ("serious", "critical")
MIN_TARGET = 44
BUTTON = "boog-deur"
BUTTON2 = "kerk-deur"
STAFF_PASSWORD = "een-lang-wachtwoord-42"
FAST_UPLINK = "uplink_max_age_s = 0.2\nuplink_backoff_max_s = 1.0\nuplink_poll_s = 1.0\n"
SYNC_S = 25.0

SIZES: dict[str, dict[str, Any]] = {
    "phone": {"viewport": {"width": 360, "height": 640}, "is_mobile": True,
              "has_touch": True, "device_scale_factor": 2},
    "desktop": {"viewport": {"width": 1280, "height": 800}},
}

# Every visible link, button, summary and submit input; the ones that are
# inline in running text (WCAG 2.5.8's inline exception) are reported apart.
TARGETS_JS = """() => {
  // No author CSS at all: every size is the browser's own (2.5.8's
  // "user agent control" exception).
  const ua = document.styleSheets.length === 0 && !document.querySelector('[style]');
  const out = [];
  const sel = 'a[href], button, summary, input[type=submit], input[type=button]';
  for (const el of document.querySelectorAll(sel)) {
    const r = el.getBoundingClientRect();
    const cs = getComputedStyle(el);
    if (r.width < 2 || r.height < 2 || cs.visibility === 'hidden') continue;
    if (el.closest('.sr, [hidden]')) continue;
    let inline = false;
    if (cs.display === 'inline' && el.tagName === 'A') {
      let block = el.parentElement;
      while (block && getComputedStyle(block).display.startsWith('inline'))
        block = block.parentElement;
      const own = (el.textContent || '').trim().length;
      const all = block ? (block.textContent || '').replace(/\\s+/g, ' ').trim().length : own;
      inline = all > own + 3;
    }
    out.push({tag: el.tagName.toLowerCase(), h: Math.round(r.height * 10) / 10,
              text: (el.textContent || el.value || el.getAttribute('aria-label') || '')
                      .replace(/\\s+/g, ' ').trim().slice(0, 40),
              inline, ua, cls: el.className || '', id: el.getAttribute('data-testid') || ''});
  }
  return out;
}"""


@dataclass
class Stack:
    central: CentralProcess
    node: NodeProcess
    admin: httpx.Client
    receipt: str = ""          # a report without a reply
    replied: str = ""          # a report with a desk's reply
    report_id: str = ""        # central's id of ``replied``
    broadcast_id: str = ""
    alarm_title: str = ""


@dataclass
class Results:
    """axe counts per (page, lang, size): serious+critical, all, and the rule ids."""

    rows: dict[tuple[str, str, str], tuple[int, int, list[str]]] = field(default_factory=dict)
    small: list[str] = field(default_factory=list)
    inline_exempt: set[str] = field(default_factory=set)

    def table(self, title: str) -> str:
        pages = list(dict.fromkeys(p for p, _, _ in self.rows))
        langs = list(dict.fromkeys(lang for _, lang, _ in self.rows))
        lines = [f"{title}: serious+critical / all violations, phone | desktop",
                 f"{'page':<18}" + "".join(f"{lang:>14}" for lang in langs)]
        for p in pages:
            cells = []
            for lang in langs:
                parts = []
                for size in SIZES:
                    row = self.rows.get((p, lang, size))
                    parts.append("-" if row is None else f"{row[0]}/{row[1]}")
                cells.append(" | ".join(parts))
            lines.append(f"{p:<18}" + "".join(f"{c:>14}" for c in cells))
        rules: dict[str, int] = defaultdict(int)
        for _, _, ids in self.rows.values():
            for rule in ids:
                rules[rule] += 1
        lines.append("rules seen (pages): " + (", ".join(f"{k} {v}" for k, v in
                                                         sorted(rules.items())) or "none"))
        return "\n".join(lines)


# ------------------------------------------------------------------- the world


def staff_http(central: CentralProcess, name: str, role: str) -> httpx.Client:
    return staff_http_login(central.url, name, central.add_staff(name, role), STAFF_PASSWORD)


def report_on_node(node: NodeProcess, text: str, category: str = "nuisance") -> str:
    r = httpx.post(f"{node.base_url}/api/v1/reports", timeout=10, json={
        "category": category, "text": text, "audience": "authorities",
        "place": {"point": "speeltuin", "text": ""}, "lang": "nl"})
    assert r.status_code == 201, r.text
    return str(r.json()["receipt"])


def central_report_id(admin: httpx.Client, receipt: str) -> str | None:
    page = admin.get("/staff/reports", params={"state": "all"}).text
    found = re.search(r'data-receipt="' + receipt + r'">\s*<a class="title" href="/staff/'
                      r'reports/([0-9a-f-]{36})"', page)
    return found.group(1) if found else None


def make_world(stack: Stack, browser: Browser) -> None:
    node, admin = stack.node, stack.admin
    stack.receipt = report_on_node(node, "Harde muziek bij het speelveld")
    stack.replied = report_on_node(node, "Kapotte lantaarnpaal, al een week donker",
                                   "nuisance")
    stack.report_id = wait_until(lambda: central_report_id(admin, stack.replied), SYNC_S,
                                 0.3, "report at central")
    page = admin.get(f"/staff/reports/{stack.report_id}")
    r = admin.post(f"/staff/reports/{stack.report_id}/reply", data={
        "csrf": csrf_of(page.text), "text": "Dank u, de gemeente komt morgen kijken."})
    assert r.status_code == 303, r.text
    # A broadcast from the desk (verified by central's key on the node).
    page = admin.get("/staff/broadcasts")
    r = admin.post("/staff/broadcasts", data={
        "csrf": csrf_of(page.text), "title": "Inbraakgolf in de wijk",
        "text": "Sluit ramen en deuren. Zie je iets vreemds? Meld het.",
        "areas": node.area, "severity": "moderate", "category": "suspicious", "hours": "24"})
    assert r.status_code == 303, r.text
    stack.broadcast_id = r.headers["location"].rsplit("/", 1)[1].split("?")[0]
    # A team member raises a neighbourhood alert and resolves an alarm of the
    # second button; then the first button's alarm stays live.
    with context(browser, node.base_url, "phone", locale="nl") as ctx:
        page = ctx.new_page()
        team_login(page, node)
        page.click("[data-testid=raise] summary")
        page.fill("[data-testid=alert-title]", "Let op achterdeuren")
        page.check("[data-testid=alert-severity-severe]")
        page.click("[data-testid=alert-submit]")
        page.wait_for_url(re.compile(r"/team$"))
        assert httpx.post(f"{node.base_url}/demo/press/{BUTTON2}", timeout=5).status_code == 202
        alarm = page.locator("[data-testid=row][data-kind=alarm]")
        expect(alarm).to_have_count(1, timeout=10_000)
        alarm.locator("[data-testid=act-on_my_way]").click()
        page.wait_for_url(re.compile(r"/team$"))
        page.locator("[data-testid=row][data-kind=alarm] [data-testid=act-resolved]").click()
        page.wait_for_url(re.compile(r"/team$"))
    assert httpx.post(f"{node.base_url}/demo/press/{BUTTON}", timeout=5).status_code == 202

    seen: dict[str, Any] = {}

    def ready() -> bool:
        status = httpx.get(f"{node.base_url}/api/v1/reports/{stack.replied}", timeout=5).json()
        alerts = httpx.get(f"{node.base_url}/api/v1/alerts", timeout=5).json()["alerts"]
        seen.update(reply=status.get("reply"),
                    alerts=[(a.get("source"), a.get("phase")) for a in alerts],
                    desk='data-testid="alarm"' in admin.get("/staff/reports").text)
        return bool(seen["reply"]) and seen["desk"] and len(alerts) >= 4 \
            and ("button", "resolved") in seen["alerts"] \
            and ("button", "new") in seen["alerts"]

    try:
        wait_until(ready, SYNC_S, 0.3, "reply on the node, alarm at central, four alerts")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {seen}\n{node.log_tail(30)}") from None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, browser: Browser) -> Iterator[Stack]:
    require(importlib.util.find_spec("axe_playwright_python") is not None,
            "axe-playwright-python is not installed (pip install -e '.[dev]')")
    mosquitto = require_binary("mosquitto", "/usr/sbin/mosquitto")
    base = tmp_path_factory.mktemp("a11y")
    central = init_central_process(base)
    central.start()
    node = init_node(base, mosquitto)
    # Rate limits on (the 429 page), a panic button on mock pins, quick uplink.
    node.env_extra["BART_REPORTS_PER_MINUTE"] = "600"
    config = node.data_dir / "node.toml"
    config.write_text(re.sub(r'(?m)^display_name = .*$', 'display_name = "Buurthuis De Boog"',
                             config.read_text(encoding="utf-8")), encoding="utf-8")
    configure(node, 'gpio = "mock"\ndemo = true\nhold_s = 0.5\npoint_port = 0\n' + FAST_UPLINK,
              f'\n[[meeting_points.panic_buttons]]\nid = "{BUTTON}"\ndevice = "hub"\n'
              "button_pin = 17\nled_pin = 23\n"
              f'\n[[meeting_points.panic_buttons]]\nid = "{BUTTON2}"\ndevice = "hub"\n'
              "button_pin = 27\nled_pin = 24\n")
    admin: httpx.Client | None = None
    try:
        central.enrol(node)
        node.start()
        admin = staff_http(central, "Beheer Centraal", "admin")
    except BaseException:
        central.kill()
        if node.proc is not None:
            node.kill()
        raise
    ok = False
    try:
        world = Stack(central, node, admin)
        make_world(world, browser)
        yield world
        ok = True
    finally:
        admin.close()
        finish(node, ok)
        if ok:
            assert central.stop() == 0, central.log_tail()
        else:
            central.kill()


# ------------------------------------------------------------------- checking


def axe_violations(page: Page) -> list[dict[str, Any]]:
    from axe_playwright_python.sync_playwright import Axe

    result = Axe().run(page, options={"runOnly": {"type": "tag", "values": TAGS},
                                      "resultTypes": ["violations"]})
    violations: list[dict[str, Any]] = result.response["violations"]
    return violations


def check(page: Page, results: Results, name: str, lang: str, size: str) -> None:
    """axe on the page as it is now, and (phones) the height of every target."""
    page.wait_for_load_state("load")
    violations = axe_violations(page)
    bad = [v for v in violations if v.get("impact") in FAILING]
    ids = [f"{v['id']}({v['impact'][0]})" for v in violations]
    results.rows[(name, lang, size)] = (len(bad), len(violations), ids)
    for v in bad:
        targets = "; ".join(" ".join(n["target"]) if isinstance(n["target"], list)
                            else str(n["target"]) for n in v["nodes"][:4])
        print(f"  AXE {name}/{lang}/{size}: {v['id']} ({v['impact']}) {targets}")
    if size == "phone":
        for t in page.evaluate(TARGETS_JS):
            what = f"{t['tag']}[{t['id'] or t['cls']}] '{t['text']}'"
            if t["h"] >= MIN_TARGET:
                continue
            if t["inline"] or t["ua"]:
                why = "inline" if t["inline"] else "user agent's size"
                results.inline_exempt.add(f"{name}: {what} {t['h']}px ({why})")
            else:
                results.small.append(f"{name}/{lang}: {what} {t['h']}px")


def verdict(results: Results, title: str) -> None:
    print("\n" + results.table(title))
    if results.inline_exempt:
        print("exempt by WCAG 2.5.8 (inline in text, or the user agent's own size):",
              sorted(results.inline_exempt))
    failing = {k: v for k, v in results.rows.items() if v[0]}
    assert not failing, f"serious/critical axe violations: {failing}"
    assert not results.small, f"targets under {MIN_TARGET}px on a phone: {results.small}"


def context(browser: Browser, base_url: str, size: str,
            **extra: Any) -> contextlib.AbstractContextManager[BrowserContext]:
    return browser_context(browser, 15_000, base_url=base_url, **SIZES[size], **extra)


def shot(page: Page, name: str, top: str = "") -> None:
    """A README screenshot at CSS pixels (360 wide on a phone), the viewport only,
    scrolled so that ``top`` (a selector) is at the top when given."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    if top:
        page.locator(top).first.evaluate(
            "e => window.scrollTo(0, e.getBoundingClientRect().top + scrollY - 8)")
    page.screenshot(path=str(SHOTS / name), scale="css", animations="disabled")
    assert (SHOTS / name).stat().st_size < 150_000, name


# ------------------------------------------------------------------- resident


def exhaust_lookups(node: NodeProcess) -> None:
    """Use up this address's receipt lookups (60 a minute): the next one is a 429."""
    with httpx.Client(base_url=node.base_url, timeout=5) as client:
        for _ in range(200):
            if client.get("/status", params={"receipt": "AAA-AAA"}).status_code == 429:
                return
    raise AssertionError("no 429 after 200 lookups")


def captive_page(node: NodeProcess) -> Callable[[Any], None]:
    """The page a phone's sign-in sheet gets for a probe (the node's 302 body)."""
    def handle(route: Any) -> None:
        lang = route.request.headers.get("accept-language", "nl")
        # Any other site lands on the portal (a probe would say "online" once
        # this address made a report).
        r = httpx.get(f"{node.base_url}/nieuws", timeout=5,
                      headers={"Host": "nu.nl",
                               "Accept-Language": lang})
        assert r.status_code == 302
        # Shown as the browser would show the body of the answer (status 200: a
        # browser follows a 302 instead of showing it).
        route.fulfill(status=200, body=r.content, content_type=r.headers["content-type"])
    return handle


def resident_pages(stack: Stack, lang: str) -> dict[str, str]:
    return {
        "home": f"/?lang={lang}",
        "report-choose": f"/report?lang={lang}",
        "report-form": f"/report?category=suspicious&lang={lang}",
        "receipt": f"/receipt/{stack.receipt}?lang={lang}",
        "status-form": f"/status?lang={lang}",
        "status": f"/status?receipt={stack.receipt}&lang={lang}",
        "status-reply": f"/status?receipt={stack.replied}&lang={lang}",
        "error-404": f"/geen-pagina?lang={lang}",
    }


def test_resident_pages(browser: Browser, stack: Stack) -> None:
    node = stack.node
    results = Results()
    started = time.monotonic()
    for size in SIZES:
        for lang in LANGS:
            with context(browser, node.base_url, size, locale=lang) as ctx:
                page = ctx.new_page()
                for name, url in resident_pages(stack, lang).items():
                    page.goto(url)
                    expect(page.locator("html")).to_have_attribute("lang", lang)
                    if name == "home":
                        expect(page.locator("[data-testid=alert]")).to_have_count(4)
                    check(page, results, name, lang, size)
                    if name == "report-form":
                        # Sent empty: the 422 page says what is missing.
                        page.locator("[data-testid=submit]").click()
                        page.wait_for_load_state()
                        assert page.locator(".errs, .err").count() > 0
                        check(page, results, "report-form-422", lang, size)
                # The bucket refills a token a second: on a loaded machine the browser
                # may come after one came back. Use them up again, then look.
                for _ in range(5):
                    exhaust_lookups(node)
                    r = page.goto(f"/status?receipt=AAA-AAA&lang={lang}")
                    if r is not None and r.status == 429:
                        break
                assert r is not None and r.status == 429
                check(page, results, "error-429", lang, size)
                ctx.route("http://nu.nl/**", captive_page(node))
                page.goto("http://nu.nl/nieuws")
                expect(page.locator("html")).to_have_attribute("lang", lang)
                check(page, results, "captive", lang, size)
    print(f"\nresident pages: {len(results.rows)} axe runs in "
          f"{time.monotonic() - started:.0f}s")
    verdict(results, "Resident pages")


# ------------------------------------------------------------------- team


def test_team_pages(browser: Browser, stack: Stack) -> None:
    node = stack.node
    results = Results()
    closed = False
    for size in SIZES:
        for lang in LANGS:
            with context(browser, node.base_url, size, locale=lang) as ctx:
                page = ctx.new_page()
                name, otp = team_member(node)
                page.goto(f"/team/login?lang={lang}")
                check(page, results, "team-login", lang, size)
                page.fill("[data-testid=login-name]", name)
                page.fill("[data-testid=login-password]", otp)
                page.click("[data-testid=login-submit]")
                page.wait_for_url(re.compile(r"/team/password"))
                page.goto(f"/team/password?lang={lang}")
                check(page, results, "team-password", lang, size)
                page.fill("[data-testid=password-current]", otp)
                page.fill("[data-testid=password-new]", TEAM_PASSWORD)
                page.fill("[data-testid=password-repeat]", TEAM_PASSWORD)
                page.click("[data-testid=password-submit]")
                page.wait_for_url(re.compile(r"/team$"))
                if not closed:  # a closed item: a member handles the first report
                    row = page.locator("[data-testid=row][data-kind=report]").first
                    row.locator("[data-testid=act-resolved]").click()
                    page.wait_for_url(re.compile(r"/team$"))
                    closed = True
                page.goto(f"/team?lang={lang}")
                expect(page.locator("[data-testid=row][data-kind=alarm]").first).to_be_visible()
                check(page, results, "team-dashboard", lang, size)
    verdict(results, "Team pages")


# ------------------------------------------------------------------- staff


def staff_login(page: Page, central: CentralProcess, name: str, role: str,
                on_password: Callable[[], None] | None = None) -> None:
    otp = central.add_staff(name, role)
    page.goto("/staff/login")
    staff_first_login(page, name, otp, STAFF_PASSWORD, on_password)


def test_staff_pages(browser: Browser, stack: Stack) -> None:
    central = stack.central
    results = Results()
    pages = {
        "reports": "/staff/reports?lang={lang}",
        "reports-all": "/staff/reports?state=all&lang={lang}",
        "report": f"/staff/reports/{stack.report_id}?lang={{lang}}",
        "nodes": "/staff/nodes?lang={lang}",
        "broadcasts": "/staff/broadcasts?lang={lang}",
        "broadcast": f"/staff/broadcasts/{stack.broadcast_id}?lang={{lang}}",
        "audit": "/staff/audit?lang={lang}",
        "accounts": "/staff/accounts?lang={lang}",
        "insight": "/staff/insight?lang={lang}",
        "error-404": "/staff/reports/00000000-0000-0000-0000-000000000000?lang={lang}",
    }
    for size in SIZES:
        for lang in STAFF_LANGS:
            with context(browser, central.url, size, locale=lang) as ctx:
                page = ctx.new_page()
                page.goto(f"/staff/login?lang={lang}")
                check(page, results, "login", lang, size)
                staff_login(page, central, f"Beheer {uuid.uuid4().hex[:6]}", "admin",
                            lambda page=page, lang=lang, size=size: (
                                page.goto(f"/staff/password?lang={lang}"),
                                check(page, results, "password", lang, size)))
                for name, url in pages.items():
                    page.goto(url.format(lang=lang))
                    check(page, results, name, lang, size)
                    if name == "broadcasts":  # the new form sent with a bad area: 422
                        page.fill('[data-testid="bc-title"]', "Test")
                        page.fill('[data-testid="bc-areas"]', "??")
                        page.click('[data-testid="bc-submit"]')
                        expect(page.locator('[data-testid="error-areas"]')).to_be_visible()
                        check(page, results, "broadcast-new-422", lang, size)
    verdict(results, "Staff pages")


# ------------------------------------------------------------------- screenshots


def test_screenshots(browser: Browser, stack: Stack) -> None:
    """The README's pictures, from the running node and central (overwritten each run)."""
    node, central = stack.node, stack.central
    for lang in ("nl", "ar"):
        with context(browser, node.base_url, "phone", locale=lang) as ctx:
            page = ctx.new_page()
            page.goto(f"/?lang={lang}")
            expect(page.locator("[data-testid=alert]").first).to_be_visible()
            shot(page, f"resident-home-{lang}.png")
            if lang == "ar":
                page.goto("/report?category=suspicious&lang=ar")
                shot(page, "report-form-ar.png")
    with context(browser, node.base_url, "phone", locale="nl") as ctx:
        page = ctx.new_page()
        team_login(page, node)
        expect(page.locator("[data-testid=row][data-kind=alarm]").first).to_be_visible()
        shot(page, "team-alarm.png", top="[data-testid=row][data-kind=alarm]")
    with context(browser, central.url, "desktop", locale="nl") as ctx:
        page = ctx.new_page()
        staff_login(page, central, f"Agent {uuid.uuid4().hex[:6]}", "police")
        page.goto("/staff/reports?lang=nl")
        first = page.locator("main ul.list > li").first
        assert first.get_attribute("data-testid") == "alarm"
        shot(page, "central-police-desk.png")
    print("\nscreenshots:", json.dumps({p.name: p.stat().st_size
                                        for p in sorted(SHOTS.glob("*.png"))}))
