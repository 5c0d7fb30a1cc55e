"""Team pages (node/team/routes.py) on a fake runtime: login, CSRF, forms, rows.

The app here holds only what the team pages use (settings, renderer, team
accounts, security headers) and a fake runtime that records what the pages
ask of it; tests/integration/test_team_flow.py runs the same flow against a
real ``bart node run``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from node.config import MeetingPoint, NodeSettings
from node.hub import Hub
from node.portal.guards import SecurityHeaders
from node.portal.i18n import Catalogue
from node.portal.render import Renderer
from node.team import TeamAccounts
from node.team.routes import router
from node.team.session import COOKIE, csrf_token
from node.team.stream import row_html, stream_message
from node.team.views import row_view
from sync import Event, KeyPair, make_event

pytestmark = pytest.mark.timeout(60)

NEW = "lange zin van woorden"
KEYS = KeyPair.generate()
TS = 1_800_000_000_000
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


def ident(n: int) -> str:
    return f"0193a0b2-0000-7000-8000-{n:012d}"


def item(n: int, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": ident(n), "kind": "report", "origin": "n1", "ts": 1_800_000_000_000 + n * 1000,
        "source": "resident", "category": "suspicious", "severity": "moderate", "title": "",
        "text": f"Melding {n}", "place": {"point": "speeltuin", "text": ""}, "state": "new",
        "by": "", "called_112": False, "contact": f"06-1234567{n}", "receipt": "K7F-3QX",
        "button_id": None, "ref": None}
    base.update(over)
    return base


class FakeStore:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.events: dict[str, Event] = {}

    def open_items(self, limit: int = 100, *, area: str | None = None) -> list[dict[str, Any]]:
        return [dict(i) for i in self.items[:limit]]

    def get_event(self, event_id: str) -> Event | None:
        return self.events.get(event_id)

    def button_faults(self) -> list[tuple[str, int]]:
        return []


class FakeRuntime:
    """Records the team's calls; answers like the real runtime would."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.store = FakeStore(items)
        self.team_hub = Hub()
        self.acks: list[tuple[str, str, str, str, str | None]] = []
        self.alerts: list[tuple[str, str, str, int | None, str]] = []
        self.seq = 0

    def require_store(self) -> FakeStore:
        return self.store

    def _event(self, kind: str, stream: str, body: dict[str, Any]) -> Event:
        self.seq += 1
        return make_event(KEYS, origin="n1", stream=stream, seq=self.seq, kind=kind,
                          body=body, ts=int(time.time() * 1000))

    async def team_ack(self, ref: str, action: str, by: str, note: str = "",
                       to: str | None = None) -> Event:
        from sync import InvalidField

        found = [i for i in self.store.items if i["id"] == ref]
        if not found:
            raise InvalidField("ref", "no such event on this node")
        self.acks.append((ref, action, by, note, to))
        found[0].update(state=action, by=by)
        return self._event("ack", "private", {"ref": ref, "action": action, "by": by,
                                              "note": note, "to": to})

    async def team_alert(self, title: str, text: str, severity: str, expires_ms: int | None,
                         by: str) -> Event:
        self.alerts.append((title, text, severity, expires_ms, by))
        return self._event("alert", "public", {"source": "team", "title": title, "text": text,
                                               "severity": severity, "expires": expires_ms})

    def peer_names(self) -> dict[str, str]:
        return {}

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def mesh_peers(self) -> list[str] | None:
        return None


@pytest.fixture
def settings(tmp_path: Path) -> NodeSettings:
    return NodeSettings(data_dir=tmp_path, name="n1", area="ESC-01", meeting_points=[
        MeetingPoint(id="speeltuin", name="Speeltuin De Klimboom")])


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime([
        item(1),
        item(2, kind="alert", source="button", category="emergency", severity="extreme",
             contact="", receipt=None, button_id="speeltuin", text=""),
        item(3, kind="alert", source="resident", ref=ident(1), contact="", receipt=None),
        item(4, state="resolved", by="Piet"),
        item(5, kind="alert", source="resident", text=HOSTILE, contact="", receipt=None),
    ])


@pytest.fixture
def team(tmp_path: Path) -> Iterator[TeamAccounts]:
    with TeamAccounts(tmp_path / "team.db", scrypt_n=2**10) as t:
        yield t


def make_app(settings: NodeSettings, runtime: FakeRuntime, team: TeamAccounts) -> FastAPI:
    app = FastAPI()
    app.state.settings = settings
    app.state.runtime = runtime
    app.state.renderer = Renderer(Catalogue.load(strict=True))
    app.state.team_accounts = team
    app.include_router(router)
    app.add_middleware(SecurityHeaders)
    return app


class PageClient:
    """A synchronous face on httpx's ASGI transport (no server, no lifespan)."""

    def __init__(self, app: FastAPI, base_url: str = "http://testserver") -> None:
        self._runner = asyncio.Runner()
        self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url=base_url, follow_redirects=False)
        self.cookies = self._client.cookies

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self._runner.run(self._client.get(url, **kwargs))

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self._runner.run(self._client.post(url, **kwargs))

    def __enter__(self) -> PageClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._runner.run(self._client.aclose())
        self._runner.close()


@pytest.fixture
def client(settings: NodeSettings, runtime: FakeRuntime,
           team: TeamAccounts) -> Iterator[PageClient]:
    with PageClient(make_app(settings, runtime, team)) as c:
        yield c


def login(client: PageClient, team: TeamAccounts, name: str = "Fatma") -> str:
    """Add ``name``, log in, choose a password; return the page's CSRF token."""
    otp = team.add(name)
    r = client.post("/team/login", data={"name": name, "password": otp})
    assert r.status_code == 303 and r.headers["location"] == "/team/password"
    page = client.get("/team/password")
    r = client.post("/team/password", data={"csrf": csrf_of(page.text), "current": otp,
                                            "new": NEW, "repeat": NEW})
    assert r.status_code == 303 and r.headers["location"] == "/team", r.text
    return csrf_of(client.get("/team").text)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


# --- login ----------------------------------------------------------------------------------


def test_pages_need_a_login(client: PageClient) -> None:
    for path in ("/team", "/team/password"):
        r = client.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/team/login"
    for path in ("/team/ack", "/team/alert", "/team/hide"):
        assert client.post(path, data={}).status_code == 303
    assert client.get("/team/stream").status_code == 401


def test_login_page(client: PageClient) -> None:
    r = client.get("/team/login")
    assert r.status_code == 200 and 'name="password"' in r.text
    assert 'type="password"' in r.text and "nonce=" in r.text
    assert r.headers["cache-control"] == "no-store"


def test_wrong_password_keeps_the_name(client: PageClient, team: TeamAccounts) -> None:
    team.add("Fatma")
    r = client.post("/team/login", data={"name": "Fatma", "password": "wrong password"})
    assert r.status_code == 401
    assert 'value="Fatma"' in r.text and "Naam of wachtwoord klopt niet." in r.text
    assert COOKIE not in r.cookies


def test_first_login_sets_a_strict_cookie_and_forces_a_new_password(
        client: PageClient, team: TeamAccounts) -> None:
    otp = team.add("Fatma")
    r = client.post("/team/login", data={"name": "fatma", "password": otp})
    assert r.status_code == 303 and r.headers["location"] == "/team/password"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    for attribute in ("HttpOnly", "Path=/team", "SameSite=strict"):
        assert attribute.lower() in cookie.lower(), cookie
    assert "secure" not in cookie.lower() and "max-age" not in cookie.lower()
    r = client.get("/team")
    assert r.status_code == 303 and r.headers["location"] == "/team/password"
    page = client.get("/team/password")
    assert page.status_code == 200 and "eenmalig wachtwoord" in page.text
    bad = client.post("/team/password", data={"csrf": csrf_of(page.text), "current": otp,
                                              "new": NEW, "repeat": NEW + "!"})
    assert bad.status_code == 422 and "niet gelijk" in bad.text
    short = client.post("/team/password", data={"csrf": csrf_of(page.text), "current": otp,
                                                "new": "kort", "repeat": "kort"})
    assert short.status_code == 422 and "te kort" in short.text
    wrong = client.post("/team/password", data={"csrf": csrf_of(page.text), "current": "nope",
                                                "new": NEW, "repeat": NEW})
    assert wrong.status_code == 403
    ok = client.post("/team/password", data={"csrf": csrf_of(page.text), "current": otp,
                                             "new": NEW, "repeat": NEW})
    assert ok.status_code == 303 and ok.headers["location"] == "/team"
    assert client.get("/team").status_code == 200


def test_https_cookie_is_secure(settings: NodeSettings, runtime: FakeRuntime,
                                team: TeamAccounts) -> None:
    otp = team.add("Fatma")
    with PageClient(make_app(settings, runtime, team), base_url="https://testserver") as c:
        r = c.post("/team/login", data={"name": "Fatma", "password": otp})
    assert "secure" in r.headers["set-cookie"].lower()


def test_cross_site_login_is_refused(client: PageClient, team: TeamAccounts) -> None:
    otp = team.add("Fatma")
    r = client.post("/team/login", data={"name": "Fatma", "password": otp},
                    headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and COOKIE not in r.cookies


def test_lockout_and_throttle_answers(client: PageClient, team: TeamAccounts) -> None:
    team.add("Fatma")
    for _ in range(4):
        assert client.post("/team/login", data={"name": "Fatma", "password": "x" * 12}
                           ).status_code == 401
    r = client.post("/team/login", data={"name": "Fatma", "password": "x" * 12})
    assert r.status_code == 423 and "Te vaak" in r.text
    for i in range(15):
        client.post("/team/login", data={"name": f"Iemand {i}", "password": "x" * 12})
    r = client.post("/team/login", data={"name": "Piet", "password": "x" * 12})
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0


def test_logout_ends_the_session(client: PageClient, team: TeamAccounts) -> None:
    csrf = login(client, team)
    token = client.cookies.get(COOKIE)
    r = client.post("/team/logout", data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/team/login"
    assert team.session(token) is None
    client.cookies.set(COOKIE, token or "", path="/team")
    assert client.get("/team").status_code == 303


def test_logout_needs_the_csrf_token(client: PageClient, team: TeamAccounts) -> None:
    login(client, team)
    token = client.cookies.get(COOKIE)
    assert client.post("/team/logout", data={}).status_code == 403
    assert team.session(token) is not None


# --- dashboard -------------------------------------------------------------------------------


def test_dashboard_lists_alarms_first_with_contact_and_actions(
        client: PageClient, team: TeamAccounts) -> None:
    login(client, team)
    html = client.get("/team").text
    ids = re.findall(r'<li id="row-([^"]+)"', html)
    # Alarm first; the report's warning (3) is folded into the report's row;
    # the resolved report (4) is listed apart.
    assert ids == [ident(2), ident(5), ident(1)]
    assert "Alarm: noodknop" in html and "Speeltuin De Klimboom" in html
    assert "06-12345671" in html and "K7F-3QX" in html
    for label in ("Gezien", "Ik ga erheen", "Opgelost", "Escaleren"):
        assert f">{label}<" in html
    assert f'name="ref" value="{ident(3)}"' in html  # hide acts on the warning
    assert 'data-testid="closed-row"' in html and "Piet" in html
    assert HOSTILE not in html and "&lt;script&gt;" in html


def test_ack_without_csrf_is_refused_and_keeps_the_note(
        client: PageClient, team: TeamAccounts, runtime: FakeRuntime) -> None:
    login(client, team)
    r = client.post("/team/ack", data={"ref": ident(1), "action": "on_my_way",
                                       "note": "Ik kom met Piet"})
    assert r.status_code == 403 and runtime.acks == []
    assert "Ik kom met Piet" in r.text and "verlopen" in r.text
    other = client.post("/team/ack", data={"ref": ident(1), "action": "on_my_way",
                                           "csrf": csrf_token("someone else's session")})
    assert other.status_code == 403 and runtime.acks == []
    assert [e.action for e in team.audit_log(2)] == ["csrf.refused", "csrf.refused"]


def test_ack_calls_the_runtime_and_is_audited(client: PageClient, team: TeamAccounts,
                                              runtime: FakeRuntime) -> None:
    csrf = login(client, team)
    r = client.post("/team/ack", data={"csrf": csrf, "ref": ident(1), "action": "on_my_way",
                                       "note": "Ik kom eraan"})
    assert r.status_code == 303 and r.headers["location"] == "/team"
    assert runtime.acks == [(ident(1), "on_my_way", "Fatma", "Ik kom eraan", None)]
    entry = team.audit_log(1)[0]
    assert (entry.member, entry.action) == ("Fatma", "ack.on_my_way")
    assert ident(1) in entry.detail and "Ik kom eraan" in entry.detail
    html = client.get("/team").text
    assert 'Iemand gaat erheen · <bdi>Fatma</bdi>' in html


def test_escalate_needs_a_recipient(client: PageClient, team: TeamAccounts,
                                    runtime: FakeRuntime) -> None:
    csrf = login(client, team)
    r = client.post("/team/ack", data={"csrf": csrf, "ref": ident(1), "action": "escalated",
                                       "note": "Politie moet dit weten"})
    assert r.status_code == 422 and runtime.acks == []
    assert "Kies politie of gemeente." in r.text and "Politie moet dit weten" in r.text
    r = client.post("/team/ack", data={"csrf": csrf, "ref": ident(1), "action": "escalated",
                                       "to": "police"})
    assert r.status_code == 303
    assert runtime.acks[-1][1:] == ("escalated", "Fatma", "", "police")


@pytest.mark.parametrize("data, message", [
    ({"ref": "not-an-id", "action": "seen"}, "bestaat niet"),
    ({"ref": ident(99), "action": "seen"}, "bestaat niet"),
    ({"ref": ident(1), "action": "hidden"}, "Kies wat u doet."),
    ({"ref": ident(1), "action": "seen", "note": "x" * 600}, "notitie is te lang"),
])
def test_refused_answers_say_why(client: PageClient, team: TeamAccounts,
                                 data: dict[str, str], message: str) -> None:
    csrf = login(client, team)
    r = client.post("/team/ack", data={"csrf": csrf, **data})
    assert r.status_code == 422 and message in r.text


def test_raise_alert(client: PageClient, team: TeamAccounts, runtime: FakeRuntime) -> None:
    csrf = login(client, team)
    before = int(time.time() * 1000)
    r = client.post("/team/alert", data={"csrf": csrf, "title": "Inbraakgolf",
                                         "text": "Sluit ramen en deuren.",
                                         "severity": "severe", "expires": "8"})
    assert r.status_code == 303
    title, text, severity, expires, by = runtime.alerts[0]
    assert (title, text, severity, by) == ("Inbraakgolf", "Sluit ramen en deuren.", "severe",
                                           "Fatma")
    assert expires is not None
    assert before + 8 * 3_600_000 <= expires <= before + 8 * 3_600_000 + 60_000
    assert team.audit_log(1)[0].action == "alert"


@pytest.mark.parametrize("data, field", [
    ({"title": "", "severity": "minor", "expires": "4"}, "title"),
    ({"title": "x" * 121, "severity": "minor", "expires": "4"}, "title"),
    ({"title": "Let op", "severity": "apocalyptic", "expires": "4"}, "severity"),
    ({"title": "Let op", "severity": "minor", "expires": "73"}, "expires"),
    ({"title": "Let op", "severity": "minor", "expires": "0"}, "expires"),
    ({"title": "Let op", "text": "y" * 1001, "severity": "minor", "expires": "4"}, "text"),
])
def test_refused_alert_keeps_the_words(client: PageClient, team: TeamAccounts,
                                       runtime: FakeRuntime, data: dict[str, str],
                                       field: str) -> None:
    csrf = login(client, team)
    words = data.get("text") or "Onze eigen woorden"
    r = client.post("/team/alert", data={"csrf": csrf, "text": words, **{
        k: v for k, v in data.items() if k != "text"}})
    assert r.status_code == 422 and runtime.alerts == []
    assert f'data-testid="error-{field}"' in r.text
    assert words[:100] in r.text
    assert '<details class="card raise" data-testid="raise" open>' in r.text


def test_hide_a_resident_warning(client: PageClient, team: TeamAccounts,
                                 runtime: FakeRuntime) -> None:
    csrf = login(client, team)
    assert client.post("/team/hide", data={"ref": ident(5)}).status_code == 403
    r = client.post("/team/hide", data={"csrf": csrf, "ref": ident(5)})
    assert r.status_code == 303
    assert runtime.acks == [(ident(5), "hidden", "Fatma", "", None)]
    assert team.audit_log(1)[0].action == "hide"


# --- rows and the stream -----------------------------------------------------------------------


def test_stream_row_is_the_dashboard_row(client: PageClient, team: TeamAccounts,
                                         settings: NodeSettings, runtime: FakeRuntime) -> None:
    login(client, team)
    html = client.get("/team").text
    token = client.cookies.get(COOKIE) or ""
    renderer = Renderer(Catalogue.load(strict=True))
    row = row_view(runtime.store.items[1], settings, "nl")
    assert row_html(renderer, row, "nl", csrf_token(token)).strip() in html


def _data(message: bytes) -> dict[str, Any]:
    import json

    lines = message.decode().split("\n")
    assert lines[-2:] == ["", ""]
    fields = dict(line.split(": ", 1) for line in lines[:-2])
    data: dict[str, Any] = json.loads(fields["data"])
    data["_event"] = fields["event"]
    return data


def test_stream_message_for_a_new_report(settings: NodeSettings,
                                         runtime: FakeRuntime) -> None:
    renderer = Renderer(Catalogue.load(strict=True))
    report = make_event(KEYS, origin="n1", stream="private", seq=50, kind="report", ts=TS, body={
        "category": "social", "text": "Buurvrouw valt", "place": {"point": None, "text": "Hal"},
        "audience": "authorities", "called_112": True, "called_112_by": "", "contact": "06-9",
        "receipt": "AB2-CD3", "lang": "nl"})
    # Shown after its COMMIT: the store lists it (as Store.open_items would).
    runtime.store.items.insert(0, {
        "id": report.id, "kind": "report", "source": "resident", "category": "social",
        "severity": "moderate", "title": "", "text": "Buurvrouw valt",
        "place": {"point": None, "text": "Hal"}, "ts": TS, "state": "new", "by": "",
        "called_112": True, "contact": "06-9", "receipt": "AB2-CD3", "button_id": None,
        "ref": None})
    data = _data(stream_message(report, runtime.store, settings, renderer, "nl", "tok", 0))
    assert data["_event"] == "report" and data["row"] == report.id
    assert "06-9" in data["html"] and 'value="tok"' in data["html"]
    assert data["body"]["contact"] == "06-9" and data["closed"] is False


def test_stream_message_for_an_answer(settings: NodeSettings, runtime: FakeRuntime) -> None:
    renderer = Renderer(Catalogue.load(strict=True))

    def ack(ref: str, action: str) -> Event:
        """An answer, stored: the store's items already show it (shown after COMMIT)."""
        for i in runtime.store.items:
            if i["id"] == ref:
                i.update(state=action, by="Piet")
        return make_event(KEYS, origin="n1", stream="private", seq=60 + len(action),
                          kind="ack", ts=TS, body={"ref": ref, "action": action, "by": "Piet",
                                                  "note": "", "to": None})

    seen = _data(stream_message(ack(ident(1), "seen"), runtime.store, settings, renderer,
                                "nl", "tok", 0))
    assert seen["row"] == ident(1) and seen["state"] == "seen"
    assert 'Gezien · <bdi>Piet</bdi>' in seen["html"]
    # Hiding the folded warning changes the report's row.
    hidden = _data(stream_message(ack(ident(3), "hidden"), runtime.store, settings, renderer,
                                  "nl", "tok", 0))
    assert hidden["row"] == ident(1) and 'data-testid="row-warning-hidden"' in hidden["html"]
    done = _data(stream_message(ack(ident(2), "resolved"), runtime.store, settings, renderer,
                                "nl", "tok", 0))
    assert done["row"] == ident(2) and done["closed"] is True and "html" not in done
    status = make_event(KEYS, origin="n1", stream="private", seq=70, kind="status", ts=TS,
                        body={"uptime_s": 5})
    assert "row" not in _data(stream_message(status, runtime.store, settings, renderer, "nl",
                                             "tok", 0))


def test_expired_alerts_are_not_open(settings: NodeSettings) -> None:
    from node.team.views import board

    items = [item(1, kind="alert", source="team", expires=1000), item(2)]
    rows = board(items, settings, "nl", now_ms=2000)
    assert [r["id"] for r in rows.open] == [ident(2)]

