"""The portal's translation catalogue, translator and language negotiation (pure)."""

from __future__ import annotations

import doctest
import logging
import re
from pathlib import Path

import pytest

from node.portal import i18n
from node.portal.i18n import (
    DEFAULT,
    LANGUAGE_NAMES,
    SUPPORTED,
    Catalogue,
    CatalogueError,
    MissingMessage,
    direction,
    negotiate,
    placeholders,
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


def test_dutch_comes_first_and_is_the_default() -> None:
    text = i18n.DEFAULT_PATH.read_text(encoding="utf-8")
    tables = re.findall(r"(?m)^\[(\w+)\]$", text)
    assert tables[0] == "nl" == DEFAULT
    assert sorted(tables) == sorted(SUPPORTED)
    assert SUPPORTED == ("nl", "en", "tr", "ar", "pl")


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
    for key, message in cat.messages(lang).items():
        names = placeholders(message)
        assert names == placeholders(nl[key]), f"[{lang}] {key}: placeholders differ from nl"
        out = t(key, **{n: "X" for n in names})
        assert "{" not in out and "}" not in out, f"[{lang}] {key}: {out!r}"


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


def test_unknown_key_falls_back_to_the_key_in_production(
        caplog: pytest.LogCaptureFixture) -> None:
    lenient = Catalogue.load()
    with caplog.at_level(logging.WARNING, logger="node.portal.i18n"):
        assert lenient.translator("en")("no.such.key") == "no.such.key"
    assert "no.such.key" in caplog.text


def test_a_missing_argument_raises_in_strict_mode_and_not_in_production(
        cat: Catalogue) -> None:
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


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "messages.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_catalogue_refuses_a_non_text_message(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match=r"a\.b"):
        Catalogue.load(_write(tmp_path, "[nl]\na.b = 3\n"))


def test_catalogue_refuses_an_unknown_language_and_needs_dutch(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="xx"):
        Catalogue.load(_write(tmp_path, '[nl]\na = "x"\n[xx]\na = "y"\n'))
    with pytest.raises(CatalogueError, match="nl"):
        Catalogue.load(_write(tmp_path, '[en]\na = "x"\n'))


def test_catalogue_flattens_dotted_keys(tmp_path: Path) -> None:
    cat = Catalogue.load(_write(tmp_path, '[nl]\na.b.c = "x"\na.d = "y"\n'), strict=True)
    assert dict(cat.messages("nl")) == {"a.b.c": "x", "a.d": "y"}
    assert cat.messages("en") == {}


def test_placeholders_must_be_names() -> None:
    assert placeholders("{a} en {b}") == {"a", "b"}
    assert placeholders("geen") == frozenset()
    with pytest.raises(CatalogueError):
        placeholders("{0}")


def test_module_examples() -> None:
    assert doctest.testmod(i18n).failed == 0
