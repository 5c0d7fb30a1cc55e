"""The prevention team's loop against a real ``bart node run`` (httpx, no mocks).

An account is made the way ``bart node team add`` makes it — straight in
``<data_dir>/team.db`` while the node runs — then: first login with the
one-time password, forced password change, a resident's report with contact
data on the dashboard and live on the team stream, "on my way" changes its
state (and the resident's receipt), a team alert appears on the resident home
page, hiding a resident warning removes it there, CSRF-less posts are refused,
and five wrong passwords lock the name.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from node.team import TEAM_DB, TeamAccounts
from tests.support.html import csrf_of, row_of
from tests.support.node import MEETING_POINTS, NodeProcess
from tests.support.sse import SseReader
from tests.support.team import COOKIE, TIMEOUT, TeamBrowser, add_member

pytestmark = pytest.mark.timeout(90)


def marker(label: str = "m") -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module", autouse=True)
def team_pages(running_node: NodeProcess) -> None:
    """Fail clearly (never skip) when the node does not serve the team pages."""
    r = httpx.get(f"{running_node.base_url}/team/login", timeout=TIMEOUT)
    if r.status_code == 404:
        pytest.fail("the node serves no /team pages: create_app() must include "
                    "node.team.routes.router (see docs/team.md)", pytrace=False)


@pytest.fixture
def member(running_node: NodeProcess) -> Iterator[TeamBrowser]:
    browser = TeamBrowser(running_node, f"Lid {uuid.uuid4().hex[:8]}")
    browser.first_login()
    try:
        yield browser
    finally:
        browser.close()


def submit_report(node: NodeProcess, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"category": "suspicious", "text": marker("verdacht"),
                            "place": {"point": MEETING_POINTS[0]["id"], "text": "bij het hek"},
                            "audience": "authorities", "contact": marker("06")}
    body.update(fields)
    r = httpx.post(f"{node.base_url}/api/v1/reports", json=body, timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    out.update(sent=body)
    return out


# -- tests ------------------------------------------------------------------------------


def test_dashboard_shows_a_private_report_with_its_contact(
        running_node: NodeProcess, member: TeamBrowser) -> None:
    done = submit_report(running_node)
    row = row_of(member.dashboard(), done["id"])
    assert done["sent"]["text"] in row and done["sent"]["contact"] in row
    assert done["receipt"] in row and 'data-state="new"' in row
    for label in ("Gezien", "Ik ga erheen", "Opgelost", "Escaleren"):
        assert f">{label}<" in row
    # Residents never see it.
    assert done["sent"]["text"] not in httpx.get(f"{running_node.base_url}/",
                                                 timeout=TIMEOUT).text


def test_on_my_way_changes_the_state_and_is_audited(
        running_node: NodeProcess, member: TeamBrowser) -> None:
    done = submit_report(running_node)
    r = member.post("/team/ack", ref=done["id"], action="on_my_way", note="Ik fiets erheen")
    assert r.status_code == 303 and r.headers["location"] == "/team"
    row = row_of(member.dashboard(), done["id"])
    assert 'data-state="on_my_way"' in row and member.name in row
    assert ">Ik ga erheen<" not in row and ">Opgelost<" in row
    status = httpx.get(f"{running_node.base_url}/api/v1/reports/{done['receipt']}",
                       timeout=TIMEOUT).json()
    assert status["state"] == "in_progress"
    with TeamAccounts(running_node.data_dir / TEAM_DB) as team:
        entry = next(e for e in team.audit_log(20) if e.action == "ack.on_my_way"
                     and done["id"] in e.detail)
    assert entry.member == member.name and "Ik fiets erheen" in entry.detail


def test_escalate_to_the_police(running_node: NodeProcess, member: TeamBrowser) -> None:
    done = submit_report(running_node)
    refused = member.post("/team/ack", ref=done["id"], action="escalated", note="Mijn woorden")
    assert refused.status_code == 422 and "Mijn woorden" in refused.text
    r = member.post("/team/ack", ref=done["id"], action="escalated", to="police")
    assert r.status_code == 303
    assert 'data-state="escalated"' in row_of(member.dashboard(), done["id"])
    status = httpx.get(f"{running_node.base_url}/api/v1/reports/{done['receipt']}",
                       timeout=TIMEOUT).json()
    assert status["state"] == "forwarded"


def test_a_team_alert_appears_on_the_resident_home_page(
        running_node: NodeProcess, member: TeamBrowser) -> None:
    title = marker("Inbraakgolf")
    r = member.post("/team/alert", title=title, text="Sluit ramen en deuren.",
                    severity="severe", expires="4")
    assert r.status_code == 303, r.text
    home = httpx.get(f"{running_node.base_url}/", timeout=TIMEOUT).text
    assert title in home and "Sluit ramen en deuren." in home
    alerts = httpx.get(f"{running_node.base_url}/api/v1/alerts", timeout=TIMEOUT).json()
    alert = next(a for a in alerts["alerts"] if a["title"] == title)
    assert alert["source"] == "team" and alert["severity"] == "severe"
    assert 3.9 * 3_600_000 < alert["expires"] - alert["ts"] <= 4 * 3_600_000 + 5_000
    # The member's name is in the audit log, not in the public alert.
    assert member.name not in str(alert)


def test_refused_alert_keeps_the_words(running_node: NodeProcess, member: TeamBrowser) -> None:
    text = marker("onze woorden")
    r = member.post("/team/alert", title="", text=text, severity="minor", expires="4")
    assert r.status_code == 422 and text in r.text
    assert text not in httpx.get(f"{running_node.base_url}/", timeout=TIMEOUT).text


def test_hiding_a_resident_warning_removes_it_for_residents(
        running_node: NodeProcess, member: TeamBrowser) -> None:
    done = submit_report(running_node, audience="both", text=marker("scheldwoorden"))
    home = f"{running_node.base_url}/"
    assert done["sent"]["text"] in httpx.get(home, timeout=TIMEOUT).text
    row = row_of(member.dashboard(), done["id"])
    warning = re.search(r'action="/team/hide">\s*<input type="hidden" name="csrf" value="[^"]+">'
                        r'\s*<input type="hidden" name="ref" value="([^"]+)"', row)
    assert warning, row
    r = member.post("/team/hide", ref=warning.group(1))
    assert r.status_code == 303
    assert done["sent"]["text"] not in httpx.get(home, timeout=TIMEOUT).text
    assert 'data-testid="row-warning-hidden"' in row_of(member.dashboard(), done["id"])


def test_posts_without_the_csrf_token_are_refused(
        running_node: NodeProcess, member: TeamBrowser) -> None:
    done = submit_report(running_node)
    title = marker("Vals alarm")
    for path, data in (("/team/ack", {"ref": done["id"], "action": "resolved"}),
                       ("/team/alert", {"title": title, "severity": "minor", "expires": "1"}),
                       ("/team/hide", {"ref": done["id"]})):
        r = member.http.post(path, data=data)
        assert r.status_code == 403, (path, r.status_code)
        r = member.http.post(path, data={**data, "csrf": "0" * 64})
        assert r.status_code == 403, (path, r.status_code)
    assert 'data-state="new"' in row_of(member.dashboard(), done["id"])
    assert title not in httpx.get(f"{running_node.base_url}/", timeout=TIMEOUT).text
    # A forged cross-site post with a valid token is refused on its Origin.
    r = member.http.post("/team/ack", data={"ref": done["id"], "action": "resolved",
                                            "csrf": csrf_of(member.dashboard())},
                         headers={"Origin": "http://evil.example"})
    assert r.status_code == 403


def test_the_team_stream_is_private_and_live(running_node: NodeProcess,
                                             member: TeamBrowser) -> None:
    url = f"{running_node.base_url}/team/stream"
    assert httpx.get(url, timeout=TIMEOUT).status_code == 401
    with SseReader(url, headers={"Cookie": f"{COOKIE}={member.token}"}) as team_sse, \
            SseReader(f"{running_node.base_url}/api/v1/stream?render=nl") as public_sse:
        done = submit_report(running_node)
        msg = team_sse.wait_for(lambda m: m["event"] == "report"
                                and m["data"]["id"] == done["id"], 10.0)
        assert done["sent"]["contact"] in msg["data"]["html"]
        assert msg["data"]["row"] == done["id"] and msg["data"]["closed"] is False
        r = member.post("/team/ack", ref=done["id"], action="seen")
        assert r.status_code == 303
        msg = team_sse.wait_for(lambda m: m["event"] == "ack"
                                and m["data"].get("row") == done["id"], 10.0)
        assert msg["data"]["state"] == "seen" and member.name in msg["data"]["html"]
    assert all(done["id"] not in str(m["data"]) for m in public_sse.all)


def test_logout_ends_the_session_and_the_stream_refuses_it(
        running_node: NodeProcess, member: TeamBrowser) -> None:
    token = member.token
    r = member.post("/team/logout")
    assert r.status_code == 303 and r.headers["location"] == "/team/login"
    stale = httpx.Client(base_url=running_node.base_url, timeout=TIMEOUT,
                         cookies={COOKIE: token}, follow_redirects=False)
    with stale:
        assert stale.get("/team").status_code == 303
        assert stale.get("/team/stream").status_code == 401


def test_five_wrong_passwords_lock_the_name(running_node: NodeProcess) -> None:
    name = f"Lid {uuid.uuid4().hex[:8]}"
    otp = add_member(running_node, name)
    with httpx.Client(base_url=running_node.base_url, timeout=TIMEOUT,
                      follow_redirects=False) as http:
        codes = [http.post("/team/login", data={"name": name, "password": "fout wachtwoord"}
                           ).status_code for _ in range(5)]
        assert codes == [401, 401, 401, 401, 423]
        r = http.post("/team/login", data={"name": name, "password": otp})
        assert r.status_code == 423 and COOKIE not in r.cookies
        assert name in r.text  # the typed name is kept
    with TeamAccounts(running_node.data_dir / TEAM_DB) as team:
        locked = team.member(name)
    assert locked is not None and locked.locked_until is not None
