"""Event v1: fixed vectors, validation limits, signatures, round trips."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from sync import (
    BadSignature,
    EventTooLarge,
    InsecureKeyFile,
    InvalidField,
    KeyPair,
    UnknownOrigin,
    UnknownVersion,
    canonical_bytes,
    clean_text,
    decode_event,
    make_event,
    verify_event,
)
from sync.event import MIN_TS

VECTORS = Path(__file__).parent.parent / "vectors"
TS = 1795904700123


@pytest.fixture(scope="module")
def vector_keys() -> KeyPair:
    return KeyPair(Ed25519PrivateKey.from_private_bytes(bytes(range(32))),
                   X25519PrivateKey.from_private_bytes(bytes(range(32, 64))))


REPORT_BODY = {
    "category": "suspicious", "text": "Verdachte man bij de auto's — kijkt naar binnen",
    "place": {"point": "klimboom", "text": ""}, "audience": "both", "called_112": True,
    "called_112_by": "buurman", "contact": "", "receipt": "K7F-3QX", "lang": "nl",
}


def report(keys: KeyPair, **over: object) -> object:
    args: dict[str, object] = dict(origin="escamp-kleine-wereld", stream="private", seq=7,
                                   kind="report", ts=TS, body=REPORT_BODY,
                                   event_id="019ac8f2-6d5b-7a3c-8e1f-0123456789ab")
    args.update(over)
    return make_event(keys, **args)  # type: ignore[arg-type]


def test_vector_signing_bytes_and_wire(vector_keys: KeyPair) -> None:
    event = report(vector_keys)
    assert event.signing_bytes() == (VECTORS / "event-v1-report.signing.bin").read_bytes()
    assert event.encode() == (VECTORS / "event-v1-report.wire.bin").read_bytes()
    assert event.sig.hex().startswith("43c173dfc06b0673")  # Ed25519 is deterministic


def test_vector_decodes_and_verifies(vector_keys: KeyPair) -> None:
    for name in ("event-v1-report.wire.bin", "event-v1-alert.wire.bin"):
        data = (VECTORS / name).read_bytes()
        event = decode_event(data)
        event.verify(vector_keys.signing_public)
        assert event.encode() == data


def test_flipped_byte_fails_signature(vector_keys: KeyPair) -> None:
    data = bytearray((VECTORS / "event-v1-report.wire.bin").read_bytes())
    data[data.index(b"binnen")] ^= 0x20  # b -> B, still valid JSON and text
    with pytest.raises(BadSignature):
        decode_event(bytes(data)).verify(vector_keys.signing_public)


def test_other_key_fails(vector_keys: KeyPair) -> None:
    with pytest.raises(BadSignature):
        report(vector_keys).verify(KeyPair.generate().signing_public)


def test_unknown_origin() -> None:
    keys = KeyPair.generate()
    event = report(keys)
    with pytest.raises(UnknownOrigin):
        verify_event(event, {}.get)
    verify_event(event, {"escamp-kleine-wereld": keys.signing_public}.get)


@pytest.mark.parametrize(("field", "value"), [
    ("category", "fire"), ("audience", "everyone"), ("called_112", "yes"),
    ("receipt", "k7f-3qx"), ("lang", "nederlands"), ("text", "x" * 1001),
    ("contact", "y" * 201), ("place", {"point": "Not A Slug", "text": ""}),
])
def test_body_limits(field: str, value: object) -> None:
    with pytest.raises(InvalidField) as info:
        report(KeyPair.generate(), body={**REPORT_BODY, field: value})
    assert info.value.field.startswith(field)


def test_unknown_body_field_refused() -> None:
    with pytest.raises(InvalidField):
        report(KeyPair.generate(), body={**REPORT_BODY, "photo": "x"})


@pytest.mark.parametrize(("over", "field"), [
    ({"stream": "public"}, "stream"),  # reports are private: a privacy rule
    ({"seq": 0}, "seq"), ({"ts": 1}, "ts"), ({"origin": "Bad Origin"}, "origin"),
    ({"event_id": "4b1c2f9e-0000-4000-8000-000000000000"}, "id"),  # v4, not v7
    ({"kind": "photo"}, "kind"),
])
def test_header_limits(over: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidField) as info:
        report(KeyPair.generate(), **over)
    assert info.value.field == field


def test_decode_refuses_garbage() -> None:
    good = json.loads((VECTORS / "event-v1-report.wire.bin").read_bytes())
    with pytest.raises(UnknownVersion):
        decode_event(canonical_bytes({**good, "v": 2}))
    with pytest.raises(InvalidField):
        decode_event(b"{not json")
    with pytest.raises(InvalidField):
        decode_event(b'{"v":1,"v":1}')
    with pytest.raises(InvalidField):
        decode_event(json.dumps({**good, "ts": 1.5e12}).encode())
    with pytest.raises(InvalidField):
        decode_event(canonical_bytes({**good, "extra": 1}))
    with pytest.raises(EventTooLarge):
        decode_event(b" " * 9000)
    uncleaned = {**good, "body": {**good["body"], "text": "a\u200bb"}}
    with pytest.raises(InvalidField):
        decode_event(canonical_bytes(uncleaned))
    with pytest.raises(InvalidField):
        decode_event(b"\xff\xfe")


def test_oversized_event_refused() -> None:
    body = {f"k{i}": "\U0001F6A8" * 200 for i in range(32)}  # each field in limits
    with pytest.raises(EventTooLarge):
        make_event(KeyPair.generate(), origin="n", stream="private", seq=1, kind="status",
                   ts=MIN_TS, body=body)


def test_keys_saved_0600_and_unsafe_refused(tmp_path: Path) -> None:
    keys = KeyPair.generate()
    keys.save(tmp_path / "k")
    for name in ("signing.key", "encryption.key"):
        assert stat.S_IMODE((tmp_path / "k" / name).stat().st_mode) == 0o600
    assert KeyPair.load(tmp_path / "k").signing_public == keys.signing_public
    with pytest.raises(Exception, match="refusing to overwrite"):
        keys.save(tmp_path / "k")
    os.chmod(tmp_path / "k" / "signing.key", 0o640)
    with pytest.raises(InsecureKeyFile):
        KeyPair.load(tmp_path / "k")


def test_fingerprint_is_stable(vector_keys: KeyPair) -> None:
    assert vector_keys.fingerprint == "6EE6-8N36-ZRCD"


# -- properties ------------------------------------------------------------------

texts = st.text(max_size=300)
points = st.one_of(st.none(), st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True))


@settings(max_examples=200, deadline=None)
@given(text=texts, place=texts.map(lambda s: s[:150]), point=points,
       category=st.sampled_from(["nuisance", "suspicious", "social", "emergency"]),
       audience=st.sampled_from(["neighbours", "authorities", "both"]),
       called=st.booleans(), seq=st.integers(1, 2**53 - 1),
       ts=st.integers(MIN_TS, 4_102_444_800_000))
def test_round_trip_property(text: str, place: str, point: str | None, category: str,
                             audience: str, called: bool, seq: int, ts: int) -> None:
    keys = _KEYS
    body = {**REPORT_BODY, "text": text, "place": {"point": point, "text": place},
            "category": category, "audience": audience, "called_112": called}
    event = make_event(keys, origin="n1", stream="private", seq=seq, kind="report", ts=ts,
                       body=body)
    # The fast event encoder equals the general canonical encoder.
    assert event.encode() == canonical_bytes(event.to_dict())
    assert event.signing_bytes() == b"bart/event/v1\x00" + canonical_bytes(event.unsigned())
    again = decode_event(event.encode())
    assert again == event
    again.verify(keys.signing_public)
    assert again.encode() == event.encode()


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.text(max_size=200), st.text(alphabet=st.characters(max_codepoint=127),
                                                 max_size=200)),
       st.booleans())
def test_clean_text_fast_path_equals_slow_path(text: str, multiline: bool) -> None:
    from sync.text import _clean_slow

    assert clean_text(text, multiline=multiline) == _clean_slow(text, multiline=multiline)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_clean_text_idempotent(text: str) -> None:
    once = clean_text(text)
    assert clean_text(once) == once
    assert "\x00" not in once and "\u202e" not in once and "\u200b" not in once


_KEYS = KeyPair.generate()


def test_trailing_newline_in_slug_refused() -> None:
    with pytest.raises(InvalidField):
        report(KeyPair.generate(), origin="n1\n")
    with pytest.raises(InvalidField):
        report(KeyPair.generate(), body={**REPORT_BODY, "receipt": "K7F-3QX\n"})
