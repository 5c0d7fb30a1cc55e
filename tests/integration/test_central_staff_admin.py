"""Staff accounts managed in the staff pages by an admin, on both backends,
through the real app (in-process HTTP): add (one-time password shown once),
first login with it, new one-time password, remove (confirmed), the limits
(admins only, CSRF, not one's own account) and the audit log."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.support.staff import (
    PASSWORD,
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


def otp_of(html: str) -> str:
    found = re.search(r'data-testid="otp">([^<]+)<', html)
    assert found, html[:800]
    return found.group(1).strip()


def error_of(html: str) -> str:
    found = re.search(r'data-testid="accounts-error">([^<]*)<', html)
    return found.group(1) if found else ""


def add(admin: TestClient, name: str, role: str) -> tuple[int, str]:
    page = admin.get("/staff/accounts")
    r = admin.post("/staff/accounts", data={"csrf": csrf_of(page.text), "name": name,
                                           "role": role})
    return r.status_code, r.text


def login(env: Env, name: str, password: str) -> tuple[TestClient, str]:
    client = client_for(env)
    r = client.post("/staff/login", data={"name": name, "password": password,
                                          "login_token": login_token(client)})
    return client, r.headers.get("location", str(r.status_code))


def test_an_admin_adds_a_member_who_logs_in_with_the_one_time_password(env: Env) -> None:
    admin = member(env, "Anna", "admin")
    page = admin.get("/staff/accounts")
    assert page.status_code == 200 and 'data-testid="nav-accounts"' in page.text
    status, html = add(admin, "  Pieter  de Vries ", "police")
    assert status == 200
    otp = otp_of(html)
    assert "Pieter de Vries" in html  # the cleaned name, and now in the list
    # Shown once: the list, fetched again, shows no password.
    assert 'data-testid="otp"' not in admin.get("/staff/accounts").text
    _client, where = login(env, "pieter de vries", otp)
    assert where == "/staff/password"  # must choose a personal password first
    account = env.accounts.get("Pieter de Vries")
    assert account is not None and account.role == "police" and account.must_change
    assert ("staff_add", "Anna") in [(a, w) for a, w in audit_rows(env)]


def audit_rows(env: Env) -> list[tuple[str, str]]:
    return [(e.action, e.staff) for e in env.accounts.audit_log(50)]


@pytest.mark.parametrize(("name", "role", "status", "says"), [
    ("", "police", 422, "deze naam kan niet"),
    ("Robert'); DROP TABLE staff;--", "police", 422, "deze naam kan niet"),
    ("x" * 41, "police", 422, "deze naam kan niet"),
    ("<script>alert(1)</script>", "police", 422, "deze naam kan niet"),
    ("Bea", "superuser", 422, "kies een rol"),
    ("anna", "police", 409, "al een account met deze naam"),
    ("ß" * 21, "police", 422, "deze naam kan niet"),  # 21 letters, 42 in its key
])
def test_bad_additions_are_refused_with_what_was_typed(env: Env, name: str, role: str,
                                                       status: int, says: str) -> None:
    admin = member(env, "Anna", "admin")
    before = [m.name for m in env.accounts.members()]
    got, html = add(admin, name, role)
    assert got == status
    assert says in error_of(html).lower()
    assert "<script>" not in html  # what was typed comes back escaped
    assert 'data-testid="otp"' not in html
    assert [m.name for m in env.accounts.members()] == before


def test_a_new_one_time_password_ends_the_sessions_and_replaces_the_old_one(env: Env) -> None:
    admin = member(env, "Anna", "admin")
    kees = member(env, "Kees", "municipality")
    assert kees.get("/staff/reports").status_code == 200
    page = admin.get("/staff/accounts")
    r = admin.post("/staff/accounts/reset", data={"csrf": csrf_of(page.text), "name": "Kees"})
    assert r.status_code == 200
    otp = otp_of(r.text)
    assert kees.get("/staff/reports").headers["location"] == "/staff/login"
    assert login(env, "Kees", PASSWORD)[1] == "401"  # the old password is gone
    assert login(env, "Kees", otp)[1] == "/staff/password"
    assert "staff_reset" in audit_actions(env)


def test_removing_needs_the_tick_and_logs_the_member_out(env: Env) -> None:
    admin = member(env, "Anna", "admin")
    lot = member(env, "Lot", "police")
    page = admin.get("/staff/accounts")
    r = admin.post("/staff/accounts/remove", data={"csrf": csrf_of(page.text), "name": "Lot"})
    assert r.status_code == 422 and "Zeker weten" in error_of(r.text)
    assert env.accounts.get("Lot") is not None
    r = admin.post("/staff/accounts/remove", data={"csrf": csrf_of(page.text), "name": "Lot",
                                                   "confirm": "yes"})
    assert r.status_code == 303 and r.headers["location"].startswith("/staff/accounts?done=")
    assert env.accounts.get("Lot") is None
    assert lot.get("/staff/reports").headers["location"] == "/staff/login"
    assert "verwijderd" in admin.get(r.headers["location"]).text
    r = admin.post("/staff/accounts/remove", data={"csrf": csrf_of(page.text), "name": "Lot",
                                                   "confirm": "yes"})
    assert r.status_code == 404


def test_an_admin_cannot_remove_or_reset_their_own_account_here(env: Env) -> None:
    admin = member(env, "Anna", "admin")
    page = admin.get("/staff/accounts")
    assert 'data-testid="remove-anna"' not in page.text  # no buttons on one's own row
    for action in ("remove", "reset"):
        r = admin.post(f"/staff/accounts/{action}", data={
            "csrf": csrf_of(page.text), "name": " ANNA ", "confirm": "yes"})
        assert r.status_code == 422 and "eigen account" in error_of(r.text), action
    # Nor by a spelling that is no valid name but folds to theirs.
    for action in ("remove", "reset"):
        r = admin.post(f"/staff/accounts/{action}", data={
            "csrf": csrf_of(page.text), "name": "Anna" + " " * 200, "confirm": "yes"})
        assert r.status_code == 404, action
    assert admin.get("/staff/reports").status_code == 200  # still logged in
    assert env.accounts.get("Anna") is not None


def test_only_admins_and_only_with_the_sessions_token(env: Env) -> None:
    police = member(env, "Vera", "police")
    admin = member(env, "Anna", "admin")
    assert 'data-testid="nav-accounts"' not in police.get("/staff/reports").text
    assert police.get("/staff/accounts").status_code == 403
    token = csrf_of(police.get("/staff/reports").text)
    for path in ("/staff/accounts", "/staff/accounts/reset", "/staff/accounts/remove"):
        r = police.post(path, data={"csrf": token, "name": "Anna", "role": "admin",
                                    "confirm": "yes"})
        assert r.status_code == 403, path
    for path in ("/staff/accounts", "/staff/accounts/reset", "/staff/accounts/remove"):
        r = admin.post(path, data={"csrf": "0" * 64, "name": "Vera", "role": "admin",
                                   "confirm": "yes"})
        assert r.status_code == 403, path
    assert client_for(env).get("/staff/accounts").headers["location"] == "/staff/login"
    vera = env.accounts.get("Vera")
    assert vera is not None and vera.role == "police" and not vera.must_change
    assert [m.name for m in env.accounts.members()] == ["Anna", "Vera"]


def test_the_page_in_english(env: Env) -> None:
    admin = member(env, "Anna", "admin")
    page = admin.get("/staff/accounts?lang=en")
    status, html = add(admin, "Bob", "municipality")
    assert "Add a staff member" in page.text
    assert status == 200 and "one-time password" in html.lower()


def test_answers_to_posts_link_their_languages_to_the_page_itself(env: Env) -> None:
    admin = member(env, "Anna", "admin")
    member(env, "Kees", "police")
    page = admin.get("/staff/accounts")
    r = admin.post("/staff/accounts/reset", data={"csrf": csrf_of(page.text), "name": "Kees"})
    links = re.findall(r'href="(/staff/accounts[^"]*lang=[a-z]+)"', r.text)
    assert links and all(link.startswith("/staff/accounts?") for link in links)
    assert all(admin.get(link.replace("&amp;", "&")).status_code == 200 for link in links)


def test_a_name_whose_key_would_be_too_long_is_refused_by_the_accounts_too(env: Env) -> None:
    from central.passwords import InvalidName

    with pytest.raises(InvalidName):
        env.accounts.add("Friedrich-Wilhelm von Groß-Straßenhausen", "police")
    assert env.accounts.members() == []
