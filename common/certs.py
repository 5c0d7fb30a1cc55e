"""The certificate authority that node and central both make (issue 16: one copy).

Central's CA issues the nodes' mesh certificates; a node's own CA issues the
TLS certificate its point devices trust. Both are an EC P-256 key and a
self-signed certificate that may sign end-entity certificates only
(``path_length=0``) and certificate revocation lists, nothing else.

>>> import datetime as dt
>>> key, cert = make_ca("Bart test CA", days=10, backdate=dt.timedelta(minutes=5))
>>> cert.subject.rfc4514_string(), cert.issuer == cert.subject
('CN=Bart test CA', True)
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

#: A CA may sign certificates and revocation lists, nothing else.
CA_KEY_USAGE = x509.KeyUsage(digital_signature=False, content_commitment=False,
                             key_encipherment=False, data_encipherment=False,
                             key_agreement=False, key_cert_sign=True, crl_sign=True,
                             encipher_only=False, decipher_only=False)


def common_name(name: str) -> x509.Name:
    """An X.509 name with only a common name."""
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])


def make_ca(name: str, *, days: int, backdate: dt.timedelta,
            now: dt.datetime | None = None) -> tuple[ec.EllipticCurvePrivateKey,
                                                     x509.Certificate]:
    """A new CA named ``name``: its key and self-signed certificate, valid from
    ``backdate`` before ``now`` (clocks of the devices that check it may lag) for
    ``days`` days."""
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = common_name(name)
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - backdate)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(CA_KEY_USAGE, critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


__all__ = ["CA_KEY_USAGE", "common_name", "make_ca"]
