"""The team pages' templates, rendered without a server (pure).

Same rules as the resident pages: CSP nonces on inline script/style, no
inline handlers or style attributes, no external assets, escaped text,
well-nested HTML, size budgets for a phone on a slow hotspot.
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import pytest

from node.config import NodeSettings
from node.portal.i18n import LANGUAGE_NAMES, SUPPORTED, Catalogue
from node.portal.render import Renderer
from node.team.forms import DEFAULT_HOURS, EXPIRY_CHOICES
from node.team.views import board
from sync.bodies import MAX_NOTE, MAX_REPORT_TEXT, MAX_TITLE, SEVERITIES

pytestmark = pytest.mark.timeout(60)

NONCE = "n0Nce-Test_123"
KB = 1024
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>{{7*7}}'
SETTINGS = NodeSettings(name="n1", area="ESC-01")


def item(n: int, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": f"0193a0b2-0000-7000-8000-{n:012d}", "kind": "report", "ts": 1_800_000_000_000 + n,
        "source": "resident", "category": "nuisance", "severity": "moderate", "title": "",
        "text": f"Lawaai {n}", "place": {"point": None, "text": "Tolstraat"}, "state": "new",
        "by": "", "called_112": False, "contact": "06-12345678", "receipt": "K7F-3QX",
        "button_id": None, "ref": None}
    base.update(over)
    return base


ITEMS = [item(1, kind="alert", source="button", category="emergency", severity="extreme",
              button_id="klimboom", contact="", receipt=None),
         item(2, state="on_my_way", by="Fatma", called_112=True),
         item(3, text=HOSTILE, contact=HOSTILE, place={"point": None, "text": HOSTILE}),
         item(4, kind="alert", source="resident", text=HOSTILE, title=HOSTILE),
         item(5, state="resolved", by="Piet")]


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(Catalogue.load(strict=True))


def common(lang: str) -> dict[str, Any]:
    return {"node": {"display_name": "Buurthuis De Boog", "area": "ESC-01"},
            "csp_nonce": NONCE,
            "lang_links": [{"code": c, "label": LANGUAGE_NAMES[c], "url": f"/team?lang={c}"}
                           for c in SUPPORTED]}


def dashboard(items: list[dict[str, Any]], lang: str = "nl", **over: Any) -> dict[str, Any]:
    rows = board(items, SETTINGS, lang, 0)
    context: dict[str, Any] = {
        "member": {"name": "Fatma"}, "rows": rows.open, "closed": rows.closed,
        "csrf_token": "tok", "errors": {}, "alert_values": {}, "row_values": {},
        "row_errors": {}, "severities": SEVERITIES, "expiry_choices": EXPIRY_CHOICES,
        "default_hours": DEFAULT_HOURS,
        "limits": {"title": MAX_TITLE, "text": MAX_REPORT_TEXT, "note": MAX_NOTE},
        "stream_url": "/team/stream"}
    context.update(over)
    return context


PAGES: dict[str, tuple[str, dict[str, Any]]] = {
    "login": ("team_login.html", {"values": {}, "error": None}),
    "login-error": ("team_login.html", {"values": {"name": HOSTILE}, "error": "Fout"}),
    "password-first": ("team_password.html", {"member": {"name": "Fatma", "must_change": True},
                                              "csrf_token": "tok", "error": None,
                                              "min_length": 10}),
    "password": ("team_password.html", {"member": {"name": "Fatma", "must_change": False},
                                        "csrf_token": "tok", "error": "Fout",
                                        "min_length": 10}),
    "dashboard": ("team_dashboard.html", dashboard(ITEMS)),
    "dashboard-empty": ("team_dashboard.html", dashboard([])),
    "dashboard-errors": ("team_dashboard.html", dashboard(
        ITEMS, errors={"form": "Verlopen", "note": HOSTILE, "title": "Te lang"},
        alert_values={"title": HOSTILE, "text": HOSTILE, "severity": "severe", "expires": "8"},
        row_values={ITEMS[1]["id"]: {"note": HOSTILE, "to": "police"}},
        row_errors={ITEMS[1]["id"]: "Kies politie of gemeente."})),
}


class Audit(HTMLParser):
    """Tags, inline script/style, and nesting problems of a page."""

    VOID = frozenset({"meta", "input", "br", "link", "img", "hr", "source", "wbr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes <{self.stack[-1] if self.stack else '-'}>")
            return
        self.stack.pop()


@pytest.mark.parametrize("lang", ["nl", "en", "ar"])
@pytest.mark.parametrize("name", sorted(PAGES))
def test_team_page_renders_and_keeps_the_rules(renderer: Renderer, name: str,
                                               lang: str) -> None:
    template, context = PAGES[name]
    html = renderer.render(template, lang=lang, **common(lang), **context)
    assert html.lstrip().startswith("<!doctype html>")
    assert len(html.encode()) < 60 * KB, len(html.encode())
    a = Audit()
    a.feed(html)
    a.close()
    assert a.problems == [] and a.stack == [], (a.problems, a.stack)
    for tag, attrs in a.tags:
        if tag in ("script", "style"):
            assert attrs.get("nonce") == NONCE and "src" not in attrs
        assert not [k for k in attrs if k.startswith("on")], (tag, attrs)
        assert "style" not in attrs and tag not in ("link", "img", "iframe", "object", "embed")
        for key in ("href", "src", "action"):
            value = (attrs.get(key) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//", "javascript:", "data:"))
        if tag == "form":
            assert attrs.get("method") == "post" and (attrs.get("action") or "").startswith(
                "/team/")
    assert HOSTILE not in html and "alert(1)</script>" not in html


def test_every_team_form_but_login_carries_the_csrf_token(renderer: Renderer) -> None:
    for name, (template, context) in PAGES.items():
        html = renderer.render(template, lang="nl", **common("nl"), **context)
        forms = html.split("<form")[1:]
        for form in forms:
            if 'action="/team/login"' in form.split(">", 1)[0]:
                assert 'name="csrf"' not in form
            else:
                assert '<input type="hidden" name="csrf" value="tok">' in form, (name, form[:80])


def test_dashboard_shows_alarms_first_in_red_with_big_buttons(renderer: Renderer) -> None:
    html = renderer.render("team_dashboard.html", lang="nl", **common("nl"), **dashboard(ITEMS))
    first = html.index('data-testid="row"')
    assert 'data-kind="alarm"' in html[first - 200:first + 200]
    assert "trow k-alarm" in html and "Alarm: noodknop" in html
    for label in ("Gezien", "Ik ga erheen", "Opgelost", "Escaleren"):
        assert f">{label}</" in html
    assert "Iemand gaat erheen" in html and "112 is al gebeld" in html
    assert 'data-testid="closed-row"' in html
    english = renderer.render("team_dashboard.html", lang="en", **common("en"),
                              **dashboard(ITEMS, lang="en"))
    for label in ("Seen", "On my way", "Resolved", "Escalate"):
        assert f">{label}</" in english


def test_dashboard_with_100_rows_stays_small(renderer: Renderer) -> None:
    items = [item(i, text="x" * 200) for i in range(100)]
    html = renderer.render("team_dashboard.html", lang="nl", **common("nl"), **dashboard(items))
    assert html.count('data-testid="row"') == 100
    assert len(html.encode()) < 500 * KB


def test_kept_words_come_back_escaped(renderer: Renderer) -> None:
    template, context = PAGES["dashboard-errors"]
    html = renderer.render(template, lang="nl", **common("nl"), **context)
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4
    assert "{{7*7}}" in html  # text, never evaluated as a template
    assert '<option value="police" selected>' in html
    assert '<option value="8" selected>' in html
    assert 'value="severe" checked' in html
    assert "Kies politie of gemeente." in html


def test_module_examples() -> None:
    import doctest

    from node.team import forms, views

    for module in (forms, views):
        assert doctest.testmod(module).failed == 0


def test_a_button_fault_is_shown_on_top(renderer: Renderer) -> None:
    faults = [{"button": "klimboom-hek", "place": "Speeltuin De Klimboom",
               "time": "22:31 · 28 nov"}]
    html = renderer.render("team_dashboard.html", lang="nl", **common("nl"), **dashboard(ITEMS),
                           faults=faults)
    assert 'data-testid="button-fault"' in html
    assert "Storing: noodknop klimboom-hek werkt niet" in html
    assert html.index('data-testid="button-fault"') < html.index('data-testid="row"')


def test_another_nodes_alarm_names_its_community_centre_and_meeting_point() -> None:
    """A panic alarm that came through the mesh: the row says where (the meeting
    point's name travels in the alarm) and at which community centre."""
    alarm = item(9, kind="alert", source="button", category="emergency", severity="extreme",
                 origin="escamp-zandloper", button_id="kompasplein-gevel", contact="",
                 receipt=None, place={"point": "kompasplein", "text": "Kompasplein"})
    names = {"escamp-zandloper": "Wijkcentrum De Zandloper"}
    row = board([alarm], SETTINGS, "nl", 0, names).open[0]
    assert row["node"] == "Wijkcentrum De Zandloper" and row["place"] == "Kompasplein"
    assert row["button"] == ""  # its button id means nothing here; the place names it
    assert board([alarm], SETTINGS, "nl", 0).open[0]["node"] == "escamp-zandloper"
    own = item(10, kind="alert", source="button", origin="n1", button_id="klimboom")
    assert board([own], SETTINGS, "nl", 0, names).open[0]["node"] == ""
