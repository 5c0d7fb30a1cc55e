"""This node's mesh identity: the TLS certificate it shows peers, and the CAs
it accepts peers from (docs/mesh.md, "Identity and trust").

- Enrolled: the certificate central issued at enrolment (``central/node.pem``,
  its key ``central/node.key`` made here), and central's CA.
- Not (yet) enrolled: a *provisional* certificate from the node's own CA
  (``tls/ca.pem``, made on the node for point devices), and the mesh CAs of
  the peers added with ``bart node trust add``. Its CA travels in the
  identity file of ``bart node trust export``.

Mosquitto's mesh listener and the dialler read the same files:
``mesh/ca-bundle.pem`` (every CA accepted), and the certificate and key.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..config import NodeSettings
from ..enrol import _atomic, enrol_dir
from ..tls import ensure_tls
from ..trust import TrustedKeys

MESH_DIR = "mesh"
CERT_DAYS = 825


@dataclass(frozen=True)
class MeshIdentity:
    """Paths of the files a mesh session needs; ``provisional`` before enrolment."""

    cert: Path
    key: Path
    cafile: Path
    provisional: bool

    def __post_init__(self) -> None:
        for path in (self.cert, self.key, self.cafile):
            if not path.exists():
                raise FileNotFoundError(path)


def mesh_dir(settings: NodeSettings) -> Path:
    """Where the mesh's files live."""
    return settings.data_dir / MESH_DIR


def node_ca_pem(settings: NodeSettings) -> str:
    """PEM of the node's own CA (what a peer trusts before a roster exists)."""
    files = ensure_tls(settings.tls_dir, settings.name)
    return files.ca_cert.read_text()


def _provisional(settings: NodeSettings) -> tuple[Path, Path]:
    """A client+server certificate named after the node, from the node's own CA."""
    directory = mesh_dir(settings)
    cert_path, key_path = directory / "provisional.pem", directory / "provisional.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    files = ensure_tls(settings.tls_dir, settings.name)
    ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), None)
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{files.ca_key} is not the node's EC CA key")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, settings.name)]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(settings.name)]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                                  ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    _atomic(key_path, key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()), private=True)
    _atomic(cert_path, cert.public_bytes(pem), private=False)
    return cert_path, key_path


def ensure_identity(settings: NodeSettings, trust: TrustedKeys) -> MeshIdentity | None:
    """Write the CA bundle and pick the certificate; None when no one can be a
    peer yet (not enrolled and no trusted peer: no listener is opened)."""
    directory = mesh_dir(settings)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    central = enrol_dir(settings)
    cas: list[str] = []
    if (central / "ca.pem").exists():
        cas.append((central / "ca.pem").read_text())
    cas += trust.peer_cas()
    if not cas:
        return None
    bundle = directory / "ca-bundle.pem"
    text = "".join(pem if pem.endswith("\n") else pem + "\n" for pem in cas)
    if not bundle.exists() or bundle.read_text() != text:
        _atomic(bundle, text.encode(), private=False)
    enrolled = (central / "node.pem").exists() and (central / "node.key").exists()
    if enrolled:
        cert, key = central / "node.pem", central / "node.key"
    else:
        cert, key = _provisional(settings)
    os.chmod(key, 0o600)
    return MeshIdentity(cert=cert, key=key, cafile=bundle, provisional=not enrolled)


def certificate_name(peer_cert: dict[str, object] | None) -> str | None:
    """The common name of a certificate as ``ssl.getpeercert()`` gives it."""
    if not peer_cert:
        return None
    subject = peer_cert.get("subject")
    if not isinstance(subject, tuple):
        return None
    for rdn in subject:
        for pair in rdn:
            if isinstance(pair, tuple) and len(pair) == 2 and pair[0] == "commonName":
                return str(pair[1])
    return None
