"""Sealed batches: events from a node to central, encrypted and signed.

The construction is fixed by DESIGN.md §9::

    hdr = canonical({v, node_id, batch_seq, central_kid, created, count})
    ct  = HPKE(X25519, HKDF-SHA256, ChaCha20-Poly1305).encrypt(
              payload, central_pub, info=SEAL_DOMAIN + hdr)
    sig = Ed25519(node).sign(SIG_DOMAIN + hdr + ct)

On the wire (``application/vnd.bart.batch``)::

    "BSB1" | u16 len(hdr) | hdr | sig (64 bytes) | ct

The payload, before encryption, is zstd-compressed::

    u32 len(meta) | meta | frames…     meta = canonical({"heads": {...}})
    frame = u16 len(unsigned event) | canonical(event without "sig") | sig (64)

so an event's own signature travels as 64 raw bytes, not base64, and the
encoder never repeats the ``sig`` key. ``meta.heads`` tells central what the
node already holds of central's own streams, so the reply carries only what
the node lacks.

Central verifies the batch signature *before* it decrypts anything; an
event's own signature is verified only when its origin is not the sender
(carried or relayed events), as DESIGN.md §9 decided.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

import orjson
import zstandard
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from .bodies import KIND_STREAMS, RECEIPT, SLUG, validate_body
from .canonical import canonical_bytes
from .errors import BadSignature, EventError, InvalidField, SyncError, UnknownVersion
from .event import DOMAIN as EVENT_DOMAIN
from .event import MAX_EVENT_BYTES, MAX_TS, MIN_TS, UUID7, Event, event_from_unsigned
from .keys import KeyPair, verify_signature

VERSION: Final = 1
MAGIC: Final = b"BSB1"
SEAL_DOMAIN: Final = b"bart/batch/v1/hpke\x00"
SIG_DOMAIN: Final = b"bart/batch/v1/sig\x00"

#: Limits: a batch larger than any of these is refused before work is done.
MAX_HEADER_BYTES: Final = 512
MAX_BATCH_BYTES: Final = 8 * 1024 * 1024
MAX_EVENTS: Final = 5000
MAX_PAYLOAD_BYTES: Final = 48 * 1024 * 1024
MAX_META_BYTES: Final = 64 * 1024
SIG_BYTES: Final = 64
ZSTD_LEVEL: Final = 3

_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
_HEADER_KEYS = frozenset({"v", "node_id", "batch_seq", "central_kid", "created", "count"})
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


class BatchError(SyncError):
    """A sealed batch is refused; ``code`` names the reason for the HTTP reply."""

    code = "malformed"


class BatchMalformed(BatchError):
    """The framing, header or payload cannot be read."""

    code = "malformed"


class BatchTooLarge(BatchError):
    """The batch, its payload or its event count exceeds a limit."""

    code = "too_large"


class BatchVersion(BatchError, UnknownVersion):
    """The batch carries a version this code does not know."""

    code = "unknown_version"


class BatchWrongKey(BatchError):
    """The batch is sealed to a central key id that is not ours."""

    code = "wrong_key_id"


class BatchBadSignature(BatchError, BadSignature):
    """The node's signature over header and ciphertext does not verify."""

    code = "bad_signature"


class BatchBadTag(BatchError):
    """Decryption failed: the ciphertext or its binding to the header was altered."""

    code = "bad_tag"


def key_id(encryption_public: bytes) -> str:
    """Short id of an X25519 public key: what a header names as ``central_kid``.

    >>> key_id(bytes(32))
    'k-66687aadf862bd77'
    """
    return "k-" + hashlib.sha256(encryption_public).hexdigest()[:16]


@dataclass(frozen=True)
class BatchHeader:
    """The signed, unencrypted part of a batch."""

    node_id: str
    batch_seq: int
    central_kid: str
    created: int
    count: int
    v: int = VERSION

    def encode(self) -> bytes:
        """Canonical bytes of the header (what ``info`` and the signature bind)."""
        return canonical_bytes({
            "v": self.v, "node_id": self.node_id, "batch_seq": self.batch_seq,
            "central_kid": self.central_kid, "created": self.created, "count": self.count,
        })


@dataclass(frozen=True)
class Payload:
    """What a batch carries: events as (unsigned canonical bytes, signature) pairs."""

    frames: list[tuple[bytes, bytes]]
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, events: Iterable[Event], meta: dict[str, Any] | None = None) -> Payload:
        """Payload for ``events`` (already signed by their origins)."""
        skip = len(EVENT_DOMAIN)
        return cls([(e.signing_bytes()[skip:], e.sig) for e in events], meta or {})


def encode_payload(payload: Payload) -> bytes:
    """Frame and compress a payload."""
    meta = canonical_bytes(payload.meta)
    parts = [_U32.pack(len(meta)), meta]
    for unsigned, sig in payload.frames:
        if len(sig) != SIG_BYTES:
            raise InvalidField("sig", "must be 64 bytes")
        if len(unsigned) > MAX_EVENT_BYTES:
            raise BatchTooLarge(f"an event of {len(unsigned)} bytes exceeds {MAX_EVENT_BYTES}")
        parts += [_U16.pack(len(unsigned)), unsigned, sig]
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(b"".join(parts))


def decode_payload(data: bytes, count: int) -> Payload:
    """Decompress and unframe a payload that must hold exactly ``count`` events."""
    try:
        raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=MAX_PAYLOAD_BYTES)
    except zstandard.ZstdError as exc:
        raise BatchMalformed(f"payload does not decompress: {exc}") from exc
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise BatchTooLarge("payload too large when decompressed")
    view = memoryview(raw)
    if len(view) < 4:
        raise BatchMalformed("payload truncated")
    (meta_len,) = _U32.unpack_from(view, 0)
    if meta_len > MAX_META_BYTES or 4 + meta_len > len(view):
        raise BatchMalformed("payload meta truncated or too large")
    try:
        meta = orjson.loads(view[4:4 + meta_len])
    except orjson.JSONDecodeError as exc:
        raise BatchMalformed(f"payload meta is not JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise BatchMalformed("payload meta must be an object")
    frames: list[tuple[bytes, bytes]] = []
    append = frames.append
    pos = 4 + meta_len
    end = len(raw)
    sig_bytes, max_event = SIG_BYTES, MAX_EVENT_BYTES
    # Slices of ``raw`` (bytes) rather than of the view: one copy each either
    # way, without a memoryview object per slice (~0.4 µs per event less).
    # At most one frame more than the header says: enough to refuse the batch.
    try:
        for _ in range(count + 1):
            if pos >= end:
                break
            n = raw[pos] << 8 | raw[pos + 1]  # u16, big-endian; IndexError: 1 byte left
            start = pos + 2
            stop = start + n
            pos = stop + sig_bytes
            if n > max_event or pos > end:
                raise BatchMalformed("event frame truncated or too large")
            append((raw[start:stop], raw[stop:pos]))
    except IndexError as exc:
        raise BatchMalformed("event frame truncated") from exc
    if len(frames) != count:
        raise BatchMalformed(f"header says {count} events, payload holds {len(frames)}")
    return Payload(frames, meta)


def seal(
    payload: Payload,
    *,
    node_id: str,
    batch_seq: int,
    created: int,
    keys: KeyPair,
    central_encryption_public: bytes,
) -> bytes:
    """Seal ``payload`` for central and sign it as node ``node_id``."""
    if not 0 <= len(payload.frames) <= MAX_EVENTS:
        raise BatchTooLarge(f"{len(payload.frames)} events exceeds {MAX_EVENTS}")
    header = BatchHeader(
        node_id=node_id, batch_seq=batch_seq, central_kid=key_id(central_encryption_public),
        created=created, count=len(payload.frames),
    ).encode()
    pub = X25519PublicKey.from_public_bytes(central_encryption_public)
    ct = _SUITE.encrypt(encode_payload(payload), pub, info=SEAL_DOMAIN + header)
    sig = keys.sign(SIG_DOMAIN + header + ct)
    wire = b"".join((MAGIC, _U16.pack(len(header)), header, sig, ct))
    if len(wire) > MAX_BATCH_BYTES:
        raise BatchTooLarge(f"sealed batch of {len(wire)} bytes exceeds {MAX_BATCH_BYTES}")
    return wire


@dataclass(frozen=True)
class Envelope:
    """A batch split into its parts, header parsed, nothing verified yet."""

    header: BatchHeader
    header_bytes: bytes
    sig: bytes
    ct: bytes


def parse(wire: bytes) -> Envelope:
    """Split a batch and parse its header; checks framing and limits only."""
    if len(wire) > MAX_BATCH_BYTES:
        raise BatchTooLarge(f"batch of {len(wire)} bytes exceeds {MAX_BATCH_BYTES}")
    if len(wire) >= 4 and wire[:3] == MAGIC[:3] and wire[:4] != MAGIC:
        raise BatchVersion(f"unknown batch framing {wire[:4]!r}")
    if len(wire) < 6 or wire[:4] != MAGIC:
        raise BatchMalformed("not a Bart sealed batch (or truncated)")
    (hlen,) = _U16.unpack_from(wire, 4)
    if hlen > MAX_HEADER_BYTES:
        raise BatchMalformed("header too large")
    start = 6 + hlen
    if len(wire) < start + SIG_BYTES + 1:
        raise BatchMalformed("batch truncated")
    header_bytes = wire[6:start]
    try:
        raw = orjson.loads(header_bytes)
    except orjson.JSONDecodeError as exc:
        raise BatchMalformed(f"header is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise BatchMalformed("header must be an object")
    if raw.get("v") != VERSION:
        raise BatchVersion(f"batch version {raw.get('v')!r} is not supported (this is {VERSION})")
    if set(raw) != _HEADER_KEYS:
        raise BatchMalformed(f"header fields must be exactly {sorted(_HEADER_KEYS)}")
    try:
        header = BatchHeader(
            node_id=_str(raw, "node_id", 63), batch_seq=_int(raw, "batch_seq"),
            central_kid=_str(raw, "central_kid", 40), created=_int(raw, "created"),
            count=_int(raw, "count"),
        )
    except InvalidField as exc:
        raise BatchMalformed(f"header: {exc}") from exc
    if header.batch_seq < 1:
        raise BatchMalformed("header: batch_seq must be ≥ 1")
    if header.count > MAX_EVENTS:
        raise BatchTooLarge(f"{header.count} events exceeds {MAX_EVENTS}")
    if header.encode() != header_bytes:
        raise BatchMalformed("header is not in canonical encoding")
    return Envelope(header, header_bytes, wire[start:start + SIG_BYTES], wire[start + SIG_BYTES:])


def verify(envelope: Envelope, node_signing_public: bytes) -> None:
    """Check the node's signature over header and ciphertext."""
    try:
        verify_signature(
            node_signing_public, envelope.sig, SIG_DOMAIN + envelope.header_bytes + envelope.ct
        )
    except BadSignature as exc:
        raise BatchBadSignature("batch signature does not verify") from exc


def open_envelope(envelope: Envelope, central_encryption: X25519PrivateKey) -> Payload:
    """Decrypt a *verified* envelope with central's key and decode its payload."""
    ours = key_id(central_encryption.public_key().public_bytes_raw())
    if envelope.header.central_kid != ours:
        raise BatchWrongKey(
            f"batch is sealed to key {envelope.header.central_kid}, this central has {ours}"
        )
    try:
        plain = _SUITE.decrypt(envelope.ct, central_encryption,
                               info=SEAL_DOMAIN + envelope.header_bytes)
    except Exception as exc:  # cryptography raises InvalidTag (and ValueError on short input)
        raise BatchBadTag("batch does not decrypt (altered ciphertext or header)") from exc
    return decode_payload(plain, envelope.header.count)


def open_batch(wire: bytes, node_signing_public: bytes,
               central_encryption: X25519PrivateKey) -> tuple[BatchHeader, Payload]:
    """Parse, verify, then decrypt: the whole receiving side in one call."""
    env = parse(wire)
    verify(env, node_signing_public)
    return env.header, open_envelope(env, central_encryption)


def iter_events(payload: Payload, *, clean: bool = True) -> Iterator[Event]:
    """Each frame as a validated event (signature not checked: see the module doc).

    An event whose bytes are not its canonical encoding is refused, so that the
    stored event still verifies against its origin's signature later.
    ``clean=False``: see :func:`sync.bodies.validate_body`.
    """
    for i, (unsigned, sig) in enumerate(payload.frames):
        try:
            data = orjson.loads(unsigned)
        except orjson.JSONDecodeError as exc:
            raise BatchMalformed(f"event {i} is not JSON: {exc}") from exc
        yield _checked_event(i, data, sig, unsigned, clean)


def _checked_event(i: int, data: Any, sig: bytes, unsigned: bytes, clean: bool) -> Event:
    """Frame ``i`` as an event, or the refusal that names what is wrong with it."""
    try:
        event = event_from_unsigned(data, sig, clean=clean)
    except EventError as exc:
        raise BatchMalformed(f"event {i}: {exc}") from exc
    if event.signing_bytes()[len(EVENT_DOMAIN):] != unsigned:
        raise BatchMalformed(f"event {i} is not in canonical encoding")
    return event


#: One event as central's ingest stores it: (id, origin, stream, seq, ts, kind,
#: body as canonical JSON text, raw 64-byte signature, the unsigned canonical bytes).
LeanEvent = tuple[str, str, str, int, int, str, str, bytes, bytes]
_FIELD_SET: Final = frozenset({"v", "id", "origin", "stream", "seq", "ts", "kind", "body"})


def iter_lean(payload: Payload) -> list[LeanEvent]:
    """Each frame as a :data:`LeanEvent`, checked exactly as ``iter_events(clean=False)``.

    Central's ingest path: the same header checks, the same lean body check
    and the same canonical-encoding check, without building :class:`Event`
    objects (they cost more than storing the row); reports are decoded and
    checked in C first (:mod:`sync.fastpath`). A frame that fails any check
    is handed to :func:`iter_events`'s checks, so a batch is refused exactly
    when ``iter_events`` refuses it, with its message (when several events are
    bad, the one named may differ).
    """
    loads, dumps, sort = orjson.loads, orjson.dumps, orjson.OPT_SORT_KEYS
    origins: set[str] = set()  # each origin's slug is checked once per batch
    out: list[LeanEvent] = []
    from . import fastpath  # msgspec: only central's ingest comes here, never a node

    fast = fastpath.report
    receipts: list[tuple[int, str]] = []  # of the reports the fast path took
    every = fastpath.reports(payload.frames)  # a batch of reports only, at once
    if every is not None:
        out, taken = every
        if not all_receipts(taken):
            receipts = list(enumerate(taken))  # the precise check below names the frame
    for i, (unsigned, sig) in enumerate(payload.frames if every is None else ()):
        report = fast(unsigned, sig)  # reports, in C (sync/fastpath.py)
        if report is not None:
            out.append(report[0])
            receipts.append((i, report[1]))
            continue
        try:
            data = loads(unsigned)
        except orjson.JSONDecodeError as exc:
            raise BatchMalformed(f"event {i} is not JSON: {exc}") from exc
        try:
            if type(data) is not dict or data.keys() != _FIELD_SET:
                raise _Slow
            ident, origin, stream, kind = data["id"], data["origin"], data["stream"], data["kind"]
            seq, ts, body = data["seq"], data["ts"], data["body"]
            if not (type(ident) is str and len(ident) == 36
                    and type(origin) is str and (origin in origins or SLUG.fullmatch(origin))
                    and type(kind) is str and stream in KIND_STREAMS.get(kind, ())
                    and type(seq) is int and 1 <= seq <= 2**53 - 1
                    and type(ts) is int and MIN_TS <= ts <= MAX_TS and type(data["v"]) is int
                    and data["v"] == 1
                    and type(body) is dict and len(sig) == SIG_BYTES):
                raise _Slow
            checked = validate_body(kind, body, clean=False)
            if checked is not body and checked != body:  # a status body is cleaned
                raise _Slow
        except (_Slow, EventError):
            _refuse(i, data, sig, unsigned)
        origins.add(origin)
        # orjson with sorted keys writes the canonical encoding of a checked
        # event (tests/unit/test_sync_event.py holds them equal).
        if dumps(data, option=sort) != unsigned:
            raise BatchMalformed(f"event {i} is not in canonical encoding")
        # The body is the first member; the header's `,"id":"` is the last such
        # run of bytes (only slugs, UUIDs and integers follow it).
        body_json = unsigned[8:unsigned.rfind(b',"id":"')].decode()
        out.append((ident, origin, stream, seq, ts, kind, body_json, sig, unsigned))
    # Formats checked for the whole batch at once: every id a UUIDv7, each
    # distinct origin a slug, each fast-path receipt well formed. The first
    # frame that fails gets the general path's refusal.
    wrong = {o for o in {e[1] for e in out} - origins if not SLUG.fullmatch(o)}
    bad = [i for i, e in enumerate(out) if e[1] in wrong] if wrong else []
    if out and not all_uuid7([e[0] for e in out]):
        bad += [i for i, e in enumerate(out) if not UUID7.fullmatch(e[0])]
    if receipts and not all_receipts([r for _, r in receipts]):
        bad += [i for i, r in receipts if not RECEIPT.fullmatch(r)]
    if bad:
        i = min(bad)
        _refuse(i, loads(out[i][8]), out[i][7], out[i][8])
    return out


def _table(classes: dict[bytes, bytes]) -> bytes:
    """A ``bytes.translate`` table: each byte of a key to its value, all else to ``?``."""
    table = bytearray(b"?" * 256)
    for chars, to in classes.items():
        for c in chars:
            table[c] = to[0]
    return bytes(table)


_LINES: Final = _table({b"0123456789abcdef": b"h", b"-": b"-", b"\n": b"\n"})
_VARIANT: Final = _table({b"89ab": b"v"})
_UUID7_LINE: Final = b"hhhhhhhh-hhhh-hhhh-hhhh-hhhhhhhhhhhh\n"
_RECEIPT_TABLE: Final = _table({b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789": b"r", b"-": b"-",
                                b"\n": b"\n"})


def all_uuid7(ids: list[str]) -> bool:
    """Whether every one of ``ids`` matches :data:`sync.event.UUID7` (lowercase).

    One pass in C over all of them (``bytes.translate`` and two strided
    slices), for a batch: ~10 times fewer instructions than a regular
    expression over the same text. False says only that one may not: the
    caller checks them one by one for the refusal.
    """
    try:
        lines = "\n".join(ids).encode("ascii") + b"\n"
    except UnicodeEncodeError:
        return False
    n = len(ids)
    # Once every line has the shape, line k's version digit is at 37k + 14
    # and its variant digit at 37k + 19.
    return (lines.translate(_LINES) == _UUID7_LINE * n and lines[14::37] == b"7" * n
            and lines[19::37].translate(_VARIANT) == b"v" * n)


def all_receipts(receipts: list[str]) -> bool:
    """Whether every one of ``receipts`` matches :data:`sync.bodies.RECEIPT` (one pass)."""
    try:
        lines = "\n".join(receipts).encode("ascii") + b"\n"
    except UnicodeEncodeError:
        return False
    return lines.translate(_RECEIPT_TABLE) == b"rrr-rrr\n" * len(receipts)


def _refuse(i: int, data: Any, sig: bytes, unsigned: bytes) -> NoReturn:
    """Raise the refusal :func:`iter_events` raises for frame ``i``."""
    _checked_event(i, data, sig, unsigned, clean=False)
    raise BatchMalformed(f"event {i} is malformed")


class _Slow(Exception):
    """A fast check failed: take the precise path for the error."""


def _str(raw: dict[str, Any], key: str, limit: int) -> str:
    value = raw[key]
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise InvalidField(key, f"must be text of 1–{limit} characters")
    return value


def _int(raw: dict[str, Any], key: str) -> int:
    value = raw[key]
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**53:
        raise InvalidField(key, "must be a non-negative integer")
    return value
