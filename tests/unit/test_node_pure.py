"""Pure parts of the node: receipts, rate limits, what residents may see."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.ratelimit import RateLimiter
from node.config import MeetingPoint, NodeSettings
from node.portal.views import alert_view, is_visible, local_time
from node.reports import new_receipt, normalise_receipt, validate_report_input, warning_body
from sync import InvalidField, KeyPair, make_event
from sync.bodies import RECEIPT

TS = 1795904700000


def settings(tmp_path: Path) -> NodeSettings:
    return NodeSettings(data_dir=tmp_path, name="n1", area="ESC-01",
                        meeting_points=[MeetingPoint(id="klimboom", name="Speeltuin")])


def test_receipts_are_valid_and_normalised() -> None:
    codes = {new_receipt() for _ in range(2000)}
    assert len(codes) == 2000
    assert all(RECEIPT.fullmatch(c) for c in codes)
    assert normalise_receipt(" k7f3qx ") == "K7F-3QX"
    assert normalise_receipt("K7F-3QX") == "K7F-3QX"
    assert normalise_receipt("x" * 10_000) == "X" * 32


def test_rate_limiter_refills_on_injected_clock() -> None:
    now = [0.0]
    limiter = RateLimiter(6, burst=2, clock=lambda: now[0])
    assert limiter.allow("a") and limiter.allow("a")
    assert not limiter.allow("a")
    assert limiter.allow("b")  # per client
    now[0] += 10.0  # 6/min = one token per 10 s
    assert limiter.allow("a")
    assert not limiter.allow("a")
    assert RateLimiter(0).allow("a")  # 0 = off


def test_rate_limiter_refund_gives_back_one_token_up_to_the_burst() -> None:
    now = [0.0]
    limiter = RateLimiter(6, burst=2, clock=lambda: now[0])
    for _ in range(10):  # a resident correcting the form ten times
        assert limiter.allow("a")
        limiter.refund("a")
    assert limiter.allow("a") and limiter.allow("a")
    assert not limiter.allow("a")
    limiter.refund("a")
    limiter.refund("a")
    limiter.refund("a")  # never above the burst
    assert limiter.allow("a") and limiter.allow("a")
    assert not limiter.allow("a")
    limiter.refund("unknown")  # a client it never saw: nothing to give back
    assert "unknown" not in limiter._buckets


def test_rate_limiter_memory_is_bounded() -> None:
    limiter = RateLimiter(10, max_clients=100)
    for i in range(1000):
        limiter.allow(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter._buckets) == 100


def test_warning_never_carries_contact() -> None:
    clean = validate_report_input({"category": "nuisance", "audience": "both",
                                   "contact": "jan@example.org", "text": "herrie"})
    body = warning_body(clean, "019ac8f2-6d5b-7a3c-8e1f-0123456789ab", "ESC-01")
    assert "jan@example.org" not in repr(body)
    assert body["source"] == "resident" and body["areas"] == ["ESC-01"]


def test_report_input_refuses_what_the_event_refuses() -> None:
    with pytest.raises(InvalidField):
        validate_report_input({"category": "fire", "audience": "both"})
    with pytest.raises(InvalidField):
        validate_report_input({"category": "nuisance", "audience": "both", "receipt": "x",
                               "extra": 1})


def test_visibility_by_area_and_expiry(tmp_path: Path) -> None:
    s = settings(tmp_path)
    keys = KeyPair.generate()

    def alert(**body: object) -> object:
        return make_event(keys, origin="c", stream="public", seq=1, kind="alert", ts=TS,
                          body={"source": "central", "title": "x", **body})

    assert is_visible(alert(areas=["ESC-01"]), s, TS, central_origin="c")
    assert is_visible(alert(), s, TS, central_origin="c")  # no areas: everywhere it reaches
    assert not is_visible(alert(areas=["LYP-01"]), s, TS, central_origin="c")
    assert not is_visible(alert(expires=TS + 10), s, TS + 10, central_origin="c")
    # A "central" alert from anyone but the enrolled central, or with none enrolled: never.
    assert not is_visible(alert(), s, TS, central_origin="central-other")
    assert not is_visible(alert(), s, TS)
    view = alert_view(alert(place={"point": "klimboom", "text": "bij het hek"}), s, "nl")
    assert view["place"] == "Speeltuin – bij het hek" and view["verified"] is True
    assert view["central"] is True


def test_local_time_in_node_zone() -> None:
    assert local_time(TS, "Europe/Amsterdam", "nl") == ("23:25", "28 nov")  # 22:25 UTC, CET
    assert local_time(TS, "Europe/Amsterdam", "en")[1] == "28 Nov"


def test_saar_who_called_112_reaches_the_neighbours(tmp_path: Path) -> None:
    from node.portal.i18n import Catalogue
    from node.portal.render import Renderer

    clean = validate_report_input({"category": "emergency", "audience": "both",
                                   "called_112": True, "called_112_by": "buurman Jan",
                                   "text": "rook uit de flat"})
    body = warning_body(clean, "019ac8f2-6d5b-7a3c-8e1f-0123456789ab", "ESC-01")
    event = make_event(KeyPair.generate(), origin="n1", stream="public", seq=1, kind="alert",
                       ts=TS, body=body)
    html = Renderer(Catalogue.load()).render_alert_item(
        alert_view(event, settings(tmp_path), "nl"), "nl")
    assert "112 is al gebeld door: buurman Jan" in html
    not_called = warning_body({**clean, "called_112": False}, event.id, "ESC-01")
    assert not_called["called_112_by"] == ""


def test_team_board_leaves_out_replaced_central_broadcasts(tmp_path: Path) -> None:
    from node.team.views import board

    def item(ident: str, ts: int, ref: str | None, expires: int, origin: str = "central-x") -> dict:
        return {"id": ident, "kind": "alert", "origin": origin, "ts": ts, "source": "central",
                "category": "suspicious", "severity": "severe", "title": ident, "text": "",
                "place": {"point": None, "text": ""}, "state": "new", "by": "",
                "called_112": False, "contact": "", "receipt": None, "button_id": None,
                "ref": ref, "expires": expires}

    first, update = item("a1", TS, None, TS + 10_000), item("a2", TS + 1, "a1", TS + 10_000)
    other = item("b1", TS + 2, "a2", TS + 10_000, origin="n2")  # another origin cannot replace
    rows = board([first, update, other], settings(tmp_path), "nl", TS + 5)
    assert [r["id"] for r in rows.open] == ["b1", "a2"]
    cancel = item("a3", TS + 3, "a2", TS + 3)  # expires <= ts: a cancel, itself not shown
    rows = board([first, update, cancel], settings(tmp_path), "nl", TS + 5)
    assert rows.open == [] and rows.closed == []
