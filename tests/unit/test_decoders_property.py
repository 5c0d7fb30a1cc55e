"""Every decoder that takes outside bytes refuses hostile input with its own refusal.

Issue 17, "Hostile input": the report JSON and form, events, batch and
exchange documents, mesh documents, enrolment requests, sealed and carried
batches, central's fast path and the node's MQTT payloads. Each is fed
hypothesis-generated hostile input — invalid UTF-8, lone surrogates, nesting
5,000 deep, duplicate keys, NaN/Infinity and floats, huge integers, oversize
bodies, random bytes and mutations of the fixed test vectors — and must either
accept it or raise its documented refusal; any other exception fails the test.

Sized for CI on a loaded machine (the whole file well under 60 s): ``EXAMPLES``
per decoder; ``BART_DECODER_EXAMPLES`` raises it for a longer local run.
tests/fuzz/ has the atheris harness for hours-long runs (docs/fuzzing.md).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import TopicError
from broker.topics import parse_event_topic
from node.buttons import parse_press
from node.mesh.carry import shrink_reply
from node.portal import intake
from sync import (
    EventError,
    InvalidField,
    KeyPair,
    SyncError,
    decode_event,
    fastpath,
    mesh,
    sealed,
)
from sync.canonical import parse_json
from sync.enrolment import normalise_code, parse_request
from sync.exchange import Ack, BatchMeta, ExchangeError, ReceiptUpdate, SyncReply
from sync.roster import ROSTER_DOMAIN, sign_document, verify_roster

VECTORS = Path(__file__).parent.parent / "vectors"
EXAMPLES = int(os.environ.get("BART_DECODER_EXAMPLES", "250"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _keys(offset: int) -> KeyPair:
    return KeyPair(Ed25519PrivateKey.from_private_bytes(bytes(range(offset, offset + 32))),
                   X25519PrivateKey.from_private_bytes(bytes(range(offset + 32, offset + 64))))


NODE = _keys(0)       # the keys of the fixed vectors (tests/vectors/README.md)
CENTRAL = _keys(64)


def _vectors() -> dict[str, bytes]:
    out = {p.name: p.read_bytes() for p in VECTORS.glob("*.bin")}
    out.update({f"mesh-{k}": v.encode()
                for k, v in json.loads((VECTORS / "mesh-v1.json").read_text()).items()})
    for name in ("uplink-ack-v1.json", "uplink-meta-v1.json", "uplink-reply-v1.json"):
        out[name] = (VECTORS / name).read_bytes()
    return out


SEEDS = _vectors()
JSON_SEEDS = [v for k, v in SEEDS.items() if k != "batch-v1.bin" and "signing" not in k]


def _csr() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "escamp-zandloper")])
    ).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


CSR = _csr()
ENROL_SEED = json.dumps({
    "v": 1, "node": "escamp-zandloper", "code": "K7FQ-3QXA-M2PD-W9RT",
    "signing_pub": base64.b64encode(NODE.signing_public).decode(),
    "encryption_pub": base64.b64encode(NODE.encryption_public).decode(),
    "csr_pem": CSR, "version": "1.0"}).encode()
REPORT_SEED = json.dumps({
    "category": "nuisance", "text": "Harde muziek", "place": {"point": None, "text": "Plein"},
    "audience": "both", "called_112": False, "called_112_by": "", "contact": "",
    "lang": "nl"}).encode()
PRESS_SEED = b'{"v":1,"id":"press-0001","button":"kompasplein","kind":"alarm","ts":1795904700123}'
JSON_SEEDS += [ENROL_SEED, REPORT_SEED, PRESS_SEED]


# -- hostile input ------------------------------------------------------------------------

KEYS = st.sampled_from(["v", "t", "id", "body", "kind", "text", "place", "category", "ack",
                        "events", "heads", "status", "node", "receipt", "doc", "sig", "\ud800",
                        "\udfff", "a\ud83d", "é", ""])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**53 - 2),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.sampled_from(["\ud800", "x\udc00y", "K7F-3QX", "019ac8f2-6d5b-7a3c-8e1f-000000000001",
                     "escamp-zandloper", "public", "private", "report", "alert", "nuisance"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(KEYS | st.text(max_size=8), inner, max_size=5)),
    max_leaves=20)


def _dumps(value: Any) -> bytes:
    # allow_nan: NaN and Infinity go out as the bare words JSON forbids;
    # ensure_ascii: surrogates go out as \\udxxx escapes.
    return json.dumps(value, allow_nan=True).encode()


def _nest(depth: int, inner: bytes, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + inner + b"]" * depth
    return b'{"a":' * depth + inner + b"}" * depth


NESTED = st.builds(_nest, st.integers(1000, 6000), st.sampled_from([b"1", b"{}", b'"x"']),
                   st.sampled_from(["list", "object"]))
HUGE_INT = st.builds(lambda n, neg: (b'{"v":' + (b"-" if neg else b"") + b"9" * n + b"}"),
                     st.integers(16, 6000), st.booleans())
SPECIALS = st.sampled_from([
    b'{"v":NaN}', b'{"v":Infinity}', b'{"v":-Infinity}', b'{"v":1e400}', b'{"v":1.5}',
    b'{"v":1,"v":1}', b'{"a":{"b":1,"b":2}}', b'{"\\ud800":1}', b'{"v":"\\ud800"}',
    b'["\\udfff"]', b'"\\ud83d\\ude00"', b'{"v":"\xed\xa0\x80"}', b'{"v":"\xff"}',
    b"\xef\xbb\xbf{}", b'{"v":"\xc3\x28"}', b"", b"{", b"null", b"[]", b'"x"', b"1", b"-0", b"\x00",
])


@st.composite
def _mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed document with a few bytes flipped, inserted, cut or repeated."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "insert", "cut", "truncate", "dup", "splice"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if how == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "insert":
            data[at:at] = draw(st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\\ud800", b"NaN",
                                                b"9" * 40, b",", b'"', b"{", b"]", b"\x00",
                                                b'"v":1,', b"1e9"]))
        elif how == "cut":
            del data[at:at + draw(st.integers(1, 16))]
        elif how == "truncate":
            del data[at:]
        elif how == "dup":
            data[at:at] = data[at:at + draw(st.integers(1, 64))]
        else:
            data[at:at] = _dumps(draw(VALUES))
    return bytes(data)


@st.composite
def _doc_with_value(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed object with one field replaced, added or removed (valid JSON, wrong shape)."""
    try:
        doc = json.loads(draw(st.sampled_from(seeds)))
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {"doc": doc}
    target: dict[str, Any] = doc
    for key in ("body", "doc", "place"):  # sometimes go one level down
        if isinstance(target.get(key), dict) and draw(st.booleans()):
            target = target[key]
    keys = sorted(target) or ["v"]
    key = draw(st.sampled_from(keys) | KEYS)
    if draw(st.booleans()) and key in target and len(target) > 1:
        del target[key]
    else:
        target[key] = draw(VALUES)
    return _dumps(doc)


def hostile(seeds: list[bytes], limit: int = 20_000) -> st.SearchStrategy[bytes]:
    """Bytes a hostile sender may send, most of them near a valid document."""
    oversize = st.builds(lambda s: s + b" " * (limit + 1 - len(s)) if len(s) <= limit else s,
                         st.sampled_from(seeds))
    return st.one_of(_mutated(seeds), _doc_with_value(seeds), NESTED, HUGE_INT, SPECIALS,
                     st.binary(max_size=300), VALUES.map(_dumps), oversize)


def refuses(decode: Callable[[], object], *refusals: type[BaseException]) -> None:
    """Run ``decode``; any exception that is not one of ``refusals`` fails the test."""
    with contextlib.suppress(*refusals):
        decode()


# -- sync ---------------------------------------------------------------------------------

@PROPERTY
@given(hostile(JSON_SEEDS, 8192))
def test_parse_json_refuses_with_event_error(data: bytes) -> None:
    refuses(lambda: parse_json(data, 8192), EventError)


@PROPERTY
@given(st.one_of(hostile(JSON_SEEDS, 8192), st.just(b'{"v":1}')))
def test_parse_json_never_returns_what_it_promised_to_refuse(data: bytes) -> None:
    """Accepted JSON holds no float, no lone surrogate and no integer JSON readers
    cannot take exactly; its text is valid UTF-8 again."""
    try:
        value = parse_json(data, 8192)
    except EventError:
        return

    def walk(v: Any) -> None:
        assert not isinstance(v, float)
        if isinstance(v, str):
            v.encode("utf-8")  # a lone surrogate raises here
        elif isinstance(v, int) and not isinstance(v, bool):
            assert len(str(abs(v))) <= 20
        elif isinstance(v, list):
            for item in v:
                walk(item)
        elif isinstance(v, dict):
            for key, item in v.items():
                walk(key)
                walk(item)

    walk(value)


EVENT_SEEDS = [SEEDS["event-v1-report.wire.bin"], SEEDS["event-v1-alert.wire.bin"]]


@PROPERTY
@given(hostile(EVENT_SEEDS, 8192))
def test_decode_event_refuses_with_event_error(data: bytes) -> None:
    refuses(lambda: decode_event(data), EventError)


MESH_SEEDS = [v for k, v in SEEDS.items() if k.startswith("mesh-")]


@PROPERTY
@given(hostile(MESH_SEEDS, mesh.MAX_DOC_BYTES))
def test_mesh_documents_refuse_with_mesh_doc_error(data: bytes) -> None:
    refuses(lambda: mesh.parse(data), mesh.MeshDocError)


@PROPERTY
@given(hostile([SEEDS["uplink-meta-v1.json"]], 70_000))
def test_batch_meta_refuses_with_exchange_error(data: bytes) -> None:
    refuses(lambda: BatchMeta.parse(data), ExchangeError)
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return
    BatchMeta.read(doc)  # central's reading never refuses, whatever the meta


@PROPERTY
@given(hostile([SEEDS["uplink-reply-v1.json"], SEEDS["uplink-ack-v1.json"]]))
def test_reply_and_ack_refuse_with_exchange_error(data: bytes) -> None:
    refuses(lambda: SyncReply.parse(data), ExchangeError)
    try:
        doc = parse_json(data, 20_000)
    except EventError:
        return
    refuses(lambda: Ack.verify(doc, CENTRAL.signing_public), ExchangeError)
    refuses(lambda: Ack.from_doc(doc.get("doc") if isinstance(doc, dict) else doc),
            ExchangeError)
    refuses(lambda: ReceiptUpdate.from_doc(doc), ExchangeError)


@PROPERTY
@given(hostile([ENROL_SEED], 64 * 1024))
def test_enrolment_request_refuses_with_invalid_field(data: bytes) -> None:
    refuses(lambda: parse_request(parse_json(data, 64 * 1024), need_code=True), EventError)
    refuses(lambda: normalise_code(data.decode("utf-8", "surrogateescape")), EventError)


def test_a_broken_certificate_request_is_refused_with_the_request() -> None:
    """Central signed the CSR only after taking the one-time code and answered 500 for
    one that did not parse; now the request itself is refused (central: 422)."""
    good = json.loads(ENROL_SEED)
    assert parse_request(good, need_code=True).csr_pem == CSR
    der = bytearray(x509.load_pem_x509_csr(CSR.encode()).public_bytes(
        serialization.Encoding.DER))
    der[-1] ^= 1  # inside the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    for csr in ("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
                CSR.replace("A", "B", 3), tampered.decode()):
        with pytest.raises(InvalidField) as refused:
            parse_request({**good, "csr_pem": csr}, need_code=True)
        assert refused.value.field == "csr_pem"


@PROPERTY
@given(VALUES)
def test_roster_refuses_with_sync_error(doc: Any) -> None:
    """Even a document central's key signed must be refused in words, not by a crash."""
    refuses(lambda: verify_roster(doc, CENTRAL.signing_public), SyncError)
    if isinstance(doc, dict):
        try:
            signed = sign_document(doc, CENTRAL, ROSTER_DOMAIN)
        except (EventError, UnicodeEncodeError):
            return  # cannot be signed: floats or lone surrogates
        refuses(lambda: verify_roster(signed, CENTRAL.signing_public), SyncError)


@PROPERTY
@given(_mutated([SEEDS["batch-v1.bin"]]) | st.binary(max_size=400))
def test_sealed_batches_refuse_with_batch_error(wire: bytes) -> None:
    refuses(lambda: sealed.open_batch(wire, NODE.signing_public, CENTRAL.encryption),
            sealed.BatchError)


def _frames(data: bytes) -> list[tuple[bytes, bytes]]:
    return [(data, bytes(64))]


@PROPERTY
@given(hostile([*EVENT_SEEDS, SEEDS["event-v1-report.signing.bin"][14:]], 8192))
def test_batch_frames_refuse_with_batch_error(unsigned: bytes) -> None:
    """Frames of an opened batch (central's general and lean paths, the fast path)."""
    payload = sealed.Payload(_frames(unsigned), {})
    refuses(lambda: list(sealed.iter_events(payload)), sealed.BatchError)
    refuses(lambda: sealed.iter_lean(payload), sealed.BatchError)
    fastpath.report(unsigned, bytes(64))  # None is its refusal: it never raises
    fastpath.reports(_frames(unsigned) * 2)


@PROPERTY
@given(st.binary(max_size=600), st.integers(0, 5))
def test_batch_payload_refuses_with_batch_error(data: bytes, count: int) -> None:
    refuses(lambda: sealed.decode_payload(data, count), sealed.BatchError)
    import zstandard
    packed = zstandard.ZstdCompressor().compress(data)
    refuses(lambda: sealed.decode_payload(packed, count), sealed.BatchError)


@PROPERTY
@given(hostile([SEEDS["uplink-reply-v1.json"]], 70_000))
def test_carried_reply_shrinking_never_raises(content: bytes) -> None:
    """A carrier node shrinks central's reply for a peer whatever central sent."""
    shrink_reply(content)


# -- the node's MQTT payloads -------------------------------------------------------------

TOPICS = st.one_of(st.text(max_size=60), st.sampled_from([
    "bart/v1/escamp-zandloper/public/alert", "bart/v1/n1/private/report", "bart/v1/+/public/#",
    "bart/v1/\ud800/public/alert", "bart/v1/n1/public/alert/x", "bart/v1/n1/health"]))


@PROPERTY
@given(TOPICS, hostile(EVENT_SEEDS, 8192))
def test_mqtt_event_messages_refuse_with_their_errors(topic: str, payload: bytes) -> None:
    """What the node's ``_on_mqtt_message`` decodes: the topic, then the event."""
    refuses(lambda: parse_event_topic(topic), TopicError)
    refuses(lambda: decode_event(payload), SyncError)


@PROPERTY
@given(hostile([PRESS_SEED], 512))
def test_point_device_presses_refuse_with_value_error(payload: bytes) -> None:
    refuses(lambda: parse_press(payload), ValueError)


@pytest.mark.parametrize("depth", [5000])
def test_depth_5000_is_refused_by_every_json_decoder(depth: int) -> None:
    """The case of the issue, named: nesting 5,000 deep (hypothesis also tries it)."""
    data = b"[" * depth + b"]" * depth
    with pytest.raises(EventError):
        parse_json(data, 1 << 20)
    with pytest.raises(EventError):
        decode_event(data, limit=1 << 20)
    with pytest.raises(ExchangeError):
        SyncReply.parse(data)
    with pytest.raises(mesh.MeshDocError):
        mesh.parse(data[:mesh.MAX_DOC_BYTES])


# -- the report intake (form and API) -----------------------------------------------------

POINTS = {"kompasplein": "Kompasplein", "speeltuin": "Speeltuin De Klimboom"}


def _intake_refuses(read: Callable[[], dict[str, Any]]) -> None:
    """Accepted: exactly a report's fields; refused: 422/413 with a reason any answer can
    carry (valid UTF-8, bounded)."""
    try:
        clean = intake.check(read(), POINTS)
    except intake.Refused as exc:
        assert exc.status in (422, 413)
        exc.reason.encode("utf-8")
        exc.field.encode("utf-8")
        assert len(exc.reason) <= intake.MAX_REASON
        return
    assert set(clean) == intake.FIELDS
    assert len(clean["text"]) <= intake.LIMITS["text"]


@PROPERTY
@given(hostile([REPORT_SEED], 16_384))
def test_report_json_refuses_with_refused(data: bytes) -> None:
    _intake_refuses(lambda: intake.from_json(data, 16_384))


FORM_TEXT = st.one_of(st.text(max_size=60), st.text(max_size=5000),
                      st.sampled_from(["\ud800", "yes", "kompasplein", "onbekend", "NaN", "",
                                       "x" * 1001, " " * 3000 + "x", "\u202e" * 10]))


@PROPERTY
@given(st.dictionaries(st.sampled_from(["category", "text", "place_point", "place_text",
                                        "audience", "called_112", "called_112_by", "contact",
                                        "receipt", "csrf"]), FORM_TEXT, max_size=10),
       st.sampled_from(["nl", "en", "tr", "ar", "pl"]))
def test_report_form_refuses_with_refused(values: dict[str, str], lang: str) -> None:
    _intake_refuses(lambda: intake.from_form(values, lang))


def test_unknown_fields_in_a_report_are_refused() -> None:
    """``additionalProperties: false`` in ReportIn: a client cannot choose its receipt."""
    for extra in ({"receipt": "K7F-3QX"}, {"id": "x"}, {"place": {"point": None, "x": 1}}):
        body = {**json.loads(REPORT_SEED), **extra}
        with pytest.raises(intake.Refused) as refused:
            intake.from_json(json.dumps(body).encode(), 16_384)
        assert refused.value.status == 422


def test_intake_doctests() -> None:
    """A report at a meeting point carries the point's name (node/portal/intake.py)."""
    import doctest

    assert doctest.testmod(intake).failed == 0
    clean = intake.check(intake.from_form({"category": "nuisance", "place_point": "speeltuin",
                                           "text": "Harde muziek"}, "nl"), POINTS)
    assert clean["place"] == {"point": "speeltuin", "text": "Speeltuin De Klimboom"}
