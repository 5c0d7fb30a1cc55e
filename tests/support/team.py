"""A node's team pages over HTTP, as a browser without JavaScript uses them."""

from __future__ import annotations

import httpx

from node.team import TEAM_DB, TeamAccounts
from tests.support.html import csrf_of
from tests.support.node import NodeProcess

TIMEOUT = httpx.Timeout(10.0)
NEW_PASSWORD = "een lange zin als wachtwoord"
#: The team session's cookie.
COOKIE = "bart_team"


def add_member(node: NodeProcess, name: str) -> str:
    """What ``bart node team add NAME`` does: a row in team.db, a one-time password."""
    with TeamAccounts(node.data_dir / TEAM_DB) as team:
        return team.add(name)


class TeamBrowser:
    """A logged-in team member, talking HTTP to the node like a browser without JS."""

    def __init__(self, node: NodeProcess, name: str) -> None:
        self.node = node
        self.name = name
        self.http = httpx.Client(base_url=node.base_url, timeout=TIMEOUT,
                                 follow_redirects=False)

    def first_login(self) -> None:
        otp = add_member(self.node, self.name)
        r = self.http.post("/team/login", data={"name": self.name, "password": otp})
        assert r.status_code == 303 and r.headers["location"] == "/team/password", r.text
        # The dashboard is closed until the member chose a password.
        r = self.http.get("/team")
        assert r.status_code == 303 and r.headers["location"] == "/team/password"
        page = self.http.get("/team/password")
        assert page.status_code == 200
        r = self.http.post("/team/password", data={
            "csrf": csrf_of(page.text), "current": otp, "new": NEW_PASSWORD,
            "repeat": NEW_PASSWORD})
        assert r.status_code == 303 and r.headers["location"] == "/team", r.text

    @property
    def token(self) -> str:
        token = self.http.cookies.get(COOKIE)
        assert token
        return token

    def dashboard(self) -> str:
        r = self.http.get("/team")
        assert r.status_code == 200, r.status_code
        return r.text

    def post(self, path: str, **data: str) -> httpx.Response:
        data.setdefault("csrf", csrf_of(self.dashboard()))
        return self.http.post(path, data=data)

    def close(self) -> None:
        self.http.close()
