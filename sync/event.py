"""Event v1: the one record of everything that happens (DESIGN.md §3).

Wire form (canonical encoding, see :mod:`sync.canonical`)::

    {"body": {...}, "id": "<uuidv7>", "kind": "report", "origin": "escamp-kleine-wereld",
     "seq": 42, "sig": "<base64 Ed25519>", "stream": "private", "ts": 1795904700123, "v": 1}

``ts`` is Unix time in milliseconds, UTC. The signature covers
``DOMAIN + canonical(event without "sig")``; the domain string keeps an event
signature from ever being valid as any other kind of signature of the same key.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from .bodies import KIND_STREAMS, SLUG, validate_body
from .canonical import parse_json
from .errors import EventTooLarge, InvalidField, UnknownVersion
from .ids import new_id
from .keys import KeyPair, verify_signature

EVENT_VERSION: Final = 1
DOMAIN: Final = b"bart/event/v1\x00"
#: Largest encoded event accepted anywhere (portal, MQTT, batches).
MAX_EVENT_BYTES: Final = 8192
STREAMS: Final = ("public", "private")
KINDS: Final = tuple(KIND_STREAMS)
#: Earliest and latest timestamp accepted: 2024-01-01 .. 2100-01-01 UTC.
MIN_TS: Final = 1_704_067_200_000
MAX_TS: Final = 4_102_444_800_000
#: A lower-case, hyphenated RFC 9562 UUID of version 7 (variant bits 10).
UUID7: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_FIELDS: Final = frozenset({"v", "id", "origin", "stream", "seq", "ts", "kind", "body", "sig"})
_UNSIGNED_FIELDS: Final = _FIELDS - {"sig"}


@dataclass(frozen=True, slots=True)
class Event:
    """A signed, immutable event. Build with :func:`make_event` or :func:`decode_event`."""

    id: str
    origin: str
    stream: str
    seq: int
    ts: int
    kind: str
    body: dict[str, Any] = field(hash=False)
    sig: bytes
    v: int = EVENT_VERSION

    # Encodings are computed once and kept: an event is signed, stored and
    # published, and each of those needs the same bytes.
    _body_json: bytes = field(default=b"", init=False, compare=False, repr=False)
    _wire: bytes = field(default=b"", init=False, compare=False, repr=False)

    def unsigned(self) -> dict[str, Any]:
        """The signed fields as a mapping (everything but ``sig``)."""
        return {
            "v": self.v,
            "id": self.id,
            "origin": self.origin,
            "stream": self.stream,
            "seq": self.seq,
            "ts": self.ts,
            "kind": self.kind,
            "body": self.body,
        }

    def body_json(self) -> bytes:
        """Canonical encoding of the body alone.

        Bodies reach an event only through the validators (``make_event``,
        ``event_from_dict``) or from a store that held validated events, so the
        encoder's type walk is not repeated here.
        """
        if not self._body_json:
            # orjson writes what canonical_bytes() writes for a validated body
            # (sorted keys, compact, UTF-8 unescaped, integers only); the
            # property test in tests/unit/test_sync_event.py holds them equal.
            object.__setattr__(self, "_body_json",
                               orjson.dumps(self.body, option=orjson.OPT_SORT_KEYS))
        return self._body_json

    def _canonical(self, sig: bytes | None) -> bytes:
        # The canonical encoding of the whole mapping, built in key order
        # (body, id, kind, origin, seq, [sig,] stream, ts, v). Header values are
        # validated slugs, UUIDs and integers: none needs escaping. The fixed
        # test vectors and a property test hold this equal to canonical_bytes().
        sig_part = b',"sig":"' + base64.b64encode(sig) + b'"' if sig is not None else b""
        return b"".join((
            b'{"body":', self.body_json(),
            b',"id":"', self.id.encode(), b'","kind":"', self.kind.encode(),
            b'","origin":"', self.origin.encode(), b'","seq":', str(self.seq).encode(),
            sig_part, b',"stream":"', self.stream.encode(), b'","ts":', str(self.ts).encode(),
            b',"v":', str(self.v).encode(), b"}",
        ))

    def signing_bytes(self) -> bytes:
        """The exact bytes covered by the signature."""
        return DOMAIN + self._canonical(None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping including the base64 signature."""
        data = self.unsigned()
        data["sig"] = base64.b64encode(self.sig).decode("ascii")
        return data

    def encode(self) -> bytes:
        """Canonical wire bytes of the whole event."""
        if not self._wire:
            object.__setattr__(self, "_wire", self._canonical(self.sig))
        return self._wire

    def verify(self, public_key: bytes) -> None:
        """Raise :class:`~sync.errors.BadSignature` unless ``public_key`` signed this."""
        verify_signature(public_key, self.sig, self.signing_bytes())


def _check_header(data: Mapping[str, Any], *, id_is_ours: bool = False) -> None:
    v = data.get("v")
    if v != EVENT_VERSION:
        raise UnknownVersion(f"event version {v!r} is not supported (expected {EVENT_VERSION})")
    ident = data.get("id")
    # An id made by new_id() here is a UUIDv7 by construction.
    if not id_is_ours and not (isinstance(ident, str) and UUID7.fullmatch(ident)):
        raise InvalidField("id", "must be a lower-case UUIDv7")
    origin = data.get("origin")
    if not isinstance(origin, str) or not SLUG.fullmatch(origin):
        raise InvalidField("origin", "must be a slug of a-z, 0-9 and -")
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in KIND_STREAMS:
        raise InvalidField("kind", f"must be one of {', '.join(KINDS)}")
    stream = data.get("stream")
    if stream not in KIND_STREAMS[kind]:
        raise InvalidField("stream", f"{kind} events travel on {'/'.join(KIND_STREAMS[kind])}")
    seq = data.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq <= 2**53 - 1:
        raise InvalidField("seq", "must be a positive integer")
    ts = data.get("ts")
    if not isinstance(ts, int) or isinstance(ts, bool) or not MIN_TS <= ts <= MAX_TS:
        raise InvalidField("ts", "must be a Unix time in milliseconds between 2024 and 2100")


def make_event(
    keys: KeyPair,
    *,
    origin: str,
    stream: str,
    seq: int,
    kind: str,
    body: Mapping[str, Any],
    ts: int,
    event_id: str | None = None,
) -> Event:
    """Validate ``body`` and build an event signed by ``keys``.

    >>> k = KeyPair.generate()
    >>> e = make_event(k, origin="n1", stream="public", seq=1, kind="alert", ts=MIN_TS,
    ...                body={"source": "team", "title": "Let op"})
    >>> e.verify(k.signing_public) is None
    True
    """
    ident = event_id or str(new_id())
    header: dict[str, Any] = {
        "v": EVENT_VERSION,
        "id": ident,
        "origin": origin,
        "stream": stream,
        "seq": seq,
        "ts": ts,
        "kind": kind,
    }
    _check_header(header, id_is_ours=event_id is None)
    clean = validate_body(kind, body)
    unsigned = Event(
        id=ident, origin=origin, stream=stream, seq=seq, ts=ts, kind=kind,
        body=clean, sig=b"",
    )
    signed = Event(
        id=unsigned.id, origin=origin, stream=stream, seq=seq, ts=ts, kind=kind,
        body=clean, sig=keys.sign(unsigned.signing_bytes()),
    )
    object.__setattr__(signed, "_body_json", unsigned.body_json())
    if len(signed.encode()) > MAX_EVENT_BYTES:
        raise EventTooLarge(f"event is larger than {MAX_EVENT_BYTES} bytes")
    return signed


def _checked_fields(data: Mapping[str, Any], fields: frozenset[str], *,
                    clean: bool = True) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise InvalidField("$", "an event must be an object")
    if data.keys() == fields:  # the usual case, without building sets
        return _checked_body(data, clean)
    extra = set(data) - fields
    missing = fields - set(data) - {"v"}
    if extra:
        raise InvalidField("$", f"unknown field(s): {', '.join(sorted(extra))}")
    if missing:
        raise InvalidField("$", f"missing field(s): {', '.join(sorted(missing))}")
    return _checked_body(data, clean)


def _checked_body(data: Mapping[str, Any], clean: bool) -> dict[str, Any]:
    _check_header(data)
    body = data["body"]
    if not isinstance(body, Mapping):
        raise InvalidField("body", "must be an object")
    cleaned = validate_body(data["kind"], body, clean=clean)
    if cleaned is not body and cleaned != (body if isinstance(body, dict) else dict(body)):
        raise InvalidField("body", "is not in canonical cleaned form")
    return cleaned


def event_from_unsigned(data: Mapping[str, Any], sig: bytes, *, clean: bool = True) -> Event:
    """Build an event from its parsed unsigned fields and a raw 64-byte signature.

    Every field and the body are checked as in :func:`event_from_dict`; the
    signature is not verified here.
    """
    clean_body = _checked_fields(data, _UNSIGNED_FIELDS, clean=clean)
    if len(sig) != 64:
        raise InvalidField("sig", "must be a 64-byte Ed25519 signature")
    return Event(
        id=data["id"], origin=data["origin"], stream=data["stream"], seq=data["seq"],
        ts=data["ts"], kind=data["kind"], body=clean_body, sig=bytes(sig),
    )


def event_from_dict(data: Mapping[str, Any]) -> Event:
    """Build an event from a parsed mapping, checking every field and the body.

    The body must already be in cleaned form: a body that cleaning would change
    is refused, because then its signature could not be checked by others.
    """
    clean = _checked_fields(data, _FIELDS)
    sig_text = data["sig"]
    if not isinstance(sig_text, str):
        raise InvalidField("sig", "must be base64 text")
    try:
        sig = base64.b64decode(sig_text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidField("sig", "must be base64 text") from exc
    if len(sig) != 64:
        raise InvalidField("sig", "must be a 64-byte Ed25519 signature")
    return Event(
        id=data["id"], origin=data["origin"], stream=data["stream"], seq=data["seq"],
        ts=data["ts"], kind=data["kind"], body=clean, sig=sig,
    )


def decode_event(data: bytes, *, limit: int = MAX_EVENT_BYTES) -> Event:
    """Parse and validate wire bytes of one event. Does *not* check the signature."""
    return event_from_dict(parse_json(data, limit))


KeyLookup = Callable[[str], bytes | None]


def verify_event(event: Event, lookup: KeyLookup) -> None:
    """Verify ``event`` against the signing key of its origin found by ``lookup``."""
    from .errors import UnknownOrigin

    key = lookup(event.origin)
    if key is None:
        raise UnknownOrigin(f"origin {event.origin!r} is not trusted here")
    event.verify(key)
