"""Pure parts of central's staff side: doctests, word catalogue, form parsing."""

from __future__ import annotations

import doctest

import pytest

from central import broadcasts, handling, health, pages, passwords
from central.broadcasts import BroadcastError, classify, parse_areas, parse_form
from central.pages import load_messages, negotiate
from central.staff import accounts as staff_accounts


@pytest.mark.parametrize("module", [broadcasts, handling, health, pages, passwords,
                                    staff_accounts])
def test_doctests(module: object) -> None:
    failures, _ = doctest.testmod(module)  # type: ignore[arg-type]
    assert failures == 0


def test_catalogue_has_the_same_keys_in_dutch_and_english_and_dutch_first() -> None:
    messages = load_messages()
    assert list(messages) == ["nl", "en"]
    assert set(messages["nl"]) == set(messages["en"])
    assert all(messages["nl"].values()) and all(messages["en"].values())


def test_language_choice() -> None:
    assert negotiate("xx", "de", "fr-FR, en;q=0.5") == "en"
    assert negotiate(None, None, None) == "nl"
    assert negotiate(None, None, "a" * 10_000) == "nl"


def test_classify_alert_update_cancel() -> None:
    assert classify({"ref": None, "expires": 1}, 5) == "alert"  # an alert never cancels
    assert classify({"ref": "r", "expires": None}, 5) == "update"
    assert classify({"ref": "r", "expires": 4}, 5) == "cancel"


def test_form_parsing_limits() -> None:
    good = {"title": "  Inbraak\u200b golf ", "text": "", "areas": "esc-01;ldv-02",
            "severity": "moderate", "category": "other", "hours": "168"}
    fields = parse_form(good)
    assert fields["title"] == "Inbraak golf" and fields["areas"] == ["ESC-01", "LDV-02"]
    assert fields["hours"] == 168
    with pytest.raises(BroadcastError) as exc:
        parse_areas("A" * 2000)
    assert exc.value.field == "areas"
    for field, value in (("hours", "-1"), ("severity", ""), ("title", " \u200b "),
                         ("category", "weather")):
        with pytest.raises(BroadcastError) as exc:
            parse_form({**good, field: value})
        assert exc.value.field == field


def test_names_and_passwords() -> None:
    with pytest.raises(passwords.InvalidName):
        passwords.normalise_name("<script>")
    with pytest.raises(passwords.InvalidName):
        passwords.normalise_name("x" * 41)
    with pytest.raises(passwords.WeakPassword):
        passwords.check_new_password("short")
    with pytest.raises(passwords.WeakPassword):
        passwords.check_new_password(" leading space here")
    assert not passwords.verify_password("x", "scrypt$99999999$8$1$AAAA$AAAA")
    assert not passwords.verify_password("x", "not a hash")
