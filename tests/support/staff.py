"""What the tests of central's staff pages share: central's app on a SQLite
file or a real PostgreSQL server, and logged-in staff clients."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from central import db
from central.app import create_app
from central.identity import Central, CentralSettings, init_central
from central.staff.accounts import StaffAccounts
from central.staff.db import staff_audit
from tests.support.html import csrf_of

FAST_N = 2**10
PASSWORD = "lange-zin-voor-test-1"


@dataclass
class Env:
    central: Central
    engine: sa.Engine
    app: Any
    accounts: StaffAccounts


@contextmanager
def open_env(tmp_path: Path, database_url: str) -> Iterator[Env]:
    """Central (app and staff accounts, scrypt cost lowered) on ``database_url``."""
    url = "" if database_url.startswith("sqlite") else database_url
    central = init_central(tmp_path / "central", CentralSettings(
        name="haaglanden", public_url="http://central.test", database_url=url))
    db.upgrade(central.database_url)
    engine = db.make_engine(central.database_url)
    try:
        yield Env(central, engine, create_app(central, engine),
                  StaffAccounts(engine, scrypt_n=FAST_N))
    finally:
        engine.dispose()


def client_for(env: Env) -> TestClient:
    return TestClient(env.app, base_url="http://central.test", follow_redirects=False)


def login_token(client: TestClient) -> str:
    page = client.get("/staff/login")
    assert page.status_code == 200
    found = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert found
    return found.group(1)


def member(env: Env, name: str, role: str) -> TestClient:
    """A logged-in client of a new member who has chosen a password."""
    otp = env.accounts.add(name, role)
    client = client_for(env)
    r = client.post("/staff/login", data={"name": name, "password": otp,
                                          "login_token": login_token(client)})
    assert r.status_code == 303 and r.headers["location"] == "/staff/password"
    page = client.get("/staff/password")
    r = client.post("/staff/password", data={"csrf": csrf_of(page.text), "old": otp,
                                             "new": PASSWORD, "repeat": PASSWORD})
    assert r.status_code == 303, r.text
    return client


def audit_actions(env: Env) -> list[str]:
    with env.engine.connect() as conn:
        return list(conn.execute(sa.select(staff_audit.c.action).order_by(staff_audit.c.id))
                    .scalars())
