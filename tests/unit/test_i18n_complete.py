"""Five full languages: every message everywhere, every message used, no Dutch under another lang.

- Every language of the portal's catalogue has exactly the keys of ``[nl]``
  (nothing falls back to Dutch), with the same placeholders.
- Every key of the portal's catalogue (node/portal/locale/*/LC_MESSAGES/messages.po)
  and of central's (central/locale/, nl and en only) is used by a template or
  the code, and every key used is defined. Babel's own extraction (babel.cfg)
  finds no key that the templates (messages.pot) lack. Keys built at run time
  (``t("category." ~ cat)``, ``f"error.field.{field}"``) are families: each
  family the code builds is listed here with its members, taken from the
  code's own constants where it has them.
- Real pages, rendered in Turkish, Arabic, Polish and English (the routes of a
  real app where they work without a running node; the templates with the
  context the routes build otherwise) carry their ``lang`` (Arabic ``dir="rtl"``)
  and show no Dutch message of the catalogue.
"""

from __future__ import annotations

import ast
import asyncio
import html
import re
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from central import alarms as central_alarms
from central import broadcasts as central_broadcasts
from central import handling as central_handling
from central.pages import MESSAGES as CENTRAL_LOCALE
from central.pages import load_catalogue, load_messages
from central.staff.accounts import ROLES
from node.config import NodeSettings
from node.portal.app import create_app, create_asgi
from node.portal.captive import CaptivePortal
from node.portal.errorpages import MESSAGES as ERROR_MESSAGES
from node.portal.i18n import DEFAULT_PATH as NODE_LOCALE
from node.portal.i18n import (
    LANGUAGE_NAMES,
    SUPPORTED,
    Catalogue,
    cldr_plural_forms,
    placeholders,
)
from node.portal.render import Renderer
from node.runtime import NodeRuntime
from node.setup import init_node
from node.team import views as team_views
from node.team.forms import DEFAULT_HOURS, EXPIRY_CHOICES
from sync.bodies import (
    ALERT_SOURCES,
    AUDIENCES,
    CATEGORIES,
    MAX_NOTE,
    MAX_PLACE_TEXT,
    MAX_REPORT_TEXT,
    MAX_TITLE,
    SEVERITIES,
)

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
NODE_TEMPLATES = ROOT / "node" / "portal" / "templates"
CENTRAL_TEMPLATES = ROOT / "central" / "templates"
OTHERS = tuple(lang for lang in SUPPORTED if lang != "nl")

# --- 1. every key in every language ---------------------------------------------------------


@pytest.fixture(scope="module")
def cat() -> Catalogue:
    return Catalogue.load(strict=True)


@pytest.mark.parametrize("lang", OTHERS)
def test_every_language_has_exactly_the_dutch_keys(cat: Catalogue, lang: str) -> None:
    nl, own = set(cat.messages("nl")), set(cat.messages(lang))
    assert sorted(nl - own) == [], f"[{lang}] lacks these (they would show Dutch)"
    assert sorted(own - nl) == [], f"[{lang}] has keys that [nl] does not have"


@pytest.mark.parametrize("lang", OTHERS)
def test_every_translation_has_the_dutch_placeholders(cat: Catalogue, lang: str) -> None:
    nl = cat.messages("nl")
    differ = {key: (sorted(placeholders(nl[key])), sorted(placeholders(text)))
              for key, text in cat.messages(lang).items()
              if placeholders(text) != placeholders(nl[key])}
    assert differ == {}


@pytest.mark.parametrize("lang", OTHERS)
def test_every_translation_has_the_dutch_plural_messages(cat: Catalogue, lang: str) -> None:
    nl, own = cat.plurals("nl"), cat.plurals(lang)
    assert set(own) == set(nl)
    nplurals, _ = cldr_plural_forms(lang)
    for key, forms in own.items():
        assert len(forms) == nplurals, key
        for form in forms:  # a form may leave out the number ("one member")
            assert placeholders(form) <= placeholders(nl[key][-1]), (key, form)


def test_central_has_dutch_and_english_only_with_the_same_keys() -> None:
    folders = sorted(p.name for p in CENTRAL_LOCALE.iterdir() if p.is_dir())
    assert folders == ["en", "nl"]
    assert (CENTRAL_LOCALE / "messages.pot").is_file()
    messages = load_messages()
    assert list(messages) == ["nl", "en"]
    assert set(messages["nl"]) == set(messages["en"])
    for lang in ("nl", "en"):
        with (CENTRAL_LOCALE / lang / "LC_MESSAGES" / "messages.po").open("rb") as fh:
            catalog = read_po(fh)
        assert str(catalog.locale) == lang
        assert (catalog.num_plurals, catalog.plural_expr) == cldr_plural_forms(lang)
    with (CENTRAL_LOCALE / "messages.pot").open("rb") as fh:
        pot = [m.id for m in read_po(fh) if m.id]
    with (CENTRAL_LOCALE / "nl" / "LC_MESSAGES" / "messages.po").open("rb") as fh:
        assert pot == [m.id for m in read_po(fh) if m.id]


@pytest.mark.parametrize("lang", ["nl", "en"])
def test_central_plural_forms_follow_the_count(lang: str) -> None:
    from central.pages import Renderer

    catalogue, _ = load_catalogue()
    forms = catalogue[lang]["nodes.alarm"]
    assert isinstance(forms, tuple) and len(forms) == 2
    t = Renderer().translator(lang)
    expected = {"nl": {1: "Alarm: 1 buurtcomputer stil:", 2: "Alarm: 2 buurtcomputers stil:",
                       0: "Alarm: 0 buurtcomputers stil:"},
                "en": {1: "Alarm: 1 node silent:", 2: "Alarm: 2 nodes silent:",
                       0: "Alarm: 0 nodes silent:"}}[lang]
    assert {n: t("nodes.alarm", count=n) for n in expected} == expected
    assert {n: t.n("nodes.alarm", n) for n in expected} == expected


@pytest.mark.parametrize("lang", SUPPORTED)
def test_a_count_shown_after_the_sentence_stays_last(cat: Catalogue, lang: str) -> None:
    """demo.html prints ``t("team.watchers", count="")`` and then the number itself."""
    assert cat.translator(lang)("team.watchers", count="X").endswith("X")


def test_arabic_has_no_latin_words_besides_names_codes_and_examples(cat: Catalogue) -> None:
    # Latin script only for the product's name and what a resident types or reads
    # as it is: codes and Dutch street names in examples.
    allowed = {"Bart", "QR", "Tolstraat", "Vliegerstraat", "K7F-3QX", "KQ7P-3MFA-X9TD-H2WE"}
    found = {}
    texts = [*cat.messages("ar").items(),
             *((key, form) for key, forms in cat.plurals("ar").items() for form in forms)]
    for key, text in texts:
        tokens = re.findall(r"[A-Za-z0-9][A-Za-z0-9-]*", re.sub(r"\{\w+\}", "", text))
        latin = {w for w in tokens if len(re.findall("[A-Za-z]", w)) >= 2} - allowed
        if latin:
            found[key] = latin
    assert found == {}


# --- 2. every key used, every key used defined ----------------------------------------------

KEY = re.compile(r"^[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+$")
# t("key") / t('key') in a template, with or without keyword arguments.
TPL_KEY = re.compile(r"""\bt\(\s*(["'])([^"'~]+?)\1\s*[,)]""")
# t("prefix." ~ value): a family of keys.
TPL_FAMILY = re.compile(r"""\bt\(\s*(["'])([^"']*)\1\s*~""")
TPL_CALL = re.compile(r"\bt\(")
# The names under which the code calls a translator.
KEY_FUNCTIONS = frozenset({"t", "_t", "tr", "translate"})

STATES_RESIDENT = ("received", "in_progress", "handled", "reopened", "forwarded")
REPORT_FIELDS = ("category", "text", "place", "place_point", "place_text", "report",
                 "audience", "called_112", "called_112_by", "contact", "lang")
TEAM_FIELDS = ("ref", "action", "to", "note", "title", "text", "severity", "expires")

#: Keys the portal builds at run time: pattern (``*`` is the value) -> the values.
NODE_FAMILIES: Mapping[str, tuple[str, ...]] = {
    "category.*": (*CATEGORIES, "other"),
    "category_hint.*": CATEGORIES,
    "source.*": ALERT_SOURCES,
    "severity.*": SEVERITIES,
    "state.*": STATES_RESIDENT,
    "state_help.*": STATES_RESIDENT,
    "receipt.audience.*": AUDIENCES,
    "report.audience.*": AUDIENCES,
    "report.called_112.*": ("no", "yes"),
    "error.field.*": REPORT_FIELDS,
    "team.error.field.*": TEAM_FIELDS,
    "team.kind.*": ("alarm", "alert", "report"),
    "team.state.*": team_views.STATES,
    "team.action.*": team_views.ACK_ACTIONS,
    "team.escalate.*": team_views.ESCALATE_TO,
    "team.desk.*": team_views.DESK_NAMES,
    "team.desk_state.*": team_views.DESK_ANSWERS,
    "demo.device.*": ("hub", "point"),
    "demo.mesh.*": ("connected", "cut", "waiting"),
}
#: The same for central's staff pages.
CENTRAL_FAMILIES: Mapping[str, tuple[str, ...]] = {
    "category.*": central_broadcasts.BROADCAST_CATEGORIES,
    "severity.*": SEVERITIES,
    "audience.*": AUDIENCES,
    "state.*": central_handling.STATES,
    "action.*": ("in_progress", "handled", "reopened"),
    "route.*": ("police", "municipality"),
    "role.*": ROLES,
    "accounts.issued_*": ("new", "reset"),
    "alarm.kind_*": central_alarms.KINDS,
    "alarm.state_*": central_alarms.STATES,
    "alarm.team_*": central_alarms.TEAM_STATES,
    "alarm.answer_*": ("seen", "on_my_way", "resolved"),
    "broadcast.kind.*": central_broadcasts.KINDS,
    "broadcast.replaced_*": central_broadcasts.KINDS,
    "broadcast.error.*": ("title", "text", "areas", "severity", "category", "hours", "ref",
                          "reason"),
    "insight.*_chart": ("answer", "handled"),
    "insight.*_desc": ("answer", "handled"),
    "lang.*": ("en", "tr", "ar", "pl", "nl"),  # report.html: a resident's language
}
#: Families the scanner cannot see: central/staff/web.py done_text() looks up
#: "done." + the ?done= word that redirect(url, word) put in the address.
CENTRAL_HIDDEN: Mapping[str, tuple[str, ...]] = {
    "done.*": ("password", "take", "state", "rerouted", "note", "reply", "broadcast",
               "updated", "cancelled", "account_removed", "alarm_answered"),
}


class Uses:
    """What a set of templates and Python modules ask of a catalogue."""

    def __init__(self) -> None:
        self.keys: dict[str, set[str]] = {}       # key -> where
        self.families: dict[str, set[str]] = {}   # pattern -> where
        self.constants: set[str] = set()          # every string constant in the code
        self.redirect_words: set[str] = set()     # redirect(url, "word")

    def key(self, key: str, where: str) -> None:
        self.keys.setdefault(key, set()).add(where)

    def family(self, pattern: str, where: str) -> None:
        self.families.setdefault(pattern, set()).add(where)


def _name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    return func.attr if isinstance(func, ast.Attribute) else None


def _results(expr: ast.expr) -> Iterable[str]:
    """The strings an expression can give: "a", or "a" if ... else "b"."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        yield expr.value
    elif isinstance(expr, ast.IfExp):
        yield from _results(expr.body)
        yield from _results(expr.orelse)


def _scan_python(path: Path, uses: Uses) -> None:
    tree = ast.parse(path.read_text("utf-8"))
    where = str(path.relative_to(ROOT))
    assigned: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assigned.setdefault(target.id, set()).add(node.value.value)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            uses.constants.add(node.value)
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        if name == "redirect" and len(node.args) > 1:
            uses.redirect_words |= set(_results(node.args[1]))
        if name not in KEY_FUNCTIONS:
            continue
        for arg in node.args:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) \
                    and KEY.match(arg.value):
                uses.key(arg.value, where)
            elif isinstance(arg, ast.JoinedStr):
                pattern = "".join(str(v.value) if isinstance(v, ast.Constant) else "*"
                                  for v in arg.values)
                if "." in pattern and not pattern.startswith("*"):
                    uses.family(pattern, where)
            elif isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.Add):
                left, right = arg.left, arg.right
                if isinstance(left, ast.Constant) and isinstance(left.value, str):
                    uses.family(left.value + "*", where)
                elif isinstance(left, ast.Name) and isinstance(right, ast.Constant) \
                        and isinstance(right.value, str) and left.id in assigned:
                    for prefix in assigned[left.id]:  # c = "insight.col."; t(c + "week")
                        uses.key(prefix + right.value, where)


def _scan_templates(folder: Path, uses: Uses) -> list[str]:
    """Record the keys of every template; return the t( calls it could not read."""
    unread = []
    for path in sorted(folder.glob("*.html")):
        text = path.read_text("utf-8")
        keys = [m.group(2) for m in TPL_KEY.finditer(text)]
        families = [m.group(2) + "*" for m in TPL_FAMILY.finditer(text)]
        for key in keys:
            uses.key(key, path.name)
        for pattern in families:
            uses.family(pattern, path.name)
        calls = len(TPL_CALL.findall(text))
        if calls != len(keys) + len(families):
            unread.append(f"{path.name}: {calls} t( calls, {len(keys) + len(families)} read")
    return unread


@cache
def node_uses() -> tuple[Uses, tuple[str, ...]]:
    uses = Uses()
    unread = _scan_templates(NODE_TEMPLATES, uses)
    for path in sorted((ROOT / "node").rglob("*.py")):
        _scan_python(path, uses)
    return uses, tuple(unread)


@cache
def central_uses() -> tuple[Uses, tuple[str, ...]]:
    uses = Uses()
    unread = _scan_templates(CENTRAL_TEMPLATES, uses)
    for path in sorted((ROOT / "central").rglob("*.py")):
        _scan_python(path, uses)
    return uses, tuple(unread)


def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(pattern).replace(r"\*", "[a-z0-9_]+") + "$")


def _members(families: Mapping[str, Iterable[str]]) -> set[str]:
    return {pattern.replace("*", value) for pattern, values in families.items()
            for value in values}


def _check(uses: Uses, unread: tuple[str, ...], defined: set[str],
           families: Mapping[str, tuple[str, ...]],
           hidden: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
    """The problems: a dict that is empty when all is well."""
    problems: dict[str, Any] = {}
    if unread:
        problems["t( calls the scanner cannot read"] = list(unread)
    unknown = sorted(set(uses.families) - set(families))
    if unknown:
        problems["key families built in code but not listed in this test"] = {
            p: sorted(uses.families[p]) for p in unknown}
    stale = sorted(set(families) - set(uses.families))
    if stale:
        problems["families listed here that the code no longer builds"] = stale
    undefined = sorted(k for k in uses.keys if k not in defined)
    if undefined:
        problems["keys used but not defined"] = {k: sorted(uses.keys[k]) for k in undefined}
    members = _members(families) | _members(hidden)
    missing = sorted(members - defined)
    if missing:
        problems["family members not defined"] = missing
    used = set(uses.keys) | members | (uses.constants & defined)
    unused = sorted(defined - used)
    if unused:
        problems["keys defined but never used"] = unused
    # A key of a family's shape that is neither a member nor used by name is dead.
    shapes = [_regex(p) for p in (*families, *hidden)]
    strays = sorted(k for k in defined & (uses.constants - set(uses.keys) - members)
                    if any(s.match(k) for s in shapes))
    if strays:
        problems["family-shaped keys only mentioned as text"] = strays
    return problems


def test_the_scanner_sees_literal_keys_families_and_python_calls() -> None:
    uses, _ = node_uses()
    assert "home.title" in uses.keys and "captive.title" in uses.keys
    assert "team.login.failed" in uses.keys and "demo.uplink.csrf" in uses.keys
    assert {"category.*", "error.field.*", "team.error.field.*"} <= set(uses.families)
    cuses, _ = central_uses()
    assert "insight.col.week" in cuses.keys  # c = "insight.col."; t(c + "week")
    assert "insight.*_chart" in cuses.families and "category.*" in cuses.families


def test_every_portal_key_is_used_and_every_used_key_exists(cat: Catalogue) -> None:
    uses, unread = node_uses()
    assert _check(uses, unread, set(cat.messages("nl")), NODE_FAMILIES, {}) == {}


def test_every_central_key_is_used_and_every_used_key_exists() -> None:
    uses, unread = central_uses()
    defined = set(load_messages()["nl"])
    assert _check(uses, unread, defined, CENTRAL_FAMILIES, CENTRAL_HIDDEN) == {}
    # The hidden family is exactly what the staff pages redirect with.
    assert uses.redirect_words - {""} == set(CENTRAL_HIDDEN["done.*"])


def test_the_check_reports_what_it_should() -> None:
    """The checker itself, on a made-up use: unused, undefined, unlisted family."""
    uses = Uses()
    uses.key("a.b", "x.html")
    uses.key("a.zz", "x.html")
    uses.family("f.*", "x.html")
    uses.family("g.*", "y.py")
    problems = _check(uses, (), {"a.b", "a.c", "f.one", "f.two"}, {"f.*": ("one",)}, {})
    assert problems == {
        "key families built in code but not listed in this test": {"g.*": ["y.py"]},
        "keys used but not defined": {"a.zz": ["x.html"]},
        "keys defined but never used": ["a.c", "f.two"],
    }


def _extracted(folder: Path) -> dict[str, set[str]]:
    """Keys Babel's extraction (babel.cfg, the translator names) finds under ``folder``."""
    with (ROOT / "babel.cfg").open(encoding="utf-8") as fh:
        method_map, options_map = parse_mapping_cfg(fh)
    found: dict[str, set[str]] = {}
    for filename, _line, message, _comments, _context in extract_from_dir(
            folder, method_map, options_map, keywords=dict.fromkeys(KEY_FUNCTIONS),
            comment_tags=(), strip_comment_tags=True):
        msgid = message if isinstance(message, str) else message[0]
        if msgid and KEY.match(msgid):
            found.setdefault(msgid, set()).add(filename)
    return found


def _pot_ids(path: Path) -> set[str]:
    with path.open("rb") as fh:
        return {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(fh) if m.id}


@pytest.mark.parametrize("part", ["node", "central"])
def test_babel_extraction_finds_no_key_the_template_lacks(part: str) -> None:
    if part == "node":
        pot, (uses, _), families, hidden = (NODE_LOCALE / "messages.pot", node_uses(),
                                            NODE_FAMILIES, {})
    else:
        pot, (uses, _), families, hidden = (CENTRAL_LOCALE / "messages.pot", central_uses(),
                                            CENTRAL_FAMILIES, CENTRAL_HIDDEN)
    found, ids = _extracted(ROOT / part), _pot_ids(pot)
    assert len(found) > 100 and any(w.endswith(".html") for ws in found.values() for w in ws)
    assert {key: sorted(where) for key, where in found.items() if key not in ids} == {}
    # What extraction cannot see is built at run time: the families listed above,
    # or keys the code names as text.
    unseen = ids - set(found) - _members(families) - _members(hidden)
    assert sorted(unseen - uses.constants - set(uses.keys)) == []


# --- 3. a page's lang matches its words ------------------------------------------------------

NONCE = "n0Nce-Test_123"
NODE = {"display_name": "Buurthuis De Boog", "area": "ESC-01"}
POINTS = [{"id": "klimboom", "name": "Speeltuin De Klimboom"}]
LIMITS = {"text": MAX_REPORT_TEXT, "place": MAX_PLACE_TEXT, "contact": 200}
SETTINGS = NodeSettings(name="n1", area="ESC-01")
TS = 1_800_000_000_000


def _common(lang: str, path: str = "/") -> dict[str, Any]:
    return {"node": NODE, "csp_nonce": NONCE,
            "lang_links": [{"code": c, "label": LANGUAGE_NAMES[c], "url": f"{path}?lang={c}"}
                           for c in SUPPORTED]}


def _alert(i: int, **over: Any) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": f"0193a0b2-0000-7000-8000-{i:012d}", "source": "team", "category": "suspicious",
        "severity": "moderate", "title": "", "text": "", "place": "Tolstraat 12",
        "time": "22:31", "date": "28", "verified": True, "called_112": False}
    view.update(over)
    return view


def _alerts() -> list[dict[str, Any]]:
    views = [_alert(i, source=s, category=c, severity=v, verified=s != "resident")
             for i, (s, c, v) in enumerate(zip(ALERT_SOURCES, (*CATEGORIES, "other"),
                                               (*SEVERITIES, "minor"), strict=True))]
    views += [_alert(10, called_112=True, verified=False, source="resident"),
              _alert(11, called_112=True, called_112_by="Fatma", node="Buurthuis Twee"),
              _alert(20, source="central", central=True),
              *(_alert(12 + n, phase=p) for n, p in enumerate(("new", "coming", "resolved")))]
    return views


def _item(n: int, **over: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": f"0193a0b2-0000-7000-8000-{n:012d}", "kind": "report", "ts": TS + n,
        "source": "resident", "category": "nuisance", "severity": "moderate", "title": "",
        "text": f"X{n}", "place": {"point": None, "text": "Tolstraat"}, "state": "new",
        "by": "", "called_112": False, "contact": "06-12345678", "receipt": "K7F-3QX",
        "button_id": None, "ref": None}
    item.update(over)
    return item


def _team_items() -> list[dict[str, Any]]:
    return [
        _item(1, kind="alert", source="button", category="emergency", severity="extreme",
              button_id="klimboom", contact="", receipt=None),
        _item(2, state="on_my_way", by="Fatma", called_112=True, desk="seen",
              desk_by="police"),
        _item(3, state="seen", category="social"),
        _item(4, state="escalated", category="suspicious", desk="in_progress",
              desk_by="central"),
        _item(5, kind="alert", source="resident", title="X5"),
        _item(6, state="resolved", by="Piet"),
        _item(7, kind="alert", source="team", title="X7", origin="n2"),
    ]


def _dashboard(lang: str, t: Callable[..., str]) -> dict[str, Any]:
    rows = team_views.board(_team_items(), SETTINGS, lang, TS, {"n2": "Buurthuis Twee"})
    first = rows.open[0]["id"]
    return {
        "member": {"name": "Fatma"}, "rows": rows.open, "closed": rows.closed,
        "csrf_token": "tok",
        "errors": {"form": t("team.error.csrf"), "note": t("team.error.field.note"),
                   "title": t("team.error.field.title"), "text": t("team.error.field.text"),
                   "alert": t("team.error.refused", reason="-")},
        "alert_values": {"severity": "severe", "expires": "8"},
        "row_values": {first: {"note": "n", "to": "police"}},
        "row_errors": {first: t("team.error.field.to")},
        "severities": SEVERITIES, "expiry_choices": EXPIRY_CHOICES,
        "default_hours": DEFAULT_HOURS,
        "limits": {"title": MAX_TITLE, "text": MAX_REPORT_TEXT, "note": MAX_NOTE},
        "stream_url": "/team/stream",
        "faults": [{"button": "klimboom", "place": "Speeltuin De Klimboom", "time": "22:31"}],
        "mesh_peers": ["Buurthuis Twee"], "watching": 2}


def _rendered_pages(renderer: Renderer, lang: str) -> dict[str, str]:
    """The templates, with the context the routes give them."""
    def page(template: str, **context: Any) -> str:
        return renderer.render(template, lang=lang, **_common(lang), **context)

    t = renderer.catalogue.translator(lang)  # what the routes look up and pass on

    pages = {
        "home": page("home.html", alerts=_alerts(), stream_url="/s"),
        "home-empty": page("home.html", alerts=[], stream_url="/s"),
        "choose": page("report_choose.html"),
        "status-not-found": page("status.html", receipt="ABC-DEF", report=None,
                                 not_found=True),
        "team-login": page("team_login.html", values={}, error=t("team.login.failed")),
        "team-login-locked": page("team_login.html", values={},
                                  error=t("team.login.locked", time="22:31")),
        "team-login-throttled": page("team_login.html", values={},
                                     error=t("team.login.throttled", minutes=5)),
        "team-password-first": page("team_password.html",
                                    member={"name": "Fatma", "must_change": True},
                                    csrf_token="tok", error=t("team.password.mismatch"),
                                    min_length=10),
        "team-password": page("team_password.html",
                              member={"name": "Fatma", "must_change": False},
                              csrf_token="tok", error=None, min_length=10),
        "team-dashboard": page("team_dashboard.html", **_dashboard(lang, t)),
        "team-dashboard-empty": page("team_dashboard.html", **{
            **_dashboard(lang, t), "rows": [], "closed": [], "faults": [], "mesh_peers": []}),
    }
    for paused in (False, True):
        pages[f"demo-{paused}"] = page(
            "demo.html", links=DEMO_LINKS, this_node="n1", csrf_token="tok", error="E",
            uplink={"enabled": True, "paused": paused, "backlog": 3, "events_sent": 9,
                    "last_error": "", "central": "central-demo"},
            buttons=[{"id": "klimboom", "meeting_point": "Speeltuin De Klimboom",
                      "device": device, "light": "off"} for device in ("hub", "point")],
            mesh={"enabled": True, "peers": [
                {"name": f"n{i}", "display_name": f"Buurthuis {i}", "state": state,
                 "rtt_ms": 1.5, "lacks": 0}
                for i, state in enumerate(("connected", "cut", "waiting"), start=2)]},
            team_watching=2)
    for category in CATEGORIES:
        pages[f"form-{category}"] = page(
            "report_form.html", category=category, emergency=category == "emergency",
            meeting_points=POINTS, values={"audience": "both", "called_112": "yes"},
            errors={"form": t("error.csrf"),
                    **{f: t(f"error.field.{f}") for f in ("text", "place", "audience",
                                                          "called_112", "contact")}},
            limits=LIMITS, csrf_token="tok")
    for audience in AUDIENCES:
        pages[f"receipt-{audience}"] = page(
            "receipt.html", receipt="K7F-3QX", qr_svg="", audience=audience,
            status_url="/status?receipt=K7F-3QX",
            shown_to_neighbours=audience != "authorities")
    for code, key in ERROR_MESSAGES.items():
        pages[f"error-{code}"] = page("error.html", status_code=code, message=t(key))
    for state in STATES_RESIDENT:
        pages[f"status-{state}"] = page(
            "status.html", receipt="K7F-3QX", not_found=False,
            report={"receipt": "K7F-3QX", "category": "social", "state": state,
                    "time": "22:31", "date": "28",
                    "reply": {"text": "R", "at": TS, "time": "22:40", "date": "28"}})
    return pages


@pytest.fixture(scope="module")
def node_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("i18n") / "node"
    init_node(data_dir, name="n1", area="ESC-01", display_name="Buurthuis De Boog",
              demo=True, gpio="off")
    return data_dir


DEMO_LINKS = {"central": {"name": "central-demo", "display_name": "Bart centraal",
                         "url": "http://127.0.0.1:9001",
                         "staff_url": "http://127.0.0.1:9001/staff/login"},
              "nodes": [{"name": "n1", "display_name": "Buurthuis De Boog", "area": "ESC-01",
                         "url": "http://127.0.0.1:9002"}]}


#: Pages the real app serves without a running node (no store needed), by path.
APP_PAGES = ("/report", "/report?category=nuisance", "/report?category=emergency",
             "/status", "/status?receipt=ABC-DEF", "/team/login", "/demo",
             "/no-such-page", "/")


def _served_pages(data_dir: Path, lang: str) -> dict[str, str]:
    settings = NodeSettings.load(data_dir)
    app = create_app(settings, runtime=NodeRuntime(settings))  # not started: "/" is a 503

    async def run() -> dict[str, str]:
        out = {}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport,
                                     base_url="http://127.0.0.1:9002") as client:
            for path in APP_PAGES:
                r = await client.get(path, params={"lang": lang},
                                     headers={"Accept": "text/html"})
                assert r.headers["content-type"].startswith("text/html"), (path, r.text[:200])
                out[f"app {path}"] = r.text
        return out

    return asyncio.run(run())


def _captive_page(data_dir: Path, lang: str) -> str:
    settings = NodeSettings.load(data_dir)
    asgi = create_asgi(settings)
    assert isinstance(asgi, CaptivePortal)

    async def run() -> str:
        transport = httpx.ASGITransport(app=asgi, client=("10.0.0.23", 40000))
        async with httpx.AsyncClient(transport=transport,
                                     base_url=f"http://{settings.http_host}:8080") as client:
            r = await client.get("/generate_204",
                                 headers={"Host": "connectivitycheck.gstatic.com",
                                          "Accept-Language": f"{lang},en;q=0.1"})
            assert r.status_code == 302, r.text[:200]
            return r.text

    return asyncio.run(run())


def _words(message: str) -> list[str]:
    """The parts of a message a page shows literally (between placeholders)."""
    parts = re.split(r"\{\w+\}", message)
    return [p.strip(" :·—-") for p in parts if len(p.strip(" :·—-")) >= 3]


def dutch_only(cat: Catalogue, lang: str) -> dict[str, str]:
    """Dutch text of the catalogue that ``lang`` says differently: text -> key.

    Dutch words that are also part of the language's own messages (``Status``
    in Polish, ``Bart``) can appear rightly and are left out.
    """
    nl, own = cat.messages("nl"), cat.messages(lang)
    out: dict[str, str] = {}
    for key, text in nl.items():
        if own[key] == text:
            continue
        for part in _words(text):
            if not any(part in mine for mine in own.values()):
                out.setdefault(part, key)
    return out


def _visible(page: str) -> str:
    """What a reader sees or hears: text and attribute values, without CSS."""
    page = re.sub(r"(?s)<style\b.*?</style>", " ", page)
    page = re.sub(r'\s(?:href|src|action|nonce|class|id|name|for|data-testid)="[^"]*"', " ", page)
    return html.unescape(page)


def _dutch_in(page: str, words: Mapping[str, str]) -> dict[str, str]:
    text = _visible(page)
    return {word: key for word, key in words.items()
            if re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text)}


def test_the_dutch_detector_finds_dutch(cat: Catalogue, node_dir: Path) -> None:
    """The check below sees Dutch: a Dutch page shown under lang="tr" fails it."""
    words = dutch_only(cat, "tr")
    assert "Meldingen in de buurt" in words and "Bij direct gevaar" in words
    dutch = _rendered_pages(Renderer(cat), "nl")
    assert "home.title" in _dutch_in(dutch["home"], words).values()
    found = set(_dutch_in(dutch["team-dashboard"], words).values())
    assert {"team.dash.title", "team.kind.alarm", "team.action.on_my_way"} <= found
    captive = _captive_page(node_dir, "nl")
    assert "captive.text" in _dutch_in(captive, words).values()


@pytest.mark.parametrize("lang", OTHERS)
def test_every_page_in_a_language_shows_no_dutch_and_says_its_lang(
        cat: Catalogue, node_dir: Path, lang: str) -> None:
    pages = _rendered_pages(Renderer(cat), lang)
    pages |= _served_pages(node_dir, lang)
    pages["captive"] = _captive_page(node_dir, lang)
    direction = "rtl" if lang == "ar" else "ltr"
    words = dutch_only(cat, lang)
    problems: dict[str, Any] = {}
    for name, page in pages.items():
        head = re.search(r"<html\b[^>]*>", page, re.IGNORECASE)
        assert head, name
        if f'lang="{lang}"' not in head.group(0) or f'dir="{direction}"' not in head.group(0):
            problems[name] = head.group(0)
            continue
        found = _dutch_in(page, words)
        if found:
            problems[name] = found
    assert problems == {}


def test_the_pages_above_show_most_of_the_catalogue(cat: Catalogue, node_dir: Path) -> None:
    """The pages checked above are not a token sample: they show nearly every message."""
    pages = _rendered_pages(Renderer(cat), "en")
    pages |= _served_pages(node_dir, "en")
    pages["captive"] = _captive_page(node_dir, "en")
    text = "\n".join(_visible(p) for p in pages.values())
    en = cat.messages("en")
    shown = {key for key, message in en.items()
             if all(part in text for part in _words(message)) and _words(message)}
    share = len(shown) / len(en)
    assert share > 0.9, sorted(set(en) - shown)
