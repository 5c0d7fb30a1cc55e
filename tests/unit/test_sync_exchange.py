"""The uplink's documents (sync/exchange.py): fixed vectors, refusals, round trips."""

from __future__ import annotations

import base64
import copy
import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from sync import KeyPair, SyncError, event_from_dict, make_event, sealed
from sync import exchange as ex
from sync.canonical import canonical_bytes, parse_json
from sync.errors import InvalidField
from sync.event import STREAMS
from sync.exchange import (
    Ack,
    AckNotVerified,
    BatchMeta,
    ExchangeError,
    ExchangeVersion,
    ReceiptUpdate,
    SyncReply,
)
from sync.keys import b64
from sync.roster import (
    ACK_DOMAIN,
    ROSTER_DOMAIN,
    Roster,
    RosterEntry,
    sign_document,
    sign_roster,
    verify_roster,
)

VECTORS = Path(__file__).parent.parent / "vectors"
META_VECTOR = VECTORS / "uplink-meta-v1.json"
ACK_VECTOR = VECTORS / "uplink-ack-v1.json"
REPLY_VECTOR = VECTORS / "uplink-reply-v1.json"
TS = 1795904700123
NODE_NAME = "escamp-kleine-wereld"
CENTRAL_ORIGIN = "central-haaglanden"


def fixed_keys(offset: int) -> KeyPair:
    return KeyPair(Ed25519PrivateKey.from_private_bytes(bytes(range(offset, offset + 32))),
                   X25519PrivateKey.from_private_bytes(bytes(range(offset + 32, offset + 64))))


NODE = fixed_keys(0)       # the keys of the event and batch vectors
CENTRAL = fixed_keys(64)


# -- the values behind the vectors ------------------------------------------------------

def vector_meta() -> BatchMeta:
    return BatchMeta(heads={CENTRAL_ORIGIN: {"public": 12}}, updates_after=41, roster_serial=3,
                     backlog=250, version="0.1.0")


def vector_ack() -> Ack:
    return Ack(node=NODE_NAME, batch_seq=17, count=3, new=2, replay=False,
               holds={NODE_NAME: {"private": 1840, "public": 920}},
               updates=(ReceiptUpdate(id=42, report="019ac8f2-6d5b-7a3c-8e1f-000000000001",
                                      receipt="K7F-3QX", state="in_progress", at=TS + 5000),),
               at=TS + 9000)


def vector_event() -> dict[str, Any]:
    """A broadcast as central's ingest puts it in a reply (central.ingest.event_row_to_wire)."""
    e = make_event(CENTRAL, origin=CENTRAL_ORIGIN, stream="public", seq=13, kind="alert",
                   ts=TS, event_id="019ac8f2-6d5b-7a3c-8e1f-0000000000c1",
                   body={"source": "central", "title": "Politiebericht — café De Hoek",
                         "severity": "moderate", "areas": ["ESCAMP"],
                         "expires": TS + 3_600_000})
    return {"v": 1, "id": e.id, "origin": e.origin, "stream": e.stream, "seq": e.seq,
            "ts": e.ts, "kind": e.kind, "body": orjson.loads(e.body_json()),
            "sig": base64.b64encode(e.sig).decode()}


def vector_roster() -> dict[str, Any]:
    return sign_roster(Roster(serial=4, issued=TS, central_origin=CENTRAL_ORIGIN, nodes=(
        RosterEntry(name=NODE_NAME, area="ESCAMP", signing_pub=b64(NODE.signing_public),
                    encryption_pub=b64(NODE.encryption_public), enrolled=TS),)), CENTRAL)


def vector_reply() -> SyncReply:
    return SyncReply(ack=vector_ack().sign(CENTRAL), events=(vector_event(),),
                     roster=vector_roster())


def vector_bytes() -> dict[Path, bytes]:
    return {META_VECTOR: vector_meta().encode(),
            ACK_VECTOR: orjson.dumps(vector_ack().sign(CENTRAL)),  # as inside the reply
            REPLY_VECTOR: vector_reply().encode()}


# -- (1) the fixed vectors -----------------------------------------------------------------

def test_vectors_are_what_the_code_makes() -> None:
    if os.environ.get("BART_WRITE_VECTORS"):  # regenerate deliberately, never silently
        for path, data in vector_bytes().items():
            path.write_bytes(data)
    for path, data in vector_bytes().items():
        assert path.read_bytes() == data, path.name


def test_meta_vector_parses_and_reencodes_byte_for_byte() -> None:
    data = META_VECTOR.read_bytes()
    meta = BatchMeta.parse(data)
    assert meta == vector_meta()
    assert meta.encode() == data
    assert meta.head(CENTRAL_ORIGIN) == 12 and meta.head("central-other") == 0
    # The meta travels as these bytes inside the sealed payload.
    raw = zstandard.ZstdDecompressor().decompress(
        sealed.encode_payload(sealed.Payload.of([], meta.to_doc())), max_output_size=1 << 20)
    assert raw[4:] == data and int.from_bytes(raw[:4], "big") == len(data)
    # Central's tolerant reading agrees with the strict one on a valid meta.
    assert BatchMeta.read(orjson.loads(data)) == meta


def test_ack_vector_verifies_and_reencodes_byte_for_byte() -> None:
    data = ACK_VECTOR.read_bytes()
    signed = parse_json(data, 1 << 20)
    ack = Ack.verify(signed, CENTRAL.signing_public)
    assert ack == vector_ack()
    assert orjson.dumps(ack.sign(CENTRAL)) == data  # Ed25519 signatures are deterministic
    assert list(ack.to_doc()) == list(signed["doc"]) == [
        "v", "node", "batch_seq", "count", "new", "replay", "holds", "updates", "at"]
    assert ack.sign(CENTRAL)["sig"] == signed["sig"]
    assert ack.encode() == canonical_bytes(signed["doc"])


def test_reply_vector_parses_and_reencodes_byte_for_byte() -> None:
    data = REPLY_VECTOR.read_bytes()
    reply = SyncReply.parse(data)
    assert reply == vector_reply()
    assert reply.encode() == data
    assert ACK_VECTOR.read_bytes() in data
    assert Ack.verify(reply.ack, CENTRAL.signing_public) == vector_ack()
    assert reply.roster is not None
    assert verify_roster(reply.roster, CENTRAL.signing_public).serial == 4
    (event,) = reply.events
    event_from_dict(event).verify(CENTRAL.signing_public)


def test_central_writes_reply_events_as_in_the_vector() -> None:
    from central.ingest import event_row_to_wire

    want = vector_event()
    row = SimpleNamespace(**{**want, "body": orjson.dumps(want["body"],
                                                          option=orjson.OPT_SORT_KEYS).decode()})
    got = event_row_to_wire(row)
    assert got == want and list(got) == list(want)


def test_a_reply_as_central_built_it_by_hand_is_accepted() -> None:
    """The form central answered with before sync/exchange.py: a poll, nothing to send."""
    doc = {"v": 1, "node": NODE_NAME, "batch_seq": 1, "count": 0, "new": 0, "replay": False,
           "holds": {NODE_NAME: {"private": 0}}, "updates": [], "at": TS}
    body = orjson.dumps({"ack": sign_document(doc, CENTRAL, ACK_DOMAIN), "events": []})
    reply = SyncReply.parse(body)
    assert reply.encode() == body and reply.roster is None
    ack = Ack.verify(reply.ack, CENTRAL.signing_public)
    assert ack.holds == {NODE_NAME: {"private": 0}} and ack.updates == ()


def test_a_state_the_node_does_not_know_is_not_a_refusal() -> None:
    # A later central may add a state; the node skips it (node/uplink.py), as before.
    doc = vector_ack().to_doc()
    doc["updates"][0]["state"] = "escalated"
    assert Ack.from_doc(doc).updates[0].state == "escalated"


# -- (2) refusals ----------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    keys = path.split(".")

    def mutate(doc: dict[str, Any]) -> None:
        target: Any = doc
        for key in keys[:-1]:
            target = target[int(key)] if isinstance(target, list) else target[key]
        target[keys[-1]] = value
    return mutate


def _del(key: str) -> Mutation:
    return lambda doc: doc.pop(key)


META_BAD: dict[str, Mutation] = {
    "unknown field": _set("extra", 1),
    "missing field": _del("status"),
    "unknown status field": _set("status.uptime", 5),
    "missing status field": lambda d: d["status"].pop("version"),
    "negative updates_after": _set("updates_after", -1),
    "updates_after beyond 2**53-1": _set("updates_after", 2**53),
    "roster_serial as bool": _set("roster_serial", True),
    "roster_serial as text": _set("roster_serial", "3"),
    "backlog negative": _set("status.backlog", -5),
    "backlog null": _set("status.backlog", None),
    "version too long": _set("status.version", "1" * 41),
    "version not printable": _set("status.version", "1.0\n"),
    "version as number": _set("status.version", 1),
    "heads not an object": _set("heads", [CENTRAL_ORIGIN, 12]),
    "too many heads": _set("heads", {f"central-{i}": {"public": 1} for i in range(17)}),
    "head origin not a name": _set("heads", {"Central X": {"public": 1}}),
    "head stream unknown": _set("heads", {CENTRAL_ORIGIN: {"secret": 1}}),
    "negative head seq": _set("heads", {CENTRAL_ORIGIN: {"public": -1}}),
    "head seq as text": _set("heads", {CENTRAL_ORIGIN: {"public": "12"}}),
    "status not an object": _set("status", "ok"),
}


@pytest.mark.parametrize("case", sorted(META_BAD))
def test_meta_refusals(case: str) -> None:
    doc = vector_meta().to_doc()
    META_BAD[case](doc)
    with pytest.raises(ExchangeError):
        BatchMeta.from_doc(doc)


def test_meta_refusals_of_bytes() -> None:
    for data in (b"[]", b'{"heads": {}, "heads": {}}', b"{\"updates_after\": 1.5}", b"{",
                 b"x" * (sealed.MAX_META_BYTES + 1)):
        with pytest.raises(ExchangeError):
            BatchMeta.parse(data)


def test_central_reads_any_meta_without_refusing() -> None:
    huge = {"status": {"backlog": 2**64 - 1, "version": "x"}, "updates_after": 2**64 - 1,
            "roster_serial": 2**63, "heads": {CENTRAL_ORIGIN: {"public": 2**63}}}
    assert BatchMeta.read(huge) == BatchMeta(heads={CENTRAL_ORIGIN: {}}, version="x")
    assert BatchMeta.read({}) == BatchMeta()
    assert BatchMeta.read([1]) == BatchMeta()
    assert BatchMeta.read({"heads": {CENTRAL_ORIGIN: {"public": 7}, "x": 3, "Y": {"public": True}},
                           "updates_after": True, "roster_serial": 9, "extra": {},
                           "status": {"backlog": -1, "version": "v" * 41}}) == BatchMeta(
        heads={CENTRAL_ORIGIN: {"public": 7}, "Y": {}}, roster_serial=9)


ACK_BAD: dict[str, Mutation] = {
    "unknown field": _set("extra", 1),
    "missing field": _del("at"),
    "node not a name": _set("node", "Escamp West"),
    "batch_seq 0": _set("batch_seq", 0),
    "negative batch_seq": _set("batch_seq", -3),
    "batch_seq beyond 2**53-1": _set("batch_seq", 2**53),
    "batch_seq as text": _set("batch_seq", "17"),
    "count beyond a batch": _set("count", sealed.MAX_EVENTS + 1),
    "new beyond count": _set("new", 4),
    "negative new": _set("new", -1),
    "replay as number": _set("replay", 0),
    "at as text": _set("at", "now"),
    "holds not an object": _set("holds", []),
    "too many holds": _set("holds", {f"n{i}": {"private": 1}
                                     for i in range(ex.MAX_HOLD_ORIGINS + 1)}),
    "hold origin not a name": _set("holds", {"N!": {"private": 1}}),
    "hold stream unknown": _set("holds", {NODE_NAME: {"secret": 1}}),
    "negative hold": _set("holds", {NODE_NAME: {"private": -1}}),
    "hold as bool": _set("holds", {NODE_NAME: {"private": True}}),
    "updates not a list": _set("updates", {}),
    "too many updates": lambda d: d.update(updates=d["updates"] * (ex.MAX_ACK_UPDATES + 1)),
    "update not an object": _set("updates", [42]),
    "unknown update field": _set("updates.0.extra", 1),
    "missing update field": lambda d: d["updates"][0].pop("receipt"),
    "update id 0": _set("updates.0.id", 0),
    "update report not an event id": _set("updates.0.report", "r-1"),
    "update receipt malformed": _set("updates.0.receipt", "K7F3QX"),
    "update state malformed": _set("updates.0.state", "In Progress"),
    "update at negative": _set("updates.0.at", -1),
}


@pytest.mark.parametrize("case", sorted(ACK_BAD))
def test_ack_refusals(case: str) -> None:
    doc = vector_ack().to_doc()
    ACK_BAD[case](doc)
    with pytest.raises(ExchangeError) as caught:
        Ack.from_doc(doc)
    assert not isinstance(caught.value, ExchangeVersion)
    # Signed as central signs: the signature is good, the document still refused.
    try:
        signed = sign_document(doc, CENTRAL, ACK_DOMAIN)
    except InvalidField:  # beyond 2**53-1: not even signable
        return
    with pytest.raises(ExchangeError):
        Ack.verify(signed, CENTRAL.signing_public)


@pytest.mark.parametrize("v", [2, 0, True, "1", None])
def test_ack_of_another_version_is_refused_as_such(v: object) -> None:
    doc = vector_ack().to_doc()
    doc["v"] = v
    with pytest.raises(ExchangeVersion):
        Ack.from_doc(doc)
    del doc["v"]
    with pytest.raises(ExchangeVersion):
        Ack.from_doc(doc)


def _signature_cases() -> dict[str, Any]:
    good = vector_ack().sign(CENTRAL)
    flipped = copy.deepcopy(good)
    sig = bytearray(base64.b64decode(flipped["sig"]))
    sig[0] ^= 1
    flipped["sig"] = base64.b64encode(bytes(sig)).decode()
    altered = copy.deepcopy(good)
    altered["doc"]["new"] = 3
    return {
        "bad signature": flipped,
        "altered after signing": altered,
        "signed as a roster": sign_document(vector_ack().to_doc(), CENTRAL, ROSTER_DOMAIN),
        "signed by another key": vector_ack().sign(NODE),
        "sig not base64": {**good, "sig": "not base64!"},
        "extra field": {**good, "kid": "x"},
        "not signed": vector_ack().to_doc(),
    }


@pytest.mark.parametrize("case", sorted(_signature_cases()))
def test_ack_signature_refusals(case: str) -> None:
    with pytest.raises(AckNotVerified):
        Ack.verify(_signature_cases()[case], CENTRAL.signing_public)


REPLY_BAD: dict[str, Mutation] = {
    "unknown field": _set("extra", 1),
    "missing ack": _del("ack"),
    "missing events": _del("events"),
    "events not a list": _set("events", {}),
    "too many events": lambda d: d.update(events=[{}] * (ex.MAX_REPLY_EVENTS + 1)),
    "event not an object": _set("events", ["{}"]),
    "roster null": _set("roster", None),
    "roster not signed": _set("roster", {"serial": 4}),
    "ack not signed": lambda d: d.update(ack=d["ack"]["doc"]),
    "ack sig not text": _set("ack.sig", 7),
}


@pytest.mark.parametrize("case", sorted(REPLY_BAD))
def test_reply_refusals(case: str) -> None:
    doc = vector_reply().to_doc()
    doc["events"] = list(doc["events"])
    REPLY_BAD[case](doc)
    with pytest.raises(ExchangeError):
        SyncReply.from_doc(doc)
    with pytest.raises(ExchangeError):
        SyncReply.parse(orjson.dumps(doc))


def test_reply_refusals_of_bytes() -> None:
    good = REPLY_VECTOR.read_bytes()
    for data in (b"[]", good[:-1], good[:-1] + b',"events":[]}', b'{"x":1.0}', b"\xff",
                 good + b" " * ex.MAX_REPLY_BYTES):
        with pytest.raises(ExchangeError):
            SyncReply.parse(data)


def test_errors_are_sync_errors_with_one_line_docstrings() -> None:
    for cls in (ExchangeError, ExchangeVersion, AckNotVerified):
        assert issubclass(cls, SyncError)
        assert cls.__doc__ and "\n" not in cls.__doc__.strip()


# -- (3) round trips of random valid values ------------------------------------------------

SLUGS = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
SEQS = st.integers(0, ex.MAX_SEQ)
HEADS = st.dictionaries(SLUGS, st.dictionaries(st.sampled_from(STREAMS), SEQS), max_size=6)


@st.composite
def metas(draw: st.DrawFn) -> BatchMeta:
    heads = draw(st.dictionaries(SLUGS, st.dictionaries(st.sampled_from(STREAMS), SEQS),
                                 max_size=ex.MAX_HEAD_ORIGINS))
    version = draw(st.text(max_size=ex.MAX_VERSION_CHARS).filter(str.isprintable))
    return BatchMeta(heads=heads, updates_after=draw(SEQS), roster_serial=draw(SEQS),
                     backlog=draw(SEQS), version=version)


UPDATES = st.builds(
    ReceiptUpdate, id=st.integers(1, ex.MAX_SEQ),
    report=st.from_regex(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                         fullmatch=True),
    receipt=st.from_regex(r"[A-HJ-NP-Z2-9]{3}-[A-HJ-NP-Z2-9]{3}", fullmatch=True),
    state=st.from_regex(ex.STATE, fullmatch=True), at=SEQS)


@st.composite
def acks(draw: st.DrawFn) -> Ack:
    count = draw(st.integers(0, sealed.MAX_EVENTS))
    return Ack(node=draw(SLUGS), batch_seq=draw(st.integers(1, ex.MAX_SEQ)), count=count,
               new=draw(st.integers(0, count)), replay=draw(st.booleans()), holds=draw(HEADS),
               updates=tuple(draw(st.lists(UPDATES, max_size=5))), at=draw(SEQS))


JSON_SCALARS = st.none() | st.booleans() | st.integers(-ex.MAX_SEQ, ex.MAX_SEQ) | st.text()
JSON_OBJECTS = st.dictionaries(st.text(max_size=8), st.recursive(
    JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8), max_size=5)


@given(metas())
@settings(max_examples=200)
def test_meta_round_trips(meta: BatchMeta) -> None:
    data = meta.encode()
    assert BatchMeta.parse(data) == meta
    assert BatchMeta.parse(data).encode() == data
    assert BatchMeta.read(orjson.loads(data)) == meta


@given(acks())
@settings(max_examples=100)
def test_ack_round_trips_signed_and_unsigned(ack: Ack) -> None:
    assert Ack.from_doc(parse_json(ack.encode(), 1 << 24)) == ack
    signed = ack.sign(CENTRAL)
    assert Ack.verify(parse_json(orjson.dumps(signed), 1 << 24), CENTRAL.signing_public) == ack


@given(acks(), st.lists(JSON_OBJECTS, max_size=4),
       st.none() | st.builds(lambda d, s: {"doc": d, "sig": s}, JSON_OBJECTS, st.text()))
@settings(max_examples=100)
def test_reply_round_trips(ack: Ack, events: list[dict[str, Any]],
                           roster: dict[str, Any] | None) -> None:
    reply = SyncReply(ack=ack.sign(CENTRAL), events=tuple(events), roster=roster)
    data = reply.encode()
    again = SyncReply.parse(data)
    assert again == reply and again.encode() == data
    assert Ack.verify(again.ack, CENTRAL.signing_public) == ack


def test_meta_display_is_optional_and_checked() -> None:
    """A node may name its community centre in ``status.display``; strict parsing checks
    it, central's lenient reading drops a bad one."""
    meta = BatchMeta({}, backlog=0, version="1.0", display="Buurthuis De Kleine Wereld")
    assert BatchMeta.parse(meta.encode()).display == "Buurthuis De Kleine Wereld"
    assert BatchMeta.parse(BatchMeta({}, backlog=0, version="1.0").encode()).display is None
    for bad in ("", " padded", "x" * 81, "tab\there", 7):
        doc = {"heads": {}, "updates_after": 0, "roster_serial": 0,
               "status": {"backlog": 0, "version": "1.0", "display": bad}}
        with pytest.raises(ExchangeError):
            BatchMeta.from_doc(doc)
        assert BatchMeta.read(doc).display is None
    doc = {"heads": {}, "updates_after": 0, "roster_serial": 0,
           "status": {"backlog": 0, "version": "1.0", "colour": "red"}}
    with pytest.raises(ExchangeError, match="unknown field"):
        BatchMeta.from_doc(doc)


def test_receipt_update_may_carry_a_clean_short_reply() -> None:
    base = {"id": 3, "report": "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b", "receipt": "K7F-3QX",
            "state": "in_progress", "at": 1_700_000_000_000}
    assert ex.ReceiptUpdate.from_doc(base).reply is None
    ok = ex.ReceiptUpdate.from_doc({**base, "reply": "Dank u. De wijkagent komt langs."})
    assert ok.reply == "Dank u. De wijkagent komt langs." and ok.to_doc()["reply"] == ok.reply
    assert "reply" not in ex.ReceiptUpdate.from_doc(base).to_doc()
    for bad in ("", "   ", "x" * 281, "bidi\u202eoverride", 5):
        with pytest.raises(ExchangeError, match="reply"):
            ex.ReceiptUpdate.from_doc({**base, "reply": bad})
