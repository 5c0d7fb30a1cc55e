"""Enrolling this node with central (DESIGN.md §5), online or by files.

Everything central gives the node is kept in ``data_dir/central/``::

    enrolment.json   central's origin, URL, public keys, key id; our area
    roster.json      the newest central-signed roster we verified
    ca.pem           central's CA (mesh peers' certificates chain to it)
    node.pem         our mesh TLS certificate, issued by central
    node.key         its private key, made here (0600), never sent anywhere
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from common.files import write_atomic
from sync import KeyPair
from sync.canonical import parse_json
from sync.enrolment import EnrolRequest, check_response_mac, normalise_code
from sync.errors import SyncError
from sync.keys import fingerprint, unb64
from sync.roster import Roster, verify_roster

from .config import NodeSettings
from .errors import ConfigError, NodeError

ENROL_DIR = "central"
MAX_ANSWER_BYTES = 4 * 1024 * 1024


class EnrolmentFailed(NodeError):
    """Central refused the enrolment, or its answer could not be trusted."""


def package_version() -> str:
    """The installed bart version (sent to central for its node-health view)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bart")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+source"


def enrol_dir(settings: NodeSettings) -> Path:
    """Where central's material lives on the node."""
    return settings.data_dir / ENROL_DIR


def is_enrolled(settings: NodeSettings) -> bool:
    """True once an enrolment answer was accepted."""
    return (enrol_dir(settings) / "enrolment.json").exists()


def load_enrolment(settings: NodeSettings) -> dict[str, Any] | None:
    """The stored enrolment (central's keys and URL), or None."""
    path = enrol_dir(settings) / "enrolment.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is malformed")
    return data


def load_roster(settings: NodeSettings, central_signing_public: bytes) -> Roster | None:
    """The stored roster, verified again on every load."""
    path = enrol_dir(settings) / "roster.json"
    if not path.exists():
        return None
    return verify_roster(json.loads(path.read_text()), central_signing_public)


def save_roster(settings: NodeSettings, signed: dict[str, Any], central_signing_public: bytes,
                current: int) -> Roster | None:
    """Store a signed roster if it verifies and is newer than ``current``."""
    roster = verify_roster(signed, central_signing_public)
    if roster.serial <= current:
        return None
    _atomic(enrol_dir(settings) / "roster.json", json.dumps(signed).encode(), private=False)
    return roster


def _atomic(path: Path, data: bytes, *, private: bool) -> None:
    write_atomic(path, data, mode=0o600 if private else 0o644)


def _tls_key(settings: NodeSettings) -> ec.EllipticCurvePrivateKey:
    directory = enrol_dir(settings)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / "node.key"
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{path} is not an EC key")
        return key
    key = ec.generate_private_key(ec.SECP256R1())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    return key


def build_request(settings: NodeSettings, code: str = "") -> EnrolRequest:
    """This node's request: public keys and a CSR for a TLS key made here."""
    keys = KeyPair.load(settings.keys_dir)
    key = _tls_key(settings)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, settings.name)]))
           .sign(key, hashes.SHA256()))
    return EnrolRequest(node=settings.name, signing_pub=keys.signing_public,
                        encryption_pub=keys.encryption_public,
                        csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode(),
                        code=code, version=package_version())


def write_request(settings: NodeSettings, path: Path) -> Path:
    """Offline step 1: the request as a file to carry to central."""
    if is_enrolled(settings):
        raise EnrolmentFailed("this node is already enrolled")
    path.write_text(json.dumps(build_request(settings).to_dict(), indent=1))
    return path


def _accept(settings: NodeSettings, doc: Any) -> dict[str, Any]:
    """Check an enrolment answer against this node and store it."""
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise EnrolmentFailed("the answer is not an enrolment answer v1")
    if doc.get("node") != settings.name:
        raise EnrolmentFailed(f"the answer is for node {doc.get('node')!r}, "
                              f"this node is {settings.name!r}")
    central = doc.get("central")
    if not isinstance(central, dict):
        raise EnrolmentFailed("the answer lacks central's keys")
    try:
        signing = unb64(str(central.get("signing_pub")), 32, "central signing key")
        unb64(str(central.get("encryption_pub")), 32, "central encryption key")
        roster = verify_roster(doc.get("roster"), signing)
    except SyncError as exc:
        raise EnrolmentFailed(f"the answer does not verify: {exc}") from exc
    keys = KeyPair.load(settings.keys_dir)
    me = roster.member(settings.name)
    if me is None or base64.b64decode(me.signing_pub) != keys.signing_public:
        raise EnrolmentFailed("the roster does not list this node with its own key")
    cert_pem = str(doc.get("cert_pem", "")).encode()
    ca_pem = str(central.get("ca_pem", "")).encode()
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        ca = x509.load_pem_x509_certificate(ca_pem)
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError) as exc:
        raise EnrolmentFailed(f"the certificate in the answer is not valid: {exc}") from exc
    if cert.public_key() != _tls_key(settings).public_key():
        raise EnrolmentFailed("the certificate is not for this node's TLS key")
    directory = enrol_dir(settings)
    _atomic(directory / "ca.pem", ca_pem, private=False)
    _atomic(directory / "node.pem", cert_pem, private=False)
    _atomic(directory / "roster.json", json.dumps(doc["roster"]).encode(), private=False)
    info = {"origin": central.get("origin"), "url": central.get("url"),
            "signing_pub": central.get("signing_pub"),
            "encryption_pub": central.get("encryption_pub"), "kid": central.get("kid"),
            "area": doc.get("area"), "node": settings.name,
            "fingerprint": fingerprint(signing)}
    _atomic(directory / "enrolment.json", json.dumps(info, indent=1).encode(), private=False)
    return info


def check_central_url(url: str) -> None:
    """Refuse a plain-http central on the open internet.

    The one-time code travels in the request, and the answer is authenticated
    only with that code: anyone who can read a plain-http request on the way
    could pose as central with keys of their own (docs/threat-model.md). Plain
    http is taken only where nobody else is on the way: this machine, or a
    private network (a lab, a municipal VPN), given as an address.

    >>> check_central_url("https://bart.example.nl")
    >>> check_central_url("http://127.0.0.1:8443")
    >>> check_central_url("http://10.20.0.1:8443")
    >>> check_central_url("http://bart.example.nl")
    Traceback (most recent call last):
    ...
    node.enrol.EnrolmentFailed: central's URL is plain http (http://bart.example.nl): ...
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "https":
        return
    if parsed.scheme != "http" or not parsed.hostname:
        raise EnrolmentFailed(f"central's URL must start with https:// ({url})")
    host = "127.0.0.1" if parsed.hostname == "localhost" else parsed.hostname
    with contextlib.suppress(ValueError):  # a name, not an address: not taken
        address = ipaddress.ip_address(host)
        if address.is_loopback or address.is_private:
            return
    raise EnrolmentFailed(
        f"central's URL is plain http ({url}): the one-time code would cross the network "
        "unprotected and anyone on the way could pose as central. Use central's https:// "
        "address (plain http is taken only for this machine or a private network address)")


def enrol_online(settings: NodeSettings, url: str, code: str, *, timeout: float = 20.0,
                 transport: httpx.BaseTransport | None = None) -> dict[str, Any]:
    """Online enrolment with a one-time code."""
    if is_enrolled(settings):
        raise EnrolmentFailed("this node is already enrolled")
    check_central_url(url)
    code = normalise_code(code)
    body = build_request(settings, code).to_dict()
    endpoint = url.rstrip("/") + "/api/v1/enroll"
    try:
        with httpx.Client(timeout=timeout, transport=transport) as client:
            resp = client.post(endpoint, json=body)
    except httpx.HTTPError as exc:
        raise EnrolmentFailed(f"central at {url} cannot be reached: {exc}") from exc
    if resp.status_code != 200:
        try:
            detail = resp.json().get("detail", resp.text)
        except ValueError:
            detail = resp.text[:200]
        raise EnrolmentFailed(f"central refused the enrolment ({resp.status_code}): {detail}")
    answer = parse_json(resp.content, MAX_ANSWER_BYTES)
    if not isinstance(answer, dict):
        raise EnrolmentFailed("central's answer is not an object")
    try:
        check_response_mac(code, answer.get("doc") or {}, answer.get("mac"))
    except SyncError as exc:
        raise EnrolmentFailed(str(exc)) from exc
    return _accept(settings, answer["doc"])


def load_bundle(settings: NodeSettings, path: Path) -> dict[str, Any]:
    """Offline step 3: read the bundle central wrote for this node."""
    if is_enrolled(settings):
        raise EnrolmentFailed("this node is already enrolled")
    answer = parse_json(path.read_bytes(), MAX_ANSWER_BYTES)
    if not isinstance(answer, dict) or "doc" not in answer:
        raise EnrolmentFailed(f"{path} is not an enrolment bundle")
    return _accept(settings, answer["doc"])
