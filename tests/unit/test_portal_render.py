"""The resident portal's pages, rendered without a server (pure).

What is checked: every page renders in Dutch and English with the context the
routes pass; hostile resident text (shared/data/reports.jsonl, "adversarial")
comes out escaped; no external assets; every inline <script>/<style> carries
the CSP nonce; size budgets for old phones on a slow hotspot.
"""

from __future__ import annotations

import doctest
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jinja2
import pytest
from markupsafe import Markup, escape

from node.portal import pictograms, render
from node.portal.i18n import LANGUAGE_NAMES, SUPPORTED, Catalogue
from node.portal.pictograms import NAMES, pictogram
from node.portal.render import TEMPLATES, Renderer
from sync.bodies import CATEGORIES, MAX_PLACE_TEXT, MAX_REPORT_TEXT, MAX_TITLE
from sync.text import clean_text

pytestmark = pytest.mark.timeout(60)

REPORTS = Path(__file__).resolve().parents[3] / "shared" / "data" / "reports.jsonl"
NONCE = "n0Nce-Test_123"
KB = 1024
PAGE_BUDGET = 30 * KB
HOME_20_BUDGET = 100 * KB
CSS_BUDGET = 6 * KB
STATES = ("received", "in_progress", "handled", "reopened", "forwarded")
LIMITS = {"text": MAX_REPORT_TEXT, "place": MAX_PLACE_TEXT, "contact": 200}
POINTS = [{"id": "klimboom", "name": "Speeltuin De Klimboom"},
          {"id": "hinkelbaan", "name": "Pleintje De Hinkelbaan"}]


def _reports() -> list[dict[str, Any]]:
    if REPORTS.exists():
        return [json.loads(line) for line in REPORTS.read_text("utf-8").splitlines() if line]
    # Outside the project workspace: a few of the same hostile lines.
    return [
        {"category": "nuisance", "text": "<script>alert(1)</script> weer hangjongeren",
         "place": "Speeltuin De Klimboom", "called_112": False, "adversarial": True},
        {"category": "suspicious", "text": "man \"><img src=x onerror=alert(document.cookie)>",
         "place": "Pleintje<svg onload=alert(2)>", "called_112": False, "adversarial": True},
        {"category": "nuisance", "text": "{{7*7}} ${jndi:ldap://example.org/a}",
         "place": "Hangarstraat", "called_112": False, "adversarial": True},
        {"category": "social", "text": "zorgen om de buurvrouw", "place": "Astrolabiumlaan",
         "called_112": False},
    ]


ALL = _reports()
HOSTILE = [r for r in ALL if r.get("adversarial")]
NORMAL = [r for r in ALL if not r.get("adversarial")]


def alert(i: int = 1, **overrides: Any) -> dict[str, Any]:
    """An AlertView as the routes build it."""
    view: dict[str, Any] = {
        "id": f"0193a0b2-0000-7000-8000-{i:012d}", "source": "team", "category": "suspicious",
        "severity": "moderate", "title": "Verdachte auto", "text": "Rijdt al een uur rond.",
        "place": "Speeltuin De Klimboom", "time": "22:31", "date": "28 nov",
        "verified": True, "called_112": False,
    }
    view.update(overrides)
    return view


def from_report(i: int, row: dict[str, Any], *, clean: bool) -> dict[str, Any]:
    """An unverified resident warning made from a reports.jsonl line."""
    def c(s: str, multiline: bool = True) -> str:
        return clean_text(s, multiline=multiline) if clean else s
    return alert(i, source="resident", verified=False, category=row["category"],
                 title=c(row["text"][:MAX_TITLE], False), text=c(row["text"]),
                 place=c(row["place"], False), called_112=row["called_112"])


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(Catalogue.load(strict=True))


def base(lang: str = "nl", path: str = "/") -> dict[str, Any]:
    return {
        "node": {"display_name": "Buurthuis De Kleine Wereld", "area": "Moerwijk"},
        "csp_nonce": NONCE,
        "lang_links": [{"code": c, "label": LANGUAGE_NAMES[c], "url": f"{path}?lang={c}"}
                       for c in SUPPORTED],
    }


QR = Markup('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 21 21" width="180" '
            'height="180"><rect width="21" height="21" fill="#fff"/>'
            '<path d="M0 0h7v7h-7z" fill="#000"/></svg>')

# Each page with the context its route passes (node/portal/resident.py).
PAGES: dict[str, Callable[[], tuple[str, dict[str, Any]]]] = {
    "home": lambda: ("home.html", {"alerts": [alert(i) for i in range(3)],
                                   "stream_url": "/api/v1/stream?render=nl"}),
    "home-empty": lambda: ("home.html", {"alerts": [], "stream_url": "/s"}),
    "choose": lambda: ("report_choose.html", {}),
    "form": lambda: ("report_form.html", {
        "category": "nuisance", "emergency": False, "meeting_points": POINTS,
        "values": {}, "errors": {}, "limits": LIMITS, "csrf_token": "tok"}),
    "form-emergency-errors": lambda: ("report_form.html", {
        "category": "emergency", "emergency": True, "meeting_points": POINTS,
        "values": {"text": "brand", "audience": "authorities", "called_112": "yes"},
        "errors": {"text": "te lang", "form": "verlopen"}, "limits": LIMITS,
        "csrf_token": "tok"}),
    "receipt": lambda: ("receipt.html", {"receipt": "K7F-3QX", "qr_svg": QR,
                                         "status_url": "/status?receipt=K7F-3QX",
                                         "shown_to_neighbours": True}),
    "status-empty": lambda: ("status.html", {"receipt": None, "report": None,
                                             "not_found": False}),
    "status-found": lambda: ("status.html", {
        "receipt": "K7F-3QX", "not_found": False,
        "report": {"receipt": "K7F-3QX", "category": "nuisance", "state": "in_progress",
                   "time": "22:31", "date": "28 nov"}}),
    "status-not-found": lambda: ("status.html", {"receipt": "ABC-DEF", "report": None,
                                                 "not_found": True}),
    "error": lambda: ("error.html", {"status_code": 404, "message": "Bestaat niet."}),
}


def page(renderer: Renderer, name: str, lang: str = "nl") -> str:
    template, context = PAGES[name]()
    return renderer.render(template, lang=lang, **base(lang), **context)


class Audit(HTMLParser):
    """Collects what a page would make a browser do, and checks nesting."""

    VOID = frozenset({"meta", "input", "br", "link", "img", "hr", "source", "wbr"})
    BLOCK = frozenset({"div", "ul", "ol", "p", "h1", "h2", "h3", "form", "fieldset", "li",
                       "section", "header", "footer", "nav", "main"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.inline: dict[str, list[str]] = {"script": [], "style": []}
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in self.BLOCK and "p" in self.stack:
            self.problems.append(f"<{tag}> inside <p>")
        if tag in self.inline:
            self._in = tag
            self.inline[tag].append("")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        self._in = None
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes <{self.stack[-1] if self.stack else '-'}>")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self._in:
            self.inline[self._in][-1] += data


def audit(html: str) -> Audit:
    a = Audit()
    a.feed(html)
    a.close()
    return a


# --- every page -----------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["nl", "en"])
@pytest.mark.parametrize("name", sorted(PAGES))
def test_page_renders_and_keeps_the_rules(renderer: Renderer, name: str, lang: str) -> None:
    html = page(renderer, name, lang)
    assert html.lstrip().startswith("<!doctype html>")
    assert f'<html lang="{lang}" dir="ltr">' in html
    assert len(html.encode()) < PAGE_BUDGET, f"{name}: {len(html.encode())} bytes"
    a = audit(html)
    assert a.problems == [] and a.stack == [], (a.problems, a.stack)
    for tag, attrs in a.tags:
        # CSP: inline script/style only with the nonce; no inline handlers or styles.
        if tag in ("script", "style"):
            assert attrs.get("nonce") == NONCE, f"<{tag}> without nonce"
            assert "src" not in attrs
        assert not [k for k in attrs if k.startswith("on")], (tag, attrs)
        assert "style" not in attrs, (tag, attrs)
        # No external assets at all: no stylesheets, images, frames, fonts.
        assert tag not in ("link", "img", "iframe", "object", "embed", "base"), tag
        for key in ("href", "src", "action", "xlink:href"):
            value = (attrs.get(key) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//", "javascript:", "data:")), (
                tag, key, value)
    assert "@import" not in html and "url(" not in html
    # Danger line, nav and language links on every page.
    assert 'href="tel:112"' in html and 'data-testid="call-112"' in html
    footer = "Bij direct gevaar:" if lang == "nl" else "In immediate danger:"
    assert footer in html
    for path in ('href="/"', 'href="/report"', 'href="/status"'):
        assert path in html
    assert html.count('hreflang="') == len(SUPPORTED)
    assert f'hreflang="{lang}" dir="auto" aria-current="true"' in html


def test_inline_css_budget(renderer: Renderer) -> None:
    styles = audit(page(renderer, "choose")).inline["style"]
    assert len(styles) == 1
    assert len(styles[0].encode()) < CSS_BUDGET
    # Android 5's Chrome: flexbox yes, but no gap in flex, no grid, no custom properties.
    assert "grid" not in styles[0] and "gap:" not in styles[0] and "var(" not in styles[0]


def test_every_page_template_extends_base() -> None:
    names = sorted(p.name for p in TEMPLATES.glob("*.html"))
    assert {"base.html", "_alert.html", "home.html", "report_choose.html", "report_form.html",
            "receipt.html", "status.html", "error.html"} <= set(names)
    for name in names:
        if name == "base.html" or name.startswith("_"):
            continue
        text = (TEMPLATES / name).read_text("utf-8")
        assert text.startswith('{% extends "base.html" %}'), name


def test_every_inline_script_and_style_in_templates_has_the_nonce() -> None:
    for path in TEMPLATES.glob("*.html"):
        for tag in re.findall(r"<(?:script|style)\b[^>]*>", path.read_text("utf-8")):
            assert 'nonce="{{ csp_nonce }}"' in tag, (path.name, tag)


def test_missing_context_fails_loudly(renderer: Renderer) -> None:
    with pytest.raises(jinja2.UndefinedError):
        renderer.render("home.html", lang="nl", **base())


def test_renderer_sets_t_lang_dir_itself(renderer: Renderer) -> None:
    with pytest.raises(TypeError, match="dir"):
        renderer.render("error.html", lang="nl", **{"dir": "rtl"},
                        **base(), status_code=500, message="x")


def test_unsupported_language_renders_dutch(renderer: Renderer) -> None:
    html = renderer.render("error.html", lang="de", **base(), status_code=500, message="x")
    assert '<html lang="nl" dir="ltr">' in html and "Er ging iets mis" in html


def test_arabic_pages_are_right_to_left(renderer: Renderer) -> None:
    html = page(renderer, "home", "ar")
    assert '<html lang="ar" dir="rtl">' in html
    assert "التنبيهات في الحي" in html
    # Resident text decides its own direction.
    assert html.count('dir="auto"') >= 3 * 3


def test_the_current_tab_is_marked(renderer: Renderer) -> None:
    expected = {"home": "nav-home", "choose": "nav-report", "form": "nav-report",
                "receipt": "nav-report", "status-empty": "nav-status"}
    for name, testid in expected.items():
        html = page(renderer, name)
        assert re.search(rf'aria-current="page" data-testid="{testid}"', html), name
        assert html.count('aria-current="page"') == 1
    assert 'aria-current="page"' not in page(renderer, "error")


# --- home and alerts -------------------------------------------------------------------


def test_home_lists_alerts_with_the_live_script(renderer: Renderer) -> None:
    html = page(renderer, "home")
    a = audit(html)
    items = [attrs for tag, attrs in a.tags if attrs.get("data-testid") == "alert"]
    assert [i["id"] for i in items] == [f"alert-{alert(i)['id']}" for i in range(3)]
    assert 'data-stream="/api/v1/stream?render=nl"' in html
    assert 'id="empty" class="card empty" data-testid="empty" hidden' in html
    # Without JavaScript: a refresh link; the live mark only appears when connected.
    assert re.search(r'<a id="refresh"[^>]* href=""', html)
    assert re.search(r'<p id="live"[^>]* hidden>', html)
    (script,) = a.inline["script"]
    assert "new EventSource(" in script and 'addEventListener("alert"' in script
    assert '"alert-" + data.id' in script and "getElementById" in script
    # ES5 only: old Android browsers.
    for modern in ("=>", "`", "let ", "const ", "fetch(", "async "):
        assert modern not in script, modern


def test_home_empty_state(renderer: Renderer) -> None:
    html = page(renderer, "home-empty")
    assert "Er zijn nu geen meldingen." in html
    assert 'data-testid="empty">' in html
    assert 'data-testid="alert"' not in html
    assert '<ul id="alerts"' in html  # live updates need the list


def test_live_item_is_the_same_markup_as_the_home_list_item(renderer: Renderer) -> None:
    view = alert(7, verified=False, called_112=True, severity="extreme")
    for lang in ("nl", "en", "ar"):
        item = renderer.render_alert_item(view, lang)
        home = renderer.render("home.html", lang=lang, **base(lang), alerts=[view],
                               stream_url="/s")
        assert item.startswith(f'<li id="alert-{view["id"]}" data-testid="alert"')
        assert item.rstrip().endswith("</li>")
        assert item in home


def test_alert_marks_verified_and_112(renderer: Renderer) -> None:
    team = renderer.render_alert_item(alert(1, verified=True), "nl")
    assert 'data-testid="verified"' in team and "Gecontroleerd" in team
    assert "not-verified" not in team and " unv" not in team
    assert "112 is al gebeld" not in team

    resident = renderer.render_alert_item(alert(2, verified=False, called_112=True), "nl")
    assert 'data-testid="not-verified"' in resident and "Niet gecontroleerd" in resident
    assert 'data-testid="called-112"' in resident and "112 is al gebeld" in resident

    en = renderer.render_alert_item(alert(3, verified=False, called_112=True), "en")
    assert "Not verified" in en and "112 has been called" in en


@pytest.mark.parametrize("source", ["resident", "team", "button", "central", "integration"])
def test_alert_names_its_source(renderer: Renderer, source: str) -> None:
    cat = Catalogue.load(strict=True)
    html = renderer.render_alert_item(alert(source=source), "nl")
    assert str(escape(cat.translator("nl")(f"source.{source}"))) in html


@pytest.mark.parametrize("category", [*CATEGORIES, "other"])
def test_alert_shows_its_category_pictogram(renderer: Renderer, category: str) -> None:
    html = renderer.render_alert_item(alert(category=category, title=""), "nl")
    assert f'class="pg pg-{category}"' in html
    name = Catalogue.load().translator("nl")(f"category.{category}")
    assert f"<h2 dir=\"auto\">{name}</h2>" in html  # no title: the category names it


def test_alert_with_unknown_values_still_renders(renderer: Renderer) -> None:
    html = renderer.render_alert_item(
        alert(category="weird", source="alien", severity="apocalyptic", place="", text=""),
        "nl")
    assert "pg-other" in html and "Automatisch bericht" in html and "sev-moderate" in html
    assert "apocalyptic" not in html and "alien" not in html


def test_severe_alerts_say_so(renderer: Renderer) -> None:
    assert "Heel ernstig" in renderer.render_alert_item(alert(severity="extreme"), "nl")
    assert "Ernstig" in renderer.render_alert_item(alert(severity="severe"), "nl")
    assert "sevb" not in renderer.render_alert_item(alert(severity="minor"), "nl")


def test_alert_id_is_escaped_in_its_attribute(renderer: Renderer) -> None:
    html = renderer.render_alert_item(alert(id='x" onclick="alert(1)'), "nl")
    assert 'id="alert-x&#34; onclick=&#34;alert(1)"' in html
    assert not [k for _, attrs in audit(html).tags for k in attrs if k.startswith("on")]


@pytest.mark.parametrize("clean", [False, True], ids=["raw", "cleaned"])
def test_hostile_resident_text_is_escaped(renderer: Renderer, clean: bool) -> None:
    assert HOSTILE, "reports.jsonl has adversarial entries"
    views = [from_report(i, row, clean=clean) for i, row in enumerate(HOSTILE)]
    html = renderer.render("home.html", lang="nl", **base(), alerts=views, stream_url="/s")
    a = audit(html)
    assert a.problems == [] and a.stack == []
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert len(a.inline["script"]) == 1  # only our own, with the nonce
    allowed = {"html", "head", "meta", "title", "style", "body", "header", "div", "a", "span",
               "nav", "ul", "li", "main", "h1", "h2", "p", "b", "footer", "script", "svg",
               "path", "circle", "rect"}
    assert {tag for tag, _ in a.tags} <= allowed
    for tag, attrs in a.tags:
        assert not [k for k in attrs if k.startswith("on")], (tag, attrs)
        assert not (attrs.get("href") or "").lower().startswith("javascript:")
    for view in views:
        for field in ("title", "text", "place"):
            assert str(escape(view[field])) in html
    # Text is data, never a template.
    assert "{{7*7}}" in html and ">49<" not in html


def test_home_with_20_alerts_stays_small(renderer: Renderer) -> None:
    biggest = [alert(i, title="T" * MAX_TITLE, text=("lang woord " * 100)[:MAX_REPORT_TEXT],
                     place="P" * MAX_PLACE_TEXT, verified=False, called_112=True,
                     severity="extreme") for i in range(20)]
    html = renderer.render("home.html", lang="nl", **base(), alerts=biggest, stream_url="/s")
    assert len(html.encode()) < HOME_20_BUDGET
    realistic = [from_report(i, row, clean=True) for i, row in enumerate(NORMAL[:20])]
    html = renderer.render("home.html", lang="nl", **base(), alerts=realistic, stream_url="/s")
    assert html.count('data-testid="alert"') == len(realistic)
    assert len(html.encode()) < HOME_20_BUDGET // 2


# --- reporting -------------------------------------------------------------------------


def test_choose_page_has_four_big_tiles(renderer: Renderer) -> None:
    html = page(renderer, "choose")
    for c in CATEGORIES:
        assert re.search(rf'href="/report\?category={c}" data-testid="category-{c}"', html)
        assert f"pg-{c}" in html
    assert 'class="tile red" href="/report?category=emergency"' in html
    assert len(re.findall(r'class="tile(?: red)?"', html)) == 4
    for word in ("Overlast", "Verdacht", "Zorgen om iemand", "Noodgeval"):
        assert word in html


def test_report_form_fields(renderer: Renderer) -> None:
    html = page(renderer, "form")
    a = audit(html)
    (form,) = [attrs for tag, attrs in a.tags if tag == "form"]
    assert form["method"] == "post" and form["action"] == "/report"
    fields = {(attrs.get("name"), attrs.get("value") if attrs.get("type") in
               ("radio", "hidden") else None): (tag, attrs)
              for tag, attrs in a.tags if tag in ("input", "textarea", "select")}
    assert set(fields) == {
        ("category", "nuisance"), ("lang", "nl"), ("csrf", "tok"), ("text", None),
        ("place_point", None), ("place_text", None), ("audience", "neighbours"),
        ("audience", "authorities"), ("audience", "both"), ("called_112", "no"),
        ("called_112", "yes"), ("called_112_by", None), ("contact", None)}
    for (name, value), (_tag, attrs) in fields.items():
        assert attrs["data-testid"] == (f"{name}-{value}" if attrs.get("type") == "radio"
                                        else name)
    assert fields[("text", None)][1]["maxlength"] == "1000"
    assert fields[("place_text", None)][1]["maxlength"] == "200"
    assert fields[("contact", None)][1]["maxlength"] == "200"
    assert "checked" in fields[("audience", "both")][1]
    assert "checked" in fields[("called_112", "no")][1]
    assert 'data-testid="submit"' in html
    # Meeting points, plus "no choice" and "somewhere else": both send no point, so the
    # route never sees a value that is not a meeting-point id.
    options = [attrs.get("value") for tag, attrs in a.tags if tag == "option"]
    assert options == ["", "klimboom", "hinkelbaan", ""]
    assert "Ergens anders" in html
    # The contact note: never shown to neighbours.
    assert "De buren zien dit nooit." in html
    assert "Bel eerst 112" not in html


def test_emergency_form_says_call_112_first(renderer: Renderer) -> None:
    html = page(renderer, "form-emergency-errors")
    box = html.index('data-testid="call-112-first"')
    assert box < html.index("<form")
    assert "Bel eerst 112" in html
    assert re.search(r'href="tel:112" data-testid="emergency-call-112"', html)
    assert 'class="btn red" data-testid="submit"' in html


def test_form_keeps_input_and_shows_errors(renderer: Renderer) -> None:
    hostile = '"><script>alert(1)</script>'
    html = renderer.render(
        "report_form.html", lang="en", **base("en"), category="suspicious", emergency=False,
        meeting_points=POINTS, limits=LIMITS, csrf_token='t"k',
        values={"text": hostile, "place_point": "hinkelbaan", "place_text": hostile,
                "audience": "neighbours", "called_112": "yes", "called_112_by": "me",
                "contact": hostile},
        errors={"text": "Too long <b>", "contact": "Bad", "form": "Form expired"})
    a = audit(html)
    assert a.problems == []
    assert "<script>alert" not in html and html.count("&lt;script&gt;alert(1)") == 3
    assert 'value="t&#34;k"' in html
    selected = [attrs["value"] for tag, attrs in a.tags if tag == "option" and "selected" in attrs]
    assert selected == ["hinkelbaan"]
    checked = {attrs["name"]: attrs["value"] for tag, attrs in a.tags if "checked" in attrs}
    assert checked == {"audience": "neighbours", "called_112": "yes"}
    assert 'data-testid="errors"' in html and "Look at the red boxes" in html
    assert 'id="err-text" data-testid="error-text">Too long &lt;b&gt;' in html
    assert 'aria-invalid="true" aria-describedby="err-text"' in html
    assert 'aria-describedby="contact-note err-contact"' in html
    assert 'data-testid="error-form">Form expired' in html  # no field of its own


def test_form_with_an_unknown_category_still_renders(renderer: Renderer) -> None:
    html = renderer.render("report_form.html", lang="nl", **base(), category="zzz",
                           emergency=False, meeting_points=[], values={}, errors={},
                           limits=LIMITS, csrf_token="x")
    assert "pg-other" in html


# --- receipt, status, error ------------------------------------------------------------


def test_receipt_shows_the_code_big_with_qr(renderer: Renderer) -> None:
    html = page(renderer, "receipt")
    assert 'class="code" dir="ltr" data-testid="receipt">K7F-3QX</p>' in html
    assert str(QR) in html
    assert 'href="/status?receipt=K7F-3QX"' in html
    assert "Schrijf deze code op of maak een foto van het scherm." in html
    assert "De buren zien een waarschuwing." in html
    private = renderer.render("receipt.html", lang="nl", **base(), receipt="K7F-3QX",
                              qr_svg=QR, status_url="/s", shown_to_neighbours=False)
    assert "Alleen het team en politie of gemeente zien uw melding." in private


def test_receipt_qr_must_be_markup(renderer: Renderer) -> None:
    html = renderer.render("receipt.html", lang="nl", **base(), receipt="K7F-3QX",
                           qr_svg="<svg onload=alert(1)>", status_url="/s",
                           shown_to_neighbours=True)
    assert "<svg onload" not in html and "&lt;svg onload=alert(1)&gt;" in html


@pytest.mark.parametrize("lang", ["nl", "en"])
@pytest.mark.parametrize("state", STATES)
def test_status_shows_each_state(renderer: Renderer, state: str, lang: str) -> None:
    t = Catalogue.load(strict=True).translator(lang)
    html = renderer.render("status.html", lang=lang, **base(lang), receipt="K7F-3QX",
                           not_found=False, report={"receipt": "K7F-3QX", "category": "social",
                                                    "state": state, "time": "22:31",
                                                    "date": "28 nov", "ts": 0})
    assert f'data-testid="status-state">{t("state." + state)}</p>' in html
    assert str(escape(t("state_help." + state))) in html
    done = html.count('<li class="done">')
    assert done == {"received": 1, "handled": 3}.get(state, 2)


def test_status_lookup_form_and_not_found(renderer: Renderer) -> None:
    html = page(renderer, "status-not-found")
    assert 'data-testid="status-not-found"' in html
    assert "Deze code kennen wij niet." in html
    form = next(attrs for tag, attrs in audit(html).tags if tag == "form")
    assert form["method"] == "get" and form["action"] == "/status"
    assert re.search(r'name="receipt" value="ABC-DEF"', html)
    empty = page(renderer, "status-empty")
    assert 'name="receipt" value=""' in empty and "status-not-found" not in empty
    hostile = renderer.render("status.html", lang="nl", **base(), receipt='"><b>x',
                              report=None, not_found=True)
    assert 'value="&#34;&gt;&lt;b&gt;x"' in hostile


def test_error_page(renderer: Renderer) -> None:
    html = renderer.render("error.html", lang="en", **base("en"), status_code=500,
                           message="<script>alert(1)</script>")
    assert "Something went wrong" in html and "Error code 500" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html


# --- pictograms ------------------------------------------------------------------------


def test_every_category_has_a_pictogram() -> None:
    assert {*CATEGORIES, "other", "alert", "place", "clock", "check", "warning",
            "phone"} <= NAMES


@pytest.mark.parametrize("name", sorted(NAMES))
def test_pictogram_is_small_accessible_inline_svg(name: str) -> None:
    svg = pictogram(name, 'Label "quoted" <b>')
    assert isinstance(svg, Markup)
    assert len(str(svg).encode()) < 600
    root = ET.fromstring(str(svg))  # well-formed
    assert root.tag == "svg"
    assert root.get("viewBox") == "0 0 64 64"
    assert root.get("fill") == "currentColor"
    assert root.get("role") == "img"
    assert root.get("aria-label") == 'Label "quoted" <b>'
    assert "&#34;quoted&#34; &lt;b&gt;" in str(svg)
    for element in root.iter():
        assert element.get("stroke") in (None, "currentColor")
        assert element.get("fill") in (None, "none", "currentColor")
        assert element.get("style") is None


def test_pictogram_without_label_is_decoration() -> None:
    svg = str(pictogram("clock"))
    assert 'aria-hidden="true"' in svg and "role=" not in svg


def test_unknown_pictogram() -> None:
    with pytest.raises(KeyError):
        pictogram("unicorn", "x")


def test_module_examples() -> None:
    assert doctest.testmod(pictograms).failed == 0
    assert doctest.testmod(render).failed == 0
