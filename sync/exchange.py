"""The uplink's documents: batch meta, central's acknowledgement, the reply.

A node's sealed batch carries a **meta** object next to its events
(:class:`BatchMeta`); central answers with a **reply** (:class:`SyncReply`)
whose ``ack`` is an acknowledgement (:class:`Ack`) signed by central under
:data:`sync.roster.ACK_DOMAIN`. Field by field: docs/protocol.md, "Sealed
batches"; fixed vectors: ``tests/vectors/uplink-*.json``.

Versions: the acknowledgement carries ``v`` (1). The meta has no ``v`` of its
own (it travels inside a batch whose header has one) and neither has the
reply (its ``ack`` has one); a v2 of either comes with a new batch or ack
version.

Each value's ``to_doc()`` gives the JSON mapping as it travels, keys in the
order central has always written them, and ``encode()`` its bytes. The
strict readers (``from_doc``, ``parse``, :meth:`Ack.verify`) refuse unknown
fields, wrong types and anything beyond the limits below with
:class:`ExchangeError`. Central reads a meta with :meth:`BatchMeta.read`
instead, which never refuses: it has never refused a batch for its meta, and
nodes already deployed must keep being served.

>>> meta = BatchMeta({"central-x": {"public": 4}}, backlog=0, version="1.0")
>>> BatchMeta.from_doc(meta.to_doc()) == meta
True
>>> BatchMeta.read({"heads": "?", "roster_serial": -1}).to_doc()
{'heads': {}, 'updates_after': 0, 'roster_serial': 0, 'status': {}}
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from .bodies import RECEIPT, SLUG
from .canonical import MAX_SAFE_INT, canonical_bytes, parse_json
from .errors import BadSignature, SyncError, UnknownVersion
from .event import STREAMS, UUID7
from .keys import KeyPair
from .roster import ACK_DOMAIN, MAX_ROSTER_NODES, DocumentError, sign_document, verify_document
from .sealed import MAX_EVENTS as MAX_BATCH_EVENTS
from .sealed import MAX_META_BYTES
from .text import clean_text

ACK_VERSION: Final = 1
#: Largest seq, serial or update id: what every JSON reader takes exactly.
MAX_SEQ: Final = MAX_SAFE_INT
#: Origins in a meta's ``heads`` (a node tells what it holds of central's streams).
MAX_HEAD_ORIGINS: Final = 16
#: Origins in an acknowledgement's ``holds``: every enrolled node at most.
MAX_HOLD_ORIGINS: Final = MAX_ROSTER_NODES
#: Receipt updates in one acknowledgement: what central sends per reply.
MAX_ACK_UPDATES: Final = 500
#: Central events in one reply (central sends at most 200).
MAX_REPLY_EVENTS: Final = 1000
#: Largest reply a node reads.
MAX_REPLY_BYTES: Final = 16 * 1024 * 1024
#: Characters of the package version a node reports in ``status``.
MAX_VERSION_CHARS: Final = 40
#: A report's state at central as the acknowledgement names it: ``new``,
#: ``in_progress``, ``handled``, ``reopened`` today. A node ignores a state it does
#: not know (a later central may add one), so only the form is checked here.
STATE: Final = re.compile(r"[a-z][a-z_]{0,15}")

_META_KEYS: Final = frozenset({"heads", "updates_after", "roster_serial", "status"})
_STATUS_KEYS: Final = frozenset({"backlog", "version"})
#: Optional in ``status``: the community centre's name as residents know it.
_STATUS_OPTIONAL: Final = frozenset({"display"})
#: Characters of a desk's public reply to a resident (``ReceiptUpdate.reply``).
MAX_REPLY_CHARS: Final = 280
#: Characters of a node's display name in ``status``.
MAX_DISPLAY_CHARS: Final = 80
_ACK_KEYS: Final = frozenset({"v", "node", "batch_seq", "count", "new", "replay", "holds",
                              "updates", "at"})
_UPDATE_KEYS: Final = frozenset({"id", "report", "receipt", "state", "at"})
_REPLY_KEYS: Final = frozenset({"ack", "events", "roster"})


class ExchangeError(SyncError):
    """An uplink document (meta, acknowledgement, reply) is malformed or over a limit."""


class ExchangeVersion(ExchangeError, UnknownVersion):
    """An uplink document carries a version this code does not know."""


class AckNotVerified(ExchangeError, BadSignature):
    """An acknowledgement's signature does not verify as central's under the ack domain."""


# -- the meta a node sends ----------------------------------------------------------------


@dataclass(frozen=True)
class BatchMeta:
    """What a node tells central in a batch, next to its events.

    ``heads``: what the node holds of central's streams (``{origin: {stream:
    seq}}``), so the reply carries only what it lacks; ``updates_after``: the
    last receipt update it applied; ``roster_serial``: the roster it holds;
    ``backlog`` (events waiting after this batch), ``version`` and, when the
    node has one, ``display`` (its community centre's name, which the desks
    show) travel as ``status``. ``None`` (only from :meth:`read`) means "not
    told".
    """

    heads: dict[str, dict[str, int]] = field(default_factory=dict)
    updates_after: int = 0
    roster_serial: int = 0
    backlog: int | None = None
    version: str | None = None
    display: str | None = None

    def head(self, origin: str, stream: str = "public") -> int:
        """What the node holds of ``origin``'s ``stream`` (0: nothing)."""
        return self.heads.get(origin, {}).get(stream, 0)

    def to_doc(self) -> dict[str, Any]:
        """The meta object of the batch payload."""
        status: dict[str, Any] = {}
        if self.backlog is not None:
            status["backlog"] = self.backlog
        if self.version is not None:
            status["version"] = self.version
        if self.display:
            status["display"] = self.display
        return {"heads": {o: dict(s) for o, s in self.heads.items()},
                "updates_after": self.updates_after, "roster_serial": self.roster_serial,
                "status": status}

    def encode(self) -> bytes:
        """Canonical bytes, as :func:`sync.sealed.encode_payload` writes them."""
        return canonical_bytes(self.to_doc())

    @classmethod
    def parse(cls, data: bytes) -> BatchMeta:
        """Strictly parse encoded meta bytes."""
        return cls.from_doc(_json(data, MAX_META_BYTES, "meta"))

    @classmethod
    def from_doc(cls, doc: Any) -> BatchMeta:
        """Strictly check a meta object: exactly the known fields, types and limits."""
        _fields(doc, _META_KEYS, "meta")
        heads = _heads(doc["heads"], "meta heads", MAX_HEAD_ORIGINS)
        status = doc["status"]
        _fields({k: v for k, v in status.items() if k not in _STATUS_OPTIONAL}
                if isinstance(status, dict) else status, _STATUS_KEYS, "meta status")
        version = status["version"]
        if not isinstance(version, str) or len(version) > MAX_VERSION_CHARS \
                or not version.isprintable():
            raise ExchangeError(f"meta status.version must be printable text of at most "
                                f"{MAX_VERSION_CHARS} characters")
        display = status.get("display")
        if display is not None and not _display_ok(display):
            raise ExchangeError(f"meta status.display must be printable text of 1 to "
                                f"{MAX_DISPLAY_CHARS} characters")
        return cls(heads=heads, updates_after=_int(doc["updates_after"], "meta updates_after"),
                   roster_serial=_int(doc["roster_serial"], "meta roster_serial"),
                   backlog=_int(status["backlog"], "meta status.backlog"), version=version,
                   display=display)

    @classmethod
    def read(cls, doc: Any) -> BatchMeta:
        """Central's reading: what is usable is taken, anything else is left out.

        Never raises. A value of the wrong type or out of range reads as not
        told (0 or None), as central has always read it: a batch is never
        refused for its meta, whoever sent it.
        """
        if not isinstance(doc, dict):
            return cls()
        heads: dict[str, dict[str, int]] = {}
        raw_heads = doc.get("heads")
        if isinstance(raw_heads, dict):
            for origin, streams in raw_heads.items():
                if isinstance(streams, dict):
                    heads[origin] = {s: n for s, n in streams.items()
                                     if s in STREAMS and _is_int(n)}
        status = doc.get("status")
        backlog = version = display = None
        if isinstance(status, dict):
            backlog = status.get("backlog")
            version = status.get("version")
            display = status.get("display")
        return cls(heads=heads, updates_after=_read_int(doc.get("updates_after")),
                   roster_serial=_read_int(doc.get("roster_serial")),
                   backlog=backlog if _is_int(backlog) else None,
                   version=version if isinstance(version, str)
                   and len(version) <= MAX_VERSION_CHARS else None,
                   display=display if _display_ok(display) else None)


# -- central's acknowledgement ------------------------------------------------------------


@dataclass(frozen=True)
class ReceiptUpdate:
    """A state change of one of the node's reports, for its receipt page."""

    id: int
    report: str
    receipt: str
    state: str
    at: int
    #: A short public answer of the desk to the resident (shown with the receipt).
    reply: str | None = None

    def to_doc(self) -> dict[str, Any]:
        """JSON form, in central's order (``reply`` only when there is one)."""
        doc: dict[str, Any] = {"id": self.id, "report": self.report, "receipt": self.receipt,
                               "state": self.state, "at": self.at}
        if self.reply:
            doc["reply"] = self.reply
        return doc

    @classmethod
    def from_doc(cls, doc: Any) -> ReceiptUpdate:
        """Strictly check one update."""
        _fields({k: v for k, v in doc.items() if k != "reply"} if isinstance(doc, dict)
                else doc, _UPDATE_KEYS, "ack update")
        reply = doc.get("reply")
        if reply is not None and (not isinstance(reply, str) or not reply.strip()
                                  or len(reply) > MAX_REPLY_CHARS
                                  or clean_text(reply) != reply):
            raise ExchangeError(f"ack update reply must be clean text of 1 to "
                                f"{MAX_REPLY_CHARS} characters")
        report, receipt, state = doc["report"], doc["receipt"], doc["state"]
        if not isinstance(report, str) or not UUID7.fullmatch(report):
            raise ExchangeError("ack update report must be an event id")
        if not isinstance(receipt, str) or not RECEIPT.fullmatch(receipt):
            raise ExchangeError("ack update receipt must be a receipt code")
        if not isinstance(state, str) or not STATE.fullmatch(state):
            raise ExchangeError("ack update state must be a state name")
        return cls(id=_int(doc["id"], "ack update id", 1), report=report, receipt=receipt,
                   state=state, at=_int(doc["at"], "ack update at"), reply=reply)


@dataclass(frozen=True)
class Ack:
    """Central's acknowledgement of one batch, signed under :data:`ACK_DOMAIN`.

    ``count``/``new``: events in the batch and how many were new to central
    (the original figures when ``replay``); ``holds``: the gapless prefix
    central holds per origin and stream of the batch (0: none yet); ``updates``:
    receipt updates after the node's ``updates_after``; ``at``: central's
    clock, Unix ms.
    """

    node: str
    batch_seq: int
    count: int
    new: int
    replay: bool
    holds: dict[str, dict[str, int]]
    updates: tuple[ReceiptUpdate, ...]
    at: int
    v: int = ACK_VERSION

    def to_doc(self) -> dict[str, Any]:
        """The document central signs, in central's key order."""
        return {"v": self.v, "node": self.node, "batch_seq": self.batch_seq,
                "count": self.count, "new": self.new, "replay": self.replay,
                "holds": self.holds, "updates": [u.to_doc() for u in self.updates],
                "at": self.at}

    def encode(self) -> bytes:
        """Canonical bytes of the document: what the signature covers after the domain."""
        return canonical_bytes(self.to_doc())

    def sign(self, keys: KeyPair) -> dict[str, Any]:
        """``{"doc": ..., "sig": ...}`` signed with central's key."""
        return sign_document(self.to_doc(), keys, ACK_DOMAIN)

    @classmethod
    def verify(cls, signed: Any, central_signing_public: bytes) -> Ack:
        """Verify a signed acknowledgement against central's key, then parse it strictly."""
        try:
            doc = verify_document(signed, central_signing_public, ACK_DOMAIN)
        except DocumentError as exc:
            raise AckNotVerified(str(exc)) from exc
        return cls.from_doc(doc)

    @classmethod
    def from_doc(cls, doc: Any) -> Ack:
        """Strictly check an acknowledgement document (its signature is not looked at)."""
        if not isinstance(doc, dict):
            raise ExchangeError("ack must be an object")
        if doc.get("v") != ACK_VERSION or isinstance(doc.get("v"), bool):
            raise ExchangeVersion(f"ack version {doc.get('v')!r} is not supported "
                                  f"(this is {ACK_VERSION})")
        _fields(doc, _ACK_KEYS, "ack")
        node = doc["node"]
        if not isinstance(node, str) or not SLUG.fullmatch(node):
            raise ExchangeError("ack node must be a node name (a-z, 0-9, -)")
        count = _int(doc["count"], "ack count", 0, MAX_BATCH_EVENTS)
        replay = doc["replay"]
        if not isinstance(replay, bool):
            raise ExchangeError("ack replay must be true or false")
        updates = doc["updates"]
        if not isinstance(updates, list) or len(updates) > MAX_ACK_UPDATES:
            raise ExchangeError(f"ack updates must be a list of at most {MAX_ACK_UPDATES}")
        return cls(node=node, batch_seq=_int(doc["batch_seq"], "ack batch_seq", 1),
                   count=count, new=_int(doc["new"], "ack new", 0, count), replay=replay,
                   holds=_heads(doc["holds"], "ack holds", MAX_HOLD_ORIGINS),
                   updates=tuple(ReceiptUpdate.from_doc(u) for u in updates),
                   at=_int(doc["at"], "ack at"))


# -- the reply ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncReply:
    """Central's answer to a batch: the signed acknowledgement and what the node lacks.

    ``ack`` is the signed document as received; nothing in a reply may be
    used before :meth:`Ack.verify` accepted it. ``events``: central's public
    events (JSON objects, each checked and verified by the node on its own,
    so one bad event does not cost the rest); ``roster``: a signed roster,
    only when newer than the node's (verified by :func:`sync.roster.verify_roster`).
    """

    ack: dict[str, Any]
    events: tuple[dict[str, Any], ...] = ()
    roster: dict[str, Any] | None = None

    def to_doc(self) -> dict[str, Any]:
        """The reply object; ``roster`` only when there is one."""
        doc: dict[str, Any] = {"ack": self.ack, "events": list(self.events)}
        if self.roster is not None:
            doc["roster"] = self.roster
        return doc

    def encode(self) -> bytes:
        """The HTTP body central answers with (compact JSON, central's key order)."""
        return orjson.dumps(self.to_doc())

    @classmethod
    def parse(cls, data: bytes) -> SyncReply:
        """Strictly parse a reply body (no floats, no duplicate keys, size limit)."""
        return cls.from_doc(_json(data, MAX_REPLY_BYTES, "reply"))

    @classmethod
    def from_doc(cls, doc: Any) -> SyncReply:
        """Strictly check a reply's shape: known fields, a signed ack, at most 1,000 events."""
        if not isinstance(doc, dict):
            raise ExchangeError("reply must be an object")
        unknown = doc.keys() - _REPLY_KEYS
        if unknown:
            raise ExchangeError(f"reply has unknown field(s): {', '.join(sorted(unknown))}")
        if "ack" not in doc or "events" not in doc:
            raise ExchangeError("reply must have ack and events")
        events = doc["events"]
        if not isinstance(events, list) or len(events) > MAX_REPLY_EVENTS:
            raise ExchangeError(f"reply events must be a list of at most {MAX_REPLY_EVENTS}")
        if not all(isinstance(e, dict) for e in events):
            raise ExchangeError("reply events must be objects")
        roster = doc.get("roster")
        if "roster" in doc:
            _signed(roster, "reply roster")
        return cls(ack=_signed(doc["ack"], "reply ack"), events=tuple(events), roster=roster)


# -- checks -------------------------------------------------------------------------------


def _json(data: bytes, limit: int, what: str) -> Any:
    try:
        return parse_json(data, limit)
    except SyncError as exc:
        raise ExchangeError(f"{what} is not acceptable JSON: {exc}") from exc


def _fields(doc: Any, known: frozenset[str], what: str) -> None:
    if not isinstance(doc, dict):
        raise ExchangeError(f"{what} must be an object")
    if doc.keys() != known:
        extra, missing = doc.keys() - known, known - doc.keys()
        if extra:
            raise ExchangeError(f"{what} has unknown field(s): {', '.join(sorted(extra))}")
        raise ExchangeError(f"{what} lacks field(s): {', '.join(sorted(missing))}")


def _display_ok(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_DISPLAY_CHARS \
        and value.isprintable() and value.strip() == value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEQ


def _read_int(value: Any) -> int:
    return int(value) if _is_int(value) else 0


def _int(value: Any, what: str, low: int = 0, high: int = MAX_SEQ) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ExchangeError(f"{what} must be an integer from {low} to {high}")
    return value


def _heads(value: Any, what: str, most: int) -> dict[str, dict[str, int]]:
    """``{origin: {stream: seq}}`` with slug origins, known streams, seqs from 0."""
    if not isinstance(value, dict) or len(value) > most:
        raise ExchangeError(f"{what} must be an object of at most {most:,} origins")
    for origin, streams in value.items():
        if not SLUG.fullmatch(origin):
            raise ExchangeError(f"{what}: {origin!r} is not a node name")
        if not isinstance(streams, dict) or not streams.keys() <= set(STREAMS):
            raise ExchangeError(f"{what}[{origin}] must map public/private to a seq")
    return {origin: {stream: _int(seq, f"{what}[{origin}][{stream}]")
                     for stream, seq in streams.items()}
            for origin, streams in value.items()}


def _signed(value: Any, what: str) -> dict[str, Any]:
    """The shape of a central-signed document (the signature is checked by its reader)."""
    if not isinstance(value, dict) or value.keys() != {"doc", "sig"} \
            or not isinstance(value["doc"], dict) or not isinstance(value["sig"], str):
        raise ExchangeError(f"{what} must be a signed document {{doc, sig}}")
    return value
