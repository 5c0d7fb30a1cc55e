"""Central ingest on real databases (a SQLite file and a real PostgreSQL server).

Every case of DESIGN.md §4/§9 and issue #4: store once, replay gets the
original acknowledgement, out-of-order batches and gaps, and every refusal
with its own status and code — and nothing stored for a refused batch.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from central import db
from central.enrol import issue_code, revoke
from central.errors import EnrolmentRefused, IngestRefused
from central.identity import Central
from central.ingest import Ingest
from central.projector import Projector
from sync import KeyPair, make_event, sealed
from sync.enrolment import EnrolRequest
from sync.roster import ACK_DOMAIN, ROSTER_DOMAIN, verify_document, verify_roster
from tests.support.ingest import TS, batch, count, enrol, new_central, new_engine, reports


@pytest.fixture
def central(tmp_path: Path, database_url: str) -> Central:
    return new_central(tmp_path, database_url)


@pytest.fixture
def engine(central: Central) -> Iterator[sa.Engine]:
    yield from new_engine(central)


def test_store_once_heads_triage_and_signed_ack(engine: sa.Engine, central: Central) -> None:
    keys = enrol(engine, central, "wereld")
    ingest = Ingest(engine, central)
    evs = reports(keys, "wereld", range(1, 1001))
    reply = ingest.handle(batch(keys, "wereld", 1, evs, central))
    ack = verify_document(reply["ack"], central.keys.signing_public, ACK_DOMAIN)
    assert (ack["count"], ack["new"], ack["replay"]) == (1000, 1000, False)
    assert ack["holds"] == {"wereld": {"private": 1000}}
    assert count(engine, db.events) == 1000
    # Ingest does not triage: the batch waits for the projector.
    assert count(engine, db.reports) == 0
    projector = Projector(engine)
    assert projector.pending() == 1
    assert projector.drain() == 1 and projector.pending() == 0
    with engine.connect() as conn:
        routes = dict(conn.execute(sa.select(db.reports.c.route, sa.func.count())
                                   .group_by(db.reports.c.route)).all())
        node = conn.execute(sa.select(db.nodes).where(db.nodes.c.name == "wereld")).one()
    assert routes == {"police": 500, "municipality": 500}
    assert node.last_batch_seq == 1 and node.last_seen is not None
    # Stored events still verify against the node's signature.
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.events).limit(1)).one()
    stored = make_event  # noqa: F841 - the check below rebuilds from the row
    from central.ingest import event_row_to_wire
    from sync import event_from_dict

    event_from_dict(event_row_to_wire(row)).verify(keys.signing_public)


def test_replay_gets_the_original_ack_and_stores_nothing(engine: sa.Engine,
                                                         central: Central) -> None:
    keys = enrol(engine, central, "wereld")
    ingest = Ingest(engine, central)
    evs = reports(keys, "wereld", range(1, 11))
    wire = batch(keys, "wereld", 1, evs, central)
    first = verify_document(ingest.handle(wire)["ack"], central.keys.signing_public, ACK_DOMAIN)
    again = verify_document(ingest.handle(wire)["ack"], central.keys.signing_public, ACK_DOMAIN)
    assert (again["count"], again["new"], again["replay"]) == (first["count"], first["new"], True)
    # The same events again under a new batch seq (a node that crashed before the ack).
    resent = verify_document(ingest.handle(batch(keys, "wereld", 2, evs, central))["ack"],
                             central.keys.signing_public, ACK_DOMAIN)
    assert (resent["count"], resent["new"]) == (10, 0)
    # A fork (same seqs, other ids: a node restored from an old backup) stores nothing.
    forked = verify_document(
        ingest.handle(batch(keys, "wereld", 3, reports(keys, "wereld", range(1, 11)),
                            central))["ack"], central.keys.signing_public, ACK_DOMAIN)
    assert (forked["count"], forked["new"]) == (10, 0)
    Projector(engine).drain()
    assert count(engine, db.events) == 10 and count(engine, db.reports) == 10
    assert count(engine, db.batches) == 3


def test_out_of_order_batches_and_gaps(engine: sa.Engine, central: Central) -> None:
    keys = enrol(engine, central, "wereld")
    ingest = Ingest(engine, central)
    later = ingest.handle(batch(keys, "wereld", 2, reports(keys, "wereld", range(6, 11)), central))
    assert later["ack"]["doc"]["holds"] == {"wereld": {"private": 0}}
    with engine.connect() as conn:
        head = conn.execute(sa.select(db.heads)).one()
    assert (head.contiguous, head.max_seq) == (0, 10)  # a gap of 1..5
    earlier = ingest.handle(batch(keys, "wereld", 1, reports(keys, "wereld", range(1, 6)),
                                  central))
    assert earlier["ack"]["doc"]["holds"] == {"wereld": {"private": 10}}


def test_carried_events_are_verified_against_their_origin(engine: sa.Engine,
                                                          central: Central) -> None:
    a = enrol(engine, central, "node-a")
    b = enrol(engine, central, "node-b")
    ingest = Ingest(engine, central)
    theirs = reports(b, "node-b", range(1, 4), stream="public")
    reply = ingest.handle(batch(a, "node-a", 1, theirs, central))
    assert reply["ack"]["doc"]["holds"]["node-b"] == {"public": 3}
    forged = reports(a, "node-b", range(4, 5), stream="public")  # signed by the wrong node
    with pytest.raises(IngestRefused) as exc:
        ingest.handle(batch(a, "node-a", 2, forged, central))
    assert (exc.value.status, exc.value.code) == (422, "bad_event_signature")
    stranger = reports(KeyPair.generate(), "stranger", range(1, 2), stream="public")
    with pytest.raises(IngestRefused) as exc:
        ingest.handle(batch(a, "node-a", 3, stranger, central))
    assert exc.value.code == "unknown_origin"
    assert count(engine, db.events) == 3


def test_every_refusal_has_its_status_and_stores_nothing(engine: sa.Engine,
                                                         central: Central) -> None:
    keys = enrol(engine, central, "wereld")
    other = enrol(engine, central, "buur")
    ingest = Ingest(engine, central)
    good = batch(keys, "wereld", 1, reports(keys, "wereld", range(1, 4)), central)
    env = sealed.parse(good)

    def resigned(header: bytes) -> bytes:
        import struct

        sig = keys.sign(sealed.SIG_DOMAIN + header + env.ct)
        return b"BSB1" + struct.pack(">H", len(header)) + header + sig + env.ct

    flipped = bytearray(good)
    flipped[-5] ^= 1
    cases = {
        "unknown node": (batch(KeyPair.generate(), "nobody", 1, [], central), 403,
                         "unknown_node"),
        "other node's key": (batch(other, "wereld", 1, [], central), 401, "bad_signature"),
        "flipped byte": (bytes(flipped), 401, "bad_signature"),
        "re-signed header": (resigned(env.header_bytes.replace(b'"batch_seq":1',
                                                               b'"batch_seq":7')), 400, "bad_tag"),
        "wrong key id": (sealed.seal(sealed.Payload.of([]), node_id="wereld", batch_seq=1,
                                     created=TS, keys=keys,
                                     central_encryption_public=KeyPair.generate()
                                     .encryption_public), 400, "wrong_key_id"),
        "truncated": (good[:30], 400, "malformed"),
        "unknown version": (b"BSB9" + good[4:], 400, "unknown_version"),
        "oversized": (b"BSB1" + bytes(central.settings.max_batch_bytes), 413, "too_large"),
        "not a batch": (b"hello", 400, "malformed"),
    }
    for name, (wire, status, code) in cases.items():
        with pytest.raises(IngestRefused) as exc:
            ingest.handle(wire)
        assert (exc.value.status, exc.value.code) == (status, code), name
    revoke(engine, central, "wereld")
    with pytest.raises(IngestRefused) as exc:
        ingest.handle(good)
    assert (exc.value.status, exc.value.code) == (403, "revoked")
    assert count(engine, db.events) == 0 and count(engine, db.batches) == 0


def test_enrolment_codes_keys_and_roster(engine: sa.Engine, central: Central) -> None:
    from central.enrol import enrol_with_code

    code, _ = issue_code(engine, central, "wereld", "ESCAMP")
    keys = KeyPair.generate()
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wereld")]))
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())
    req = EnrolRequest(node="wereld", signing_pub=keys.signing_public,
                       encryption_pub=keys.encryption_public, csr_pem=csr, code=code)
    answer = enrol_with_code(engine, central, req)
    roster = verify_roster(answer["doc"]["roster"], central.keys.signing_public)
    assert roster.member("wereld") is not None
    with pytest.raises(EnrolmentRefused) as exc:
        enrol_with_code(engine, central, req)
    assert exc.value.code == "code_used"
    # A cloned SD card: the same key under another name is refused.
    code2, _ = issue_code(engine, central, "kloon", "ESCAMP")
    clone = EnrolRequest(node="kloon", signing_pub=keys.signing_public,
                         encryption_pub=KeyPair.generate().encryption_public, csr_pem=csr,
                         code=code2)
    with pytest.raises(EnrolmentRefused) as exc:
        enrol_with_code(engine, central, clone)
    assert exc.value.code == "key_enrolled"
    signed = revoke(engine, central, "wereld")
    doc = verify_document(signed, central.keys.signing_public, ROSTER_DOMAIN)
    assert doc["serial"] > roster.serial
    assert verify_roster(signed, central.keys.signing_public).member("wereld") is None
    with pytest.raises(EnrolmentRefused):
        issue_code(engine, central, "wereld", "ESCAMP")  # the name stays taken


def test_concurrent_racing_retries_store_once(engine: sa.Engine, central: Central) -> None:
    """Threads posting the same batches at once (a retry racing the original)."""
    keys = enrol(engine, central, "wereld")
    ingest = Ingest(engine, central)
    wires = [batch(keys, "wereld", i + 1, reports(keys, "wereld", range(i * 50 + 1, i * 50 + 51)),
                   central) for i in range(8)]
    acks: list[dict[str, object]] = []
    errors: list[BaseException] = []

    def post(wire: bytes) -> None:
        try:
            acks.append(ingest.handle(wire)["ack"]["doc"])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=post, args=(w,)) for w in wires for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(acks) == 24
    assert count(engine, db.events) == 400 and count(engine, db.batches) == 8
    by_seq: dict[object, set[tuple[object, object]]] = {}
    for a in acks:
        by_seq.setdefault(a["batch_seq"], set()).add((a["count"], a["new"]))
    assert all(v == {(50, 50)} for v in by_seq.values()), by_seq
    with engine.connect() as conn:
        head = conn.execute(sa.select(db.heads)).one()
    assert head.contiguous == 400


def test_central_events_reach_the_node_in_replies(engine: sa.Engine, central: Central) -> None:
    from central.events import append_central_event

    keys = enrol(engine, central, "wereld")
    with engine.begin() as conn:
        for i in range(3):
            append_central_event(conn, central, "alert", "public", {
                "source": "central", "title": f"Politiebericht {i}", "severity": "moderate",
                "areas": ["ESCAMP"]})
    ingest = Ingest(engine, central)
    reply = ingest.handle(batch(keys, "wereld", 1, [], central,
                                meta={"heads": {central.origin: {"public": 1}}}))
    got = [e["seq"] for e in reply["events"]]
    assert got == [2, 3]
    assert count(engine, db.batches) == 0  # a poll leaves no batch row behind
    from sync import event_from_dict

    for raw in reply["events"]:
        event_from_dict(raw).verify(central.keys.signing_public)
    assert base64.b64decode(reply["events"][0]["sig"])


# -- the projector: reports triaged off the ingest path (central/projector.py) ------------

def routes(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(db.reports.c.event_id, db.reports.c.route)).all())


def test_projection_is_idempotent_and_keeps_staff_routes(engine: sa.Engine,
                                                         central: Central) -> None:
    keys = enrol(engine, central, "wereld")
    evs = reports(keys, "wereld", range(1, 21))
    Ingest(engine, central).handle(batch(keys, "wereld", 1, evs, central))
    projector = Projector(engine)
    assert projector.drain() == 1
    first = routes(engine)
    assert len(first) == 20
    # Staff move one report to the other desk …
    moved = evs[0].id
    other = "municipality" if first[moved] == "police" else "police"
    with engine.begin() as conn:
        conn.execute(db.reports.update().where(db.reports.c.event_id == moved)
                     .values(route=other, state="in_progress"))
    # … and the projector runs the batch again (as after a crash before it
    # cleared the batch): nothing doubled, nothing undone.
    with engine.begin() as conn:
        conn.execute(db.batches.update().values(pending=sa.literal(
            '["' + '","'.join(e.id for e in evs) + '"]')))
    assert projector.drain() == 1
    again = routes(engine)
    assert count(engine, db.reports) == 20
    assert again[moved] == other and {k: v for k, v in again.items() if k != moved} == {
        k: v for k, v in first.items() if k != moved}


def kept_and_real_counts(engine: sa.Engine) -> tuple[dict[tuple[str, str], int],
                                                     dict[tuple[str, str], int]]:
    """``report_counts`` (its non-zero rows) and the same figures counted from ``reports``."""
    r = db.reports.c
    with engine.connect() as conn:
        kept = {(row.route, row.state): int(row.n)
                for row in conn.execute(sa.select(db.report_counts)) if row.n}
        real = {(route, state): int(n) for route, state, n in conn.execute(
            sa.select(r.route, r.state, sa.func.count()).group_by(r.route, r.state))}
    return kept, real


def test_counts_stay_exact_across_batches_states_replays_and_deletes(
        engine: sa.Engine, central: Central) -> None:
    """The staff tabs' counts (``report_counts``) against ``reports`` itself, after
    batches of both desks, staff changes between them, a batch projected twice,
    two batches in one projector run, and a row deleted by hand."""
    from central import handling
    from central.staff.accounts import StaffMember

    admin = StaffMember(key="", name="Ans", role="admin", must_change=False, created=0,
                        last_login=None)
    keys = enrol(engine, central, "wereld")
    ingest, projector = Ingest(engine, central), Projector(engine)
    first = reports(keys, "wereld", range(1, 31))  # odd seqs police, even municipality
    ingest.handle(batch(keys, "wereld", 1, first, central))
    assert projector.drain() == 1
    assert kept_and_real_counts(engine)[0] == {("police", "new"): 15,
                                               ("municipality", "new"): 15}
    now = TS + 10_000
    handling.change_state(engine, admin, first[0].id, "in_progress", 1, now)
    handling.change_state(engine, admin, first[0].id, "handled", 2, now + 1)
    handling.change_state(engine, admin, first[1].id, "in_progress", 1, now)
    handling.reroute(engine, admin, first[2].id, "municipality", 1, now)
    handling.reroute(engine, admin, first[1].id, "police", 2, now)
    # Two batches in one run, and the first batch projected again (as after a
    # crash before it was cleared): nothing is counted twice.
    ingest.handle(batch(keys, "wereld", 2, reports(keys, "wereld", range(31, 61)), central))
    ingest.handle(batch(keys, "wereld", 3, reports(keys, "wereld", range(61, 64)), central))
    with engine.begin() as conn:
        conn.execute(db.batches.update().where(db.batches.c.batch_seq == 1).values(
            pending=sa.literal('["' + '","'.join(e.id for e in first) + '"]')))
    assert projector.drain() == 3
    with engine.begin() as conn:  # a repair by hand
        conn.execute(db.reports.delete().where(db.reports.c.event_id == first[3].id))
    kept, real = kept_and_real_counts(engine)
    assert kept == real
    # 63 reports, one deleted; seq 1 handled, seq 2 and 3 sent to the other desk.
    assert real == {("police", "new"): 31, ("police", "handled"): 1,
                    ("municipality", "new"): 30}


def test_a_failing_rule_falls_back_to_the_default_route(engine: sa.Engine,
                                                        central: Central) -> None:
    keys = enrol(engine, central, "wereld")
    evs = reports(keys, "wereld", range(1, 5))
    Ingest(engine, central).handle(batch(keys, "wereld", 1, evs, central))

    def broken(body: Mapping[str, Any]) -> tuple[str, str]:
        if body["text"].endswith("2"):
            raise RuntimeError("a rule with a bug")
        return "police", "all-police"

    assert Projector(engine, broken).drain() == 1
    got = routes(engine)
    assert got[evs[1].id] == "municipality"  # category nuisance → default municipality
    assert [got[e.id] for e in (evs[0], evs[2], evs[3])] == ["police"] * 3
    with engine.connect() as conn:
        rule = conn.execute(sa.select(db.reports.c.rule).where(
            db.reports.c.event_id == evs[1].id)).scalar_one()
    assert rule == "default-municipality"


def test_only_stored_reports_are_projected(engine: sa.Engine, central: Central) -> None:
    keys = enrol(engine, central, "wereld")
    ingest = Ingest(engine, central)
    ingest.handle(batch(keys, "wereld", 1, reports(keys, "wereld", range(1, 6)), central))
    # A fork: same seqs, other ids — stored never, so never a report either.
    ingest.handle(batch(keys, "wereld", 2, reports(keys, "wereld", range(1, 6)), central))
    # Public alerts carry no report; the projector looks at them for the alarm
    # desk (central/alarms.py), and these are no panic alarms.
    ingest.handle(batch(keys, "wereld", 3, reports(keys, "wereld", range(1, 4),
                                                   stream="public"), central))
    projector = Projector(engine)
    assert projector.pending() == 3
    projector.drain()
    assert count(engine, db.reports) == 5 and projector.pending() == 0
    assert count(engine, db.alarms) == 0


def test_concurrent_projectors_and_ingest_lose_and_double_nothing(engine: sa.Engine,
                                                                  central: Central) -> None:
    keys = enrol(engine, central, "wereld")
    ingest = Ingest(engine, central)
    wires = [batch(keys, "wereld", i + 1, reports(keys, "wereld", range(i * 100 + 1,
                                                                        i * 100 + 101)), central)
             for i in range(12)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def project() -> None:
        try:
            Projector(engine).run(stop, poll_s=0.01)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=project) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for wire in wires:
            ingest.handle(wire)
        deadline = time.monotonic() + 60
        while Projector(engine).pending() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors
    assert count(engine, db.reports) == 1200 and Projector(engine).pending() == 0


def test_a_reader_does_not_hold_sqlites_write_lock(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    db.upgrade(url)
    eng = db.make_engine(url)
    try:
        with db.reading(eng) as conn:
            conn.execute(sa.select(sa.func.count()).select_from(db.events)).scalar_one()
            # The read transaction is open; a writer elsewhere proceeds at once.
            done = threading.Event()

            def write() -> None:
                with eng.begin() as w:
                    w.execute(db.counters.insert().values(name="x", value=1))
                done.set()

            t = threading.Thread(target=write)
            t.start()
            assert done.wait(5), "the writer waited for a reader"
            t.join()
            # The reader still sees its snapshot.
            assert conn.execute(sa.select(sa.func.count()).select_from(db.counters)
                                .where(db.counters.c.name == "x")).scalar_one() == 0
    finally:
        eng.dispose()


def test_huge_numbers_in_meta_are_ignored_not_a_crash(engine: sa.Engine, central: Central,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import orjson

    keys = enrol(engine, central, "wereld")
    # Our own encoder refuses integers beyond 2**53; another sender's need not.
    monkeypatch.setattr(sealed, "canonical_bytes", orjson.dumps)
    meta = {"status": {"backlog": 2**64 - 1, "version": "x"}, "updates_after": 2**64 - 1,
            "roster_serial": 2**63, "heads": {central.origin: {"public": 2**63}}}
    reply = Ingest(engine, central).handle(batch(keys, "wereld", 1,
                                                 reports(keys, "wereld", range(1, 3)), central,
                                                 meta))
    assert reply["ack"]["doc"]["new"] == 2
    with engine.connect() as conn:
        node = conn.execute(sa.select(db.nodes).where(db.nodes.c.name == "wereld")).one()
    assert node.backlog is None and node.version == "x"


def test_bart_central_triage_runs_the_projector_alone(engine: sa.Engine,
                                                      central: Central) -> None:
    import os
    import signal
    import subprocess
    import time as _time

    from tests.support.base import bart_command, wait_until

    keys = enrol(engine, central, "wereld")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BART_")}
    proc = subprocess.Popen([*bart_command(), "central", "triage", "--data-dir",
                             str(central.data_dir)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        Ingest(engine, central).handle(batch(keys, "wereld", 1,
                                             reports(keys, "wereld", range(1, 11)), central))
        wait_until(lambda: count(engine, db.reports) == 10, 30.0,
                   message="10 reports routed by `bart central triage`")
        assert Projector(engine).pending() == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        started = _time.monotonic()
        out = proc.communicate(timeout=15)[0].decode()
    assert proc.returncode == 0, out
    assert _time.monotonic() - started < 5
    assert "routing new reports" in out


def test_a_begin_the_database_refuses_is_sqlalchemys_error(tmp_path: Path) -> None:
    # central/db.py sends BEGIN straight to the driver: its failures must still
    # be SQLAlchemy's errors, which callers catch (e.g. /healthz answers 503).
    import sqlite3

    url = f"sqlite:///{tmp_path / 'locked.db'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    holder = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the one write lock, held elsewhere
    try:
        with engine.connect() as conn:
            conn.connection.driver_connection.execute("PRAGMA busy_timeout=50")
            with pytest.raises(sa.exc.OperationalError, match="BEGIN IMMEDIATE"):
                conn.begin()
    finally:
        holder.rollback()
        holder.close()
        engine.dispose()
