"""The report budget of a device (``reports_per_minute``, burst half of it) counts
stored reports only: a resident who sends the form empty or incomplete ten
times and then right still gets the report in; a full budget says so without
"check the red fields" (there are none) and keeps every word typed."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.support.base import require_binary
from tests.support.node import NodeProcess, init_node, stop_and_check

BURST = 10  # reports_per_minute = 20: a burst of 10


@pytest.fixture(scope="module")
def budget_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    node = init_node(tmp_path_factory.mktemp("budget"),
                     require_binary("mosquitto", "/usr/sbin/mosquitto"))
    node.env_extra["BART_REPORTS_PER_MINUTE"] = "20"
    try:
        node.start()
        yield node
    except BaseException:
        if node.proc is not None and node.proc.poll() is None:
            node.kill()
        raise
    stop_and_check(node)


def _form(http: httpx.Client, text: str) -> httpx.Response:
    page = http.get("/report", params={"category": "nuisance", "lang": "nl"})
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token
    return http.post("/report?lang=nl", headers={"Origin": str(http.base_url).rstrip("/")},
                     data={"category": "nuisance", "text": text, "place_point": "",
                           "place_text": "", "audience": "authorities", "called_112": "no",
                           "called_112_by": "", "contact": "", "csrf": token.group(1),
                           "lang": "nl"})


def test_refused_forms_cost_no_budget_and_a_full_budget_keeps_the_words(
        budget_node: NodeProcess) -> None:
    with httpx.Client(base_url=budget_node.base_url, timeout=10.0) as http:
        for _ in range(BURST + 5):  # empty: refused for what is in it, not counted
            r = _form(http, "")
            assert r.status_code == 422, r.text[:300]
        r = _form(http, "Scooter scheurt over de stoep bij de school")
        assert r.status_code == 303, r.text[:300]
        codes = [_form(http, f"Melding {i} over geluid bij de speeltuin").status_code
                 for i in range(BURST)]
        assert codes[:BURST - 1] == [303] * (BURST - 1) and 429 in codes[BURST - 2:], codes
        full = _form(http, "Nog een melding die niet verloren mag gaan")
        assert full.status_code == 429
        assert "Nog een melding die niet verloren mag gaan" in full.text
        assert "Er zijn net veel meldingen verstuurd" in full.text, full.text
        assert "rode vakken" not in full.text  # there are no red fields to check


def test_refused_api_reports_cost_no_budget(budget_node: NodeProcess) -> None:
    with httpx.Client(base_url=budget_node.base_url, timeout=10.0,
                      transport=httpx.HTTPTransport(local_address="127.0.0.2")) as http:
        for _ in range(BURST + 5):
            r = http.post("/api/v1/reports", json={"category": "nuisance", "text": ""})
            assert r.status_code == 422, r.text
        r = http.post("/api/v1/reports", json={"category": "nuisance", "text": "Lawaai",
                                               "audience": "authorities"})
        assert r.status_code == 201, r.text
        big = http.post("/api/v1/reports", content=b'{"text": "' + b"x" * 40_000 + b'"}',
                        headers={"content-type": "application/json"})
        assert big.status_code == 413  # too large to be a report: this one counts
        codes = [http.post("/api/v1/reports", json={
            "category": "nuisance", "text": f"Lawaai {i}", "audience": "authorities"}
        ).status_code for i in range(BURST)]
        assert codes.count(201) <= BURST - 2 and codes[-1] == 429, codes
