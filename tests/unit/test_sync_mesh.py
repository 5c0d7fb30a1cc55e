"""Mesh documents v1 (sync/mesh.py) and replication state (sync/replication.py):
fixed vectors, refusals, property tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from sync import KeyPair, make_event
from sync.event import Event
from sync.mesh import (
    MAX_CHUNK_BYTES,
    MAX_CHUNK_EVENTS,
    MAX_DOC_BYTES,
    Bye,
    Carried,
    Carry,
    Chunk,
    Hello,
    MeshDocError,
    Ping,
    Relay,
    VectorDoc,
    chunks,
    parse,
)
from sync.replication import MAX_RANGES, Held

VECTORS = Path(__file__).parent.parent / "vectors"
VECTOR_FILE = VECTORS / "mesh-v1.json"
TS = 1795904700123


@pytest.fixture(scope="module")
def keys() -> KeyPair:
    return KeyPair(Ed25519PrivateKey.from_private_bytes(bytes(range(32))),
                   X25519PrivateKey.from_private_bytes(bytes(range(32, 64))))


def alert(keys: KeyPair, seq: int = 3, **body: object) -> Event:
    fields: dict[str, object] = {"source": "button", "category": "emergency",
                                 "severity": "extreme", "title": "", "text": "",
                                 "place": {"point": "kompasplein", "text": "Kompasplein"},
                                 "areas": ["ESC-02"], "button": "kompasplein-gevel"}
    fields.update(body)
    return make_event(keys, origin="escamp-zandloper", stream="public", seq=seq,
                      kind="alert", ts=TS + seq, body=fields,
                      event_id=f"019ac8f2-6d5b-7a3c-8e1f-{seq:012x}")


def documents(keys: KeyPair) -> dict[str, bytes]:
    vector = {"escamp-zandloper": Held(3, [(5, 7)]), "central-haaglanden": Held(2)}
    return {
        "hello": Hello(node="escamp-zandloper", display="Wijkcentrum De Zandloper",
                       area="ESC-02", fp=keys.fingerprint, uplink=True, vector=vector,
                       names={"escamp-kleine-wereld": "Buurthuis De Kleine Wereld"}).encode(),
        "vector": VectorDoc(vector, reply=True,
                            names={"escamp-zandloper": "Wijkcentrum De Zandloper"}).encode(),
        "chunk": Chunk((alert(keys, 1), alert(keys, 2)), more=False).encode(),
        "ev": Relay.of(alert(keys, 3), 2).encode(),
        "carry": Carry("escamp-zandloper", 12, b"BSB1" + bytes(range(40))).encode(),
        "carried": Carried("escamp-zandloper", 12, 200, b'{"ack":{}}').encode(),
        "ping": Ping(7).encode(),
        "pong": Ping(7, pong=True).encode(),
        "bye": Bye().encode(),
    }


def test_fixed_vectors(keys: KeyPair) -> None:
    """Each document type's exact bytes; parsing them gives the same bytes back."""
    docs = documents(keys)
    if os.environ.get("BART_WRITE_VECTORS") == "1":  # only together with a version change
        VECTOR_FILE.write_text(json.dumps({k: v.decode() for k, v in docs.items()},
                                          indent=1, ensure_ascii=False) + "\n")
    fixed = json.loads(VECTOR_FILE.read_text())
    assert set(fixed) == set(docs)
    for name, data in docs.items():
        assert data == fixed[name].encode(), name
        assert parse(data).encode() == data, name


def test_parsed_values(keys: KeyPair) -> None:
    docs = documents(keys)
    hello = parse(docs["hello"])
    assert isinstance(hello, Hello) and hello.vector["escamp-zandloper"] == Held(3, [(5, 7)])
    assert hello.display == "Wijkcentrum De Zandloper" and hello.uplink is True
    relay = parse(docs["ev"])
    assert isinstance(relay, Relay) and relay.hops == 2 and relay.event is not None
    relay.event.verify(keys.signing_public)  # the signature survives the trip
    chunk = parse(docs["chunk"])
    assert isinstance(chunk, Chunk) and [e.seq for e in chunk.events] == [1, 2]
    carry = parse(docs["carry"])
    assert isinstance(carry, Carry) and carry.batch.startswith(b"BSB1")
    assert parse(docs["pong"]) == Ping(7, pong=True)


@pytest.mark.parametrize("data, why", [
    (b"[]", "must be an object"),
    (b"{not json", "not valid JSON"),
    (b'{"v":2,"t":"bye"}', "version"),
    (b'{"v":1,"t":"gossip"}', "unknown mesh document type"),
    (b'{"v":1,"t":"bye","x":1}', "unknown field"),
    (b'{"v":1,"t":"ping"}', "missing field"),
    (b'{"v":1,"t":"ping","n":-1}', "n must be"),
    (b'{"v":1,"t":"ping","n":true}', "n must be"),
    (b'{"v":1,"t":"vector","reply":false,"names":{},"vector":{"a":[3,[[2,5]]]}}',
     "sorted, disjoint"),
    (b'{"v":1,"t":"vector","reply":false,"names":{},"vector":{"a":[3,[[9,5]]]}}',
     "sorted, disjoint"),
    (b'{"v":1,"t":"vector","reply":false,"names":{},"vector":{"A B":[3,[]]}}', "node name"),
    (b'{"v":1,"t":"vector","reply":false,"names":{},"vector":{"a":[3]}}', "gapless"),
    (b'{"v":1,"t":"vector","reply":1,"names":{},"vector":{}}', "reply must be"),
    (b'{"v":1,"t":"vector","reply":true,"names":{"a":"x\\u0000"},"vector":{}}', "names"),
    (b'{"v":1,"t":"vector","reply":true,"names":[],"vector":{}}', "names must be"),
    (b'{"v":1,"t":"carry","node":"a","batch_seq":1,"batch":"***"}', "base64"),
    (b'{"v":1,"t":"carry","node":"a","batch_seq":1,"batch":""}', "carried batch"),
    (b'{"v":1,"t":"carried","node":"a","batch_seq":1,"status":42,"reply":""}', "status"),
    (b'{"v":1,"t":"carried","node":"a","batch_seq":1,"status":200,"reply":"***"}',
     "reply must be base64"),
    (b'{"v":1,"t":"ev","hops":0,"event":{}}', "hops must be"),
    (b'{"v":1,"t":"ev","hops":1,"event":{}}', "malformed"),
    (b" " * (MAX_DOC_BYTES + 1), "exceeds"),
])
def test_malformed_documents_are_refused(data: bytes, why: str) -> None:
    with pytest.raises(MeshDocError, match=why):
        parse(data)


def test_private_events_never_travel(keys: KeyPair) -> None:
    report = make_event(keys, origin="n1", stream="private", seq=1, kind="status", ts=TS,
                        body={"event": "x"})
    doc = b'{"event":' + report.encode() + b',"hops":1,"t":"ev","v":1}'
    with pytest.raises(MeshDocError, match="only public"):
        parse(doc)
    chunk = b'{"events":[' + report.encode() + b'],"more":false,"t":"chunk","v":1}'
    with pytest.raises(MeshDocError, match="only public"):
        parse(chunk)


def test_a_forged_event_parses_but_does_not_verify(keys: KeyPair) -> None:
    """Parsing checks form only; the receiver verifies with the origin's key."""
    relay = parse(Relay.of(alert(keys), 1).encode())
    assert isinstance(relay, Relay) and relay.event is not None
    other = KeyPair.generate()
    with pytest.raises(Exception, match="does not verify"):
        relay.event.verify(other.signing_public)
    tampered = Relay.of(alert(keys), 1).encode().replace(b"Kompasplein", b"Speeltuin!!")
    relay = parse(tampered)
    assert isinstance(relay, Relay) and relay.event is not None
    with pytest.raises(Exception, match="does not verify"):
        relay.event.verify(keys.signing_public)


def test_chunks_stay_within_their_bounds(keys: KeyPair) -> None:
    events = [alert(keys, seq, text="x" * 900) for seq in range(1, 200)]
    groups = chunks(events)
    assert [e for g in groups for e in g] == events
    for group in groups:
        assert len(group) <= MAX_CHUNK_EVENTS
        assert len(Chunk(tuple(group)).encode()) <= MAX_CHUNK_BYTES + 64
    many = [alert(keys, seq) for seq in range(1, 1200)]
    assert all(len(g) <= MAX_CHUNK_EVENTS for g in chunks(many))


def test_a_vector_keeps_at_most_max_ranges(keys: KeyPair) -> None:
    held = Held(0, [(i, i) for i in range(2, 400, 2)])
    data = VectorDoc({"a": held}).encode()
    parsed = parse(data)
    assert isinstance(parsed, VectorDoc)
    assert len(parsed.vector["a"].ranges) == MAX_RANGES
    # What was left out only means it may be sent again: never more is claimed.
    assert all(seq in held for a, b in parsed.vector["a"].ranges for seq in range(a, b + 1))


@settings(max_examples=300, deadline=None)
@given(st.sets(st.integers(1, 80), max_size=60), st.sets(st.integers(1, 80), max_size=60),
       st.randoms())
def test_held_is_the_set_it_was_given(mine: set[int], theirs: set[int], rnd: object) -> None:
    order = list(mine)
    rnd.shuffle(order)  # type: ignore[attr-defined]
    held = Held()
    for seq in order:
        held.add(seq)
    assert {s for s in range(0, 90) if s in held} == mine
    gapless = 0
    while gapless + 1 in mine:
        gapless += 1
    assert held.gapless == gapless and held.count() == len(mine)
    other = Held()
    for seq in theirs:
        other.add(seq)
    lacking = {s for a, b in held.missing(other) for s in range(a, b + 1)}
    assert lacking == theirs - mine
    wire = parse(VectorDoc({"a": held}).encode())
    assert isinstance(wire, VectorDoc) and wire.vector["a"] == held.clipped()


def test_doctests() -> None:
    import doctest

    import sync.mesh
    import sync.replication

    assert doctest.testmod(sync.mesh).failed == 0
    assert doctest.testmod(sync.replication).failed == 0
