"""The signed CAP feed of a real central, over HTTP.

A real ``bart central run`` (SQLite file) with the demo's ``areas.toml``;
broadcasts made by central's own code (``central.broadcasts``: an Alert, its
Update and Cancel, one for an area the file does not know). A consumer that
knows only central's URL:

- fetches ``GET /api/v1/cap/cert.pem`` and the Atom index (unsigned), and
  every CAP document the index links to;
- verifies each with signxml's XMLVerifier and with ``xmlsec1 --verify
  --trusted-pem`` (the command docs/central.md gives), trusting only that
  certificate; each also passes the OASIS CAP 1.2 schema (capvalidator);
- sees the area names, outlines and CBS geocodes of ``areas.toml``;
- a tampered copy fails both verifiers.

Also: a central made before CAP signing gets its key at first start; a bad
``areas.toml`` stops ``bart central run`` with the file, area and rule named.
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import httpx
import pytest
from signxml.exceptions import InvalidDigest, InvalidSignature
from signxml.verifier import XMLVerifier

from tests.support.base import bart_command, require, require_binary
from tests.support.central import CentralProcess, init_central_process

try:
    import capvalidator  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - the test extra installs it
    capvalidator = None

ATOM = "{http://www.w3.org/2005/Atom}"
CAP = "{urn:oasis:names:tc:emergency:cap:1.2}"
DS = "{http://www.w3.org/2000/09/xmldsig#}"
DEMO_AREAS = resources.files("bart").joinpath("demo_data/demo-areas.toml")


@dataclass
class Feed:
    central: CentralProcess
    ids: dict[str, str]


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Feed]:
    base = tmp_path_factory.mktemp("capsigned")
    central = init_central_process(base)
    # A central made before CAP signing: no cap/ directory. First start makes the key.
    shutil.rmtree(central.data_dir / "cap")
    (central.data_dir / "areas.toml").write_bytes(DEMO_AREAS.read_bytes())
    central.start()
    ok = False
    try:
        yield Feed(central, publish(central.data_dir))
        ok = True
    finally:
        if ok:
            assert central.stop() == 0, central.log_tail()
        else:
            central.kill()


def publish(data_dir: Path) -> dict[str, str]:
    """Broadcasts by central's own code, as the staff pages make them."""
    from central import broadcasts, db
    from central.identity import load_central
    from central.staff.accounts import StaffAccounts

    c = load_central(data_dir)
    engine = db.make_engine(c.database_url)
    try:
        accounts = StaffAccounts(engine)
        accounts.add("Eva de Wit", "police", by="test")
        member = accounts.get("Eva de Wit")
        assert member is not None

        def fields(title: str, areas: list[str], severity: str = "severe") -> dict[str, object]:
            return {"title": title, "text": "Sluit ramen en deuren.", "areas": areas,
                    "severity": severity, "category": "suspicious", "hours": 24}

        first = broadcasts.publish(engine, c, member, fields("Inbraakgolf", ["ESC-01", "LYP-01"]))
        update = broadcasts.publish(engine, c, member,
                                    fields("Inbraakgolf: ook overdag", ["ESC-01", "ESC-02"]),
                                    ref=first.id)
        cancel = broadcasts.cancel(engine, c, member, update.id, "Daders aangehouden")
        elsewhere = broadcasts.publish(engine, c, member,
                                       fields("Nepagenten", ["XYZ-9"], "minor"))
    finally:
        engine.dispose()
    return {"first": first.id, "update": update.id, "cancel": cancel.id,
            "elsewhere": elsewhere.id}


def signxml_verify(xml: bytes, cert_pem: bytes) -> ET.Element:
    result = XMLVerifier().verify(xml, x509_cert=cert_pem.decode())
    assert not isinstance(result, list)
    signed = ET.fromstring(ET.tostring(result.signed_xml))  # type: ignore[arg-type]
    return signed


def xmlsec1(xml: bytes, cert: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    path = tmp / "alert.xml"
    path.write_bytes(xml)
    return subprocess.run([require_binary("xmlsec1"), "--verify", "--trusted-pem", str(cert),
                           str(path)], capture_output=True, text=True, timeout=30, check=False)


def test_every_cap_document_of_the_feed_verifies_with_the_published_certificate(
        feed: Feed, tmp_path: Path) -> None:
    require(capvalidator is not None, "capvalidator is not installed (pip install -e '.[test]')")
    client = httpx.Client(base_url=feed.central.url, timeout=10.0)
    cert = client.get("/api/v1/cap/cert.pem")
    assert cert.status_code == 200 and cert.content.startswith(b"-----BEGIN CERTIFICATE-----")
    assert cert.headers["content-type"] == "application/x-pem-file"
    (tmp_path / "cap.pem").write_bytes(cert.content)
    # The upgrade made the key at first start, private, and the certificate served is its own.
    key = feed.central.data_dir / "cap" / "cap.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert (feed.central.data_dir / "cap" / "cap.pem").read_bytes() == cert.content

    index = client.get("/api/v1/cap/alerts.xml")
    assert index.status_code == 200 and DS.strip("{}").encode() not in index.content  # unsigned
    links = [e.find(f"{ATOM}link").get("href")  # type: ignore[union-attr]
             for e in ET.fromstring(index.content).findall(f"{ATOM}entry")]
    listed = {href.rsplit("/", 1)[1].removesuffix(".xml") for href in links}  # type: ignore[union-attr]
    assert listed == {feed.ids["cancel"], feed.ids["elsewhere"]}
    # Every message of the index, and the replaced ones it no longer lists.
    urls = [*links, *(f"{feed.central.url}/api/v1/cap/alerts/{feed.ids[k]}.xml"
                      for k in ("first", "update"))]
    for url in urls:
        doc = httpx.get(url, timeout=10.0)  # type: ignore[arg-type]
        assert doc.status_code == 200 and doc.headers["content-type"] == "application/cap+xml"
        signed = signxml_verify(doc.content, cert.content)
        assert signed.findtext(f"{CAP}identifier") in url  # type: ignore[operator]
        done = xmlsec1(doc.content, tmp_path / "cap.pem", tmp_path)
        assert done.returncode == 0 and done.stderr.startswith("OK"), done.stderr
        result = capvalidator.check_schema(doc.content)
        assert result.passed, result.message
        assert doc.content == httpx.get(url, timeout=10.0).content  # type: ignore[arg-type]
    client.close()


def test_areas_carry_names_outlines_and_geocodes(feed: Feed) -> None:
    client = httpx.Client(base_url=feed.central.url, timeout=10.0)
    cert = client.get("/api/v1/cap/cert.pem").content
    doc = signxml_verify(client.get(f"/api/v1/cap/alerts/{feed.ids['update']}.xml").content, cert)
    areas = doc.findall(f"{CAP}info/{CAP}area")
    assert [a.findtext(f"{CAP}areaDesc") for a in areas] == [
        "Moerwijk en Zuiderpark (Escamp)", "Bouwlust, Vrederust en Morgenstond (Escamp)"]
    for area in areas:
        polygon = area.findtext(f"{CAP}polygon") or ""
        pairs = polygon.split(" ")
        assert len(pairs) >= 4 and pairs[0] == pairs[-1]
        assert all(52.0 < float(p.split(",")[0]) < 52.1 and 4.2 < float(p.split(",")[1]) < 4.5
                   for p in pairs)
    codes = [(g.findtext(f"{CAP}valueName"), g.findtext(f"{CAP}value"))
             for g in areas[1].findall(f"{CAP}geocode")]
    assert codes == [("bart:area", "ESC-02"), ("CBS", "WK051833"), ("CBS", "WK051834")]
    other = signxml_verify(
        client.get(f"/api/v1/cap/alerts/{feed.ids['elsewhere']}.xml").content, cert)
    bare = other.find(f"{CAP}info/{CAP}area")
    assert bare is not None and bare.findtext(f"{CAP}areaDesc") == "XYZ-9"
    assert bare.find(f"{CAP}polygon") is None
    index = client.get("/api/v1/cap/alerts.xml").content.decode()
    assert "Bouwlust, Vrederust en Morgenstond (Escamp)" in index
    client.close()


def test_a_tampered_copy_fails_both_verifiers(feed: Feed, tmp_path: Path) -> None:
    client = httpx.Client(base_url=feed.central.url, timeout=10.0)
    cert = client.get("/api/v1/cap/cert.pem").content
    (tmp_path / "cap.pem").write_bytes(cert)
    doc = client.get(f"/api/v1/cap/alerts/{feed.ids['cancel']}.xml").content
    client.close()
    for old, new in ((b"<msgType>Cancel</msgType>", b"<msgType>Alert</msgType>"),
                     (b"<areaDesc>Moerwijk", b"<areaDesc>Morgenstond"),
                     (b"<value>WK051835</value>", b"<value>WK051829</value>")):
        assert old in doc
        tampered = doc.replace(old, new, 1)
        with pytest.raises((InvalidDigest, InvalidSignature)):
            signxml_verify(tampered, cert)
        assert xmlsec1(tampered, tmp_path / "cap.pem", tmp_path).returncode != 0


def test_a_bad_areas_file_stops_central_run_with_the_reason(tmp_path: Path) -> None:
    central = init_central_process(tmp_path)
    (central.data_dir / "areas.toml").write_text(
        'schema_version = 1\n[[areas]]\ncode = "ESC-01"\nname = "Moerwijk"\n'
        'polygon = [[52.05, 4.29], [52.04, 4.29], [52.04, 4.31]]\n')
    done = subprocess.run([*bart_command(), "central", "run", "--data-dir", str(central.data_dir)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    message = done.stderr + done.stdout
    assert "areas.toml: area 1 (ESC-01): polygon needs at least 3 corners" in message, message
    assert "Traceback" not in message
