"""Sealed batches: fixed vector, round trips, and every refusal by its own error."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from sync import KeyPair, make_event, sealed
from sync.event import MIN_TS, Event

VECTORS = Path(__file__).parent.parent / "vectors"
VECTOR = VECTORS / "batch-v1.bin"
TS = 1795904700123


def fixed_keys(offset: int) -> KeyPair:
    return KeyPair(Ed25519PrivateKey.from_private_bytes(bytes(range(offset, offset + 32))),
                   X25519PrivateKey.from_private_bytes(bytes(range(offset + 32, offset + 64))))


NODE = fixed_keys(0)       # same keys as the event vectors
CENTRAL = fixed_keys(64)


def events(keys: KeyPair = NODE, n: int = 3, origin: str = "escamp-kleine-wereld",
           start: int = 1) -> list[Event]:
    return [make_event(keys, origin=origin, stream="private", seq=start + i, kind="report",
                       ts=TS + i, event_id=f"019ac8f2-6d5b-7a3c-8e1f-{i + start:012d}",
                       body={"category": "nuisance", "text": f"Harde muziek {i} — café",
                             "place": {"point": None, "text": "Plein"}, "audience": "both",
                             "receipt": "K7F-3QX", "lang": "nl"})
            for i in range(n)]


def seal(evs: list[Event] | None = None, *, keys: KeyPair = NODE, seq: int = 1,
         central: KeyPair = CENTRAL, meta: dict[str, object] | None = None) -> bytes:
    return sealed.seal(sealed.Payload.of(evs if evs is not None else events(), meta or {}),
                       node_id="escamp-kleine-wereld", batch_seq=seq, created=TS, keys=keys,
                       central_encryption_public=central.encryption_public)


def open_(wire: bytes, node: KeyPair = NODE, central: KeyPair = CENTRAL) -> list[Event]:
    _, payload = sealed.open_batch(wire, node.signing_public, central.encryption)
    return list(sealed.iter_events(payload))


# -- the fixed vector -----------------------------------------------------------------

def test_vector_opens_to_known_events() -> None:
    if os.environ.get("BART_WRITE_VECTORS"):  # regenerate deliberately, never silently
        VECTOR.write_bytes(seal(meta={"heads": {"central-x": {"public": 4}}}))
    wire = VECTOR.read_bytes()
    header, payload = sealed.open_batch(wire, NODE.signing_public, CENTRAL.encryption)
    assert header.encode() == (
        b'{"batch_seq":1,"central_kid":"' + sealed.key_id(CENTRAL.encryption_public).encode()
        + b'","count":3,"created":1795904700123,"node_id":"escamp-kleine-wereld","v":1}')
    assert payload.meta == {"heads": {"central-x": {"public": 4}}}
    got = list(sealed.iter_events(payload))
    assert [e.encode() for e in got] == [e.encode() for e in events()]
    for e in got:
        e.verify(NODE.signing_public)


def test_vector_framing_is_as_documented() -> None:
    wire = VECTOR.read_bytes()
    assert wire[:4] == b"BSB1"
    (hlen,) = struct.unpack(">H", wire[4:6])
    assert wire[6:6 + hlen].startswith(b'{"batch_seq":1,')


# -- round trips ----------------------------------------------------------------------

def test_round_trip_and_empty_batch() -> None:
    evs = events(n=50)
    assert [e.encode() for e in open_(seal(evs))] == [e.encode() for e in evs]
    assert open_(seal([])) == []


def test_every_seal_is_fresh() -> None:
    # HPKE uses a fresh ephemeral key: the same payload never seals to the same bytes.
    assert seal() != seal()


@settings(max_examples=40, deadline=None)
@given(texts=st.lists(st.text(max_size=300), min_size=0, max_size=20),
       meta=st.dictionaries(st.text(min_size=1, max_size=10), st.integers(0, 2**40), max_size=5))
def test_round_trip_property(texts: list[str], meta: dict[str, int]) -> None:
    evs = [make_event(NODE, origin="n1", stream="private", seq=i + 1, kind="report",
                      ts=MIN_TS + i, body={"category": "social", "text": t,
                                           "receipt": "AAA-AAA", "place": {"point": None,
                                                                          "text": ""},
                                           "audience": "authorities"})
           for i, t in enumerate(texts)]
    wire = sealed.seal(sealed.Payload.of(evs, dict(meta)), node_id="n1", batch_seq=9,
                       created=TS, keys=NODE, central_encryption_public=CENTRAL.encryption_public)
    header, payload = sealed.open_batch(wire, NODE.signing_public, CENTRAL.encryption)
    assert header.count == len(evs) and payload.meta == meta
    assert [e.encode() for e in sealed.iter_events(payload)] == [e.encode() for e in evs]


def test_compression_beats_json_on_realistic_text() -> None:
    import json

    rows = [json.loads(line) for line in
            (Path(__file__).parent.parent / "data" / "reports.jsonl").read_text().splitlines()]
    evs = []
    for i, row in enumerate(rows[:200]):
        evs.append(make_event(NODE, origin="n1", stream="private", seq=i + 1, kind="report",
                              ts=MIN_TS + i, body={
                                  "category": row["category"], "text": row["text"][:1000],
                                  "place": {"point": None, "text": row["place"][:200]},
                                  "audience": row["audience"], "receipt": "K7F-3QX",
                                  "called_112": row["called_112"], "lang": row["lang"][:3]}))
    wire = sealed.seal(sealed.Payload.of(evs), node_id="n1", batch_seq=1, created=TS,
                       keys=NODE, central_encryption_public=CENTRAL.encryption_public)
    json_bytes = sum(len(e.encode()) for e in evs)
    assert len(wire) / json_bytes <= 0.40, f"{len(wire)} wire vs {json_bytes} JSON bytes"


# -- refusals, each with its own error ------------------------------------------------------

def _resign(wire: bytes, header: bytes | None = None, ct: bytes | None = None) -> bytes:
    """Rebuild a batch with a changed header or ciphertext, signed again by the node.

    This is what a node (or a thief of its key) could do: the signature is then
    fine, so only the HPKE binding of the header can catch it.
    """
    env = sealed.parse(wire)
    hdr = header if header is not None else env.header_bytes
    body = ct if ct is not None else env.ct
    sig = NODE.sign(sealed.SIG_DOMAIN + hdr + body)
    return b"BSB1" + struct.pack(">H", len(hdr)) + hdr + sig + body


def test_flipped_ciphertext_byte_fails_the_signature() -> None:
    wire = bytearray(seal())
    wire[-10] ^= 1
    with pytest.raises(sealed.BatchBadSignature):
        open_(bytes(wire))


def test_flipped_header_byte_fails_the_signature() -> None:
    wire = seal()
    hdr = sealed.parse(wire).header_bytes
    changed = wire.replace(hdr, hdr.replace(b'"count":3', b'"count":4'))
    with pytest.raises(sealed.BatchBadSignature):
        open_(changed)


def test_resigned_header_fails_decryption() -> None:
    wire = seal()
    hdr = sealed.parse(wire).header_bytes.replace(b'"batch_seq":1', b'"batch_seq":2')
    with pytest.raises(sealed.BatchBadTag):
        open_(_resign(wire, header=hdr))


def test_resigned_altered_ciphertext_fails_decryption() -> None:
    wire = seal()
    ct = bytearray(sealed.parse(wire).ct)
    ct[40] ^= 0x80
    with pytest.raises(sealed.BatchBadTag):
        open_(_resign(wire, ct=bytes(ct)))


def test_other_node_key_fails_the_signature() -> None:
    with pytest.raises(sealed.BatchBadSignature):
        open_(seal(), node=fixed_keys(128))


def test_wrong_key_id_is_named() -> None:
    with pytest.raises(sealed.BatchWrongKey):
        open_(seal(central=fixed_keys(128)))


def test_truncated_batches_are_malformed() -> None:
    wire = seal()
    for cut in (0, 3, 5, 6, 40, len(wire) - len(sealed.parse(wire).ct) - 1):
        with pytest.raises(sealed.BatchMalformed):
            open_(wire[:cut])
    with pytest.raises(sealed.BatchBadSignature):  # a shorter ciphertext: signature first
        open_(wire[:-1])


def test_oversized_batch_is_refused_before_work() -> None:
    with pytest.raises(sealed.BatchTooLarge):
        sealed.parse(b"BSB1" + b"\0" * sealed.MAX_BATCH_BYTES)


def test_unknown_versions_are_named() -> None:
    wire = seal()
    with pytest.raises(sealed.BatchVersion):
        sealed.parse(b"BSB2" + wire[4:])
    hdr = sealed.parse(wire).header_bytes.replace(b'"v":1', b'"v":2')
    with pytest.raises(sealed.BatchVersion):
        sealed.parse(_resign(wire, header=hdr))


def test_header_must_be_canonical_and_exact() -> None:
    wire = seal()
    hdr = sealed.parse(wire).header_bytes
    spaced = hdr.replace(b'"count":3', b'"count": 3')
    with pytest.raises(sealed.BatchMalformed):
        sealed.parse(_resign(wire, header=spaced))
    extra = hdr[:-1] + b',"x":1}'
    with pytest.raises(sealed.BatchMalformed):
        sealed.parse(_resign(wire, header=extra))


def test_count_mismatch_and_garbage_payload() -> None:
    # A node (key holder) sealing a payload that lies about its count.
    payload = sealed.encode_payload(sealed.Payload.of(events(n=2)))
    with pytest.raises(sealed.BatchMalformed, match="header says 3"):
        sealed.decode_payload(payload, 3)
    with pytest.raises(sealed.BatchMalformed):
        sealed.decode_payload(b"not zstd at all", 0)


def test_every_cut_of_the_frames_is_refused_and_extra_frames_too() -> None:
    plain = zstandard.ZstdDecompressor().decompress(
        sealed.encode_payload(sealed.Payload.of(events(n=2))))
    meta_end = 4 + int.from_bytes(plain[:4], "big")
    squeeze = zstandard.ZstdCompressor().compress
    assert len(sealed.decode_payload(squeeze(plain), 2).frames) == 2
    for cut in range(meta_end, len(plain)):
        with pytest.raises(sealed.BatchMalformed):  # never an IndexError, never a short list
            sealed.decode_payload(squeeze(plain[:cut]), 2)
    for count in (0, 1):
        with pytest.raises(sealed.BatchMalformed, match=f"header says {count}"):
            sealed.decode_payload(squeeze(plain), count)


def test_decompression_bomb_is_refused() -> None:
    bomb = zstandard.ZstdCompressor(level=19).compress(b"\0" * (sealed.MAX_PAYLOAD_BYTES + 1))
    with pytest.raises((sealed.BatchTooLarge, sealed.BatchMalformed)):
        sealed.decode_payload(bomb, 0)


def test_an_event_that_is_not_canonical_is_refused() -> None:
    ev = events(n=1)[0]
    unsigned = ev.signing_bytes()[len(b"bart/event/v1\x00"):]
    loose = unsigned.replace(b'"seq":1', b'"seq": 1')
    payload = sealed.Payload([(loose, ev.sig)], {})
    with pytest.raises(sealed.BatchMalformed, match="canonical"):
        list(sealed.iter_events(payload))
    bad = sealed.Payload([(unsigned.replace(b'"kind":"report"', b'"kind":"rumour"'), ev.sig)])
    with pytest.raises(sealed.BatchMalformed, match="kind"):
        list(sealed.iter_events(bad))


def test_too_many_events_refused_at_seal() -> None:
    big = sealed.Payload([(b"{}", bytes(64))] * (sealed.MAX_EVENTS + 1))
    with pytest.raises(sealed.BatchTooLarge):
        sealed.seal(big, node_id="n1", batch_seq=1, created=TS, keys=NODE,
                    central_encryption_public=CENTRAL.encryption_public)


# -- central's lean path: iter_lean checks exactly what iter_events(clean=False) checks ------

def _unsigned(ev: Event) -> bytes:
    return ev.signing_bytes()[len(b"bart/event/v1\x00"):]


def _outcome(fn: object, payload: sealed.Payload) -> tuple[str, object]:
    try:
        return ("ok", fn(payload))  # type: ignore[operator]
    except sealed.BatchError as exc:
        return (type(exc).__name__, str(exc))


def test_iter_lean_gives_the_fields_iter_events_gives() -> None:
    alert = make_event(NODE, origin="escamp-kleine-wereld", stream="public", seq=9,
                       kind="alert", ts=TS, body={"source": "team", "title": "Let op",
                                                  "areas": ["ESC-01"], "expires": TS + 60_000})
    evs = [*events(n=5), alert]
    payload = sealed.Payload.of(evs)
    lean = sealed.iter_lean(payload)
    full = list(sealed.iter_events(payload, clean=False))
    assert [(e.id, e.origin, e.stream, e.seq, e.ts, e.kind, e.body_json().decode(), e.sig,
             _unsigned(e)) for e in full] == lean


# Edits of one event's unsigned bytes, each of which some check must refuse (or not).
MUTATIONS = [
    (b'"seq":1', b'"seq": 1'), (b'"seq":1', b'"seq":1.0'), (b'"seq":1', b'"seq":0'),
    (b'"seq":1', b'"seq":true'), (b'"seq":1', b'"seq":"1"'), (b'"v":1', b'"v":2'),
    (b'"v":1', b'"v":true'), (b'"kind":"report"', b'"kind":"rumour"'),
    (b'"stream":"private"', b'"stream":"public"'), (b'"origin":"escamp', b'"origin":"Escamp'),
    (b'"id":"019ac8f2', b'"id":"019AC8F2'), (b'-7a3c-', b'-4a3c-'),
    (b'"ts":1795904700123', b'"ts":17'), (b'"category":"nuisance"', b'"category":"gossip"'),
    (b'"receipt":"K7F-3QX"', b'"receipt":"nope"'), (b'"receipt":"K7F-3QX"', b'"receipt":"K7F-3QI"'),
    (b'"receipt":"K7F-3QX"', b'"receipt":"K7F\\n3QX"'), (b'"origin":"escamp', b'"origin":"-scamp'),
    (b'"lang":"nl"', b'"lang":"nl","x":1'),
    (b'"text":"Plein"', b'"text":"Plein","z":"a"'),
    (b'{"body":', b'{"xbody":'), (b',"v":1}', b',"v":1,"w":2}'), (b',"v":1}', b'}'),
    (b'"audience":"both"', b'"audience":"both","audience":"both"'),
    ("—".encode(), b"\\u2014"), (b'"Harde', b'"Harde\\/'),
    (b'"seq":1,', b'"seq":1,"id":"019ac8f2-6d5b-7a3c-8e1f-000000000001",'),
]


@pytest.mark.parametrize(("old", "new"), MUTATIONS)
def test_iter_lean_refuses_what_iter_events_refuses(old: bytes, new: bytes) -> None:
    evs = events(n=3)
    frames = [(_unsigned(e), e.sig) for e in evs]
    assert old in frames[0][0], old
    frames[0] = (frames[0][0].replace(old, new, 1), frames[0][1])
    payload = sealed.Payload(frames, {})
    lean = _outcome(sealed.iter_lean, payload)
    full = _outcome(lambda p: list(sealed.iter_events(p, clean=False)), payload)
    assert lean == ("BatchMalformed", full[1]), (lean, full)


def test_iter_lean_refuses_a_short_signature_and_non_json() -> None:
    ev = events(n=1)[0]
    with pytest.raises(sealed.BatchMalformed, match="64-byte"):
        sealed.iter_lean(sealed.Payload([(_unsigned(ev), ev.sig[:63])], {}))
    with pytest.raises(sealed.BatchMalformed, match="not JSON"):
        sealed.iter_lean(sealed.Payload([(b"{", ev.sig)], {}))
    with pytest.raises(sealed.BatchMalformed, match="object"):
        sealed.iter_lean(sealed.Payload([(b"[]", ev.sig)], {}))


# Text as it may arrive inside a report's JSON, canonical or not: the fast path
# (msgspec) must agree with the general path on each, byte for byte.
TEXT_VARIANTS = [
    "gewoon", "café — 😀", "\\u00e9", "\\ud83d\\ude00", "\\ud800", "\\udc00x", "\\u0000",
    "\\u001f", "\\u001F", "\\t", "\\u0009", "\\n", "\\r\\b\\f", "\\\\", '\\"', "\\/", "/",
    "\x7f", "\\u007f", "\u2028", "\\u2028", "\u0085", "\\u0085", "\ufeff", "\\uFEFF",
    "\U0010ffff", "a\\u0000b",
]


@pytest.mark.parametrize("text", TEXT_VARIANTS)
def test_fast_and_general_paths_agree_on_text(text: str) -> None:
    from sync import fastpath

    ev = events(n=1)[0]
    unsigned = _unsigned(ev).replace("Harde muziek 0 — café".encode(), text.encode("utf-8",
                                                                                   "surrogatepass"))
    payload = sealed.Payload([(unsigned, ev.sig)], {})
    lean = _outcome(sealed.iter_lean, payload)
    full = _outcome(lambda p: [(e.id, e.origin, e.stream, e.seq, e.ts, e.kind,
                                e.body_json().decode(), e.sig, _unsigned(e))
                               for e in sealed.iter_events(p, clean=False)], payload)
    assert lean == full
    if fastpath.report(unsigned, ev.sig) is not None:  # the fast path's verdict held
        assert full[0] == "ok"


def test_the_fast_path_takes_ordinary_reports() -> None:
    from sync import fastpath

    for ev in events(n=5):
        assert fastpath.report(_unsigned(ev), ev.sig) is not None
    assert fastpath.report(_unsigned(events(n=1)[0]), b"short") is None


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF,
                                      blacklist_categories=("Cs",)), max_size=40))
def test_fast_path_never_accepts_what_the_general_path_refuses(text: str) -> None:
    from sync import fastpath

    ev = make_event(NODE, origin="escamp-kleine-wereld", stream="private", seq=1, kind="report",
                    ts=TS, event_id="019ac8f2-6d5b-7a3c-8e1f-000000000001",
                    body={"category": "nuisance", "text": "x", "place": {"point": None,
                          "text": "Plein"}, "audience": "both", "receipt": "K7F-3QX",
                          "lang": "nl"})
    import orjson

    unsigned = _unsigned(ev).replace(b'"text":"x"', b'"text":' + orjson.dumps(text))
    payload = sealed.Payload([(unsigned, ev.sig)], {})
    lean = _outcome(sealed.iter_lean, payload)
    full = _outcome(lambda p: [e.id for e in sealed.iter_events(p, clean=False)], payload)
    assert (lean[0] == "ok") == (full[0] == "ok")
    if fastpath.report(unsigned, ev.sig) is not None:
        assert full[0] == "ok"


def _status_frame(note_json: bytes) -> tuple[bytes, bytes]:
    ev = make_event(NODE, origin="escamp-kleine-wereld", stream="private", seq=5,
                    kind="status", ts=TS, body={"note": "ok"})
    return _unsigned(ev).replace(b'"note":"ok"', b'"note":' + note_json), ev.sig


@pytest.mark.parametrize("frame", [
    _status_frame(b'" ok "'), _status_frame(b'"ok  fine"'), _status_frame(b'"a\\nb"'),
    _status_frame('"\u202eok"'.encode()), _status_frame(b'"o\\u0000k"'),
    _status_frame('"e\u0301"'.encode()), _status_frame('"a\u200bb"'.encode()),
    _status_frame(b'"ok"'),
    # Invalid UTF-8, an unhashable origin or kind: a refusal, never a crash.
    ((_unsigned(events(n=1)[0]).replace(b"Harde", b"Ha\xffrde"), events(n=1)[0].sig)),
    ((_unsigned(events(n=1)[0]).replace(b'"origin":"escamp-kleine-wereld"', b'"origin":[]'),
      events(n=1)[0].sig)),
    ((_unsigned(events(n=1)[0]).replace(b'"kind":"report"', b'"kind":{}'),
      events(n=1)[0].sig)),
], ids=["spaces", "double-space", "newline", "bidi", "nul", "nfd", "zwsp", "clean", "utf8",
        "origin-list", "kind-object"])
def test_review_cases_agree(frame: tuple[bytes, bytes]) -> None:
    payload = sealed.Payload([frame], {})
    lean = _outcome(sealed.iter_lean, payload)
    full = _outcome(lambda p: [(e.id, e.origin, e.stream, e.seq, e.ts, e.kind,
                                e.body_json().decode(), e.sig, _unsigned(e))
                               for e in sealed.iter_events(p, clean=False)], payload)
    assert lean == full
