"""What the tests of central's ingest share: a central on a SQLite file or a
real PostgreSQL server, enrolled nodes, their events and sealed batches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from central import db
from central.enrol import enrol_bundle
from central.identity import Central, CentralSettings, init_central
from sync import KeyPair, make_event, sealed
from sync.enrolment import EnrolRequest
from sync.event import Event

TS = 1795904700123


def new_central(tmp_path: Path, database_url: str) -> Central:
    """A central "haaglanden" in ``tmp_path``, its schema in ``database_url``."""
    c = init_central(tmp_path / "central", CentralSettings(name="haaglanden",
                                                           database_url=database_url))
    db.upgrade(c.database_url)
    return c


def new_engine(central: Central) -> Iterator[sa.Engine]:
    """``central``'s engine, disposed of afterwards (for a fixture to yield from)."""
    eng = db.make_engine(central.database_url)
    yield eng
    eng.dispose()


def enrol(engine: sa.Engine, central: Central, name: str, area: str = "ESCAMP") -> KeyPair:
    keys = KeyPair.generate()
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())
    enrol_bundle(engine, central, EnrolRequest(node=name, signing_pub=keys.signing_public,
                                               encryption_pub=keys.encryption_public,
                                               csr_pem=csr), area)
    return keys


def reports(keys: KeyPair, origin: str, seqs: range, stream: str = "private") -> list[Event]:
    out = []
    for seq in seqs:
        if stream == "private":
            body = {"category": "suspicious" if seq % 2 else "nuisance", "text": f"melding {seq}",
                    "place": {"point": None, "text": "plein"}, "audience": "authorities",
                    "receipt": "K7F-3QX", "lang": "nl"}
            kind = "report"
        else:
            body = {"source": "team", "title": f"let op {seq}"}
            kind = "alert"
        out.append(make_event(keys, origin=origin, stream=stream, seq=seq, kind=kind,
                              ts=TS + seq, body=body))
    return out


def batch(keys: KeyPair, node: str, seq: int, events: list[Event], central: Central,
          meta: dict[str, object] | None = None) -> bytes:
    return sealed.seal(sealed.Payload.of(events, meta or {}), node_id=node, batch_seq=seq,
                       created=TS, keys=keys,
                       central_encryption_public=central.keys.encryption_public)


def count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
