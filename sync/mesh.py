"""Mesh documents: everything two nodes say to each other (docs/mesh.md).

Every message on a mesh topic is one JSON object with ``v`` (1) and ``t``
(its type). :func:`parse` turns received bytes into one of the typed values
below or raises :class:`MeshDocError`; each value's ``encode()`` gives the
bytes to send. Unknown fields, unknown types, other versions and anything
larger than :data:`MAX_DOC_BYTES` are refused. Events inside documents are
checked as everywhere else (:func:`sync.event.event_from_dict`); their
signatures are verified by the receiver, which knows the keys.

>>> doc = Relay(hops=1, event_json=b'{}')
>>> doc.encode()
b'{"event":{},"hops":1,"t":"ev","v":1}'
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from .bodies import AREA, SLUG
from .errors import SyncError
from .event import MAX_EVENT_BYTES, Event, event_from_dict
from .replication import MAX_RANGES, Held

MESH_VERSION: Final = 1
#: Largest document: under the node broker's 64 KiB packet limit with the topic.
MAX_DOC_BYTES: Final = 60_000
#: Most events, and most bytes of events, in one catch-up chunk.
MAX_CHUNK_EVENTS: Final = 500
MAX_CHUNK_BYTES: Final = 48 * 1024
#: Most origins in one vector (a neighbourhood has tens of nodes).
MAX_VECTOR_ORIGINS: Final = 512
#: Largest hop count a relayed event may carry.
MAX_HOPS: Final = 16
#: Largest sealed batch carried through a peer (base64 grows it by a third).
MAX_CARRY_BYTES: Final = 40_000
MAX_SEQ: Final = 2**53 - 1
FINGERPRINT: Final = re.compile(r"[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}")

Vector = dict[str, Held]


class MeshDocError(SyncError):
    """A mesh document is malformed, too large or of an unknown type or version."""


def _loads(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_DOC_BYTES:
        raise MeshDocError(f"document of {len(data)} bytes exceeds {MAX_DOC_BYTES}")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MeshDocError(f"not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise MeshDocError("a mesh document must be an object")
    return doc


def _dumps(doc: dict[str, Any]) -> bytes:
    data = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    if len(data) > MAX_DOC_BYTES:
        raise MeshDocError(f"document of {len(data)} bytes exceeds {MAX_DOC_BYTES}")
    return data


def _fields(doc: dict[str, Any], allowed: frozenset[str]) -> None:
    keys = doc.keys()
    if keys != allowed:
        extra, missing = set(keys) - allowed, allowed - set(keys)
        if extra:
            raise MeshDocError(f"unknown field(s): {', '.join(sorted(extra))}")
        raise MeshDocError(f"missing field(s): {', '.join(sorted(missing))}")


def _int(value: Any, name: str, low: int = 0, high: int = MAX_SEQ) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise MeshDocError(f"{name} must be an integer from {low} to {high}")
    return value


def _slug(value: Any, name: str) -> str:
    if not isinstance(value, str) or not SLUG.fullmatch(value):
        raise MeshDocError(f"{name} must be a node name (a-z, 0-9, -)")
    return value


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise MeshDocError(f"{name} must be true or false")
    return value


#: Most community-centre names a hello or vector passes on.
MAX_NAMES: Final = 64


def _display(value: Any, name: str) -> str:
    if not isinstance(value, str) or len(value) > 80 \
            or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise MeshDocError(f"{name} must be a name of at most 80 characters")
    return value


def names_from_wire(value: Any) -> dict[str, str]:
    """Check ``{node: community-centre name}`` (at most MAX_NAMES)."""
    if not isinstance(value, dict) or len(value) > MAX_NAMES:
        raise MeshDocError(f"names must be an object of at most {MAX_NAMES} entries")
    return {_slug(k, "names key"): _display(v, f"names[{k}]") for k, v in value.items()}


def _b64(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise MeshDocError(f"{name} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MeshDocError(f"{name} must be base64 text") from exc


def vector_to_wire(vector: Vector) -> dict[str, Any]:
    """``{origin: [gapless, [[from, to], …]]}``, at most MAX_RANGES ranges each."""
    out: dict[str, Any] = {}
    for origin, held in vector.items():
        clipped = held.clipped(MAX_RANGES)
        out[origin] = [clipped.gapless, [list(r) for r in clipped.ranges]]
    return out


def vector_from_wire(value: Any) -> Vector:
    """Parse and check a vector; raise :class:`MeshDocError`."""
    if not isinstance(value, dict) or len(value) > MAX_VECTOR_ORIGINS:
        raise MeshDocError(f"vector must be an object of at most {MAX_VECTOR_ORIGINS} origins")
    out: Vector = {}
    for origin, entry in value.items():
        _slug(origin, "vector origin")
        if not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[1], list) \
                or len(entry[1]) > MAX_RANGES:
            raise MeshDocError(f"vector[{origin}] must be [gapless, [[from, to], …]] "
                               f"with at most {MAX_RANGES} ranges")
        gapless = _int(entry[0], f"vector[{origin}] gapless")
        last = gapless
        ranges = []
        for pair in entry[1]:
            if not isinstance(pair, list) or len(pair) != 2:
                raise MeshDocError(f"vector[{origin}] ranges must be [from, to] pairs")
            start = _int(pair[0], f"vector[{origin}] range", 1)
            end = _int(pair[1], f"vector[{origin}] range", 1)
            if start <= last + 1 or end < start:
                raise MeshDocError(f"vector[{origin}] ranges must be sorted, disjoint and "
                                   "beyond the gapless prefix")
            ranges.append((start, end))
            last = end
        held = Held(gapless)
        held.ranges = ranges
        out[origin] = held
    return out


@dataclass(frozen=True, slots=True)
class Hello:
    """First document of a session, from both sides."""

    node: str
    area: str
    fp: str
    uplink: bool
    vector: Vector
    display: str = ""
    #: Names of other community centres the sender knows (so that teams two hops
    #: away read "De Kleine Wereld", not a node name).
    names: dict[str, str] = field(default_factory=dict)
    proto: int = MESH_VERSION

    FIELDS = frozenset({"v", "t", "node", "display", "area", "fp", "proto", "uplink",
                        "vector", "names"})

    def encode(self) -> bytes:
        """Wire bytes."""
        return _dumps({"v": MESH_VERSION, "t": "hello", "node": self.node,
                       "display": self.display, "area": self.area,
                       "fp": self.fp, "proto": self.proto, "uplink": self.uplink,
                       "vector": vector_to_wire(self.vector),
                       "names": dict(list(self.names.items())[:MAX_NAMES])})

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Hello:
        """Check a parsed document."""
        _fields(doc, cls.FIELDS)
        area = doc["area"]
        if not isinstance(area, str) or not AREA.fullmatch(area):
            raise MeshDocError("area must be an area code")
        fp = doc["fp"]
        if not isinstance(fp, str) or not FINGERPRINT.fullmatch(fp):
            raise MeshDocError("fp must be a key fingerprint like QX7K-3MFA-P2RT")
        display = _display(doc["display"], "display")
        return cls(node=_slug(doc["node"], "node"), area=area, fp=fp, display=display,
                   names=names_from_wire(doc["names"]),
                   proto=_int(doc["proto"], "proto", 1, 1000),
                   uplink=_bool(doc["uplink"], "uplink"),
                   vector=vector_from_wire(doc["vector"]))


@dataclass(frozen=True, slots=True)
class VectorDoc:
    """What the sender holds; the receiver answers with what the sender lacks."""

    vector: Vector
    reply: bool = False
    names: dict[str, str] = field(default_factory=dict)

    FIELDS = frozenset({"v", "t", "vector", "reply", "names"})

    def encode(self) -> bytes:
        """Wire bytes."""
        return _dumps({"v": MESH_VERSION, "t": "vector", "reply": self.reply,
                       "vector": vector_to_wire(self.vector),
                       "names": dict(list(self.names.items())[:MAX_NAMES])})

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> VectorDoc:
        """Check a parsed document."""
        _fields(doc, cls.FIELDS)
        return cls(vector=vector_from_wire(doc["vector"]), reply=_bool(doc["reply"], "reply"),
                   names=names_from_wire(doc["names"]))


@dataclass(frozen=True, slots=True)
class Chunk:
    """Events the receiver lacks (catch-up), in bounded pieces."""

    events: tuple[Event, ...]
    more: bool = False

    FIELDS = frozenset({"v", "t", "events", "more"})

    def encode(self) -> bytes:
        """Wire bytes (events in their canonical encoding)."""
        head = b'{"events":[' + b",".join(e.encode() for e in self.events) + b'],"more":'
        data = head + (b"true" if self.more else b"false") + b',"t":"chunk","v":1}'
        if len(data) > MAX_DOC_BYTES:
            raise MeshDocError(f"chunk of {len(data)} bytes exceeds {MAX_DOC_BYTES}")
        return data

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Chunk:
        """Check a parsed document and every event in it (not their signatures)."""
        _fields(doc, cls.FIELDS)
        raw = doc["events"]
        if not isinstance(raw, list) or len(raw) > MAX_CHUNK_EVENTS:
            raise MeshDocError(f"events must be a list of at most {MAX_CHUNK_EVENTS}")
        try:
            events = tuple(event_from_dict(e) for e in raw)
        except SyncError as exc:
            raise MeshDocError(f"an event in the chunk is malformed: {exc}") from exc
        if any(e.stream != "public" for e in events):
            raise MeshDocError("only public events travel through the mesh")
        return cls(events=events, more=_bool(doc["more"], "more"))


def chunks(events: list[Event], *, max_events: int = MAX_CHUNK_EVENTS,
           max_bytes: int = MAX_CHUNK_BYTES) -> list[list[Event]]:
    """Split ``events`` into lists that each fit one :class:`Chunk`."""
    out: list[list[Event]] = []
    cur: list[Event] = []
    size = 0
    for event in events:
        n = len(event.encode()) + 1
        if cur and (len(cur) >= max_events or size + n > max_bytes):
            out.append(cur)
            cur, size = [], 0
        cur.append(event)
        size += n
    if cur:
        out.append(cur)
    return out


@dataclass(frozen=True, slots=True)
class Relay:
    """One public event passed on live; ``hops`` counts the hops taken so far."""

    hops: int
    event_json: bytes
    event: Event | None = None

    FIELDS = frozenset({"v", "t", "hops", "event"})

    @classmethod
    def of(cls, event: Event, hops: int) -> Relay:
        """The relay document of ``event`` after ``hops`` hops."""
        return cls(hops=hops, event_json=event.encode(), event=event)

    def encode(self) -> bytes:
        """Wire bytes (the event in its canonical encoding, as signed)."""
        return (b'{"event":' + self.event_json + b',"hops":' + str(self.hops).encode()
                + b',"t":"ev","v":1}')

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Relay:
        """Check a parsed document and its event (not the signature)."""
        _fields(doc, cls.FIELDS)
        hops = _int(doc["hops"], "hops", 1, MAX_HOPS)
        try:
            event = event_from_dict(doc["event"])
        except SyncError as exc:
            raise MeshDocError(f"the relayed event is malformed: {exc}") from exc
        if event.stream != "public":
            raise MeshDocError("only public events travel through the mesh")
        if len(event.encode()) > MAX_EVENT_BYTES:
            raise MeshDocError("the relayed event is too large")
        return cls(hops=hops, event_json=event.encode(), event=event)


@dataclass(frozen=True, slots=True)
class Carry:
    """A sealed batch of ``node`` handed to a peer with an uplink, for central."""

    node: str
    batch_seq: int
    batch: bytes

    FIELDS = frozenset({"v", "t", "node", "batch_seq", "batch"})

    def encode(self) -> bytes:
        """Wire bytes."""
        return _dumps({"v": MESH_VERSION, "t": "carry", "node": self.node,
                       "batch_seq": self.batch_seq,
                       "batch": base64.b64encode(self.batch).decode("ascii")})

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Carry:
        """Check a parsed document (the batch stays sealed)."""
        _fields(doc, cls.FIELDS)
        batch = _b64(doc["batch"], "batch")
        if not batch or len(batch) > MAX_CARRY_BYTES:
            raise MeshDocError(f"a carried batch is 1 to {MAX_CARRY_BYTES} bytes")
        return cls(node=_slug(doc["node"], "node"),
                   batch_seq=_int(doc["batch_seq"], "batch_seq", 1), batch=batch)


@dataclass(frozen=True, slots=True)
class Carried:
    """Central's answer to a carried batch (``status`` as HTTP), back to its node."""

    node: str
    batch_seq: int
    status: int
    reply: bytes

    FIELDS = frozenset({"v", "t", "node", "batch_seq", "status", "reply"})

    def encode(self) -> bytes:
        """Wire bytes."""
        return _dumps({"v": MESH_VERSION, "t": "carried", "node": self.node,
                       "batch_seq": self.batch_seq, "status": self.status,
                       "reply": base64.b64encode(self.reply).decode("ascii")})

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Carried:
        """Check a parsed document (the reply is verified by its node)."""
        _fields(doc, cls.FIELDS)
        reply = _b64(doc["reply"], "reply")
        return cls(node=_slug(doc["node"], "node"),
                   batch_seq=_int(doc["batch_seq"], "batch_seq", 1),
                   status=_int(doc["status"], "status", 100, 599), reply=reply)


@dataclass(frozen=True, slots=True)
class Ping:
    """Liveness and round-trip time; answered by a :class:`Pong` with the same ``n``."""

    n: int
    pong: bool = False

    FIELDS = frozenset({"v", "t", "n"})

    def encode(self) -> bytes:
        """Wire bytes."""
        return _dumps({"v": MESH_VERSION, "t": "pong" if self.pong else "ping", "n": self.n})

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Ping:
        """Check a parsed document."""
        _fields(doc, cls.FIELDS)
        return cls(n=_int(doc["n"], "n"), pong=doc["t"] == "pong")


@dataclass(frozen=True, slots=True)
class Bye:
    """The session ends (also the dialler's MQTT will: sent by the broker when
    the connection is lost)."""

    FIELDS = frozenset({"v", "t"})

    def encode(self) -> bytes:
        """Wire bytes."""
        return b'{"t":"bye","v":1}'

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Bye:
        """Check a parsed document."""
        _fields(doc, cls.FIELDS)
        return cls()


MeshDoc = Hello | VectorDoc | Chunk | Relay | Carry | Carried | Ping | Bye
_TYPES: Final[dict[str, Any]] = {"hello": Hello, "vector": VectorDoc, "chunk": Chunk,
                                 "ev": Relay, "carry": Carry, "carried": Carried,
                                 "ping": Ping, "pong": Ping, "bye": Bye}


def parse(data: bytes) -> MeshDoc:
    """Parse and check one received mesh document; raise :class:`MeshDocError`."""
    doc = _loads(data)
    if doc.get("v") != MESH_VERSION:
        raise MeshDocError(f"mesh document version {doc.get('v')!r} is not supported")
    kind = doc.get("t")
    cls = _TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise MeshDocError(f"unknown mesh document type {kind!r}")
    result: MeshDoc = cls.from_doc(doc)
    return result
