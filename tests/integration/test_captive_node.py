"""Captive portal on a real ``bart node run`` (node/portal/captive.py).

The node listens on 127.0.0.1; a phone's probe is a request to that address
carrying the probe's own ``Host`` (on the hotspot, dnsmasq sends every name
to the node). Not on the hotspot address, the portal is the address and port
the request came in on.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.node import NodeProcess

pytestmark = pytest.mark.timeout(120)

PROBES = {
    ("connectivitycheck.gstatic.com", "/generate_204"): (204, b""),
    ("captive.apple.com", "/hotspot-detect.html"):
        (200, b"<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>\n"),
    ("www.msftconnecttest.com", "/connecttest.txt"): (200, b"Microsoft Connect Test"),
    ("detectportal.firefox.com", "/success.txt"): (200, b"success\n"),
    ("nmcheck.gnome.org", "/check_network_status.txt"): (200, b"NetworkManager is online\n"),
}


def test_probes_land_on_the_portal_then_say_online(running_node: NodeProcess) -> None:
    portal = f"{running_node.base_url}/"
    with httpx.Client(base_url=running_node.base_url, timeout=10.0) as client:
        for host, path in [*PROBES, ("nu.nl", "/nieuws"), ("www.msftconnecttest.com",
                                                          "/redirect")]:
            r = client.get(path, headers={"Host": host})
            assert r.status_code == 302, (host, path, r.status_code)
            assert r.headers["location"] == portal
            assert r.headers["cache-control"] == "no-store"
        api = client.get("/api/v1/captive")
        assert api.headers["content-type"] == "application/captive+json"
        assert json.loads(api.content) == {"captive": True, "user-portal-url": portal,
                                           "venue-info-url": portal,
                                           "can-extend-session": True}

        # The phone follows the redirect: the portal's home page (alerts from the store).
        home = client.get("/")
        assert home.status_code == 200 and "text/html" in home.headers["content-type"]
        assert client.get("/generate_204", headers={"Host": "connectivitycheck.gstatic.com"}
                          ).status_code == 302  # reading is not done: the sheet stays
        # Making a report signs the phone in (as does the "Klaar" link).
        made = client.post("/api/v1/reports", json={"category": "nuisance", "text": "Afval"})
        assert made.status_code == 201

        for (host, path), (status, body) in PROBES.items():
            r = client.get(path, headers={"Host": host})
            assert (r.status_code, r.content) == (status, body), (host, path)
        assert client.get("/", headers={"Host": "nu.nl"}).status_code == 302
        state = client.get("/api/v1/captive").json()
        assert state["captive"] is False and state["seconds-remaining"] > 3500

        # The node's own pages and API are unchanged.
        created = client.post("/api/v1/reports", json={"category": "nuisance",
                                                       "text": "Harde muziek"})
        assert created.status_code == 201
        assert client.get("/healthz").json()["status"] == "ok"
