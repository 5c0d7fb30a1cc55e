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

No I/O: key and certificate come in, bytes go out. lxml and signxml (~5.5 MB
of every HTTP worker) are imported at the first document signed, not before:
most workers never serve a CAP alert.
"""

from __future__ import annotations

from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .errors import CentralError

#: Exclusive canonicalisation: the signed bytes do not depend on namespace
#: declarations of an enclosing document (when an alert is embedded elsewhere).
C14N: Final = "http://www.w3.org/2001/10/xml-exc-c14n#"


class CapSignError(CentralError):
    """A CAP document could not be signed."""


class CapSigner:
    """Signs CAP documents with central's CAP key; see the module docstring.

    RSA PKCS#1 v1.5 is deterministic, so the same document gives the same
    signed bytes every time: a CAP URL always serves byte-identical XML.
    """

    def __init__(self, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> None:
        if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
            raise CapSignError("the CAP certificate is not for the CAP key")
        self._key = key
        self.cert = cert
        self.cert_pem: bytes = cert.public_bytes(serialization.Encoding.PEM)
        self._signer: Any = None

    def sign(self, xml: bytes) -> bytes:
        """``xml`` (one CAP ``<alert>``) with an enveloped signature added."""
        from lxml import etree  # type: ignore[import-untyped]

        if self._signer is None:
            from signxml import algorithms
            from signxml.signer import XMLSigner

            methods = algorithms.CanonicalizationMethod
            self._signer = XMLSigner(
                signature_algorithm=algorithms.SignatureMethod.RSA_SHA256,
                digest_algorithm=algorithms.DigestAlgorithm.SHA256,
                c14n_algorithm=methods.EXCLUSIVE_XML_CANONICALIZATION_1_0)
        parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=False)
        try:
            root = etree.fromstring(xml, parser)
            signed = self._signer.sign(root, key=self._key, cert=[self.cert])
        except (etree.XMLSyntaxError, ValueError) as exc:
            raise CapSignError(f"cannot sign the CAP document: {exc}") from exc
        data: bytes = etree.tostring(signed, xml_declaration=True, encoding="UTF-8")
        return data


__all__ = ["C14N", "CapSignError", "CapSigner"]
