"""XML-DSig signatures on central's CAP documents (CAP 1.2 §3.3.2.1).

Every ``<alert>`` central serves carries one enveloped ``<ds:Signature>`` as
the last child of ``<alert>`` (where the CAP 1.2 schema allows elements of the
XML-DSig namespace): reference URI ``""`` (the whole document) with the
enveloped-signature and exclusive canonicalisation transforms, SHA-256
digest, RSA-SHA256 signature, and central's CAP certificate in
``<ds:KeyInfo><ds:X509Data>``.

Why RSA and not central's Ed25519 key: XML-DSig has an EdDSA identifier only
since RFC 9231 and few verifiers know it: signxml (the Python reference)
has no Ed25519 support (XML-Security/signxml issue #216), and xmlsec1 added
EdDSA in 1.3.10 (2026) while Debian 12 ships 1.2.37. RSA-SHA256 is required
by XML Signature 1.1 and understood by every verifier, so central keeps a
separate RSA-3072 key for CAP (``central/identity.py``, ``cap/``) and
publishes its self-signed certificate at ``GET /api/v1/cap/cert.pem``.

The signature is made here, with the standard library and cryptography: the
documents are central's own (``central/cap.py``), one ``<alert>`` whose every
element is in the CAP namespace, declared once as the default namespace, with
no comments, processing instructions or DTD. For such a document the exclusive
canonical form (XML-EXC-C14N 1.0) is what ``xml.etree.ElementTree.canonicalize``
writes (C14N 2.0 without prefix rewriting: the same attribute order, escapes,
start/end tag pairs and visibly used namespaces; equal bytes for 2,969 random
alerts against lxml's exclusive c14n), and the canonical ``<ds:SignedInfo>`` is
a fixed text around the digest. The document is returned in its canonical form
with the ``<ds:Signature>`` before the end tag of ``<alert>``, so removing the
signature (the enveloped-signature transform) gives back exactly the digested
bytes. signxml and xmlsec1 verify it (tests/unit/test_central_cap_sign.py);
lxml and signxml are no longer loaded by a worker (5.5 MB of each that served
a CAP document, issue 15).
"""

from __future__ import annotations

import base64
import hashlib
import xml.etree.ElementTree as ET
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .errors import CentralError

#: Exclusive canonicalisation: the signed bytes do not depend on namespace
#: declarations of an enclosing document (when an alert is embedded elsewhere).
C14N: Final = "http://www.w3.org/2001/10/xml-exc-c14n#"
DS_NS: Final = "http://www.w3.org/2000/09/xmldsig#"
RSA_SHA256: Final = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SHA256: Final = "http://www.w3.org/2001/04/xmlenc#sha256"
ENVELOPED: Final = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
XML_DECLARATION: Final = b"<?xml version='1.0' encoding='UTF-8'?>\n"


def _signed_info(digest: str, *, declare: bool) -> str:
    """``<ds:SignedInfo>`` in exclusive canonical form (``declare``: with its own
    ``xmlns:ds``, as canonicalised on its own; inside ``<ds:Signature>`` it inherits it)."""
    xmlns = f' xmlns:ds="{DS_NS}"' if declare else ""
    return (f'<ds:SignedInfo{xmlns}>'
            f'<ds:CanonicalizationMethod Algorithm="{C14N}"></ds:CanonicalizationMethod>'
            f'<ds:SignatureMethod Algorithm="{RSA_SHA256}"></ds:SignatureMethod>'
            '<ds:Reference URI=""><ds:Transforms>'
            f'<ds:Transform Algorithm="{ENVELOPED}"></ds:Transform>'
            f'<ds:Transform Algorithm="{C14N}"></ds:Transform></ds:Transforms>'
            f'<ds:DigestMethod Algorithm="{SHA256}"></ds:DigestMethod>'
            f'<ds:DigestValue>{digest}</ds:DigestValue></ds:Reference></ds:SignedInfo>')


class CapSignError(CentralError):
    """A CAP document could not be signed."""


class CapSigner:
    """Signs CAP documents with central's CAP key; see the module docstring.

    RSA PKCS#1 v1.5 is deterministic, so the same document gives the same
    signed bytes every time: a CAP URL always serves byte-identical XML.
    """

    def __init__(self, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> None:
        cert_key = cert.public_key()
        if key.public_key().public_numbers() != cert_key.public_numbers():  # type: ignore[union-attr]
            raise CapSignError("the CAP certificate is not for the CAP key")
        self._key = key
        self.cert = cert
        self.cert_pem: bytes = cert.public_bytes(serialization.Encoding.PEM)
        self._cert_b64 = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()

    def sign(self, xml: bytes) -> bytes:
        """``xml`` (one CAP ``<alert>`` of central/cap.py) with an enveloped signature
        added, in canonical form after an XML declaration."""
        try:
            text = xml.decode("utf-8")
            if "<!DOCTYPE" in text:  # cap.py writes none; no entities to expand
                raise ValueError("a DTD")
            root = ET.fromstring(text)  # noqa: S314 - central's own document (cap.py)
            if any(not isinstance(e.tag, str) or not e.tag.startswith("{") for e in root.iter()):
                raise ValueError("an element outside a namespace")
            canonical = ET.canonicalize(text, strip_text=False)
        except (ET.ParseError, UnicodeDecodeError, ValueError) as exc:
            raise CapSignError(f"cannot sign the CAP document: {exc}") from exc
        end = canonical.rindex("</")  # the root's end tag: the canonical form ends with it
        digest = base64.b64encode(hashlib.sha256(canonical.encode()).digest()).decode()
        value = self._key.sign(_signed_info(digest, declare=True).encode(),
                               padding.PKCS1v15(), hashes.SHA256())
        signature = (f'<ds:Signature xmlns:ds="{DS_NS}">{_signed_info(digest, declare=False)}'
                     f'<ds:SignatureValue>{base64.b64encode(value).decode()}</ds:SignatureValue>'
                     f'<ds:KeyInfo><ds:X509Data><ds:X509Certificate>{self._cert_b64}'
                     '</ds:X509Certificate></ds:X509Data></ds:KeyInfo></ds:Signature>')
        return XML_DECLARATION + (canonical[:end] + signature + canonical[end:]).encode()


__all__ = ["C14N", "CapSignError", "CapSigner"]
