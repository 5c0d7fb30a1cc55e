"""common/certs.py: node and central make their certificate authority the same way."""

from __future__ import annotations

import datetime as dt
import doctest
from pathlib import Path

from cryptography import x509

from central.config import CentralSettings
from central.identity import init_central
from common import certs
from node.tls import ensure_tls


def test_doctests() -> None:
    assert doctest.testmod(certs).failed == 0


def _rules(cert: x509.Certificate) -> dict[str, object]:
    """What a CA may do: its constraints and key usage (names and dates aside)."""
    return {type(e.value).__name__: (e.critical, e.value) for e in cert.extensions}


def test_node_and_central_cas_follow_one_rule(tmp_path: Path) -> None:
    central = init_central(tmp_path / "central", CentralSettings(name="haaglanden"))
    node = x509.load_pem_x509_certificate(
        ensure_tls(tmp_path / "tls", "escamp-west").ca_cert.read_bytes())
    rules = _rules(central.ca_cert)
    assert rules == _rules(node)
    assert rules["BasicConstraints"] == (True, x509.BasicConstraints(ca=True, path_length=0))
    assert rules["KeyUsage"] == (True, certs.CA_KEY_USAGE)
    assert certs.CA_KEY_USAGE.key_cert_sign and not certs.CA_KEY_USAGE.digital_signature


def test_validity_starts_before_now() -> None:
    now = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
    _key, cert = certs.make_ca("x", days=10, backdate=dt.timedelta(days=1), now=now)
    assert cert.not_valid_before_utc == now - dt.timedelta(days=1)
    assert cert.not_valid_after_utc == now + dt.timedelta(days=10)
