"""CSRF and same-origin checks through both sides' real pages (common.csrf).

The node's team password form and central's staff password form, each with a
real logged-in account: an over-long token and a post from another site are
refused the same way on both sides (before issue 16 only central capped the
token's length), and the right token from our own origin goes through.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from node.config import NodeSettings
from node.portal.i18n import Catalogue
from node.portal.render import Renderer
from node.team import TeamAccounts
from node.team.routes import router as team_router
from tests.support.staff import Env, client_for, login_token, open_env

NEW = "lange-zin-voor-test-1"
EVIL = "https://evil.example"


@dataclass
class Side:
    """One side's password form, reached by a logged-in client on a one-time password."""

    client: TestClient
    path: str
    csrf: str
    otp: str
    origin: str
    old_field: str

    def post(self, csrf: str, headers: dict[str, str] | None = None) -> int:
        data = {"csrf": csrf, self.old_field: self.otp, "new": NEW, "repeat": NEW}
        return self.client.post(self.path, data=data, headers=headers or {}).status_code


def _csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


@pytest.fixture
def node_side(tmp_path: Path) -> Iterator[Side]:
    with TeamAccounts(tmp_path / "team.db", scrypt_n=2**10) as team:
        app = FastAPI()
        app.state.settings = NodeSettings(data_dir=tmp_path, name="n1", area="ESC-01")
        app.state.renderer = Renderer(Catalogue.load(strict=True))
        app.state.team_accounts = team
        app.include_router(team_router)
        otp = team.add("Fatma")
        with TestClient(app, base_url="http://bart.local", follow_redirects=False) as client:
            r = client.post("/team/login", data={"name": "Fatma", "password": otp})
            assert r.status_code == 303 and r.headers["location"] == "/team/password"
            csrf = _csrf_of(client.get("/team/password").text)
            yield Side(client, "/team/password", csrf, otp, "http://bart.local", "current")


@pytest.fixture
def central_side(tmp_path: Path, database_url: str) -> Iterator[Side]:
    env: Env
    with open_env(tmp_path, database_url) as env:
        otp = env.accounts.add("Quinn", "police")
        with client_for(env) as client:
            r = client.post("/staff/login", data={"name": "Quinn", "password": otp,
                                                  "login_token": login_token(client)})
            assert r.status_code == 303 and r.headers["location"] == "/staff/password"
            csrf = _csrf_of(client.get("/staff/password").text)
            yield Side(client, "/staff/password", csrf, otp, "http://central.test", "old")


def over_long_tokens_are_refused(side: Side) -> None:
    for token in (side.csrf + " " * 200, side.csrf + "0" * 64, side.csrf * 3):
        assert side.post(token) == 403, len(token)
    assert side.post(side.csrf) == 303  # the real token still works afterwards


def cross_site_posts_are_refused(side: Side) -> None:
    for headers in ({"Origin": EVIL}, {"Referer": EVIL + "/form"},
                    {"Origin": "null", "Referer": EVIL + "/form"}):
        assert side.post(side.csrf, headers) == 403, headers
    assert side.post(side.csrf, {"Origin": side.origin}) == 303


def test_node_refuses_an_over_long_token(node_side: Side) -> None:
    over_long_tokens_are_refused(node_side)


def test_central_refuses_an_over_long_token(central_side: Side) -> None:
    over_long_tokens_are_refused(central_side)


def test_node_refuses_a_cross_site_post_with_the_right_token(node_side: Side) -> None:
    cross_site_posts_are_refused(node_side)


def test_central_refuses_a_cross_site_post_with_the_right_token(central_side: Side) -> None:
    cross_site_posts_are_refused(central_side)
