"""The roster and other documents that central signs.

The **roster** is central's signed list of enrolled nodes: their names,
areas, public keys and revocations (DESIGN.md §5). Nodes accept mesh peers,
relayed events and carried batches only from members that are not revoked,
and take a roster only if it verifies against central's signing key and is
newer (higher ``serial``) than the one they hold.

Every central-signed document has the same shape::

    {"doc": {...}, "sig": base64(Ed25519(central, DOMAIN + canonical(doc)))}

with a domain string per document type, so that a signature over one kind of
document can never be replayed as another.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Final

from .bodies import AREA, SLUG
from .canonical import canonical_bytes
from .errors import BadSignature, InvalidField, SyncError, UnknownVersion
from .keys import KeyPair, b64, verify_signature

ROSTER_DOMAIN: Final = b"bart/roster/v1\x00"
ACK_DOMAIN: Final = b"bart/ack/v1\x00"
ENROLMENT_DOMAIN: Final = b"bart/enrolment/v1\x00"
MAX_ROSTER_NODES: Final = 10_000
MAX_DOC_BYTES: Final = 4 * 1024 * 1024


class DocumentError(SyncError):
    """A central-signed document is malformed or does not verify."""


def sign_document(doc: dict[str, Any], keys: KeyPair, domain: bytes) -> dict[str, Any]:
    """Wrap ``doc`` with central's signature under ``domain``."""
    return {"doc": doc, "sig": b64(keys.sign(domain + canonical_bytes(doc)))}


def verify_document(signed: Any, central_signing_public: bytes, domain: bytes) -> dict[str, Any]:
    """Return the inner document if its signature verifies; raise otherwise."""
    if not isinstance(signed, dict) or set(signed) != {"doc", "sig"}:
        raise DocumentError("a signed document must have exactly doc and sig")
    doc, sig_text = signed["doc"], signed["sig"]
    if not isinstance(doc, dict) or not isinstance(sig_text, str):
        raise DocumentError("doc must be an object and sig base64 text")
    try:
        sig = base64.b64decode(sig_text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DocumentError("sig is not base64") from exc
    try:
        verify_signature(central_signing_public, sig, domain + canonical_bytes(doc))
    except (BadSignature, InvalidField) as exc:
        raise DocumentError("signature of central does not verify") from exc
    return doc


@dataclass(frozen=True)
class RosterEntry:
    """One node as central knows it."""

    name: str
    area: str
    signing_pub: str
    encryption_pub: str
    enrolled: int
    revoked: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (keys are base64 text)."""
        return {"name": self.name, "area": self.area, "signing_pub": self.signing_pub,
                "encryption_pub": self.encryption_pub, "enrolled": self.enrolled,
                "revoked": self.revoked}


@dataclass(frozen=True)
class Roster:
    """A verified roster."""

    serial: int
    issued: int
    central_origin: str
    nodes: tuple[RosterEntry, ...]

    def member(self, name: str) -> RosterEntry | None:
        """The entry for ``name`` if it is enrolled and not revoked."""
        for entry in self.nodes:
            if entry.name == name:
                return None if entry.revoked is not None else entry
        return None

    def signing_key(self, name: str) -> bytes | None:
        """Raw signing key of a current member, for verifying its events."""
        entry = self.member(name)
        return base64.b64decode(entry.signing_pub) if entry else None

    def to_doc(self) -> dict[str, Any]:
        """The document central signs."""
        return {"v": 1, "serial": self.serial, "issued": self.issued,
                "central": self.central_origin,
                "nodes": [n.to_dict() for n in self.nodes]}


def sign_roster(roster: Roster, keys: KeyPair) -> dict[str, Any]:
    """Central's signed roster document."""
    return sign_document(roster.to_doc(), keys, ROSTER_DOMAIN)


def verify_roster(signed: Any, central_signing_public: bytes) -> Roster:
    """Verify and parse a signed roster."""
    doc = verify_document(signed, central_signing_public, ROSTER_DOMAIN)
    if doc.get("v") != 1:
        raise UnknownVersion(f"roster version {doc.get('v')!r} is not supported")
    nodes = doc.get("nodes")
    if not isinstance(nodes, list) or len(nodes) > MAX_ROSTER_NODES:
        raise DocumentError("roster nodes must be a list of at most 10,000")
    entries = []
    for raw in nodes:
        if not isinstance(raw, dict):
            raise DocumentError("roster entry must be an object")
        name, area = raw.get("name"), raw.get("area")
        if not isinstance(name, str) or not SLUG.fullmatch(name):
            raise DocumentError("roster entry name must be a slug")
        if not isinstance(area, str) or not AREA.fullmatch(area):
            raise DocumentError("roster entry area must be an area code")
        revoked = raw.get("revoked")
        entries.append(RosterEntry(
            name=name, area=area, signing_pub=str(raw.get("signing_pub")),
            encryption_pub=str(raw.get("encryption_pub")), enrolled=int(raw.get("enrolled", 0)),
            revoked=int(revoked) if isinstance(revoked, int) else None,
        ))
    serial, issued, central = doc.get("serial"), doc.get("issued"), doc.get("central")
    if not isinstance(serial, int) or not isinstance(issued, int) or not isinstance(central, str):
        raise DocumentError("roster serial/issued/central missing")
    return Roster(serial=serial, issued=issued, central_origin=central, nodes=tuple(entries))
