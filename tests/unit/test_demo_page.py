"""The node's /demo page and its controls, on a real app whose node is not started.

tests/integration/test_cli_demo.py runs the whole `bart demo` (central, three
nodes, cutting and restoring an uplink); this checks the page's rules quickly:
links from demo-links.json, the CSRF token on every form, the answers of
POST /demo/uplink for a browser and for a client.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx
import pytest

from node.config import NodeSettings
from node.portal.app import create_app
from node.portal.demo import CSRF_COOKIE, DEMO_LINKS
from node.runtime import NodeRuntime
from node.setup import init_node

pytestmark = pytest.mark.timeout(60)

LINKS = {"central": {"name": "central-demo", "display_name": "Bart centraal (demo)",
                     "url": "http://127.0.0.1:9001",
                     "staff_url": "http://127.0.0.1:9001/staff/login"},
         "nodes": [{"name": "n1", "display_name": "Buurthuis Een", "area": "ESC-01",
                    "url": "http://127.0.0.1:9002"},
                   {"name": "n2", "display_name": "Buurthuis Twee", "area": "ESC-02",
                    "url": "http://127.0.0.1:9003"}]}


def _transport(tmp_path: Path) -> httpx.ASGITransport:
    init_node(tmp_path, name="n1", area="ESC-01", display_name="Buurthuis Een", demo=True,
              gpio="off")
    settings = NodeSettings.load(tmp_path)
    (tmp_path / DEMO_LINKS).write_text(json.dumps(LINKS))
    app = create_app(settings, runtime=NodeRuntime(settings))  # never started: no uplink
    return httpx.ASGITransport(app=app)


def _client(transport: httpx.ASGITransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:9002")


def test_demo_page_links_everything_and_guards_its_forms(tmp_path: Path) -> None:
    async def run() -> None:
        transport = _transport(tmp_path)
        async with _client(transport) as client, _client(transport) as bare:
            page = await client.get("/demo")
            assert page.status_code == 200
            html = page.text
            assert 'href="http://127.0.0.1:9001/staff/login"' in html
            for url in ("http://127.0.0.1:9002", "http://127.0.0.1:9003"):
                assert f'href="{url}/demo"' in html and f'href="{url}/team"' in html
            assert "deze pagina hoort bij dit buurthuis" in html  # n1 is this node
            token = client.cookies.get(CSRF_COOKIE)
            assert token  # the forms' token (no form here: no uplink, no buttons)
            assert "niet aangemeld bij een centrale" in html  # not enrolled: no uplink

            # Without the token: 403 (a browser gets the page again, with the reason).
            refused = await bare.post("/demo/uplink", data={"action": "cut"},
                                      headers={"Accept": "text/html"})
            assert refused.status_code == 403 and "Dit formulier was verlopen" in refused.text
            assert (await bare.post("/demo/uplink", data={"action": "cut",
                                                          "csrf": token})).status_code == 403
            # Another site's page, even with a stolen token and cookie: 403.
            evil = {"Origin": "http://evil.example"}
            assert (await client.post("/demo/uplink", data={"action": "cut", "csrf": token},
                                      headers=evil)).status_code == 403
            assert (await client.post("/demo/press/x", data={"csrf": token},
                                      headers=evil)).status_code == 403
            # Our own page (Origin: null under no-referrer) with the token gets through
            # the guard: here to "no uplink" and "bad action".
            ok = {"Origin": "null"}
            assert (await client.post("/demo/uplink", data={"action": "cut", "csrf": token},
                                      headers=ok)).status_code == 409
            assert (await client.post("/demo/uplink", data={"action": "off", "csrf": token},
                                      headers=ok)).status_code == 422
            state = (await client.get("/demo/uplink")).json()
            assert state["uplink"] == {"enabled": False} and state["csrf"] == token

    asyncio.run(run())


def test_demo_page_without_links_still_renders(tmp_path: Path) -> None:
    async def run() -> None:
        async with _client(_transport(tmp_path)) as client:
            (tmp_path / DEMO_LINKS).write_text("not json")
            html = (await client.get("/demo?lang=en")).text
            assert "Everything in this demo" not in html
            assert re.search(r"<h1>Bart demo</h1>", html)

    asyncio.run(run())


class FakeLink:
    def __init__(self, peer: str, vector: dict[str, int] | None) -> None:
        self.peer, self.vector = peer, vector


class FakeMesh:
    """What the /demo page uses of :class:`node.mesh.engine.Mesh`."""

    def __init__(self) -> None:
        self.blocked: set[str] = set()
        self.names = {"n3": "Buurthuis Drie"}  # from hellos
        self.calls: list[tuple[str, bool]] = []
        # Two sessions with n2 (both dial): the newer vector says it lacks 1, not 3.
        self.links = {("n2", True): FakeLink("n2", {"n1": 3}),
                      ("n2", False): FakeLink("n2", {"n1": 1}),
                      ("n3", True): FakeLink("n3", None)}

    def view(self) -> dict[str, object]:
        peers = [{"name": name, "rtt_ms": 3.14, "lacks": {"n1": 3}}
                 for name in ("n2", "n3") if name not in self.blocked]
        return {"peers": peers, "blocked": sorted(self.blocked)}

    def lacks(self, vector: dict[str, int] | None) -> dict[str, int]:
        return dict(vector or {})

    def block(self, peer: str, blocked: bool) -> None:
        self.calls.append((peer, blocked))
        (self.blocked.add if blocked else self.blocked.discard)(peer)


def test_demo_link_refuses_without_token_and_when_the_mesh_is_off(tmp_path: Path) -> None:
    async def run() -> None:
        transport = _transport(tmp_path)
        async with _client(transport) as client, _client(transport) as bare:
            html = (await client.get("/demo")).text
            assert "pas als het is aangemeld bij een centrale" in html  # no mesh yet
            token = client.cookies.get(CSRF_COOKIE)
            state = (await client.get("/demo/link")).json()
            assert state == {"mesh": {"enabled": False, "peers": []}, "csrf": token}
            form = {"peer": "n2", "action": "cut", "csrf": token}
            assert (await bare.post("/demo/link", data=form)).status_code == 403
            refused = await bare.post("/demo/link", data=form, headers={"Accept": "text/html"})
            assert refused.status_code == 403 and "Dit formulier was verlopen" in refused.text
            assert (await client.post("/demo/link", data=form, headers={
                "Origin": "http://evil.example"})).status_code == 403
            ok = {"Origin": "null"}
            assert (await client.post("/demo/link", data=form, headers=ok)).status_code == 409
            assert (await client.post("/demo/link", json=form)).status_code == 409  # JSON too
            for bad in ({"action": "off"}, {"peer": "../x"}, {"peer": ""}):
                reply = await client.post("/demo/link", data={**form, **bad}, headers=ok)
                assert reply.status_code == 422, bad

    asyncio.run(run())


def test_demo_page_shows_the_mesh_and_cuts_and_heals_a_link(tmp_path: Path) -> None:
    async def run() -> None:
        transport = _transport(tmp_path)
        app = transport.app
        runtime = app.state.runtime  # type: ignore[attr-defined]
        mesh = runtime.mesh = FakeMesh()
        runtime.trust.peer = lambda name: name in ("n2", "n3")
        async with _client(transport) as client:
            html = (await client.get("/demo")).text
            assert 'data-testid="mesh-state-n2">verbonden<' in html
            assert "<b>Buurthuis Twee</b>" in html  # demo-links.json
            assert "<b>Buurthuis Drie</b>" in html  # its hello (not in demo-links.json)
            assert 'data-testid="mesh-rtt-n2" dir="ltr">3.1 ms<' in html
            assert 'data-testid="mesh-lacks-n2">1<' in html  # the newest of its vectors
            assert 'data-testid="mesh-lacks-n3">—<' in html  # no vector yet
            assert re.search(r'data-testid="mesh-heal-n2" disabled', html)
            token = client.cookies.get(CSRF_COOKIE)

            # The page's form (a browser): this node's side, then the other node's, which
            # does not answer here: 502 with the reason; this side is cut all the same.
            form = {"peer": "n2", "action": "cut", "csrf": str(token), "both": "1"}
            reply = await client.post("/demo/link", data=form,
                                      headers={"Accept": "text/html", "Origin": "null"})
            assert reply.status_code == 502, reply.text
            assert "het andere buurthuis gaf geen antwoord" in reply.text
            assert 'data-testid="mesh-state-n2">verbroken (demo)<' in reply.text
            assert re.search(r'data-testid="mesh-cut-n2" disabled', reply.text)

            # A client (bart demo link): one side, a JSON answer.
            reply = await client.post("/demo/link", json={"peer": "n2", "action": "heal",
                                                          "csrf": token})
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert body["link"] == {"peer": "n2", "cut": False}
            assert [p["state"] for p in body["mesh"]["peers"]] == ["connected", "connected"]
            assert mesh.calls == [("n2", True), ("n2", False)]
            # A peer this node does not trust is no link of it.
            reply = await client.post("/demo/link", json={"peer": "n9", "action": "cut",
                                                          "csrf": token})
            assert reply.status_code == 422 and mesh.calls[-1] == ("n2", False)
            en = (await client.get("/demo?lang=en")).text
            assert "Links to the other community centres" in en and ">connected<" in en

    asyncio.run(run())
