"""Central's staff side on both backends (a SQLite file and a real PostgreSQL
server) through the real app (in-process HTTP).

Accounts, login throttling and lockout, sessions and CSRF, roles, the report
state machine with optimistic concurrency, re-routing, notes, the audit log,
node health with the silent alarm, broadcasts (update, cancel, races) and
the CAP documents made of them. Nothing of central is mocked; only the
scrypt cost is lowered for speed (hashes carry their own parameters).
"""

from __future__ import annotations

import base64
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from central import broadcasts, db, handling
from central.projector import insert_reports
from central.staff.accounts import (
    LockedOut,
    LoginFailed,
    StaffAccounts,
    Throttled,
    lockout_ms,
)
from central.staff.db import report_notes
from sync import KeyPair, make_event
from sync.event import event_from_dict
from tests.support.staff import (
    FAST_N,
    Env,
    audit_actions,
    client_for,
    csrf_of,
    login_token,
    member,
    open_env,
)


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> Iterator[Env]:
    with open_env(tmp_path, database_url) as central_env:
        yield central_env


NODE_KEYS = KeyPair.generate()
_seq = {"n": 0}


def add_report(env: Env, *, category: str = "suspicious", text: str = "Man kijkt in auto's",
               route: str | None = None, origin: str = "bs-escamp") -> str:
    """A report event of a node plus its triage row, as ingest stores them."""
    _seq["n"] += 1
    receipt = "K7F-" + "ABCDEFGH"[_seq["n"] % 8] + "QX"
    event = make_event(NODE_KEYS, origin=origin, stream="private", seq=_seq["n"], kind="report",
                       ts=int(time.time() * 1000), body={
                           "category": category, "text": text, "audience": "both",
                           "receipt": receipt, "place": {"point": None, "text": "Hoefkade"},
                           "contact": "06-12345678"})
    now = int(time.time() * 1000)
    if route is None:
        route = "police" if category in ("suspicious", "emergency") else "municipality"
    with env.engine.begin() as conn:
        conn.execute(db.events.insert().values(
            id=event.id, origin=event.origin, stream=event.stream, seq=event.seq, ts=event.ts,
            kind=event.kind, body=event.body_json().decode(),
            sig=base64.b64encode(event.sig).decode(), via=origin, received_at=now))
        # As the projector inserts them: counted in report_counts (migration 0010).
        insert_reports(conn, [(event.id, origin, receipt, category, event.ts, route,
                               f"default-{route}", "new", now, 1)])
    return event.id


def report_row(env: Env, report_id: str) -> Any:
    with env.engine.connect() as conn:
        return conn.execute(sa.select(db.reports).where(db.reports.c.event_id == report_id)).one()


def updates_for(env: Env, report_id: str) -> list[str]:
    with env.engine.connect() as conn:
        return list(conn.execute(sa.select(db.report_updates.c.state).where(
            db.report_updates.c.report_id == report_id).order_by(db.report_updates.c.id))
            .scalars())


def post_state(client: TestClient, report_id: str, to: str, version: int | None = None,
               csrf: str | None = None) -> Any:
    page = client.get(f"/staff/reports/{report_id}")
    token = csrf if csrf is not None else csrf_of(page.text)
    if version is None:
        found = re.search(r'name="version" value="(\d+)"', page.text)
        assert found
        version = int(found.group(1))
    return client.post(f"/staff/reports/{report_id}/state",
                       data={"csrf": token, "to": to, "version": str(version)})


# -- accounts, login, sessions -------------------------------------------------------------


def test_first_login_must_choose_a_password_then_reaches_reports(env: Env) -> None:
    client = member(env, "Anouk de Vries", "police")
    r = client.get("/staff/reports")
    assert r.status_code == 200 and "Anouk de Vries" in r.text
    cookie = next(c for c in r.request.headers.get("cookie", "").split("; ")
                  if c.startswith("bart_staff="))
    assert cookie
    assert audit_actions(env)[:3] == ["staff_add", "login", "password"]


def test_session_cookie_is_httponly_strict_and_pages_carry_csp(env: Env) -> None:
    otp = env.accounts.add("Bram", "admin")
    client = client_for(env)
    r = client.post("/staff/login", data={"name": "bram", "password": otp.lower(),
                                          "login_token": login_token(client)})
    assert r.status_code == 303
    set_cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie"
                  and v.startswith("bart_staff="))
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie and "Path=/" in set_cookie
    page = client.get("/staff/password")
    csp = page.headers["content-security-policy"]
    # One script (the live stream), by nonce only: no inline handlers, no eval.
    assert "default-src 'none'" in csp and "script-src 'nonce-" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    nonce = re.search(r"'nonce-([^']+)'", csp)
    assert nonce and f'nonce="{nonce.group(1)}"' in page.text
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"


def test_not_logged_in_goes_to_the_login_page_and_api_says_401(env: Env) -> None:
    client = client_for(env)
    assert client.get("/staff/reports").headers["location"] == "/staff/login"
    r = client.get("/api/v1/nodes")
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"


def test_login_form_needs_its_double_submit_token(env: Env) -> None:
    otp = env.accounts.add("Carla", "police")
    client = client_for(env)
    login_token(client)
    r = client.post("/staff/login", data={"name": "Carla", "password": otp,
                                          "login_token": "forged"})
    assert r.status_code == 403 and "bart_staff=" not in r.headers.get("set-cookie", "")


def test_wrong_passwords_lock_a_name_and_unknown_names_alike(env: Env) -> None:
    clock = {"now": 1_800_000_000_000}
    accounts = StaffAccounts(env.engine, lambda: clock["now"], scrypt_n=FAST_N)
    otp = accounts.add("Dirk", "police")
    for name in ("Dirk", "Nobody Here"):
        for _ in range(4):
            with pytest.raises(LoginFailed) as info:
                accounts.verify(name, "wrong password!", f"10.0.0.{len(name)}")
            assert not isinstance(info.value, LockedOut)
        with pytest.raises(LockedOut) as locked:
            accounts.verify(name, "wrong password!", f"10.0.0.{len(name)}")
        assert locked.value.until == clock["now"] + lockout_ms(1)
    with pytest.raises(LockedOut):  # the right password does not open a locked name
        accounts.verify("Dirk", otp, "10.0.0.99")
    clock["now"] += lockout_ms(1) + 1
    assert accounts.verify("dirk", otp, "10.0.0.99").name == "Dirk"


def test_a_client_with_many_failures_is_throttled_before_any_password_check(env: Env) -> None:
    accounts = StaffAccounts(env.engine, scrypt_n=FAST_N)
    otp = accounts.add("Eva", "municipality")
    for i in range(20):
        with pytest.raises(LoginFailed):
            accounts.verify(f"guess {i}", "nope nope nope", "192.0.2.7")
    with pytest.raises(Throttled):
        accounts.verify("Eva", otp, "192.0.2.7")
    assert accounts.verify("Eva", otp, "192.0.2.8").role == "municipality"


def test_login_page_says_locked_with_423(env: Env) -> None:
    env.accounts.add("Fleur", "police")
    client = client_for(env)
    statuses = []
    for _ in range(5):
        statuses.append(client.post("/staff/login", data={
            "name": "Fleur", "password": "not it at all", "login_token": login_token(client)})
            .status_code)
    assert statuses == [401, 401, 401, 401, 423]


def test_logout_ends_the_session(env: Env) -> None:
    client = member(env, "Gijs", "police")
    page = client.get("/staff/reports")
    r = client.post("/staff/logout", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 303
    assert client.get("/staff/reports").headers["location"] == "/staff/login"
    assert "logout" in audit_actions(env)


def test_removed_member_is_logged_out(env: Env) -> None:
    client = member(env, "Hanna", "police")
    env.accounts.remove("hanna")
    assert client.get("/staff/reports").headers["location"] == "/staff/login"


# -- roles and the state machine ------------------------------------------------------------


def test_each_desk_sees_its_own_reports_and_admin_sees_all(env: Env) -> None:
    police_report = add_report(env, category="suspicious", text="Inbraakpoging bij de buren")
    muni_report = add_report(env, category="nuisance", text="Losliggende stoeptegels")
    police = member(env, "Ivo", "police")
    muni = member(env, "Jet", "municipality")
    admin = member(env, "Kees", "admin")
    assert "Inbraakpoging" in police.get("/staff/reports").text
    assert "stoeptegels" not in police.get("/staff/reports").text
    assert police.get(f"/staff/reports/{muni_report}").status_code == 404
    assert "stoeptegels" in muni.get("/staff/reports").text
    assert "Inbraakpoging" not in muni.get("/staff/reports").text
    listing = admin.get("/staff/reports").text
    assert "Inbraakpoging" in listing and "stoeptegels" in listing
    assert admin.get(f"/staff/reports/{police_report}").status_code == 200
    # A role cannot act on another desk's report either.
    r = post_state(admin, muni_report, "in_progress")
    assert r.status_code == 303
    page = admin.get(f"/staff/reports/{police_report}")
    r = muni.post(f"/staff/reports/{police_report}/state",
                  data={"csrf": csrf_of(muni.get("/staff/reports").text), "to": "in_progress",
                        "version": "1"})
    assert r.status_code == 404 and report_row(env, police_report).state == "new"
    assert page.status_code == 200


def test_state_machine_and_report_updates_for_the_node(env: Env) -> None:
    report_id = add_report(env)
    police = member(env, "Lotte", "police")
    assert post_state(police, report_id, "handled").status_code == 422  # new -> handled: no
    assert post_state(police, report_id, "in_progress").status_code == 303
    row = report_row(env, report_id)
    assert (row.state, row.handler, row.version) == ("in_progress", "Lotte", 2)
    page = police.get(f"/staff/reports/{report_id}").text
    assert 'data-testid="handler"' in page and "Lotte" in page
    for to in ("handled", "reopened", "in_progress", "handled"):
        assert post_state(police, report_id, to).status_code == 303, to
    assert updates_for(env, report_id) == ["in_progress", "handled", "reopened", "in_progress",
                                           "handled"]
    assert report_row(env, report_id).version == 6
    assert audit_actions(env).count("take") == 2 and audit_actions(env).count("state") == 3
    assert handling.can_move("handled", "in_progress") is False


def test_two_staff_cannot_take_the_same_report_unawares(env: Env) -> None:
    report_id = add_report(env)
    mila = member(env, "Mila", "police")
    noah = member(env, "Noah", "police")
    noah_page = noah.get(f"/staff/reports/{report_id}").text  # Noah loads version 1 ...
    assert post_state(mila, report_id, "in_progress").status_code == 303  # ... Mila is first
    r = noah.post(f"/staff/reports/{report_id}/state",
                  data={"csrf": csrf_of(noah_page), "to": "in_progress", "version": "1"})
    assert r.status_code == 409
    assert re.search(r"Mila heeft deze melding om \d\d:\d\d opgepakt", r.text), r.text
    row = report_row(env, report_id)
    assert (row.handler, row.version) == ("Mila", 2)
    assert updates_for(env, report_id) == ["in_progress"]
    # The page Noah now sees carries the current version: a deliberate take-over
    # is not possible (in_progress -> in_progress is not a move), marking handled is.
    assert 'value="2"' in r.text


def test_stale_message_in_english(env: Env) -> None:
    report_id = add_report(env)
    a = member(env, "Olga", "police")
    b = member(env, "Piet", "police")
    page = b.get(f"/staff/reports/{report_id}?lang=en").text
    post_state(a, report_id, "in_progress")
    r = b.post(f"/staff/reports/{report_id}/state",
               data={"csrf": csrf_of(page), "to": "in_progress", "version": "1"})
    assert r.status_code == 409 and "Olga took this report at" in r.text


def test_forms_without_the_sessions_csrf_token_change_nothing(env: Env) -> None:
    report_id = add_report(env)
    quinn = member(env, "Quinn", "police")
    rosa = member(env, "Rosa", "police")
    rosa_token = csrf_of(rosa.get("/staff/reports").text)
    for token in ("", "0" * 64, rosa_token):
        r = post_state(quinn, report_id, "in_progress", version=1, csrf=token)
        assert r.status_code == 403, token
    r = quinn.post(f"/staff/reports/{report_id}/state",
                   data={"csrf": csrf_of(quinn.get("/staff/reports").text), "to": "in_progress",
                         "version": "1"}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert report_row(env, report_id).state == "new" and updates_for(env, report_id) == []


def test_reroute_moves_the_report_to_the_other_desk(env: Env) -> None:
    report_id = add_report(env, category="suspicious", text="Hangjongeren maken herrie")
    police = member(env, "Sam", "police")
    muni = member(env, "Tess", "municipality")
    post_state(police, report_id, "in_progress")
    page = police.get(f"/staff/reports/{report_id}").text
    assert 'data-testid="rule"' in page and "default-police" in page
    r = police.post(f"/staff/reports/{report_id}/route",
                    data={"csrf": csrf_of(page), "route": "municipality", "version": "2"})
    assert r.status_code == 303
    row = report_row(env, report_id)
    assert (row.route, row.rule, row.handler, row.state) == ("municipality", "manual:Sam", None,
                                                             "new")
    assert updates_for(env, report_id) == ["in_progress", "new"]
    assert "Hangjongeren" not in police.get("/staff/reports").text
    detail = muni.get(f"/staff/reports/{report_id}").text
    assert "doorgestuurd door Sam" in detail


def test_notes_are_kept_cleaned_limited_and_audited(env: Env) -> None:
    report_id = add_report(env)
    uma = member(env, "Uma", "police")
    page = uma.get(f"/staff/reports/{report_id}").text
    r = uma.post(f"/staff/reports/{report_id}/notes",
                 data={"csrf": csrf_of(page), "text": "Wijkagent <b>gebeld</b>\u202e"})
    assert r.status_code == 303
    detail = uma.get(f"/staff/reports/{report_id}").text
    assert "Wijkagent &lt;b&gt;gebeld&lt;/b&gt;" in detail and "\u202e" not in detail
    r = uma.post(f"/staff/reports/{report_id}/notes",
                 data={"csrf": csrf_of(page), "text": "x" * (handling.MAX_NOTE + 1)})
    assert r.status_code == 422
    with env.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(report_notes)).scalar() == 1
    assert "note" in audit_actions(env)


def test_audit_page_is_for_admins(env: Env) -> None:
    add_report(env)
    police = member(env, "Vera", "police")
    admin = member(env, "Wim", "admin")
    assert police.get("/staff/audit").status_code == 403
    page = admin.get("/staff/audit")
    assert page.status_code == 200 and "staff_add" in page.text and "Vera" in page.text


# -- node health ------------------------------------------------------------------------


def add_node(env: Env, name: str, *, last_seen_s_ago: int | None, revoked: bool = False) -> None:
    now = int(time.time() * 1000)
    with env.engine.begin() as conn:
        conn.execute(db.nodes.insert().values(
            name=name, area="ESC-01", signing_pub=uuid.uuid4().hex, encryption_pub=uuid.uuid4().hex,
            cert_pem="-", enrolled_at=now - 86_400_000,
            last_seen=None if last_seen_s_ago is None else now - last_seen_s_ago * 1000,
            backlog=3, version="0.1.0", silent_after_s=900,
            revoked_at=now if revoked else None))


def test_a_silent_node_raises_the_alarm_on_pages_and_in_the_api(env: Env) -> None:
    add_node(env, "bs-lively", last_seen_s_ago=20)
    add_node(env, "bs-quiet", last_seen_s_ago=3600)
    add_node(env, "bs-gone", last_seen_s_ago=None, revoked=True)
    client = member(env, "Xander", "municipality")
    page = client.get("/staff/reports").text
    assert 'data-testid="silent-alarm"' in page and "bs-quiet" in page
    assert "bs-lively" not in page.split('data-testid="silent-alarm"')[1].split("</div>")[0]
    nodes = client.get("/staff/nodes").text
    assert 'data-testid="node-bs-quiet"' in nodes and "Stil sinds 1 uur 00 min" in nodes
    data = client.get("/api/v1/nodes").json()
    assert data["alarm"] is True and data["silent"] == ["bs-quiet"]
    by_name = {n["name"]: n for n in data["nodes"]}
    assert by_name["bs-gone"]["revoked"] is True and by_name["bs-gone"]["silent"] is False
    assert by_name["bs-lively"]["backlog"] == 3 and by_name["bs-lively"]["version"] == "0.1.0"


def test_no_alarm_when_every_node_is_heard(env: Env) -> None:
    add_node(env, "bs-lively", last_seen_s_ago=20)
    client = member(env, "Yara", "police")
    assert 'data-testid="silent-alarm"' not in client.get("/staff/reports").text
    assert client.get("/api/v1/nodes").json()["alarm"] is False


# -- broadcasts -------------------------------------------------------------------------------


def create_broadcast(client: TestClient, **fields: str) -> Any:
    page = client.get("/staff/broadcasts")
    data = {"csrf": csrf_of(page.text), "title": "Inbraakgolf in Escamp",
            "text": "Sluit ramen en deuren. Zie je iets verdachts? Bel 112.",
            "areas": "esc-01, ESC-02", "severity": "severe", "category": "suspicious",
            "hours": "48"}
    data.update(fields)
    return client.post("/staff/broadcasts", data=data)


def created_id(response: Any) -> str:
    """The message id a broadcast form redirected to."""
    return str(response.headers["location"].split("?")[0].rsplit("/", 1)[1])


def central_alerts(env: Env) -> list[Any]:
    with env.engine.connect() as conn:
        rows = conn.execute(sa.select(db.events).where(
            db.events.c.origin == env.central.origin, db.events.c.kind == "alert")
            .order_by(db.events.c.seq)).all()
    return [event_from_dict({"v": 1, "id": r.id, "origin": r.origin, "stream": r.stream,
                             "seq": r.seq, "ts": r.ts, "kind": r.kind,
                             "body": orjson.loads(r.body), "sig": r.sig}) for r in rows]


def test_broadcast_is_a_signed_central_alert(env: Env) -> None:
    client = member(env, "Zoë", "police")
    r = create_broadcast(client)
    assert r.status_code == 303
    [alert] = central_alerts(env)
    alert.verify(env.central.keys.signing_public)
    assert alert.stream == "public" and alert.seq == 1
    body = alert.body
    assert body["source"] == "central" and body["areas"] == ["ESC-01", "ESC-02"]
    assert body["ref"] is None and body["severity"] == "severe"
    assert 47 * 3600_000 < body["expires"] - alert.ts <= 48 * 3600_000
    page = client.get(r.headers["location"])
    assert "Inbraakgolf in Escamp" in page.text
    assert "broadcast" in audit_actions(env)


@pytest.mark.parametrize(("field", "value"), [
    ("title", ""), ("title", "x" * 121), ("areas", "ESC 01!"), ("areas", " ".join(
        f"A{i}" for i in range(17))), ("severity", "apocalyptic"), ("hours", "0"),
    ("hours", "169"), ("hours", "abc"), ("text", "y" * 1001), ("category", "weather")])
def test_bad_broadcast_forms_are_refused_with_what_was_typed(env: Env, field: str,
                                                              value: str) -> None:
    client = member(env, "Ahmed", "police")
    r = create_broadcast(client, **{field: value})
    assert r.status_code == 422
    assert central_alerts(env) == []


def test_update_and_cancel_reference_the_message_they_replace(env: Env) -> None:
    client = member(env, "Bo", "police")
    first = created_id(create_broadcast(client))
    page = client.get(f"/staff/broadcasts/{first}").text
    r = client.post(f"/staff/broadcasts/{first}/update", data={
        "csrf": csrf_of(page), "title": "Inbraakgolf: ook Leidschenveen", "text": "",
        "areas": "ESC-01 LDV-01", "severity": "severe", "category": "suspicious", "hours": "24"})
    assert r.status_code == 303
    second = created_id(r)
    # Someone else, with the old page still open, tries to change the first again.
    stale = client.post(f"/staff/broadcasts/{first}/cancel", data={"csrf": csrf_of(page)})
    assert stale.status_code == 409 and "Bo heeft dit bericht om" in stale.text
    page2 = client.get(f"/staff/broadcasts/{second}").text
    r = client.post(f"/staff/broadcasts/{second}/cancel",
                    data={"csrf": csrf_of(page2), "reason": "Daders aangehouden"})
    assert r.status_code == 303
    alert, update, cancel = central_alerts(env)
    assert (update.body["ref"], cancel.body["ref"]) == (alert.id, update.id)
    assert broadcasts.classify(update.body, update.ts) == "update"
    assert broadcasts.classify(cancel.body, cancel.ts) == "cancel"
    assert cancel.body["expires"] <= cancel.ts and cancel.body["text"] == "Daders aangehouden"
    assert cancel.body["title"] == "Inbraakgolf: ook Leidschenveen"
    now = int(time.time() * 1000)
    assert [m.active(now) for m in broadcasts.recent(env.engine, env.central, now)] == [
        False, False, False]
    # A cancellation cannot be changed.
    page3 = client.get(f"/staff/broadcasts/{cancel.id}").text
    assert 'data-testid="cancel-form"' not in page3
    r = client.post(f"/staff/broadcasts/{cancel.id}/update", data={
        "csrf": csrf_of(page3), "title": "x", "severity": "minor", "hours": "1"})
    assert r.status_code == 422 and len(central_alerts(env)) == 3


def test_cap_documents_follow_the_chain(env: Env) -> None:
    client = member(env, "Cor", "police")
    first = created_id(create_broadcast(client))
    page = client.get(f"/staff/broadcasts/{first}").text
    second = created_id(client.post(f"/staff/broadcasts/{first}/cancel",
                                    data={"csrf": csrf_of(page)}))
    anon = client_for(env)
    one = anon.get(f"/api/v1/cap/alerts/{first}.xml")
    assert one.status_code == 200 and one.headers["content-type"] == "application/cap+xml"
    assert b"<msgType>Alert</msgType>" in one.content
    cancel = anon.get(f"/api/v1/cap/alerts/{second}.xml").content
    assert b"<msgType>Cancel</msgType>" in cancel and first.encode() in cancel
    assert b"central-haaglanden@central.test" in cancel
    feed = anon.get("/api/v1/cap/alerts.xml")
    assert feed.headers["content-type"].startswith("application/atom+xml")
    assert second.encode() in feed.content and f"<cap:identifier>{first}".encode() \
        not in feed.content
    assert anon.get(f"/api/v1/cap/alerts/{uuid.uuid4()}.xml").status_code == 404
    assert anon.get("/api/v1/cap/alerts/not-an-id.xml").status_code == 404


def test_every_staff_and_cap_endpoint_is_documented(env: Env) -> None:
    text = (Path(__file__).parents[2] / "docs" / "central.md").read_text()
    for route in env.app.routes:
        path = getattr(route, "path", "")
        if not path.startswith(("/staff", "/api/v1/nodes", "/api/v1/cap")):
            continue
        for method in sorted(getattr(route, "methods", None) or {"GET"}):
            if method != "HEAD":
                assert f"`{method} {path}" in text, f"{method} {path} missing from docs/central.md"


def test_racing_takes_in_threads_one_wins_the_other_is_told(env: Env) -> None:
    """Two workers take the same report at the same moment: exactly one succeeds."""
    import threading

    members = []
    for name in ("Race Een", "Race Twee"):
        env.accounts.add(name, "police")
        found = env.accounts.get(name)
        assert found is not None
        members.append(found)
    for _ in range(5):
        report_id = add_report(env)
        barrier = threading.Barrier(2)
        results: list[object] = []

        def take(who: Any, report_id: str = report_id,
                 barrier: threading.Barrier = barrier, results: list[object] = results) -> None:
            barrier.wait()
            try:
                results.append(handling.change_state(env.engine, who, report_id, "in_progress",
                                                     1, int(time.time() * 1000)))
            except handling.Stale as exc:
                results.append(exc)

        threads = [threading.Thread(target=take, args=(m,)) for m in members]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        won = [r for r in results if isinstance(r, handling.Report)]
        lost = [r for r in results if isinstance(r, handling.Stale)]
        assert len(won) == 1 and len(lost) == 1, results
        assert lost[0].handler == won[0].handler and lost[0].state == "in_progress"
        assert updates_for(env, report_id) == ["in_progress"]


def test_oversized_forms_are_refused_before_parsing(env: Env) -> None:
    client = member(env, "Groot", "police")
    token = csrf_of(client.get("/staff/broadcasts").text)
    r = client.post("/staff/broadcasts", data={"csrf": token, "title": "x" * 70_000})
    assert r.status_code == 413

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"a" * 1000

    r = client.post("/staff/login", content=chunks(),
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413
    assert central_alerts(env) == []


def test_confirmations_come_only_from_the_catalogue(env: Env) -> None:
    client = member(env, "Ilse", "police")
    page = client.get("/staff/reports", params={"done": "<b>hacked</b>"}).text
    assert "hacked" not in page
    assert "U behandelt deze melding nu" in client.get("/staff/reports?done=take").text


def test_migration_0002_goes_down_and_up_again(env: Env) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db.__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", env.central.database_url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    env.engine.dispose()
    command.downgrade(cfg, "0001")
    assert "staff" not in sa.inspect(env.engine).get_table_names()
    assert "reports" in sa.inspect(env.engine).get_table_names()
    env.engine.dispose()
    db.upgrade(env.central.database_url)
    assert {"staff", "staff_sessions", "staff_audit", "report_notes"} <= set(
        sa.inspect(env.engine).get_table_names())


def test_routing_is_explained_in_the_pages_language(env: Env) -> None:
    report_id = add_report(env, category="suspicious", text="Iemand probeert fietsen")
    with env.engine.begin() as conn:
        conn.execute(db.reports.update().where(db.reports.c.event_id == report_id)
                     .values(rule="suspicious"))
    police = member(env, "Ria", "police")
    dutch = police.get(f"/staff/reports/{report_id}?lang=nl").text
    assert "Verdachte situaties gaan naar de politie (wijkagent)." in dutch
    assert "Suspicious situations go" not in dutch
    english = police.get(f"/staff/reports/{report_id}?lang=en").text
    assert "Suspicious situations go to the police (wijkagent)." in english


def test_untaken_emergencies_come_first_and_sound(env: Env) -> None:
    older = add_report(env, category="emergency", text="Rook uit de kelder van nummer 3")
    newer = add_report(env, category="suspicious", text="Iemand voelt aan autodeuren")
    police = member(env, "Sam", "police")
    page = police.get("/staff/reports").text
    assert page.index("Rook uit de kelder") < page.index("voelt aan autodeuren")
    assert 'class="st-new urgent"' in page
    from central.staff.alarms import new_by_desk
    assert new_by_desk(env.engine).get("police") == 1
    assert post_state(police, older, "in_progress").status_code == 303
    assert new_by_desk(env.engine).get("police", 0) == 0
    page = police.get("/staff/reports").text
    assert page.index("voelt aan autodeuren") < page.index("Rook uit de kelder")
    assert report_row(env, newer).state == "new"


def test_node_names_and_a_silent_nodes_last_known_backlog(env: Env) -> None:
    add_node(env, "bs-quiet", last_seen_s_ago=3600)
    with env.engine.begin() as conn:
        conn.execute(db.nodes.update().where(db.nodes.c.name == "bs-quiet")
                     .values(display="Buurthuis De Stille Hoek", backlog=12))
    client = member(env, "Yara", "municipality")
    page = client.get("/staff/reports").text
    banner = page.split('data-testid="silent-alarm"')[1].split("</div>")[0]
    assert "Buurthuis De Stille Hoek" in banner
    nodes = client.get("/staff/nodes").text
    row = nodes.split('data-testid="node-bs-quiet"')[1].split("</tr>")[0]
    assert "Buurthuis De Stille Hoek" in row and "12 (laatst bekend," in row
    assert client.get("/api/v1/nodes").json()["nodes"][0]["display"] == \
        "Buurthuis De Stille Hoek"


def test_lists_are_paged_newest_first_and_counts_follow_every_change(env: Env) -> None:
    """Cost flat in history: a page is LIST_LIMIT rows and a link to the older ones;
    the tab counts come from report_counts, kept by the writer of new reports and by
    triggers for every change."""
    from central.staff.routes import LIST_LIMIT
    ids = [add_report(env, category="nuisance", text=f"Melding nummer {i}")
           for i in range(LIST_LIMIT + 5)]
    muni = member(env, "Vera", "municipality")
    first = muni.get("/staff/reports?state=all").text
    assert first.count('data-testid="report"') == LIST_LIMIT
    assert f"Melding nummer {LIST_LIMIT + 4}<" in first and "Melding nummer 4<" not in first
    older = re.search(r'href="(/staff/reports\?[^"]*before=[^"]+)"', first)
    assert older, "no link to the older reports"
    second = muni.get(older.group(1).replace("&amp;", "&")).text
    assert second.count('data-testid="report"') == 5
    assert "Melding nummer 4<" in second and "Melding nummer 0<" in second
    assert 'data-testid="newest"' in second and 'data-testid="older"' not in second
    # A made-up cursor is just the first page.
    assert muni.get("/staff/reports?state=all&before=x.y").status_code == 200

    tabs = re.compile(r'data-testid="tab-(\w+)">[^(]*\((\d+)\)')
    assert dict(tabs.findall(first))["new"] == str(LIST_LIMIT + 5)
    assert post_state(muni, ids[0], "in_progress").status_code == 303
    page = muni.get("/staff/reports").text
    counted = dict(tabs.findall(page))
    assert (counted["new"], counted["in_progress"]) == (str(LIST_LIMIT + 4), "1")
    r = muni.post(f"/staff/reports/{ids[1]}/route", data={
        "csrf": csrf_of(page), "route": "police", "version": "1"})
    assert r.status_code == 303
    with env.engine.connect() as conn:
        kept = {(row.route, row.state): row.n for row in conn.execute(
            sa.select(db.report_counts))}
        real = {(route, state): n for route, state, n in conn.execute(
            sa.select(db.reports.c.route, db.reports.c.state, sa.func.count())
            .group_by(db.reports.c.route, db.reports.c.state))}
    assert {k: v for k, v in kept.items() if v} == real
