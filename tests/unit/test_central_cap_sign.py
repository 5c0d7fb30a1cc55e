"""XML-DSig signatures on CAP documents (central/capsign.py) and central's CAP key
(central/identity.py).

Signatures are checked by two verifiers that share no code with Bart or with
each other: signxml's XMLVerifier (Python) and xmlsec1 (C, Debian's package),
both with only the published certificate as trust. A tampered document and a
foreign certificate must fail both.
"""

from __future__ import annotations

import base64
import os
import subprocess
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from signxml.exceptions import InvalidCertificate, InvalidDigest, InvalidSignature
from signxml.verifier import XMLVerifier

from central.areas import parse_areas
from central.cap import CAP_NS, LANG_EN, LANG_NL, AlertText, CapError, PublicAlert, alert_xml
from central.capsign import CapSigner, CapSignError
from central.feeds import cap_area
from central.identity import CAP_KEY_BITS, CentralSettings, init_central, load_central
from tests.support import require, require_binary

try:
    import capvalidator  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - the test extra installs it
    capvalidator = None

DS = "{http://www.w3.org/2000/09/xmldsig#}"
T0 = datetime(2026, 11, 29, 21, 15, 7, tzinfo=UTC)
BAD = (InvalidSignature, InvalidDigest, InvalidCertificate)


@pytest.fixture(scope="module")
def central_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cap") / "central"
    init_central(path, CentralSettings(name="haaglanden"))
    return path


@pytest.fixture(scope="module")
def signer(central_dir: Path) -> CapSigner:
    c = load_central(central_dir)
    return CapSigner(c.cap_key, c.cap_cert)


@pytest.fixture(scope="module")
def other_signer(tmp_path_factory: pytest.TempPathFactory) -> CapSigner:
    c = init_central(tmp_path_factory.mktemp("other") / "central", CentralSettings(name="elders"))
    return CapSigner(c.cap_key, c.cap_cert)


def an_alert(**changes: object) -> PublicAlert:
    areas = parse_areas(resources.files("bart").joinpath("demo_data/demo-areas.toml")
                        .read_text("utf-8"))
    fields: dict[str, object] = dict(
        id="0192f1c4-7d3e-7a00-8000-000000000001", sent=T0, msg_type="Alert", severity="severe",
        texts=(AlertText(LANG_NL, "Inbraakgolf", "Sluit ramen en deuren."),
               AlertText(LANG_EN, "Burglary wave")),
        expires=T0 + timedelta(days=2), areas=[cap_area("ESC-01", areas), "XYZ-9"],
        sender="central-haaglanden@central.example", sender_name="Politie Den Haag")
    fields.update(changes)
    return PublicAlert(**fields)  # type: ignore[arg-type]


def signxml_verify(xml: bytes, cert_pem: bytes) -> bytes:
    """What an independent consumer does: trust only the published certificate."""
    result = XMLVerifier().verify(xml, x509_cert=cert_pem.decode())
    assert not isinstance(result, list)  # one signature, one result
    signed: bytes = ET.tostring(result.signed_xml)  # type: ignore[arg-type]
    return signed


def xmlsec1_verify(xml: bytes, cert_pem: bytes, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    xmlsec1 = require_binary("xmlsec1")
    (tmp_path / "alert.xml").write_bytes(xml)
    (tmp_path / "cap.pem").write_bytes(cert_pem)
    # The same command docs/central.md gives consumers.
    return subprocess.run([xmlsec1, "--verify", "--trusted-pem", str(tmp_path / "cap.pem"),
                           str(tmp_path / "alert.xml")], capture_output=True, text=True,
                          timeout=30, check=False)


def test_signed_alert_verifies_with_signxml_and_xmlsec1_and_is_still_valid_cap(
        signer: CapSigner, tmp_path: Path) -> None:
    xml = signer.sign(alert_xml(an_alert()))
    signed = signxml_verify(xml, signer.cert_pem)
    assert b"Moerwijk en Zuiderpark (Escamp)" in signed and b"WK051836" in signed
    done = xmlsec1_verify(xml, signer.cert_pem, tmp_path)
    assert done.returncode == 0 and "OK" in done.stderr, done.stderr
    require(capvalidator is not None, "capvalidator is not installed (pip install -e '.[test]')")
    assert capvalidator.check_schema(xml).passed


def test_signature_is_enveloped_last_child_of_alert_with_rsa_sha256_and_the_certificate(
        signer: CapSigner) -> None:
    root = ET.fromstring(signer.sign(alert_xml(an_alert())))
    assert root.tag == f"{{{CAP_NS}}}alert" and root[-1].tag == f"{DS}Signature"
    assert len(root.findall(f"{DS}Signature")) == 1
    sig = root[-1]
    method = sig.find(f"{DS}SignedInfo/{DS}SignatureMethod")
    assert method is not None
    assert method.get("Algorithm") == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    ref = sig.find(f"{DS}SignedInfo/{DS}Reference")
    assert ref is not None and ref.get("URI") == ""
    transforms = [t.get("Algorithm") for t in ref.iter(f"{DS}Transform")]
    assert transforms == ["http://www.w3.org/2000/09/xmldsig#enveloped-signature",
                          "http://www.w3.org/2001/10/xml-exc-c14n#"]
    cert_b64 = sig.findtext(f"{DS}KeyInfo/{DS}X509Data/{DS}X509Certificate")
    assert cert_b64 is not None
    embedded = x509.load_der_x509_certificate(base64.b64decode(cert_b64))
    assert embedded == signer.cert


def test_signing_is_deterministic(signer: CapSigner) -> None:
    doc = alert_xml(an_alert())
    assert signer.sign(doc) == signer.sign(doc)


@pytest.mark.parametrize(("old", "new"), [
    (b"<severity>Severe</severity>", b"<severity>Minor</severity>"),
    (b"Moerwijk en Zuiderpark (Escamp)", b"Moerwijk en Zuiderpark (Escam)"),
    (b"52.06,4.292 ", b"52.07,4.292 "),
    (b"<value>WK051836</value>", b"<value>WK051837</value>"),
    (b"<headline>Inbraakgolf</headline>", b"<headline>Inbraakgolf </headline>"),
    (b"</info><ds:Signature", b"</info><info><language>de</language></info><ds:Signature"),
])
def test_a_tampered_alert_fails_both_verifiers(signer: CapSigner, tmp_path: Path, old: bytes,
                                               new: bytes) -> None:
    xml = signer.sign(alert_xml(an_alert()))
    assert xml.count(old) >= 1
    tampered = xml.replace(old, new, 1)
    with pytest.raises(BAD):
        signxml_verify(tampered, signer.cert_pem)
    done = xmlsec1_verify(tampered, signer.cert_pem, tmp_path)
    assert done.returncode != 0, done.stderr


def test_a_tampered_signature_value_fails(signer: CapSigner, tmp_path: Path) -> None:
    xml = signer.sign(alert_xml(an_alert()))
    start = xml.index(b"<ds:SignatureValue>") + len(b"<ds:SignatureValue>")
    flipped = b"A" if xml[start:start + 1] != b"A" else b"B"
    tampered = xml[:start] + flipped + xml[start + 1:]
    with pytest.raises(BAD):
        signxml_verify(tampered, signer.cert_pem)
    assert xmlsec1_verify(tampered, signer.cert_pem, tmp_path).returncode != 0


def test_another_centrals_certificate_does_not_verify(signer: CapSigner, other_signer: CapSigner,
                                                      tmp_path: Path) -> None:
    xml = signer.sign(alert_xml(an_alert()))
    with pytest.raises(BAD):
        signxml_verify(xml, other_signer.cert_pem)
    assert xmlsec1_verify(xml, other_signer.cert_pem, tmp_path).returncode != 0
    # Nor does a document re-signed by the other central pass for this one's.
    forged = other_signer.sign(alert_xml(an_alert()))
    with pytest.raises(BAD):
        signxml_verify(forged, signer.cert_pem)


def test_signer_refuses_a_certificate_of_another_key(signer: CapSigner,
                                                    other_signer: CapSigner) -> None:
    with pytest.raises(CapSignError, match="not for the CAP key"):
        CapSigner(signer._key, other_signer.cert)
    with pytest.raises(CapSignError, match="cannot sign"):
        signer.sign(b"<alert>")


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(headline=st.text(min_size=1, max_size=80), description=st.text(max_size=200))
def test_any_text_signs_and_verifies(signer: CapSigner, headline: str, description: str) -> None:
    try:
        alert = an_alert(texts=(AlertText(LANG_NL, headline, description),))
    except CapError:  # a headline that cleaning empties is refused by design
        return
    xml = signer.sign(alert_xml(alert))
    signxml_verify(xml, signer.cert_pem)


# --- central's CAP key -------------------------------------------------------------------


def test_init_makes_a_private_rsa_key_and_a_matching_self_signed_certificate(
        central_dir: Path) -> None:
    key_path, cert_path = central_dir / "cap" / "cap.key", central_dir / "cap" / "cap.pem"
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert (central_dir / "cap").stat().st_mode & 0o077 == 0
    c = load_central(central_dir)
    assert c.cap_key.key_size == CAP_KEY_BITS
    assert c.cap_cert.public_key() == c.cap_key.public_key()
    assert c.cap_cert.issuer == c.cap_cert.subject
    assert "central-haaglanden" in c.cap_cert.subject.rfc4514_string()
    assert cert_path.read_bytes() == c.cap_cert.public_bytes(serialization.Encoding.PEM)
    again = load_central(central_dir)  # loading keeps the key
    assert again.cap_cert == c.cap_cert


def test_an_older_central_gets_its_cap_key_at_first_load(tmp_path: Path) -> None:
    path = tmp_path / "central"
    init_central(path, CentralSettings(name="oud"))
    for name in ("cap.key", "cap.pem"):
        (path / "cap" / name).unlink()
    (path / "cap").rmdir()  # as a central made before CAP signing looks
    c = load_central(path)
    assert (path / "cap" / "cap.key").stat().st_mode & 0o777 == 0o600
    assert c.cap_cert.public_key() == c.cap_key.public_key()
    # A lost certificate is made again for the same key; the key is never replaced.
    (path / "cap" / "cap.pem").unlink()
    again = load_central(path)
    assert again.cap_key.private_numbers() == c.cap_key.private_numbers()
    assert again.cap_cert.public_key() == c.cap_key.public_key()


def test_a_readable_cap_key_or_a_foreign_certificate_is_refused(tmp_path: Path) -> None:
    from central.errors import CentralConfigError

    path = tmp_path / "central"
    init_central(path, CentralSettings(name="een"))
    other = init_central(tmp_path / "other", CentralSettings(name="twee"))
    os.chmod(path / "cap" / "cap.key", 0o644)
    with pytest.raises(CentralConfigError, match="must be mode 0600"):
        load_central(path)
    os.chmod(path / "cap" / "cap.key", 0o600)
    (path / "cap" / "cap.pem").write_bytes(other.cap_cert.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(CentralConfigError, match="does not belong to"):
        load_central(path)
