"""Enrolment messages between a node and central (DESIGN.md §5).

1. Central issues a one-time **code** for a node name and area.
2. The node sends a **request**: its name, the code, its public keys (made on
   the node) and a certificate request for its mesh TLS key.
3. Central answers with the node's certificate, central's public keys and the
   signed roster. The answer carries an HMAC keyed with the code, so the node
   knows it comes from whoever issued the code (central), before it trusts the
   keys inside. Offline, the request and the answer travel as files
   (``bart node enroll --request-out`` / ``bart central enroll-bundle`` /
   ``bart node enroll --bundle``); there the carrier is the trust, and both
   sides print fingerprints to compare.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from .bodies import AREA, SLUG
from .canonical import canonical_bytes
from .errors import InvalidField
from .keys import b64, unb64

#: 4 groups of 4 from an alphabet without look-alikes: ~80 bits, read over a phone.
CODE_ALPHABET: Final = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CODE_RE: Final = re.compile(r"^[A-HJ-NP-Z2-9]{4}(-[A-HJ-NP-Z2-9]{4}){3}$")
MAX_CSR_BYTES: Final = 4096


def new_code() -> str:
    """A fresh one-time enrolment code such as ``K7FQ-3QXA-M2PD-W9RT``."""
    chars = "".join(secrets.choice(CODE_ALPHABET) for _ in range(16))
    return "-".join(chars[i:i + 4] for i in range(0, 16, 4))


def normalise_code(text: str) -> str:
    """Upper-case, dashes re-inserted; raises for anything that cannot be a code."""
    raw = re.sub(r"[\s-]", "", text.upper())
    code = "-".join(raw[i:i + 4] for i in range(0, len(raw), 4))
    if not CODE_RE.fullmatch(code):
        raise InvalidField("code", "must look like K7FQ-3QXA-M2PD-W9RT")
    return code


def code_hash(code: str) -> str:
    """What central stores instead of the code."""
    return hashlib.sha256(b"bart-enrol-code-v1" + code.encode()).hexdigest()


@dataclass(frozen=True)
class EnrolRequest:
    """A node asking to join."""

    node: str
    signing_pub: bytes
    encryption_pub: bytes
    csr_pem: str
    code: str = ""
    version: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"v": 1, "node": self.node, "code": self.code,
                "signing_pub": b64(self.signing_pub), "encryption_pub": b64(self.encryption_pub),
                "csr_pem": self.csr_pem, "version": self.version}


def parse_request(raw: Any, *, need_code: bool) -> EnrolRequest:
    """Validate a request received from the network or a file."""
    if not isinstance(raw, dict) or raw.get("v") != 1:
        raise InvalidField("$", "an enrolment request v1 object is expected")
    node = raw.get("node")
    if not isinstance(node, str) or not SLUG.fullmatch(node):
        raise InvalidField("node", "must be a node name (slug)")
    code = raw.get("code") or ""
    if need_code:
        if not isinstance(code, str):
            raise InvalidField("code", "must be text")
        code = normalise_code(code)
    csr = raw.get("csr_pem")
    if (not isinstance(csr, str) or len(csr) > MAX_CSR_BYTES
            or "BEGIN CERTIFICATE REQUEST" not in csr):
        raise InvalidField("csr_pem", "must be a PEM certificate request")
    _check_csr(csr)
    version = raw.get("version") or ""
    if not isinstance(version, str) or len(version) > 40:
        raise InvalidField("version", "must be short text")
    for key in ("signing_pub", "encryption_pub"):
        if not isinstance(raw.get(key), str):
            raise InvalidField(key, "must be base64 text")
    try:
        sign = unb64(raw["signing_pub"], 32, "signing_pub")
        enc = unb64(raw["encryption_pub"], 32, "encryption_pub")
    except Exception as exc:
        raise InvalidField("keys", str(exc)) from exc
    return EnrolRequest(node=node, signing_pub=sign, encryption_pub=enc, csr_pem=csr,
                        code=code, version=version)


def _check_csr(csr: str) -> None:
    """Refuse a certificate request that does not parse or whose signature is wrong.

    Checked with the rest of the request, before a code is looked at: central
    would otherwise find out only while signing it (and answered 500).
    """
    try:
        valid = x509.load_pem_x509_csr(csr.encode("utf-8")).is_signature_valid
    except (ValueError, TypeError, UnicodeError, UnsupportedAlgorithm) as exc:
        raise InvalidField("csr_pem", "must be a PEM certificate request") from exc
    if not valid:
        raise InvalidField("csr_pem", "the certificate request's signature is invalid")


def check_area(area: str) -> str:
    """An area code as events carry it."""
    if not AREA.fullmatch(area):
        raise InvalidField("area", "must be an area code such as ESCAMP")
    return area


def response_mac(code: str, doc: dict[str, Any]) -> str:
    """HMAC of an enrolment answer keyed with the one-time code."""
    return hmac.new(code.encode(), b"bart/enrol-answer/v1\x00" + canonical_bytes(doc),
                    hashlib.sha256).hexdigest()


def check_response_mac(code: str, doc: dict[str, Any], mac: Any) -> None:
    """Raise unless ``mac`` is the answer's HMAC under ``code``."""
    if not isinstance(mac, str) or not hmac.compare_digest(mac, response_mac(code, doc)):
        raise InvalidField("mac", "the answer was not made with this code (not from central?)")
