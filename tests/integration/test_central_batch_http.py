"""``POST /api/v1/batches`` over HTTP (central/batch_http.py): answers, refusals
and headers, on a SQLite file and a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from central import db
from central.app import BATCH_TYPE, create_app
from central.identity import Central
from sync import KeyPair
from sync.roster import ACK_DOMAIN, verify_document
from tests.support.ingest import batch, count, enrol, new_central, new_engine, reports


@pytest.fixture
def central(tmp_path: Path, database_url: str) -> Central:
    return new_central(tmp_path, database_url)


@pytest.fixture
def engine(central: Central) -> Iterator[sa.Engine]:
    yield from new_engine(central)


def test_batch_endpoint_answers_and_refuses_over_http(engine: sa.Engine,
                                                      central: Central) -> None:
    keys = enrol(engine, central, "wereld")
    client = TestClient(create_app(central, engine))
    wire = batch(keys, "wereld", 1, reports(keys, "wereld", range(1, 4)), central)
    ok = client.post("/api/v1/batches", content=wire, headers={"Content-Type": BATCH_TYPE})
    assert ok.status_code == 200 and ok.headers["cache-control"] == "no-store"
    ack = verify_document(ok.json()["ack"], central.keys.signing_public, ACK_DOMAIN)
    assert (ack["count"], ack["new"]) == (3, 3)
    wrong_type = client.post("/api/v1/batches", content=wire,
                             headers={"Content-Type": "application/json"})
    assert (wrong_type.status_code, wrong_type.json()["error"]) == (415, "unsupported_media_type")
    limit = central.settings.max_batch_bytes
    declared = client.post("/api/v1/batches", content=b"x",
                           headers={"Content-Type": BATCH_TYPE, "Content-Length": str(limit + 1)})
    assert (declared.status_code, declared.json()["error"]) == (413, "too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts what arrives
        for _ in range(limit // 65536 + 2):
            yield bytes(65536)

    streamed = client.post("/api/v1/batches", content=chunks(),
                           headers={"Content-Type": BATCH_TYPE})
    assert (streamed.status_code, streamed.json()["error"]) == (413, "too_large")
    forged = client.post("/api/v1/batches", content=batch(KeyPair.generate(), "wereld", 2, [],
                                                           central),
                         headers={"Content-Type": BATCH_TYPE})
    assert (forged.status_code, forged.json()["error"]) == (401, "bad_signature")
    # The media type is checked first, whatever the length says; its case is free.
    huge_and_wrong = client.post("/api/v1/batches", content=b"x", headers={
        "Content-Type": "text/plain", "Content-Length": str(limit + 1)})
    assert huge_and_wrong.status_code == 415
    upper = client.post("/api/v1/batches/", content=batch(keys, "wereld", 2, reports(
        keys, "wereld", range(4, 6)), central), headers={"Content-Type": BATCH_TYPE.upper()})
    assert upper.status_code == 200, upper.text  # a trailing slash is the same path
    not_post = client.get("/api/v1/batches")
    assert (not_post.status_code, not_post.headers["allow"]) == (405, "POST")
    # Served in front of FastAPI's routes (central/batch_http.py), documented all the same.
    documented = client.get("/api/openapi.json").json()["paths"]["/api/v1/batches"]["post"]
    assert set(documented["responses"]) >= {"200", "400", "401", "403", "413", "415", "422"}
    assert count(engine, db.events) == 5 and count(engine, db.batches) == 2
