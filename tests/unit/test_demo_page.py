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
