"""Staff side end to end: a real ``bart central run`` (SQLite file) and a real
``bart node run`` enrolled to it with ``bart central enroll-code`` + ``bart
node enroll``; staff accounts from ``bart central staff add``.

- a resident's report reaches the police desk; taking it and handling it
  travels back to the node, whose ``/status?receipt=…`` shows the new state;
- a broadcast appears on the node's resident page with the verified mark,
  only in its area; an update replaces it, a cancel and an expiry remove it;
- the CAP feed and every CAP document, fetched over HTTP, pass WMO's
  capvalidator (the official OASIS CAP 1.2 XSD);
- a headless Chromium logs in and takes a report on the staff pages; an admin
  adds a member there, who logs in with the one-time password, and removes them.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support.base import require, wait_until
from tests.support.central import CentralProcess, init_central_process, staff_http_login
from tests.support.html import csrf_of
from tests.support.node import NodeProcess, configure, finish, init_node
from tests.support.sse import SseReader

try:
    import capvalidator
except ImportError:  # pragma: no cover - the test extra installs it
    capvalidator = None

FAST_UPLINK = "uplink_max_age_s = 0.2\nuplink_backoff_max_s = 1.0\nuplink_poll_s = 1.0\n"
PASSWORD = "een-lang-wachtwoord-42"
SYNC_S = 20.0
ATOM = "{http://www.w3.org/2005/Atom}"


@dataclass
class Stack:
    central: CentralProcess
    node: NodeProcess


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from tests.support.base import require_binary

    mosquitto = require_binary("mosquitto", "/usr/sbin/mosquitto")
    base = tmp_path_factory.mktemp("staff")
    central = init_central_process(base)
    central.start()
    node = init_node(base, mosquitto)
    configure(node, FAST_UPLINK)
    try:
        central.enrol(node)
        node.start()
    except BaseException:
        central.kill()
        if node.proc is not None:
            node.kill()
        raise
    ok = False
    try:
        yield Stack(central, node)
        ok = True
    finally:
        finish(node, ok)
        if ok:
            assert central.stop() == 0, central.log_tail()
        else:
            central.kill()


def staff_client(central: CentralProcess, name: str, role: str) -> httpx.Client:
    """A member added by the CLI, logged in over HTTP, own password chosen."""
    return staff_http_login(central.url, name, central.add_staff(name, role), PASSWORD)


def report_on_node(node: NodeProcess, text: str, category: str = "suspicious") -> str:
    r = httpx.post(f"{node.base_url}/api/v1/reports", json={
        "category": category, "text": text, "audience": "authorities",
        "place": {"point": None, "text": "Leyweg"}})
    assert r.status_code == 201, r.text
    return str(r.json()["receipt"])


def receipt_state(node: NodeProcess, receipt: str) -> str:
    r = httpx.get(f"{node.base_url}/api/v1/reports/{receipt}", timeout=5.0)
    return str(r.json()["state"])


def report_id_for(client: httpx.Client, receipt: str) -> str | None:
    page = client.get("/staff/reports", params={"state": "all"}).text
    found = re.search(r'data-receipt="' + receipt + r'">\s*<a class="title" href="/staff/'
                      r'reports/([0-9a-f-]{36})"', page)
    return found.group(1) if found else None


def post_state(client: httpx.Client, report_id: str, to: str) -> httpx.Response:
    page = client.get(f"/staff/reports/{report_id}").text
    version = re.search(r'name="version" value="(\d+)"', page)
    assert version
    return client.post(f"/staff/reports/{report_id}/state",
                       data={"csrf": csrf_of(page), "to": to, "version": version.group(1)})


def test_report_taken_and_handled_at_central_shows_on_the_node(stack: Stack) -> None:
    central, node = stack.central, stack.node
    police = staff_client(central, "Anouk de Vries", "police")
    municipality = staff_client(central, "Bas Jansen", "municipality")
    receipt = report_on_node(node, "Twee mannen proberen fietsen open te breken")
    report_id = wait_until(lambda: report_id_for(police, receipt), SYNC_S,
                           message="report on the police desk")
    assert report_id_for(municipality, receipt) is None  # not the municipality's desk
    wait_until(lambda: receipt_state(node, receipt) == "forwarded", SYNC_S,
               message="receipt forwarded")

    assert post_state(police, report_id, "in_progress").status_code == 303
    page = police.get(f"/staff/reports/{report_id}").text
    assert 'data-testid="handler"' in page and "Anouk de Vries" in page
    wait_until(lambda: receipt_state(node, receipt) == "in_progress", SYNC_S,
               message="receipt in progress on the node")
    status = httpx.get(f"{node.base_url}/status", params={"receipt": receipt}).text
    assert "In behandeling" in status

    # A second officer with a stale page is told who was first.
    other = staff_client(central, "Carla Smit", "police")
    assert post_state(police, report_id, "handled").status_code == 303
    stale = other.post(f"/staff/reports/{report_id}/state", data={
        "csrf": csrf_of(other.get("/staff/reports").text), "to": "reopened", "version": "2"})
    assert stale.status_code == 409
    wait_until(lambda: receipt_state(node, receipt) == "handled", SYNC_S,
               message="receipt handled on the node")
    status = httpx.get(f"{node.base_url}/status", params={"receipt": receipt}).text
    assert "Afgehandeld" in status
    for client in (police, municipality, other):
        client.close()


def test_a_report_at_a_meeting_point_names_it_on_the_desk(stack: Stack) -> None:
    """Central knows no meeting-point ids: the police read the point's name."""
    from tests.support.node import MEETING_POINTS

    point = MEETING_POINTS[1]
    police = staff_client(stack.central, "Dirk Bakker", "police")
    r = httpx.post(f"{stack.node.base_url}/api/v1/reports", json={
        "category": "suspicious", "text": "Iemand probeert de deur te forceren",
        "audience": "authorities", "place": {"point": point["id"], "text": "bij de ingang"}})
    assert r.status_code == 201, r.text
    report_id = wait_until(lambda: report_id_for(police, r.json()["receipt"]), SYNC_S,
                           message="report on the police desk")
    page = police.get(f"/staff/reports/{report_id}").text
    assert f"{point['name']} – bij de ingang" in page
    assert 'data-testid="report-lang"' not in page  # Dutch goes without saying
    police.close()


def test_the_desk_says_a_report_s_language(stack: Stack) -> None:
    """A report in Polish says so on the list and the page (to find a translator)."""
    police = staff_client(stack.central, "Floor Visser", "police")
    r = httpx.post(f"{stack.node.base_url}/api/v1/reports", json={
        "category": "suspicious", "text": "Dwóch mężczyzn zagląda do samochodów",
        "audience": "authorities", "place": {"point": None, "text": "Leyweg"}, "lang": "pl"})
    assert r.status_code == 201, r.text
    receipt = r.json()["receipt"]
    report_id = wait_until(lambda: report_id_for(police, receipt), SYNC_S,
                           message="report on the police desk")
    listed = police.get("/staff/reports", params={"state": "all"}).text
    item = listed[listed.index(f'data-receipt="{receipt}"'):]
    assert re.search(r'data-testid="report-lang"[^>]*>PL</span>', item[:item.index("</li>")])
    page = police.get(f"/staff/reports/{report_id}").text
    assert re.search(r'data-testid="report-lang">Pools</dd>', page)
    police.close()


def home(node: NodeProcess) -> str:
    return httpx.get(f"{node.base_url}/", timeout=5.0).text


def alert_items(html: str) -> dict[str, str]:
    """id -> the <li> of each alert on the resident page."""
    return {m.group(1): m.group(0) for m in re.finditer(
        r'<li id="alert-([0-9a-f-]{36})".*?</li>', html, re.S)}


def broadcast(client: httpx.Client, path: str = "/staff/broadcasts", **fields: str) -> str:
    page = client.get("/staff/broadcasts" if path == "/staff/broadcasts"
                      else path.rsplit("/", 1)[0]).text
    data = {"csrf": csrf_of(page), "title": "Inbraakgolf in Escamp",
            "text": "Sluit ramen en deuren, ook overdag.", "areas": "ESC-01",
            "severity": "severe", "category": "suspicious", "hours": "24"}
    data.update(fields)
    r = client.post(path, data=data)
    assert r.status_code == 303, r.text
    return str(r.headers["location"].split("?")[0].rsplit("/", 1)[1])


def test_broadcasts_reach_the_node_verified_and_go_when_replaced(stack: Stack) -> None:
    central, node = stack.central, stack.node
    police = staff_client(central, "Daan Bakker", "police")
    first = broadcast(police, title="Inbraakgolf in Escamp")
    elsewhere = broadcast(police, title="Alleen voor Ypenburg", areas="LYP-02")
    item = wait_until(lambda: alert_items(home(node)).get(first), SYNC_S,
                      message="broadcast on the resident page")
    assert 'data-testid="verified-central"' in item
    assert "Gecontroleerd: van politie of gemeente" in item and "Inbraakgolf in Escamp" in item
    assert elsewhere not in alert_items(home(node))  # another area
    api = httpx.get(f"{node.base_url}/api/v1/alerts").json()["alerts"]
    assert next(a for a in api if a["id"] == first)["source"] == "central"

    with SseReader(f"{node.base_url}/api/v1/stream?render=nl") as sse:
        second = broadcast(police, f"/staff/broadcasts/{first}/update",
                           title="Inbraakgolf: ook bij de Leyweg")
        gone = sse.wait_for(lambda m: m["event"] == "withdraw", SYNC_S)
        new = sse.wait_for(lambda m: m["event"] == "alert", SYNC_S)
    assert gone["data"] == {"id": first} and new["id"] == second
    assert 'data-testid="verified-central"' in new["data"]["html"]
    items = wait_until(lambda: (i := alert_items(home(node))) and second in i and i, SYNC_S,
                       message="update on the resident page")
    assert first not in items and "ook bij de Leyweg" in items[second]

    page = police.get(f"/staff/broadcasts/{second}").text
    r = police.post(f"/staff/broadcasts/{second}/cancel",
                    data={"csrf": csrf_of(page), "reason": "Daders aangehouden"})
    assert r.status_code == 303
    cancel = r.headers["location"].split("?")[0].rsplit("/", 1)[1]
    wait_until(lambda: second not in alert_items(home(node)), SYNC_S,
               message="cancelled broadcast gone from the resident page")
    items = alert_items(home(node))
    assert first not in items and cancel not in items and elsewhere not in items
    police.close()


def test_an_expired_broadcast_disappears(stack: Stack) -> None:
    """Expiry is checked on the node at every page view (staff pick 1 h at least;
    this broadcast is made by central's own code with a 4 s expiry)."""
    from central import db
    from central.events import append_central_event
    from central.identity import load_central

    c = load_central(stack.central.data_dir)
    engine = db.make_engine(c.database_url)
    expires = int(time.time() * 1000) + 4000
    with engine.begin() as conn:
        event = append_central_event(conn, c, "alert", "public", {
            "source": "central", "title": "Kortstondige waarschuwing", "severity": "minor",
            "areas": ["ESC-01"], "expires": expires})
    engine.dispose()
    wait_until(lambda: event.id in alert_items(home(stack.node)), SYNC_S,
               message="short broadcast shown")
    wait_until(lambda: time.time() * 1000 > expires and event.id not in alert_items(
        home(stack.node)), 15.0, message="expired broadcast gone")


def schema_check(xml: bytes) -> None:
    require(capvalidator is not None, "capvalidator is not installed (pip install -e '.[test]')")
    result = capvalidator.check_schema(xml)
    assert result.passed, f"{result.message}\n{xml.decode()}"


def test_cap_feed_over_http_is_valid_cap(stack: Stack) -> None:
    central = stack.central
    police = staff_client(central, "Eva de Wit", "police")
    first = broadcast(police, title="Waarschuwing: nepagenten aan de deur", areas="ESC-01 ESC-02")
    update = broadcast(police, f"/staff/broadcasts/{first}/update",
                       title="Nepagenten: ook in de avond", severity="extreme")
    page = police.get(f"/staff/broadcasts/{update}").text
    r = police.post(f"/staff/broadcasts/{update}/cancel", data={"csrf": csrf_of(page)})
    cancel = r.headers["location"].split("?")[0].rsplit("/", 1)[1]
    kept = broadcast(police, title="Let op: <script>alert(1)</script> & \"quotes\"",
                     severity="minor", hours="1")
    police.close()

    anon = httpx.Client(base_url=central.url, timeout=10.0)
    feed = anon.get("/api/v1/cap/alerts.xml")
    assert feed.status_code == 200
    assert feed.headers["content-type"].startswith("application/atom+xml")
    root = ET.fromstring(feed.content)
    links = [e.find(f"{ATOM}link").get("href") for e in root.findall(f"{ATOM}entry")]
    ids = [href.rsplit("/", 1)[1].removesuffix(".xml") for href in links]
    assert cancel in ids and kept in ids and first not in ids and update not in ids
    for href in links:  # every entry's own CAP document, by its absolute link
        doc = httpx.get(href, timeout=10.0)
        assert doc.status_code == 200 and doc.headers["content-type"] == "application/cap+xml"
        schema_check(doc.content)
    for ident, kind in ((first, "Alert"), (update, "Update"), (cancel, "Cancel")):
        doc = anon.get(f"/api/v1/cap/alerts/{ident}.xml").content
        schema_check(doc)
        assert f"<msgType>{kind}</msgType>".encode() in doc
    cancel_doc = anon.get(f"/api/v1/cap/alerts/{cancel}.xml").content
    assert first.encode() in cancel_doc and update.encode() in cancel_doc
    assert b"&lt;script&gt;" in anon.get(f"/api/v1/cap/alerts/{kept}.xml").content
    anon.close()


def log_in(page: Any, name: str, password: str) -> None:
    """Fill in and send the login form open in a browser page."""
    page.fill('[data-testid="login-name"]', name)
    page.fill('[data-testid="login-password"]', password)
    page.click('[data-testid="login-submit"]')


def test_staff_page_in_headless_chromium(stack: Stack, browser: Any) -> None:
    central, node = stack.central, stack.node
    otp = central.add_staff("Fatma Yilmaz", "police")
    receipt = report_on_node(node, "Iemand loopt aan alle autodeuren te voelen")
    checker = staff_client(central, "Gert Visser", "admin")
    wait_until(lambda: report_id_for(checker, receipt), SYNC_S, message="report at central")
    checker.close()

    page = browser.new_page(viewport={"width": 390, "height": 844}, locale="nl-NL")  # a phone
    try:
        page.goto(f"{central.url}/staff/reports")
        assert page.url.endswith("/staff/login")
        log_in(page, "Fatma Yilmaz", otp.lower().replace("-", " "))
        page.wait_for_url("**/staff/password")
        page.fill('[data-testid="password-old"]', otp)
        page.fill('[data-testid="password-new"]', PASSWORD)
        page.fill('[data-testid="password-repeat"]', PASSWORD)
        page.click('[data-testid="password-submit"]')
        page.wait_for_url("**/staff/reports*")
        assert "Fatma Yilmaz" in page.inner_text('[data-testid="who"]')
        page.click(f'[data-receipt="{receipt}"] a.title')
        assert page.inner_text('[data-testid="report-state"]') == "Nieuw"
        assert "autodeuren" in page.inner_text('[data-testid="report-text"]')
        page.click('[data-testid="to-in_progress"]')
        page.wait_for_selector('[data-testid="done"]')
        assert page.inner_text('[data-testid="report-state"]') == "In behandeling"
        assert "Fatma Yilmaz" in page.inner_text('[data-testid="handler"]')
        page.fill('[data-testid="note-text"]', "Wijkagent gaat langs")
        page.click('[data-testid="note-submit"]')
        page.wait_for_selector('text=Wijkagent gaat langs')
        # The page itself must not overflow a phone's width.
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, width
        page.click('[data-testid="nav-nodes"]')
        assert page.is_visible(f'[data-testid="node-{node.name}"]')
    finally:
        page.close()
    wait_until(lambda: receipt_state(node, receipt) == "in_progress", SYNC_S,
               message="receipt in progress on the node")


def test_an_admin_adds_and_removes_a_member_in_headless_chromium(stack: Stack,
                                                                   browser: Any) -> None:
    central = stack.central
    staff_client(central, "Ingrid Bakker", "admin").close()  # added by the CLI

    admin = browser.new_context(viewport={"width": 390, "height": 844}, locale="nl-NL")
    newcomer = browser.new_context(locale="nl-NL")
    try:
        page = admin.new_page()
        page.goto(f"{central.url}/staff/login")
        log_in(page, "Ingrid Bakker", PASSWORD)
        page.wait_for_url("**/staff/reports*")
        page.click('[data-testid="nav-accounts"]')
        page.fill('[data-testid="account-name"]', "Sanne de Boer")
        page.select_option('[data-testid="account-role"]', "municipality")
        page.click('[data-testid="account-add"]')
        otp = page.inner_text('[data-testid="otp"]').strip()
        assert "Sanne de Boer" in page.inner_text('[data-testid="issued"]')
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, width  # the list and its buttons fit a phone

        other = newcomer.new_page()
        other.goto(f"{central.url}/staff/login")
        log_in(other, "sanne de boer", otp)
        other.wait_for_url("**/staff/password")

        # Removing needs the tick: the browser refuses the form without it.
        page.goto(f"{central.url}/staff/accounts")
        before = page.url
        page.click('[data-testid="remove-sanne de boer"]')
        page.wait_for_timeout(300)
        assert page.url == before and page.locator('[data-testid="accounts-error"]').count() == 0
        page.check('[data-testid="confirm-sanne de boer"]')
        page.click('[data-testid="remove-sanne de boer"]')
        page.wait_for_selector('[role="status"]')
        assert not page.is_visible('[data-testid="account-sanne de boer"]')
        other.goto(f"{central.url}/staff/reports")
        assert other.url.endswith("/staff/login")  # removed: logged out
    finally:
        admin.close()
        newcomer.close()


def test_resident_page_follows_broadcasts_live_in_chromium(stack: Stack, browser: Any) -> None:
    """Without reloading, the resident page shows a broadcast and drops it when cancelled."""
    central, node = stack.central, stack.node
    police = staff_client(central, "Hugo Mulder", "police")
    page = browser.new_page(viewport={"width": 360, "height": 740}, locale="nl-NL")
    try:
        page.goto(f"{node.base_url}/")
        page.wait_for_selector('[data-testid="live"]:not([hidden])')
        ident = broadcast(police, title="Live: gaslek bij het winkelcentrum", severity="extreme")
        item = page.wait_for_selector(f"#alert-{ident}", timeout=SYNC_S * 1000)
        assert item is not None
        assert "Gecontroleerd: van politie of gemeente" in item.inner_text()
        detail = police.get(f"/staff/broadcasts/{ident}").text
        r = police.post(f"/staff/broadcasts/{ident}/cancel", data={"csrf": csrf_of(detail)})
        assert r.status_code == 303
        page.wait_for_selector(f"#alert-{ident}", state="detached", timeout=SYNC_S * 1000)
    finally:
        page.close()
        police.close()
