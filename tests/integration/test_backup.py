"""Backups and restores (issue 18): ``bart node backup|restore`` on a running node,
``bart central backup|restore`` on a SQLite file and on a real PostgreSQL server.

Everything through the real ``bart`` command; the restored node and central are
checked from the outside: the same reports, the same identity, and seqs that go
on from where they were (none used twice).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from central import db
from central.identity import load_central
from central.ingest import Ingest
from central.projector import Projector
from common.archive import CHUNK, MAGIC_ENCRYPTED, ArchiveError, pack, unpack
from sync.roster import ACK_DOMAIN, verify_document
from tests.support.base import bart_command, require_binary
from tests.support.ingest import batch, count, enrol, new_central, reports
from tests.support.node import NodeProcess, init_node, stop_and_check

PASSPHRASE = "correct horse battery staple"


def bart(*args: str, env: dict[str, str] | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("BART_")}
    full.update(env or {})
    return subprocess.run([*bart_command(), *args], capture_output=True, text=True,
                          env=full, timeout=timeout, check=False)


def own_heads(db_path: Path, origin: str) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT stream, MAX(seq) FROM events WHERE origin = ? "
                                 "GROUP BY stream", (origin,)).fetchall())
    finally:
        conn.close()


def fingerprint(data_dir: Path) -> str:
    out = bart("keys", "show", "--data-dir", str(data_dir))
    assert out.returncode == 0, out.stderr
    return next(line.split()[-1] for line in out.stdout.splitlines()
                if line.startswith("fingerprint"))


# -- node --------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_node_backup_while_running_and_restore_into_an_empty_directory(
        tmp_path: Path, mosquitto_bin: str) -> None:
    node = init_node(tmp_path, mosquitto_bin)
    node.start()
    env = {"BART_BACKUP_PASSPHRASE": PASSPHRASE}
    try:
        team = bart("node", "team", "add", "Anna de Vries", "--data-dir", str(node.data_dir))
        assert team.returncode == 0, team.stderr
        receipts: dict[str, str] = {}
        with httpx.Client(base_url=node.base_url, timeout=15.0) as http:
            for i in range(20):
                r = http.post("/api/v1/reports", json={
                    "category": ("nuisance", "suspicious", "social")[i % 3],
                    "text": f"melding {i}", "audience": "both",
                    "contact": "06-12345678" if i % 2 else None})
                assert r.status_code == 201, r.text
                receipts[r.json()["receipt"]] = r.json()["id"]
        alerts = [node.peer_alert(f"let op {i}") for i in range(3)]
        node.publish_events(*alerts)
        with httpx.Client(base_url=node.base_url, timeout=15.0) as http:
            deadline = time.monotonic() + 30
            while {a.id for a in alerts} - {a["id"] for a in http.get("/api/v1/alerts").json()
                                             ["alerts"]}:
                assert time.monotonic() < deadline, "peer alerts not stored"
                time.sleep(0.1)
        before = own_heads(node.db_path, node.name)
        assert before["private"] >= 20

        out = tmp_path / "backups" / "node.bart"
        out.parent.mkdir()
        started = time.monotonic()
        made = bart("node", "backup", str(out), "--data-dir", str(node.data_dir), env=env)
        took = time.monotonic() - started
        assert made.returncode == 0, made.stderr
        assert "encrypted" in made.stdout and "NOT encrypted" not in made.stdout
        assert out.stat().st_mode & 0o777 == 0o600
        raw = out.read_bytes()
        assert raw.startswith(MAGIC_ENCRYPTED)
        key = (node.data_dir / "keys" / "signing.key").read_bytes()
        assert key not in raw and b"melding" not in raw
        print(f"node backup while running: {len(raw)} bytes in {took:.2f} s")

        # The running node answered throughout; a backup inside the data dir is refused.
        assert node.health()["status"] == "ok"
        inside = bart("node", "backup", str(node.data_dir / "x.bart"), "--data-dir",
                      str(node.data_dir))
        assert inside.returncode == 1 and "inside the data directory" in inside.stderr
        stop_and_check(node)
    finally:
        if node.proc is not None and node.proc.poll() is None:
            node.kill()
    original_fp = fingerprint(node.data_dir)

    # Refusals, in words: a non-empty directory, no passphrase, a wrong one.
    refused = bart("node", "restore", str(out), "--data-dir", str(node.data_dir), env=env)
    assert refused.returncode == 1
    assert "is not empty" in refused.stderr and "Traceback" not in refused.stderr
    target = tmp_path / "restored"
    plain = bart("node", "restore", str(out), "--data-dir", str(target))
    assert plain.returncode == 1 and "is encrypted" in plain.stderr, plain.stderr
    wrong = bart("node", "restore", str(out), "--data-dir", str(target),
                 env={"BART_BACKUP_PASSPHRASE": "not the passphrase at all"})
    assert wrong.returncode == 1 and "passphrase does not open" in wrong.stderr
    assert not target.exists() or not any(target.iterdir())

    started = time.monotonic()
    done = bart("node", "restore", str(out), "--data-dir", str(target), env=env)
    print(f"node restore: {time.monotonic() - started:.2f} s")
    assert done.returncode == 0, done.stderr
    assert (target / "keys" / "signing.key").stat().st_mode & 0o777 == 0o600
    assert fingerprint(target) == original_fp
    # The running node's lock and Mosquitto's rendered state are not data: not restored.
    assert (node.data_dir / "bart.lock").exists() and not (target / "bart.lock").exists()
    assert not (target / "broker").exists()

    restored = NodeProcess(data_dir=target, http_port=node.http_port, mqtt_port=node.mqtt_port,
                           mosquitto=mosquitto_bin, peer=node.peer,
                           log_path=tmp_path / "restored.log", name=node.name)
    restored.start()
    try:
        assert own_heads(restored.db_path, node.name) == before
        with httpx.Client(base_url=restored.base_url, timeout=15.0) as http:
            for receipt in receipts:
                r = http.get(f"/api/v1/reports/{receipt}")
                assert r.status_code == 200 and r.json()["state"] == "received", receipt
            shown = {a["id"] for a in http.get("/api/v1/alerts").json()["alerts"]}
            assert {a.id for a in alerts} <= shown
            r = http.post("/api/v1/reports", json={"category": "social", "text": "na herstel",
                                                   "audience": "both"})
            assert r.status_code == 201, r.text
            new_id = r.json()["id"]
        members = bart("node", "team", "list", "--data-dir", str(target))
        assert "Anna de Vries" in members.stdout
        conn = sqlite3.connect(f"file:{restored.db_path}?mode=ro", uri=True)
        try:
            seq = conn.execute("SELECT seq FROM events WHERE id = ?", (new_id,)).fetchone()[0]
            batch_seq = conn.execute("SELECT value FROM uplink_state WHERE key = 'batch_seq'"
                                     ).fetchone()[0]
        finally:
            conn.close()
        assert seq == before["private"] + 1  # the next seq: none skipped, none reused
        assert batch_seq >= 10_000  # batch numbers central may have seen are skipped
        stop_and_check(restored)
    finally:
        if restored.proc is not None and restored.proc.poll() is None:
            restored.kill()


def test_unencrypted_backup_says_so_and_a_short_passphrase_is_refused(
        tmp_path: Path, mosquitto_bin: str) -> None:
    node = init_node(tmp_path, mosquitto_bin)
    node.start()
    try:
        short = bart("node", "backup", str(tmp_path / "a.bart"), "--data-dir",
                     str(node.data_dir), env={"BART_BACKUP_PASSPHRASE": "kort"})
        assert short.returncode == 1 and "too short" in short.stderr
        assert not (tmp_path / "a.bart").exists()
        empty = tmp_path / "empty-pass"
        empty.write_text("\n")
        refused = bart("node", "backup", str(tmp_path / "a.bart"), "--data-dir",
                       str(node.data_dir), "--passphrase-file", str(empty))
        assert refused.returncode == 1 and "is empty" in refused.stderr
        assert not (tmp_path / "a.bart").exists()  # asked for encryption: no plain fallback
        (tmp_path / "a.bart").write_bytes(b"an older backup")
        plain = bart("node", "backup", str(tmp_path / "a.bart"), "--data-dir",
                     str(node.data_dir))
        assert plain.returncode == 0, plain.stderr
        assert "NOT encrypted" in plain.stdout
        assert (tmp_path / "a.bart").stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "a.bart").read_bytes() != b"an older backup"  # replaced
        # Nothing half-made is left beside it, after failures or success.
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
        stop_and_check(node)
    finally:
        if node.proc is not None and node.proc.poll() is None:
            node.kill()
    # A node's backup is not a central's.
    wrong = bart("central", "restore", str(tmp_path / "a.bart"), "--data-dir",
                 str(tmp_path / "c"))
    assert wrong.returncode == 1 and "backup of a node" in wrong.stderr, wrong.stderr
    damaged = tmp_path / "damaged.bart"
    damaged.write_bytes((tmp_path / "a.bart").read_bytes()[:-200])
    cut = bart("node", "restore", str(damaged), "--data-dir", str(tmp_path / "r"))
    assert cut.returncode == 1 and "damaged or cut off" in cut.stderr, cut.stderr
    assert "Traceback" not in cut.stderr
    if os.geteuid() == 0:  # into an empty directory made for the node's own account
        owned = tmp_path / "owned"
        owned.mkdir()
        os.chown(owned, 65534, 65534)
        done = bart("node", "restore", str(tmp_path / "a.bart"), "--data-dir", str(owned))
        assert done.returncode == 0, done.stderr
        assert "not enrolled with a central" in done.stdout
        for path in (owned / "keys" / "signing.key", owned / "node.db", owned / "keys"):
            assert (path.stat().st_uid, path.stat().st_gid) == (65534, 65534), path


def test_an_encrypted_backup_cut_off_or_altered_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(CHUNK * 2 + 100))  # three chunks
    out = tmp_path / "b.bart"
    pack(src, out, passphrase=PASSPHRASE)
    raw = out.read_bytes()
    header = 8 + 16 + 3
    first_chunk_end = header + 4 + CHUNK + 16 + 1000  # zstd leaves random data as it is
    variants = {
        "cut inside": raw[:-50],
        "cut at a chunk's end": raw[:first_chunk_end - 1000],
        "a byte changed": raw[:first_chunk_end // 2] + bytes([raw[first_chunk_end // 2] ^ 1])
        + raw[first_chunk_end // 2 + 1:],
    }
    for name, data in variants.items():
        bad = tmp_path / f"{name}.bart"
        bad.write_bytes(data)
        with pytest.raises(ArchiveError):
            unpack(bad, tmp_path / f"out-{name}", passphrase=PASSPHRASE)
    unpack(out, tmp_path / "good", passphrase=PASSPHRASE)
    assert (tmp_path / "good" / "big").read_bytes() == (src / "big").read_bytes()


# -- central -------------------------------------------------------------------------------


def _ingest(engine: sa.Engine, central: Any, keys: Any, node: str, batch_seq: int,
            seqs: range) -> dict[str, Any]:
    reply = Ingest(engine, central).handle(batch(keys, node, batch_seq,
                                                 reports(keys, node, seqs), central))
    ack: dict[str, Any] = verify_document(reply["ack"], central.keys.signing_public,
                                          ACK_DOMAIN)
    return ack


@pytest.mark.timeout(300)
def test_central_backup_and_restore(tmp_path: Path, database_url: str,
                                    request: pytest.FixtureRequest) -> None:
    postgres = database_url.startswith("postgresql")
    if postgres:
        require_binary("pg_dump", "/usr/lib/postgresql/15/bin/pg_dump")
    central = new_central(tmp_path, database_url)
    engine = db.make_engine(central.database_url)
    try:
        keys = enrol(engine, central, "wereld")
        for n in range(5):
            ack = _ingest(engine, central, keys, "wereld", n + 1, range(n * 100 + 1,
                                                                        n * 100 + 101))
            assert ack["new"] == 100
        Projector(engine).drain()
        counts = {t.name: count(engine, t) for t in (db.events, db.reports, db.batches)}
    finally:
        engine.dispose()

    out = tmp_path / "central.bart"
    flags = ["--data-dir", str(central.data_dir)]
    if postgres:
        flags += ["--database-url", database_url]
    started = time.monotonic()
    made = bart("central", "backup", str(out), *flags,
                env={"BART_BACKUP_PASSPHRASE": PASSPHRASE})
    assert made.returncode == 0, made.stderr
    print(f"central backup ({'postgresql' if postgres else 'sqlite'}): "
          f"{out.stat().st_size} bytes in {time.monotonic() - started:.2f} s")
    assert out.stat().st_mode & 0o777 == 0o600

    # Into the same (non-empty) directory or database: refused in words.
    again = bart("central", "restore", str(out), *flags,
                 env={"BART_BACKUP_PASSPHRASE": PASSPHRASE})
    assert again.returncode == 1 and "is not empty" in again.stderr
    target = tmp_path / "restored"
    restore_flags = ["--data-dir", str(target)]
    if postgres:
        pg = request.getfixturevalue("postgres_server")
        used = bart("central", "restore", str(out), *restore_flags, "--database-url",
                    database_url, env={"BART_BACKUP_PASSPHRASE": PASSPHRASE})
        assert used.returncode == 1 and "already has tables" in used.stderr, used.stderr
        assert not target.exists() or not any(target.iterdir())
        new_url = pg.create_database(f"restored_{os.getpid()}_{int(time.time())}")
    else:
        # The fixture's SQLite file lies outside the data directory (central.toml names
        # it): a restore does not overwrite it either, and takes a new place.
        used = bart("central", "restore", str(out), *restore_flags,
                    env={"BART_BACKUP_PASSPHRASE": PASSPHRASE})
        assert used.returncode == 1 and "exists already" in used.stderr, used.stderr
        new_url = f"sqlite:///{tmp_path / 'restored.db'}"
    restore_flags += ["--database-url", new_url]
    started = time.monotonic()
    done = bart("central", "restore", str(out), *restore_flags,
                env={"BART_BACKUP_PASSPHRASE": PASSPHRASE})
    assert done.returncode == 0, done.stderr
    print(f"central restore: {time.monotonic() - started:.2f} s")

    restored = load_central(target, database_url=new_url)
    assert restored.keys.fingerprint == central.keys.fingerprint
    assert restored.kid == central.kid
    engine = db.make_engine(restored.database_url)
    try:
        assert {t.name: count(engine, t) for t in (db.events, db.reports, db.batches)} == counts
        # A replayed batch gets its original acknowledgement; the node goes on with the
        # next batch and seqs, and central takes them.
        ack = _ingest(engine, restored, keys, "wereld", 5, range(401, 501))
        assert ack["replay"] and ack["new"] == 100
        ack = _ingest(engine, restored, keys, "wereld", 6, range(501, 511))
        assert (ack["new"], ack["replay"]) == (10, False)
        assert ack["holds"] == {"wereld": {"private": 510}}
    finally:
        engine.dispose()


# -- a node restored from an older backup, with central -----------------------------------


FAST_UPLINK = "uplink_max_age_s = 0.2\nuplink_backoff_max_s = 1.0\nuplink_poll_s = 2.0\n"


def _central_heads(engine: sa.Engine, origin: str) -> dict[str, int]:
    with engine.connect() as conn:
        return {r.stream: int(r.contiguous) for r in conn.execute(
            sa.select(db.heads).where(db.heads.c.origin == origin))}


def _post(node: NodeProcess, text: str) -> str:
    r = httpx.post(f"{node.base_url}/api/v1/reports", timeout=15.0,
                   json={"category": "nuisance", "text": text, "audience": "both"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.mark.timeout(300)
def test_node_restored_from_an_older_backup_goes_on_after_centrals_seqs(
        tmp_path: Path, mosquitto_bin: str) -> None:
    from tests.support.base import wait_until
    from tests.support.central import init_central_process
    from tests.support.node import configure

    central = init_central_process(tmp_path / "c")
    central.start()
    node = init_node(tmp_path, mosquitto_bin)
    engine = db.make_engine(f"sqlite:///{central.data_dir / 'central.db'}")
    restored: NodeProcess | None = None
    try:
        configure(node, FAST_UPLINK)
        central.enrol(node)
        node.start()
        for i in range(5):
            _post(node, f"voor de backup {i}")
        wait_until(lambda: _central_heads(engine, node.name).get("private") == 5, 60,
                   message="5 reports at central")
        out = tmp_path / "old.bart"
        made = bart("node", "backup", str(out), "--data-dir", str(node.data_dir))
        assert made.returncode == 0, made.stderr
        # After the backup: more reports, and central gets them; then the SD card dies.
        for i in range(7):
            _post(node, f"na de backup {i}")
        wait_until(lambda: _central_heads(engine, node.name).get("private") == 12, 60,
                   message="12 reports at central")
        node.kill()

        # Central down: the restore refuses (in words) rather than guess.
        target = tmp_path / "restored"
        central.stop()
        down = bart("node", "restore", str(out), "--data-dir", str(target))
        assert down.returncode == 1 and "does not answer" in down.stderr, down.stderr
        assert "--offline" in down.stderr and not (target.exists() and any(target.iterdir()))
        # --offline restores without asking (a restore test away from the network).
        offline = bart("node", "restore", str(out), "--data-dir", str(tmp_path / "copy"),
                       "--offline")
        assert offline.returncode == 0 and "offline: central was not asked" in offline.stdout
        assert own_heads(tmp_path / "copy" / "node.db", node.name)["private"] == 5
        central.start()

        done = bart("node", "restore", str(out), "--data-dir", str(target))
        assert done.returncode == 0, done.stderr
        assert "private events 6-12 were made after the backup" in done.stdout, done.stdout
        restored = NodeProcess(data_dir=target, http_port=node.http_port,
                               mqtt_port=node.mqtt_port, mosquitto=mosquitto_bin,
                               peer=node.peer, log_path=tmp_path / "restored.log",
                               name=node.name)
        restored.start()
        new_id = _post(restored, "na het herstel")
        conn = sqlite3.connect(f"file:{restored.db_path}?mode=ro", uri=True)
        try:
            seq = conn.execute("SELECT seq FROM events WHERE id = ?", (new_id,)).fetchone()[0]
        finally:
            conn.close()
        assert seq == 13  # after central's 12: none of 6-12 used twice
        wait_until(lambda: _central_heads(engine, node.name).get("private") == 13, 60,
                   message="the new report at central")
        with engine.connect() as conn2:
            stored = conn2.execute(sa.select(db.events.c.id).where(
                db.events.c.origin == node.name, db.events.c.stream == "private",
                db.events.c.seq == 13)).scalar_one()
        assert stored == new_id
        stop_and_check(restored)
    finally:
        engine.dispose()
        for proc in (node, restored):
            if proc is not None and proc.proc is not None and proc.proc.poll() is None:
                proc.kill()
        if central.proc is not None and central.proc.poll() is None:
            central.kill()


def test_central_backup_with_postgresql_down_says_so(tmp_path: Path) -> None:
    require_binary("pg_dump", "/usr/lib/postgresql/15/bin/pg_dump")
    from tests.support.base import free_port

    made = bart("central", "init", "--data-dir", str(tmp_path / "c"))
    assert made.returncode == 0, made.stderr
    down = bart("central", "backup", str(tmp_path / "c.bart"), "--data-dir",
                str(tmp_path / "c"), "--database-url",
                f"postgresql://bart@127.0.0.1:{free_port()}/bart")
    assert down.returncode == 3, down.stderr
    assert "pg_dump cannot reach PostgreSQL" in down.stderr and "fix: start it" in down.stderr
    assert not (tmp_path / "c.bart").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
