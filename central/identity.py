"""Central's keys and CA, created by ``bart central init`` (settings: central/config.py).

A central data directory holds::

    central.toml        settings (name, database URL, public URL, listen address)
    keys/               Ed25519 signing + X25519 encryption keys (0600, sync.keys)
    ca/ca.pem, ca.key   the CA that issues node TLS certificates (key 0600)
    cap/cap.pem, cap.key  RSA key + self-signed certificate that sign CAP documents
                        (key 0600; made by init, or at the first load of an older central)
    areas.toml          names, outlines and geocodes of the areas (optional, central/areas.py)
    central.db          the SQLite database, unless database_url points elsewhere
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.certs import make_ca
from common.files import write_atomic
from sync.keys import KeyPair, b64
from sync.sealed import key_id

from .areas import AREAS_FILE, Area, load_areas
from .errors import CentralConfigError

if TYPE_CHECKING:
    # Re-exported (older imports name identity); at run time by __getattr__ below, so
    # that a process that never loads settings (the projector beside bart central
    # run's workers) does not import pydantic for them (8 MB).
    from .config import CONFIG_FILE as CONFIG_FILE
    from .config import CentralSettings as CentralSettings

CA_DAYS = 3650
NODE_CERT_DAYS = 825
CAP_DIR = "cap"
#: XML-DSig verifiers all know RSA-SHA256; few know Ed25519 (central/capsign.py).
CAP_KEY_BITS = 3072
CAP_CERT_DAYS = 3650


@dataclass(frozen=True)
class Central:
    """A loaded central: settings, keys and CA."""

    data_dir: Path
    settings: CentralSettings
    keys: KeyPair
    ca_cert: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey
    #: Signs CAP documents (central/capsign.py); its certificate is public.
    cap_key: rsa.RSAPrivateKey
    cap_cert: x509.Certificate
    #: Areas by code, from areas.toml (central/areas.py); empty without that file.
    areas: dict[str, Area] = field(default_factory=dict, compare=False)

    @property
    def database_url(self) -> str:
        """The configured database, or the SQLite file in the data directory."""
        return self.settings.database_url or f"sqlite:///{self.data_dir / 'central.db'}"

    @property
    def origin(self) -> str:
        """Central's origin name."""
        return self.settings.origin

    @property
    def kid(self) -> str:
        """Key id of central's encryption key, as batch headers name it."""
        return key_id(self.keys.encryption_public)

    def public_info(self) -> dict[str, Any]:
        """What a node learns about central at enrolment."""
        return {
            "origin": self.origin,
            "signing_pub": b64(self.keys.signing_public),
            "encryption_pub": b64(self.keys.encryption_public),
            "kid": self.kid,
            "url": self.settings.public_url,
            "ca_pem": self.ca_cert.public_bytes(serialization.Encoding.PEM).decode(),
        }

    def issue_node_cert(self, csr_pem: bytes, node: str) -> bytes:
        """Sign a node's CSR: a client+server certificate for mesh mTLS named ``node``."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise CentralConfigError("the certificate request is not a PEM CSR") from exc
        if not csr.is_signature_valid:
            raise CentralConfigError("the certificate request's signature is invalid")
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node)]))
            .issuer_name(self.ca_cert.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=NODE_CERT_DAYS))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(node)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                                  ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _cap_signing(data_dir: Path, origin: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """Central's CAP key and certificate, made now if this central has none yet.

    Several processes may load one central at once (uvicorn workers, the
    projector): the key file appears atomically (link of a complete file) and
    the one that loses the race reads the winner's key; a missing certificate
    is made from whichever key is there, by the same atomic rename.
    """
    cap_dir = data_dir / CAP_DIR
    cap_dir.mkdir(mode=0o700, exist_ok=True)
    key_path, cert_path = cap_dir / "cap.key", cap_dir / "cap.pem"
    if not key_path.exists():
        new = rsa.generate_private_key(public_exponent=65537, key_size=CAP_KEY_BITS)
        tmp = cap_dir / f".cap.key.{os.getpid()}"
        _write_private(tmp, new.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        try:
            os.link(tmp, key_path)
        except FileExistsError:
            pass  # another process made it first: use that one
        finally:
            tmp.unlink()
    if key_path.stat().st_mode & 0o077:
        raise CentralConfigError(f"{key_path} must be mode 0600 (fix: chmod 600 {key_path})")
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CentralConfigError(f"{key_path} is not an RSA key")
    cert = None
    if cert_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if cert.public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
            raise CentralConfigError(f"{cert_path} does not belong to {key_path} "
                                     f"(fix: remove {cert_path}; central makes a new one)")
    else:
        cert = _cap_certificate(key, origin)
        write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return key, cert


def _cap_certificate(key: rsa.RSAPrivateKey, origin: str) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Bart {origin} CAP signing")])
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CAP_CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )


def __getattr__(name: str) -> Any:
    if name in ("CONFIG_FILE", "CentralSettings"):
        from . import config

        return getattr(config, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def init_central(data_dir: Path, settings: CentralSettings) -> Central:
    """Create keys, CA and settings in ``data_dir``; refuses an existing central."""
    from .config import CONFIG_FILE

    data_dir = data_dir.resolve()
    if (data_dir / CONFIG_FILE).exists():
        raise CentralConfigError(f"{data_dir} already holds a central ({CONFIG_FILE} exists)")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    KeyPair.generate().save(data_dir / "keys")
    ca_dir = data_dir / "ca"
    ca_dir.mkdir(mode=0o700, exist_ok=True)
    key, cert = make_ca(f"Bart {settings.origin} CA", days=CA_DAYS,
                        backdate=dt.timedelta(minutes=5))
    _write_private(ca_dir / "ca.key", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (ca_dir / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (data_dir / CONFIG_FILE).write_text(settings.render_toml(), encoding="utf-8")
    return load_central(data_dir)


def load_central(data_dir: Path, **overrides: Any) -> Central:
    """Load a central created by :func:`init_central`: settings from its file, the
    environment and ``overrides`` (central/config.py), then its keys."""
    from .config import CentralSettings

    data_dir = data_dir.resolve()
    settings = CentralSettings.load(data_dir, **overrides)
    keys = KeyPair.load(data_dir / "keys")
    ca_key_path = data_dir / "ca" / "ca.key"
    if ca_key_path.stat().st_mode & 0o077:
        raise CentralConfigError(f"{ca_key_path} must be mode 0600 (fix: chmod 600 {ca_key_path})")
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise CentralConfigError(f"{ca_key_path} is not an EC key")
    ca_cert = x509.load_pem_x509_certificate((data_dir / "ca" / "ca.pem").read_bytes())
    cap_key, cap_cert = _cap_signing(data_dir, settings.origin)
    areas = load_areas(data_dir / AREAS_FILE)
    return Central(data_dir=data_dir, settings=settings, keys=keys, ca_cert=ca_cert, ca_key=ca_key,
                   cap_key=cap_key, cap_cert=cap_cert, areas=areas)
