"""The node's own CA for point devices: created once, 0600 keys, new hosts re-issue."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography import x509

from node.tls import ensure_tls


def sans(path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    value = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(v) for v in value.get_values_for_type(x509.IPAddress)] + \
        value.get_values_for_type(x509.DNSName)


def test_ca_once_and_new_host_reissues_server_cert_only(tmp_path: Path) -> None:
    files = ensure_tls(tmp_path, "n1")
    ca = files.ca_cert.read_bytes()
    for key in (files.ca_key, files.key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "10.42.0.1" not in sans(files.cert)
    first = files.cert.read_bytes()
    assert ensure_tls(tmp_path, "n1").cert.read_bytes() == first  # nothing to do
    files = ensure_tls(tmp_path, "n1", ("10.42.0.1",))
    assert "10.42.0.1" in sans(files.cert) and "n1.local" in sans(files.cert)
    assert files.ca_cert.read_bytes() == ca  # devices set up earlier still trust it
    ensure_tls(tmp_path, "n1", ("bart-west.lan",))
    assert {"10.42.0.1", "bart-west.lan"} <= set(sans(files.cert))  # names are kept
