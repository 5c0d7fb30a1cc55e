"""The node's own small certificate authority for its TLS MQTT listener.

Point devices (a Raspberry Pi Zero 2 W in a meeting point's post) reach their
node over Wi-Fi with MQTT over TLS. The node creates, on first use and on the
device itself, a CA and a server certificate signed by it; ``bart node point
add`` hands the CA certificate to the point device, which then trusts exactly
this node. (Mesh certificates between nodes are issued by central — a later
issue — and are separate from this.)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.certs import make_ca
from common.files import write_atomic

CA_DAYS = 3650
SERVER_DAYS = 825


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the node's TLS material."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        """The CA certificate (given to point devices)."""
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        """The CA's private key (0600, never leaves the node)."""
        return self.directory / "ca.key"

    @property
    def cert(self) -> Path:
        """The broker's server certificate."""
        return self.directory / "server.pem"

    @property
    def key(self) -> Path:
        """The broker's private key (0600)."""
        return self.directory / "server.key"


def _write(path: Path, data: bytes, private: bool) -> None:
    write_atomic(path, data, mode=0o600 if private else 0o644)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bart"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _san_names(node_name: str, extra_hosts: tuple[str, ...]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(node_name), x509.DNSName("localhost"),
                                     x509.DNSName(f"{node_name}.local")]
    host = socket.gethostname()
    for extra in (host, f"{host}.local", *extra_hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(extra)))
        except ValueError:
            names.append(x509.DNSName(extra))
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    return list(dict.fromkeys(names))


def _covers(cert_path: Path, names: list[x509.GeneralName]) -> bool:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return all(name in san for name in names)


def ensure_tls(directory: Path, node_name: str, extra_hosts: tuple[str, ...] = (),
               now: dt.datetime | None = None) -> TlsFiles:
    """Create the CA once, and a server certificate that names every host given.

    A later call with a new host (``bart node point add --host 10.42.0.1``)
    re-issues only the server certificate, from the same CA, so the point
    devices already set up keep trusting the node.
    """
    files = TlsFiles(directory)
    names = _san_names(node_name, extra_hosts)
    have_ca = files.ca_cert.exists() and files.ca_key.exists()
    if have_ca and files.cert.exists() and files.key.exists() and _covers(files.cert, names):
        return files
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = now or dt.datetime.now(dt.UTC)
    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    if have_ca:
        ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), None)
        ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{files.ca_key} is not the node's EC CA key")
        ca_name = ca.subject
        if files.cert.exists():  # keep the names it had: devices may use any of them
            old = x509.load_pem_x509_certificate(files.cert.read_bytes())
            with contextlib.suppress(x509.ExtensionNotFound):
                san = old.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                names = list(dict.fromkeys([*san.value, *names]))
    else:
        ca_key, ca = make_ca(f"Bart node CA {node_name}", days=CA_DAYS,
                             backdate=dt.timedelta(days=1), now=now)
        ca_name = ca.subject
        _write(files.ca_key, ca_key.private_bytes(pem, pkcs8, none), private=True)
        _write(files.ca_cert, ca.public_bytes(pem), private=False)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(_name(node_name)).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write(files.key, key.private_bytes(pem, pkcs8, none), private=True)
    _write(files.cert, cert.public_bytes(pem), private=False)
    return files
