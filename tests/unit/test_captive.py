"""Captive portal (node/portal/captive.py): probes, Host routing, grace, RFC 8908 API.

The pure parts are tested directly; the ASGI behaviour against the node's
real app (``create_asgi``, the very stack the server runs) through httpx's
ASGI transport, with a node directory made by ``init_node``. The node's
runtime is not started: none of these requests needs the store.
tests/integration/test_captive_node.py does the same against ``bart node
run``, and tests/system/test_captive_netns.py from a "phone" namespace.
"""

from __future__ import annotations

import asyncio
import doctest
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from node.config import NodeSettings
from node.portal import captive
from node.portal.app import create_asgi
from node.portal.captive import (
    MAX_HOST,
    PROBE_PATHS,
    PROBES,
    CaptiveClients,
    CaptivePolicy,
    CaptivePortal,
    find_probe,
    parse_host,
)
from node.setup import init_node

pytestmark = pytest.mark.timeout(60)

NODE = "10.42.0.1"
PHONE = "10.42.0.23"
OTHER_PHONE = "10.42.0.24"

#: One probe per OS with the exact answer that means "online" (status, body).
ONLINE: dict[tuple[str, str], tuple[int, bytes]] = {
    ("connectivitycheck.gstatic.com", "/generate_204"): (204, b""),
    ("clients3.google.com", "/generate_204"): (204, b""),
    ("connectivitycheck.android.com", "/generate_204"): (204, b""),
    ("www.google.com", "/gen_204"): (204, b""),
    ("captive.apple.com", "/hotspot-detect.html"):
        (200, b"<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>\n"),
    ("www.apple.com", "/library/test/success.html"):
        (200, b"<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>\n"),
    ("www.msftconnecttest.com", "/connecttest.txt"): (200, b"Microsoft Connect Test"),
    ("www.msftncsi.com", "/ncsi.txt"): (200, b"Microsoft NCSI"),
    ("detectportal.firefox.com", "/success.txt"): (200, b"success\n"),
    ("detectportal.firefox.com", "/canonical.html"):
        (200, b'<meta http-equiv="refresh" '
              b'content="0;url=https://support.mozilla.org/kb/captive-portal"/>'),
    ("nmcheck.gnome.org", "/check_network_status.txt"): (200, b"NetworkManager is online\n"),
    ("network-test.debian.org", "/nm"): (200, b"NetworkManager is online\n"),
    ("connectivity-check.ubuntu.com", "/"): (204, b""),
}


def test_doctests() -> None:
    assert doctest.testmod(captive).failed == 0


# -- pure parts ------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "host"), [
    (b"connectivitycheck.gstatic.com", "connectivitycheck.gstatic.com"),
    (b"Captive.Apple.COM", "captive.apple.com"),
    (b"www.msftconnecttest.com:80", "www.msftconnecttest.com"),
    (b"detectportal.firefox.com.", "detectportal.firefox.com"),
    (b"10.42.0.1:8080", "10.42.0.1"),
    (b"[::1]:8080", "::1"),
    (b"[fe80:0::1]", "fe80::1"),
    (b"bart", "bart"),
    (b"", ""),
    (None, ""),
])
def test_host_header_is_parsed(raw: bytes | None, host: str) -> None:
    assert parse_host(raw) == host


@pytest.mark.parametrize("raw", [
    b"a b", b"evil.com/x", b"host:port", b"host:123456", b"[::1", b"[zz::1]", b"[::1]x",
    "bücher.de".encode(), b"\xff\xfe", b"a" * 64 + b".com", b"x." * (MAX_HOST // 2 + 1),
    b"a..b", b"-a.com", b"user@host",
])
def test_malformed_host_headers_are_refused(raw: bytes) -> None:
    assert parse_host(raw) is None


def test_every_probe_in_the_table_is_found_by_host_and_path() -> None:
    for (host, path), probe in PROBES.items():
        assert find_probe(host, path) is probe
    assert find_probe("connectivitycheck.samsungdm.com", "/generate_204") is \
        PROBE_PATHS["/generate_204"]
    assert find_probe("example.org", "/") is None
    assert find_probe("www.msftconnecttest.com", "/redirect").always_portal  # type: ignore[union-attr]


def test_clients_are_remembered_for_the_grace_time_only() -> None:
    now = [1000.0]
    clients = CaptiveClients(60.0, clock=lambda: now[0])
    assert clients.remaining(PHONE) is None
    clients.mark(PHONE)
    now[0] += 59.0
    assert clients.remaining(PHONE) == pytest.approx(1.0)
    clients.mark(PHONE)  # opening the portal again starts the grace again
    now[0] += 59.0
    assert clients.remaining(PHONE) == pytest.approx(1.0)
    now[0] += 1.0
    assert clients.remaining(PHONE) is None
    assert len(clients) == 0


def test_client_table_is_bounded_and_drops_the_oldest_and_the_expired() -> None:
    now = [0.0]
    clients = CaptiveClients(100.0, clock=lambda: now[0], max_clients=50)
    for i in range(200):
        now[0] += 0.01
        clients.mark(f"10.0.{i // 250}.{i % 250}")
    assert len(clients) == 50
    assert clients.remaining("10.0.0.0") is None  # the oldest went first
    assert clients.remaining("10.0.0.199") is not None
    now[0] += 100.0  # all expired: the next mark sweeps them out
    clients.mark(PHONE)
    assert len(clients) == 1


def test_grace_zero_never_signs_a_client_in() -> None:
    clients = CaptiveClients(0.0)
    clients.mark(PHONE)
    assert clients.remaining(PHONE) is None and len(clients) == 0


def test_policy_decides_on_the_host() -> None:
    policy = CaptivePolicy(own_names=frozenset({"localhost", NODE, "bart.buurt"}),
                           portal_address=NODE)
    for host in (NODE, "localhost", "bart.buurt", "n1.local", "bart", ""):
        assert policy.decide(host, "/generate_204", NODE, False) == ("pass", None)
    assert policy.decide("192.168.1.50", "/", "192.168.1.50", False)[0] == "pass"
    assert policy.decide("example.org", "/", NODE, True) == ("portal", None)
    assert policy.decide(None, "/", NODE, True) == ("portal", None)
    decision, probe = policy.decide("captive.apple.com", "/hotspot-detect.html", NODE, False)
    assert decision == "portal" and probe is not None and probe.family == "apple"
    assert policy.decide("captive.apple.com", "/hotspot-detect.html", NODE, True)[0] == "online"
    assert policy.decide("www.msftconnecttest.com", "/redirect", NODE, True)[0] == "portal"


def test_portal_url_is_the_hotspot_address_or_where_the_request_came_in() -> None:
    policy = CaptivePolicy(own_names=frozenset(), portal_address=NODE, fallback=("::", 8080))
    assert policy.portal_url((NODE, 8080)) == f"http://{NODE}/"
    assert policy.portal_url(None) == f"http://{NODE}/"
    assert policy.portal_url(("192.168.1.50", 8080)) == "http://192.168.1.50:8080/"
    assert policy.portal_url(("fd00::5", 80)) == "http://[fd00::5]/"
    plain = CaptivePolicy(own_names=frozenset(), fallback=("127.0.0.1", 8081))
    assert plain.portal_url(None) == "http://127.0.0.1:8081/"


def test_policy_from_settings_knows_the_nodes_names(tmp_path: Path) -> None:
    settings = NodeSettings(data_dir=tmp_path, name="n1", area="ESC-01", http_host="0.0.0.0",
                            http_port=80, point_host="Bart-Hub.example.net")
    policy = CaptivePolicy.from_settings(settings)
    assert {"localhost", "n1.local", "bart-hub.example.net"} <= policy.own_names
    assert "0.0.0.0" not in policy.own_names
    assert policy.fallback == ("127.0.0.1", 80)
    assert policy.https_url is None and "10.42.0.1" in policy.own_names


def test_with_https_set_up_the_api_names_the_https_portal(tmp_path: Path) -> None:
    settings = NodeSettings(data_dir=tmp_path, name="n1", area="ESC-01",
                            hotspot={"https_url": "https://Escamp-West.bart.example"})  # type: ignore[arg-type]
    policy = CaptivePolicy.from_settings(settings)
    assert "escamp-west.bart.example" in policy.own_names  # the API's host is the portal
    state = captive.captive_state(policy, CaptiveClients(60), PHONE, (NODE, 8080))
    assert state["user-portal-url"] == "https://Escamp-West.bart.example/"
    assert state["captive"] is True
    assert policy.portal_url((NODE, 8080)) == f"http://{NODE}/"  # probes: plain HTTP


# -- the real app ----------------------------------------------------------------


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> NodeSettings:
    data_dir = tmp_path_factory.mktemp("captive") / "node"
    node, _keys = init_node(data_dir, name="n1", area="ESC-01", http_host="0.0.0.0",
                            http_port=8080)
    return node


@pytest.fixture
def app(settings: NodeSettings) -> Iterator[CaptivePortal]:
    asgi = create_asgi(settings)
    assert isinstance(asgi, CaptivePortal)
    yield asgi


def request(app: CaptivePortal, method: str, path: str, *, host: str | None = None,
            client: str = PHONE, server: str = f"{NODE}:8080", **kwargs: Any) -> httpx.Response:
    """One request from ``client`` to ``server`` (by default the hotspot address, port
    80 redirected to 8080 by nftables), with the ``Host`` given."""
    headers = dict(kwargs.pop("headers", {}))
    if host is not None:
        headers["Host"] = host

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(client, 40000))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{server}") as c:
            return await c.request(method, path, headers=headers, **kwargs)

    return asyncio.run(go())


def assert_portal_redirect(r: httpx.Response) -> None:
    assert r.status_code == 302, (r.status_code, r.text[:200])
    # The hotspot address, port 80: what the phone can reach through nftables.
    assert r.headers["location"] == f"http://{NODE}/"
    assert r.headers["cache-control"] == "no-store"


def test_every_probe_is_sent_to_the_portal_before_it_was_opened(app: CaptivePortal) -> None:
    for host, path in [*ONLINE, *PROBES]:
        r = request(app, "GET", path, host=host)
        assert_portal_redirect(r)
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        assert f'href="http://{NODE}/"' in r.text


def test_any_other_host_and_path_lands_on_the_portal(app: CaptivePortal) -> None:
    for host, path in [("example.org", "/"), ("nu.nl", "/nieuws/123?x=1"),
                       ("www.google.com", "/search"), ("10.0.0.9", "/"), ("a" * 300, "/")]:
        assert_portal_redirect(request(app, "GET", path, host=host))
    # Also a report sent to another host: the lean ingest handler never sees it.
    r = request(app, "POST", "/api/v1/reports", host="evil.example",
                json={"category": "nuisance", "text": "x"})
    assert_portal_redirect(r)
    r = request(app, "HEAD", "/generate_204", host="connectivitycheck.gstatic.com")
    assert_portal_redirect(r)
    assert r.content == b""


def test_on_another_network_the_portal_is_where_the_request_came_in(app: CaptivePortal) -> None:
    r = request(app, "GET", "/generate_204", host="connectivitycheck.gstatic.com",
                server="192.168.1.50:8080", client="192.168.1.77")
    assert r.status_code == 302 and r.headers["location"] == "http://192.168.1.50:8080/"
    # The node's LAN address is its own name there: the portal, not a redirect.
    r = request(app, "GET", "/report", host="192.168.1.50:8080", server="192.168.1.50:8080")
    assert r.status_code == 200


def test_the_redirect_page_is_dutch_first(app: CaptivePortal) -> None:
    r = request(app, "GET", "/", host="example.org")
    assert 'lang="nl"' in r.text and "buurthuis" in r.text
    r = request(app, "GET", "/", host="example.org", headers={"Accept-Language": "en-GB,en"})
    assert 'lang="en"' in r.text and "community centre" in r.text
    assert r.headers["content-security-policy"].startswith("default-src 'none'")


def test_opening_the_portal_signs_the_phone_in_for_its_probes(settings: NodeSettings) -> None:
    app = create_asgi(settings)
    assert isinstance(app, CaptivePortal)
    assert request(app, "GET", "/api/v1/captive").json()["captive"] is True
    page = request(app, "GET", "/report", host=f"{NODE}:8080")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # The portal's own pages keep their nonce CSP (SecurityHeaders still runs).
    assert "script-src 'nonce-" in page.headers["content-security-policy"]
    assert 'href="/klaar"' in page.text
    # Reading is not yet "done": Android would close its sign-in sheet on "online".
    assert_portal_redirect(request(app, "GET", "/generate_204",
                                   host="connectivitycheck.gstatic.com"))
    done = request(app, "GET", "/klaar", host=NODE)
    assert (done.status_code, done.headers["location"]) == (303, "/")
    for (host, path), (status, body) in ONLINE.items():
        r = request(app, "GET", path, host=host)
        assert (r.status_code, r.content) == (status, body), (host, path)
        assert r.headers["cache-control"] == "no-store"
        assert "location" not in r.headers
    r = request(app, "HEAD", "/hotspot-detect.html", host="captive.apple.com")
    assert r.status_code == 200 and r.content == b""
    nm = request(app, "GET", "/check_network_status.txt", host="nmcheck.gnome.org")
    assert nm.headers["x-networkmanager-status"] == "online"
    # Still no internet: other hosts and Windows' browser page land on the portal.
    assert_portal_redirect(request(app, "GET", "/", host="nu.nl"))
    assert_portal_redirect(request(app, "GET", "/redirect", host="www.msftconnecttest.com"))
    # Another phone has not opened the portal yet.
    assert_portal_redirect(request(app, "GET", "/generate_204",
                                   host="connectivitycheck.gstatic.com", client=OTHER_PHONE))
    api = request(app, "GET", "/api/v1/captive")
    assert api.headers["content-type"] == "application/captive+json"
    state = api.json()
    assert state["captive"] is False
    assert state["user-portal-url"] == f"http://{NODE}/"
    assert 0 < state["seconds-remaining"] <= settings.captive_grace_s


def test_json_and_failed_pages_do_not_sign_a_phone_in(settings: NodeSettings) -> None:
    app = create_asgi(settings)
    assert isinstance(app, CaptivePortal)
    request(app, "GET", "/api/v1/captive", host=NODE)
    request(app, "GET", "/api/openapi.json", host=NODE)
    request(app, "GET", "/no-such-page", host=NODE)
    request(app, "POST", "/report", host=NODE, data={"category": "x"})
    assert len(app.clients) == 0
    assert_portal_redirect(request(app, "GET", "/generate_204",
                                   host="connectivitycheck.gstatic.com"))


def test_the_grace_runs_out(settings: NodeSettings) -> None:
    app = create_asgi(settings)
    assert isinstance(app, CaptivePortal)
    now = [0.0]
    app.clients.clock = lambda: now[0]
    request(app, "GET", "/klaar", host=NODE)
    assert request(app, "GET", "/generate_204",
                   host="connectivitycheck.gstatic.com").status_code == 204
    now[0] += settings.captive_grace_s
    assert_portal_redirect(request(app, "GET", "/generate_204",
                                   host="connectivitycheck.gstatic.com"))


def test_the_captive_api_is_in_the_openapi_schema(settings: NodeSettings) -> None:
    app = create_asgi(settings)
    r = request(app, "GET", "/api/openapi.json", host=NODE)  # type: ignore[arg-type]
    assert "/api/v1/captive" in json.loads(r.text)["paths"]
