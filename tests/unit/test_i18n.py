"""The portal's gettext catalogues, translator, plural forms and language negotiation (pure)."""

from __future__ import annotations

import doctest
import logging
import re
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from node.portal import i18n
from node.portal.i18n import (
    DEFAULT,
    LANGUAGE_NAMES,
    SUPPORTED,
    Catalogue,
    CatalogueError,
    MissingMessage,
    cldr_plural_forms,
    direction,
    negotiate,
    placeholders,
    plural_rule,
)
from sync.bodies import ALERT_SOURCES, AUDIENCES, CATEGORIES, SEVERITIES

pytestmark = pytest.mark.timeout(30)

TEMPLATES = Path(i18n.__file__).with_name("templates")
# t("key") or t('key'), with or without keyword arguments after it.
T_CALL = re.compile(r"""\bt\(\s*(["'])([^"']+)\1\s*[,)]""")
STATES = ("received", "in_progress", "handled", "reopened", "forwarded")
# The words a resident must find in every language (MISSION: several languages).
KEY_WORDS = (
    *(f"category.{c}" for c in CATEGORIES),
    "nav.home", "nav.report", "nav.status",
    "footer.danger", "footer.call_112",
    "report.emergency.title", "report.emergency.call",
    "alert.called_112", "alert.verified", "alert.not_verified",
)


@pytest.fixture(scope="module")
def cat() -> Catalogue:
    return Catalogue.load(strict=True)


def _po(lang: str) -> Path:
    return i18n.DEFAULT_PATH / lang / "LC_MESSAGES" / "messages.po"


def test_dutch_is_the_default_and_every_language_has_a_po_file() -> None:
    assert SUPPORTED == ("nl", "en", "tr", "ar", "pl") and SUPPORTED[0] == DEFAULT
    folders = sorted(p.name for p in i18n.DEFAULT_PATH.iterdir() if p.is_dir())
    assert folders == sorted(SUPPORTED)
    assert all(_po(lang).is_file() for lang in SUPPORTED)
    assert (i18n.DEFAULT_PATH / "messages.pot").is_file()


@pytest.mark.parametrize("lang", SUPPORTED)
def test_each_po_file_says_its_language_and_cldr_plural_forms(lang: str) -> None:
    with _po(lang).open("rb") as fh:
        catalog = read_po(fh)
    assert str(catalog.locale) == lang
    nplurals, expr = cldr_plural_forms(lang)
    assert catalog.num_plurals == nplurals
    assert catalog.plural_expr == expr
    assert catalog.charset == "utf-8"
    # The writing rules travel with the file, as its header comment.
    assert "language level B1" in catalog.header_comment
    assert not catalog.fuzzy
    assert [m.id for m in catalog if m.id and m.fuzzy] == [], "fuzzy entries"


#: The Plural-Forms a translator's tool (Poedit, Weblate) may write instead of
#: Babel's: the same numbers for every count.
GNU_PLURAL_FORMS = {
    "nl": (2, "(n != 1)"),
    "en": (2, "(n != 1)"),
    "tr": (2, "(n != 1)"),
    "ar": (6, "n==0 ? 0 : n==1 ? 1 : n==2 ? 2 : n%100>=3 && n%100<=10 ? 3 "
              ": n%100>=11 ? 4 : 5"),
    "pl": (3, "(n==1 ? 0 : n%10>=2 && n%10<=4 && (n%100<10 || n%100>=20) ? 1 : 2)"),
}


@pytest.mark.parametrize("lang", SUPPORTED)
def test_the_plural_rule_is_cldrs_and_the_usual_gettext_one(lang: str) -> None:
    nplurals, expr = cldr_plural_forms(lang)
    gnu_n, gnu_expr = GNU_PLURAL_FORMS[lang]
    ours, gnu = plural_rule(expr), plural_rule(gnu_expr)
    assert nplurals == gnu_n
    assert [ours(n) for n in range(1200)] == [gnu(n) for n in range(1200)]
    assert {ours(n) for n in range(1200)} == set(range(nplurals))


def test_the_template_has_every_dutch_key_and_no_text() -> None:
    with (i18n.DEFAULT_PATH / "messages.pot").open("rb") as fh:
        pot = read_po(fh)
    with _po("nl").open("rb") as fh:
        nl = read_po(fh)
    assert [m.id for m in pot if m.id] == [m.id for m in nl if m.id]  # with msgid_plural
    assert all(not m.string or not any(m.string) for m in pot if m.id)
    assert "language level B1" in pot.header_comment


def test_dutch_and_english_have_exactly_the_same_keys(cat: Catalogue) -> None:
    nl, en = set(cat.messages("nl")), set(cat.messages("en"))
    assert nl - en == set(), "missing in [en]"
    assert en - nl == set(), "missing in [nl]"


@pytest.mark.parametrize("lang", ["tr", "ar", "pl"])
def test_every_language_has_the_key_words_and_nothing_unknown(cat: Catalogue,
                                                              lang: str) -> None:
    # All keys: tests/unit/test_i18n_complete.py.
    own = cat.messages(lang)
    assert set(own) <= set(cat.messages("nl")), "keys that Dutch does not have"
    missing = [k for k in KEY_WORDS if k not in own]
    assert missing == []


@pytest.mark.parametrize("lang", SUPPORTED)
def test_placeholders_match_dutch_and_every_message_formats(cat: Catalogue, lang: str) -> None:
    nl = cat.messages("nl")
    t = cat.translator(lang)
    plurals = cat.plurals(lang)
    for key, message in cat.messages(lang).items():
        names = placeholders(message)
        assert names == placeholders(nl[key]), f"[{lang}] {key}: placeholders differ from nl"
        kwargs: dict[str, object] = {n: "X" for n in names}
        for count in (range(12) if key in plurals else ("X",)):
            out = t(key, **{**kwargs, "count": count} if key in plurals else kwargs)
            assert "{" not in out and "}" not in out, f"[{lang}] {key}: {out!r}"
    for key, forms in plurals.items():
        # A form may leave the number out ("one member"); nothing else.
        for form in forms:
            assert placeholders(form) <= placeholders(nl[key]), f"[{lang}] {key}: {form!r}"
            assert placeholders(nl[key]) - {"count"} <= placeholders(form), f"[{lang}] {key}"


@pytest.mark.parametrize("lang", SUPPORTED)
def test_messages_are_non_empty_and_trimmed(cat: Catalogue, lang: str) -> None:
    for key, message in cat.messages(lang).items():
        assert message and message == message.strip(), f"[{lang}] {key}"


def _template_keys() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted(TEMPLATES.glob("*.html")):
        found[path.name] = {m.group(2) for m in T_CALL.finditer(path.read_text("utf-8"))}
    return found


def test_the_template_scanner_finds_keys() -> None:
    keys = _template_keys()
    assert "home.title" in keys["home.html"]
    assert "footer.call_112" in keys["base.html"]
    assert sum(len(v) for v in keys.values()) > 50


def test_every_key_used_in_a_template_exists_in_dutch(cat: Catalogue) -> None:
    nl = cat.messages("nl")
    missing = {name: sorted(k for k in keys if k not in nl)
               for name, keys in _template_keys().items()}
    assert {name: keys for name, keys in missing.items() if keys} == {}


def test_keys_built_from_event_values_exist(cat: Catalogue) -> None:
    """Templates build some keys ("category." ~ value): every value needs its key."""
    nl = cat.messages("nl")
    needed = [
        *(f"category.{c}" for c in (*CATEGORIES, "other")),
        *(f"category_hint.{c}" for c in CATEGORIES),
        *(f"source.{s}" for s in ALERT_SOURCES),
        *(f"severity.{s}" for s in SEVERITIES),
        *(f"state.{s}" for s in STATES),
        *(f"state_help.{s}" for s in STATES),
        *(f"report.audience.{a}" for a in AUDIENCES),
        "report.called_112.no", "report.called_112.yes",
    ]
    assert [k for k in needed if k not in nl] == []


def test_keys_the_routes_ask_for_exist(cat: Catalogue) -> None:
    """Form errors are looked up as error.field.<form field>, plus csrf and rate."""
    nl = cat.messages("nl")
    fields = ("category", "text", "place", "place_point", "place_text", "audience",
              "called_112", "called_112_by", "contact", "lang")
    needed = ["error.csrf", "error.rate", "error.not_found", "error.server",
              *(f"error.field.{f}" for f in fields)]
    assert [k for k in needed if k not in nl] == []


def test_translator_formats_named_arguments(cat: Catalogue) -> None:
    assert cat.translator("nl")("report.text.hint", max=1000) == (
        "Kort is goed. Hoogstens 1000 tekens.")
    assert cat.translator("en")("error.code", code=404) == "Error code 404"


#: The plural message of the portal, per language: count -> text.
WATCHING = {
    "nl": {0: "0 teamleden kijken nu mee", 1: "1 teamlid kijkt nu mee",
           2: "2 teamleden kijken nu mee"},
    "en": {1: "1 team member is watching now", 2: "2 team members are watching now",
           5: "5 team members are watching now"},
    "tr": {1: "Şu anda 1 ekip üyesi izliyor", 2: "Şu anda 2 ekip üyesi izliyor"},
    "pl": {1: "1 członek zespołu teraz śledzi", 2: "2 członkowie zespołu teraz śledzą",
           5: "5 członków zespołu teraz śledzi", 22: "22 członkowie zespołu teraz śledzą",
           12: "12 członków zespołu teraz śledzi", 0: "0 członków zespołu teraz śledzi"},
    "ar": {0: "لا أحد من الفريق يتابع الآن", 1: "عضو واحد من الفريق يتابع الآن",
           2: "عضوان من الفريق يتابعان الآن", 3: "3 أعضاء من الفريق يتابعون الآن",
           11: "11 عضوًا من الفريق يتابعون الآن", 100: "100 عضو من الفريق يتابعون الآن"},
}


@pytest.mark.parametrize("lang", SUPPORTED)
def test_plural_forms_follow_the_count(cat: Catalogue, lang: str) -> None:
    t = cat.translator(lang)
    assert {n: t.n("team.watching", n) for n in WATCHING[lang]} == WATCHING[lang]
    assert {n: t("team.watching", count=n) for n in WATCHING[lang]} == WATCHING[lang]


@pytest.mark.parametrize("lang", SUPPORTED)
def test_every_plural_message_has_all_forms_of_its_language(cat: Catalogue, lang: str) -> None:
    nplurals, _ = cldr_plural_forms(lang)
    plurals = cat.plurals(lang)
    assert "team.watching" in plurals
    assert set(plurals) == set(cat.plurals("nl"))
    for key, forms in plurals.items():
        assert len(forms) == nplurals, key
        assert cat.messages(lang)[key] == forms[-1]
        assert all(f and f == f.strip() for f in forms), key


def test_a_plural_message_needs_an_integer_count(cat: Catalogue,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BART_I18N_STRICT")  # production's translators are lenient
    with pytest.raises(TypeError, match=r"team\.watching"):
        cat.translator("pl")("team.watching")
    with pytest.raises(TypeError):
        cat.translator("pl")("team.watching", count="3")
    # Production: the general plural, not an error.
    assert Catalogue.load().translator("en")("team.watching", count="3") == (
        "3 team members are watching now")


def test_a_plural_message_missing_in_a_language_uses_the_dutch_rule() -> None:
    small = Catalogue({"nl": {"a.n": ("{count} ding", "{count} dingen")}, "ar": {}},
                      strict=True)
    t = small.translator("ar")
    assert [t.n("a.n", n) for n in (0, 1, 2, 5)] == [
        "0 dingen", "1 ding", "2 dingen", "5 dingen"]


def test_missing_language_key_falls_back_to_dutch(cat: Catalogue) -> None:
    # A catalogue of its own: the real one fills its gaps over time.
    small = Catalogue({"nl": {"error.server": "Er ging iets mis", "nav.report": "Melden"},
                       "tr": {"nav.report": "Bildir"}})
    assert "error.server" not in small.messages("tr")
    assert small.translator("tr")("error.server") == "Er ging iets mis"
    assert small.translator("tr")("nav.report") == "Bildir"
    assert cat.translator("tr")("nav.report") == "Bildir"


def test_unknown_key_raises_in_strict_mode(cat: Catalogue) -> None:
    with pytest.raises(MissingMessage):
        cat.translator("en")("no.such.key")


def test_the_test_suite_runs_every_translator_strict() -> None:
    """tests/conftest.py sets BART_I18N_STRICT=1: a key missing from the catalogue
    fails the test that shows it (a staff page once logged 'missing message
    "done."' on every load), also in the nodes and centrals the tests start."""
    with pytest.raises(MissingMessage):
        Catalogue.load().translator("en")("no.such.key")


def test_unknown_key_falls_back_to_the_key_in_production(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BART_I18N_STRICT")
    lenient = Catalogue.load()
    with caplog.at_level(logging.WARNING, logger="node.portal.i18n"):
        assert lenient.translator("en")("no.such.key") == "no.such.key"
    assert "no.such.key" in caplog.text


def test_a_missing_argument_raises_in_strict_mode_and_not_in_production(
        cat: Catalogue, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BART_I18N_STRICT")
    with pytest.raises(KeyError):
        cat.translator("nl")("error.code")
    assert Catalogue.load().translator("nl")("error.code") == "Foutcode {code}"


def test_unsupported_language_gets_dutch(cat: Catalogue) -> None:
    t = cat.translator("de")
    assert t.lang == "nl" and t("nav.report") == "Melden"


def test_direction() -> None:
    assert direction("ar") == "rtl"
    assert [direction(x) for x in ("nl", "en", "tr", "pl", "xx")] == ["ltr"] * 5
    assert Catalogue.load().translator("ar").dir == "rtl"


def test_every_language_has_a_name_in_itself() -> None:
    assert set(LANGUAGE_NAMES) == set(SUPPORTED)


@pytest.mark.parametrize(("header", "cookie", "query", "expected"), [
    (None, None, None, "nl"),
    ("", "", "", "nl"),
    ("en-GB,en;q=0.9", None, None, "en"),
    ("de-DE,de;q=0.9,tr;q=0.8,en;q=0.7", None, None, "tr"),
    ("en;q=0.5,pl;q=0.9", None, None, "pl"),
    ("ar;q=0,en;q=0.1", None, None, "en"),
    ("nl;q=0.5,en;q=0.5", None, None, "nl"),
    ("EN-us", None, None, "en"),
    ("ar-MA", None, None, "ar"),
    ("*", None, None, "nl"),
    ("en;q=abc,pl", None, None, "pl"),
    ("en;q=2", None, None, "nl"),
    ("en", "tr", None, "tr"),
    ("en", "tr", "ar", "ar"),
    ("en", "xx", "zz", "en"),
    (None, "pl", "<script>", "pl"),
    (None, None, "nl-BE", "nl"),
])
def test_negotiate_query_beats_cookie_beats_header_beats_dutch(
        header: str | None, cookie: str | None, query: str | None, expected: str) -> None:
    assert negotiate(header, cookie, query) == expected


def test_negotiate_ignores_what_follows_a_huge_header() -> None:
    assert negotiate("xx," * 100_000 + "en", None, None) == "nl"


HEADER = """msgid ""
msgstr ""
"Language: {lang}\\n"
"Plural-Forms: nplurals={nplurals}; plural={plural};\\n"
"Content-Type: text/plain; charset=utf-8\\n"

"""


def _write(folder: Path, lang: str, body: str, *, nplurals: int = 2,
           plural: str = "(n != 1)") -> Path:
    path = folder / lang / "LC_MESSAGES" / "messages.po"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER.format(lang=lang, nplurals=nplurals, plural=plural) + body,
                    encoding="utf-8")
    return folder


def test_catalogue_refuses_more_plural_forms_than_the_header_says(tmp_path: Path) -> None:
    _write(tmp_path, "nl", 'msgid "a.b"\nmsgid_plural "a.b"\nmsgstr[0] "x"\n'
                           'msgstr[1] "y"\nmsgstr[2] "z"\n')
    with pytest.raises(CatalogueError, match="more translations than num_plurals"):
        Catalogue.load(tmp_path)


def test_a_plural_message_with_a_form_missing_is_untranslated(tmp_path: Path) -> None:
    _write(tmp_path, "nl", 'msgid "a.b"\nmsgid_plural "a.b"\nmsgstr[0] "x"\nmsgstr[1] "y"\n')
    _write(tmp_path, "en", 'msgid "a.b"\nmsgid_plural "a.b"\nmsgstr[0] "one"\n')
    cat = Catalogue.load(tmp_path, strict=True)
    assert cat.plurals("en") == {}
    assert cat.translator("en").n("a.b", 1) == "x"


def test_catalogue_refuses_an_unknown_language_and_needs_dutch(tmp_path: Path) -> None:
    _write(tmp_path / "one", "nl", 'msgid "a"\nmsgstr "x"\n')
    _write(tmp_path / "one", "xx", 'msgid "a"\nmsgstr "y"\n')
    with pytest.raises(CatalogueError, match="xx"):
        Catalogue.load(tmp_path / "one")
    _write(tmp_path / "two", "en", 'msgid "a"\nmsgstr "x"\n')
    with pytest.raises(CatalogueError, match="nl"):
        Catalogue.load(tmp_path / "two")
    with pytest.raises(CatalogueError, match="no such"):
        Catalogue.load(tmp_path / "three")


def test_catalogue_reads_keys_plurals_and_skips_untranslated_and_fuzzy(
        tmp_path: Path) -> None:
    _write(tmp_path, "nl", 'msgid "a.b.c"\nmsgstr "x"\n\nmsgid "a.d"\nmsgstr "y"\n\n'
                           'msgid "a.n"\nmsgid_plural "a.n"\nmsgstr[0] "{count} ding"\n'
                           'msgstr[1] "{count} dingen"\n')
    _write(tmp_path, "pl", 'msgid "a.b.c"\nmsgstr ""\n\n#, fuzzy\nmsgid "a.d"\nmsgstr "z"\n\n'
                           'msgid "a.n"\nmsgid_plural "a.n"\nmsgstr[0] "{count} rzecz"\n'
                           'msgstr[1] "{count} rzeczy"\nmsgstr[2] "{count} rzeczy!"\n',
           nplurals=3, plural=GNU_PLURAL_FORMS["pl"][1])
    cat = Catalogue.load(tmp_path, strict=True)
    assert dict(cat.messages("nl")) == {"a.b.c": "x", "a.d": "y", "a.n": "{count} dingen"}
    assert cat.messages("en") == {}
    assert dict(cat.messages("pl")) == {"a.n": "{count} rzeczy!"}
    t = cat.translator("pl")
    assert t("a.d") == "y"  # fuzzy: Dutch
    assert [t.n("a.n", n) for n in (1, 3, 5)] == ["1 rzecz", "3 rzeczy", "5 rzeczy!"]


def test_placeholders_must_be_names() -> None:
    assert placeholders("{a} en {b}") == {"a", "b"}
    assert placeholders("geen") == frozenset()
    with pytest.raises(CatalogueError):
        placeholders("{0}")


def test_module_examples() -> None:
    assert doctest.testmod(i18n).failed == 0
