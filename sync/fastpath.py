"""Typed decoding of the common event — a report — for central's ingest path.

:func:`sync.sealed.iter_lean` checks every event of a batch whose signature
central verified: the header fields, the lean body check of
:func:`sync.bodies.validate_body` (``clean=False``) and the canonical
encoding. For reports, by far the most common events, msgspec does the same
work in C: it decodes straight into the types below, which are *at least as
strict* as those checks, and its sorted-key encoding of what it decoded must
give back the exact bytes received (the canonical-encoding check). An event
that fails here is not refused here: it goes through the general checks,
which accept or refuse it with their own words. So this module can only make
the path faster, never more permissive — ``tests/unit/test_sync_sealed.py``
holds both paths to the same outcome for valid and altered events.

A batch made of reports only — what an uplink sends — is taken in one pass
(:func:`reports`): the frames joined into one JSON array, decoded and
re-encoded by two calls into msgspec for the whole batch.

Measured (bench/README.md): ~2.4 µs less per event than orjson + the lean
check + re-encoding, of ~16 µs in all; the whole batch at once, with structs
the garbage collector does not track, another ~0.8 µs (3.3 → 2.5 µs).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec

from .event import MAX_TS, MIN_TS

#: One event as central's ingest stores it (the same as :data:`sync.sealed.LeanEvent`).
LeanEvent = tuple[str, str, str, int, int, str, str, bytes, bytes]


# The lean check allows text of up to 4 × 1000 characters in any field and a
# place of two short texts; the types below allow no more (and mostly less).
_Text = Annotated[str, msgspec.Meta(max_length=4000)]
_PlaceText = Annotated[str, msgspec.Meta(max_length=800)]


class _Place(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    point: _PlaceText | None
    text: _PlaceText | None


class _ReportBody(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    # Every field the report validator writes: a body without one of them is
    # not what a node sends, and takes the general path.
    audience: _Text
    called_112: bool
    called_112_by: _Text
    category: Literal["nuisance", "suspicious", "social", "emergency"]
    contact: _Text
    lang: _Text
    place: _Place
    receipt: Annotated[str, msgspec.Meta(min_length=7, max_length=7)]
    text: _Text


class _Report(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    body: _ReportBody
    # The formats of id and origin (and the body's receipt) are not checked
    # here: msgspec's pattern check calls Python's re once per value (~0.5 µs
    # each). The caller checks them for the whole batch at once.
    id: Annotated[str, msgspec.Meta(min_length=36, max_length=36)]
    kind: Literal["report"]
    origin: Annotated[str, msgspec.Meta(min_length=1, max_length=63)]
    seq: Annotated[int, msgspec.Meta(ge=1, le=2**53 - 1)]
    stream: Literal["private"]
    ts: Annotated[int, msgspec.Meta(ge=MIN_TS, le=MAX_TS)]
    v: Literal[1]


_DECODE: Final = msgspec.json.Decoder(_Report).decode
_DECODE_ALL: Final = msgspec.json.Decoder(list[_Report]).decode
# The structs above declare their fields in sorted order, and msgspec encodes
# a struct's fields in declaration order: that is the canonical (sorted-key)
# encoding without asking msgspec to sort (~0.2 µs per event less).
# tests/unit/test_sync_sealed.py holds the declarations sorted.
_ENCODE: Final = msgspec.json.Encoder().encode
_ID_AT: Final = b',"id":"'
_BODY_FIRST: Final = b'{"body":'


def report(unsigned: bytes, sig: bytes) -> tuple[LeanEvent, str] | None:
    """The report in ``unsigned`` and its receipt when it passes the checks; else None.

    None is no verdict: the general path decides. The caller must still check
    the formats of the id (UUIDv7), the origin (slug) and the receipt
    (:data:`sync.bodies.RECEIPT`), which :func:`sync.sealed.iter_lean` does
    for a whole batch at once.
    """
    try:
        e = _DECODE(unsigned)
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError):
        return None  # ValueError: msgspec raises UnicodeDecodeError for invalid UTF-8
    if len(sig) != 64 or _ENCODE(e) != unsigned:
        return None
    # Canonical: the body is the first member, and the header's `,"id":"` the
    # last such run of bytes (only slugs, UUIDs and integers follow it).
    body = unsigned[8:unsigned.rfind(_ID_AT)].decode()
    return (e.id, e.origin, e.stream, e.seq, e.ts, e.kind, body, sig, unsigned), e.body.receipt


def reports(frames: list[tuple[bytes, bytes]]) -> tuple[list[LeanEvent], list[str]] | None:
    """Every frame as :func:`report` would take it, in one pass; else None.

    A batch of reports only (the usual uplink batch) is decoded and re-encoded
    as one JSON array: two calls into msgspec per batch instead of two per
    event (~0.8 µs per event less). None — one frame is no report, or any
    check fails — is no verdict: the caller goes frame by frame.

    Why one array stands for its frames: every frame must begin with
    ``{"body":``. Outside a JSON string those bytes can only open an object
    whose first key is ``body`` (inside one, a ``"`` is always escaped), and
    only a report has a ``body`` key (the body and place structs forbid
    unknown keys). So when the joined array decodes into exactly as many
    reports as there are frames, each frame is exactly one report; when its
    encoding gives back the joined bytes, each frame is canonical.
    """
    if not frames:
        return None
    unsigned = [u for u, _ in frames]
    first = _BODY_FIRST
    for u, sig in frames:
        if u[:8] != first or len(sig) != 64:
            return None
    joined = b"[" + b",".join(unsigned) + b"]"
    try:
        decoded = _DECODE_ALL(joined)
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError):
        return None
    if len(decoded) != len(frames) or _ENCODE(decoded) != joined:
        return None
    id_at = _ID_AT
    out: list[LeanEvent] = [
        (e.id, e.origin, e.stream, e.seq, e.ts, e.kind, u[8:u.rfind(id_at)].decode(), sig, u)
        for e, (u, sig) in zip(decoded, frames, strict=True)]
    return out, [e.body.receipt for e in decoded]
