"""Central ingest and uplink benchmarks (issues #4 and 15).

1. **Ingest, all of central's CPU** — ``bart central run`` (one worker, pinned
   to CPU 0) receives sealed batches of 1,000 realistic report events over HTTP
   from a client on CPU 1: verify + decrypt + decompress + check + store; its
   projector (triage, moved to CPU 1) routes them. Counted: every CPU-second
   central spends on the events, from the first measured batch until the
   projector has routed the last one — the worker, the projector and any other
   process under ``bart central run`` (``tree_cpu_seconds``), and on
   PostgreSQL the database server too (the postmaster and every process under
   it: the backends serving central's connections, the WAL writer,
   checkpointer, autovacuum; backends that exit are counted through the
   postmaster's ended-children time). Figures: events per CPU-second of all
   of these (goal ≥ 40,000 on SQLite and on PostgreSQL), per worker
   CPU-second, per wall second. Baseline in the same run, in the same
   database: the same rows into a table with the same columns and indexes,
   one transaction per 1,000 rows — on SQLite a DB-API ``executemany``, on
   PostgreSQL a ``COPY … FROM STDIN`` (psycopg ``write_row``, as bulk as
   ingest's own ``COPY``), counting the client's CPU and, on PostgreSQL, the
   server's the same way. ``--runs`` (default 5) runs, each on a new central
   and followed by its baseline; the medians, and the median of the runs' own
   ratios. On SQLite and on a real PostgreSQL server (its databases in the
   test cluster's C.UTF-8; ``--pg-collation C``: created with ``LC_COLLATE
   'C'``, as docs/central.md tells deployers — b-tree keys compared with
   memcmp, not strcoll; ~0.2–1 µs less server CPU per event, measured).
2. **Backlog drain** — a node whose store holds 100,000 events not yet at
   central is started; time until central holds all of them.
3. **Wire bytes** — sealed bytes per event against the event's JSON, for
   batches of the 460 distinct non-adversarial reports (no repeated text).

Usage: .venv/bin/python bench/central_sync.py [--batches N] [--runs N] [--skip-pg] [--skip-drain]
       [--pg-collation C|cluster]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    BART,
    REPO,
    Procs,
    children,
    cpu_seconds,
    descendants,
    describe,
    free_port,
    load_reports,
    pinned,
    ratio,
    tree_cpu_seconds,
    wait_healthy,
)

from central import db
from central.enrol import enrol_bundle
from central.identity import Central, CentralSettings, init_central
from sync import KeyPair, make_event, sealed
from sync.enrolment import EnrolRequest
from sync.event import Event

TS0 = 1_795_904_700_000
NODE = "bench-node"
BATCH = 1000
WARM = 3  # batches sent before measuring
GOAL = 40_000  # events per CPU-second of all central processes (issue 15)


def csr_for(name: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())


def report_events(keys: KeyPair, first_seq: int, n: int,
                  reports: list[dict[str, Any]]) -> list[Event]:
    out = []
    for i in range(n):
        r = reports[(first_seq + i) % len(reports)]
        body = {"category": r["category"], "text": r["text"][:1000],
                "place": {"point": None, "text": r["place"]["text"][:200]},
                "audience": r["audience"], "called_112": r["called_112"],
                "receipt": "K7F-3QX", "lang": r["lang"][:3]}
        out.append(make_event(keys, origin=NODE, stream="private", seq=first_seq + i,
                              kind="report", ts=TS0 + first_seq + i, body=body))
    return out


# -- 1. ingest per worker -------------------------------------------------------------------

def raw_baseline(url: str, events: list[Event], pg_pid: int | None) -> dict[str, float]:
    """A bulk insert of the same rows, same columns and indexes, same database.

    SQLite: DB-API ``executemany``; PostgreSQL: ``COPY … FROM STDIN`` (not row
    by row: ingest uses ``COPY`` too). One transaction per BATCH rows into a
    fresh table. Counted: this process's CPU and, on PostgreSQL, the server's
    (``pg_pid``'s tree). The wall figure includes waiting for each commit's
    fsync. The rows are built anew for each run (outside the timing): a text
    already bound once keeps its UTF-8 form, which a repeated run would get for
    free and ingest never does.
    """
    import base64

    rows = [(e.id, e.origin, e.stream, e.seq, e.ts, e.kind, e.body_json().decode(),
             base64.b64encode(e.sig).decode(), NODE, TS0) for e in events]
    ddl = ("CREATE TABLE raw_events (id VARCHAR(36) PRIMARY KEY, "
           "origin VARCHAR(63) NOT NULL, stream VARCHAR(8) NOT NULL, seq BIGINT NOT NULL, "
           "ts BIGINT NOT NULL, kind VARCHAR(8) NOT NULL, body TEXT NOT NULL, "
           "sig VARCHAR(88) NOT NULL, via VARCHAR(63) NOT NULL, "
           "received_at BIGINT NOT NULL, UNIQUE (origin, stream, seq))")
    # As events' since migration 0012: alerts and acks only.
    index = "CREATE INDEX raw_kind_ts ON raw_events (kind, ts) WHERE kind IN ('alert', 'ack')"
    if pg_pid is None:
        engine = db.make_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS raw_events")
            conn.exec_driver_sql(ddl)
            conn.exec_driver_sql(index)
        sql = f"INSERT INTO raw_events VALUES ({', '.join(['?'] * 10)})"
        cpu0, start = time.process_time(), time.perf_counter()
        for i in range(0, len(rows), BATCH):
            with engine.begin() as conn:
                cur = conn.connection.cursor()
                cur.executemany(sql, rows[i:i + BATCH])
                cur.close()
        wall = time.perf_counter() - start
        client = time.process_time() - cpu0
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE raw_events")
        engine.dispose()
        server = 0.0
    else:
        import psycopg

        with psycopg.connect(url) as pg:
            pg.execute("DROP TABLE IF EXISTS raw_events")
            pg.execute(ddl)
            pg.execute(index)
            pg.commit()
            cpu0, srv0 = time.process_time(), tree_cpu_seconds(pg_pid)
            start = time.perf_counter()
            for i in range(0, len(rows), BATCH):
                with pg.cursor() as pcur, pcur.copy("COPY raw_events FROM STDIN") as copy:
                    for row in rows[i:i + BATCH]:
                        copy.write_row(row)
                pg.commit()
            wall = time.perf_counter() - start
            client = time.process_time() - cpu0
            server = tree_cpu_seconds(pg_pid) - srv0
            pg.execute("DROP TABLE raw_events")
            pg.commit()
    n = len(rows)
    return {"raw": n / (client + server), "raw_wall": n / wall, "raw_client": client,
            "raw_server": server}


def bench_database(pg: Any, name: str, collation: str) -> str:
    """A new database on the test server ``pg``; its URL. ``collation`` "cluster": the
    test cluster's default (C.UTF-8), as the tests'; "C": created as docs/central.md
    says (``LC_COLLATE 'C'``: b-tree keys compared with memcmp, not strcoll)."""
    if collation == "cluster":
        return str(pg.create_database(name))
    import psycopg

    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING \'UTF8\' '
                     "LC_COLLATE 'C' LC_CTYPE 'C.UTF-8'")
    return str(pg.url(name))


def _socket_ports(owners: dict[str, int]) -> dict[int, str]:
    """Local TCP port → owner label, for the sockets the processes ``owners`` hold."""
    inodes: dict[str, str] = {}
    for label, pid in owners.items():
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir() if fd_dir.exists() else []:
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes[link[8:-1]] = label
    ports: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[9] in inodes:
                ports[int(cols[1].rsplit(":", 1)[1], 16)] = inodes[cols[9]]
    return ports


def pg_processes(postmaster: int) -> dict[int, tuple[str, float]]:
    """PostgreSQL's processes: pid → (process title, CPU seconds so far)."""
    out: dict[int, tuple[str, float]] = {}
    for pid in descendants(postmaster):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            out[pid] = (title.strip(), cpu_seconds(pid))
        except (OSError, ValueError):
            continue
    return out


def pg_breakdown(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                 owners: dict[str, int]) -> dict[str, float]:
    """The server's CPU between two :func:`pg_processes` by whom a backend served:
    a label of ``owners`` (by the client port in its title), ``background`` (WAL
    writer, checkpointer, autovacuum, …) or ``other`` (other clients)."""
    ports = _socket_ports(owners)
    out: dict[str, float] = {}
    for pid, (title, cpu) in after.items():
        used = cpu - before.get(pid, ("", 0.0))[1]
        m = re.search(r"\((\d+)\)", title)
        label = ports.get(int(m.group(1)), "other") if m else "background"
        out[label] = out.get(label, 0.0) + used
    return out


def projector_pid(central_pid: int) -> int:
    """The projector process ``bart central run`` started: ``python -m central.worker
    projector`` (since 0f3cfca), or a multiprocessing child (``spawn_main``) before."""
    for pid in children(central_pid):
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"spawn_main" in b" ".join(args) or args[1:4] == [b"-m", b"central.worker",
                                                              b"projector"]:
            return pid
    raise RuntimeError("central runs no projector process")


def post(client: httpx.Client, url: str, wire: bytes) -> None:
    """Upload one sealed batch; every event must be new."""
    r = client.post(f"{url}/api/v1/batches", content=wire,
                    headers={"Content-Type": "application/vnd.bart.batch"})
    r.raise_for_status()
    assert r.json()["ack"]["doc"]["new"] == BATCH


def enrolled_central(data_dir: Path, database_url: str, keys: KeyPair | None = None
                     ) -> tuple[Central, Engine, KeyPair]:
    """A new central on ``database_url`` with node NODE (``keys``, default new ones)
    enrolled: (central, engine, NODE's keys)."""
    central = init_central(data_dir, CentralSettings(name="bench", database_url=database_url))
    db.upgrade(central.database_url)
    engine = db.make_engine(central.database_url)
    keys = keys or KeyPair.generate()
    enrol_bundle(engine, central, EnrolRequest(
        node=NODE, signing_pub=keys.signing_public, encryption_pub=keys.encryption_public,
        csr_pem=csr_for(NODE)), "ESC-01")
    return central, engine, keys


def sealed_batches(central: Central, keys: KeyPair, events: list[Event]) -> list[bytes]:
    """``events`` sealed in batches of BATCH from NODE, as its uplink sends them."""
    # The meta a node's uplink sends (node/uplink.py): what it holds of
    # central's stream, the receipt updates and roster it has, its status.
    meta = {"heads": {central.origin: {"public": 0}}, "updates_after": 0, "roster_serial": 1,
            "status": {"backlog": 0, "version": "bench"}}
    return [sealed.seal(sealed.Payload.of(events[i * BATCH:(i + 1) * BATCH], meta), node_id=NODE,
                        batch_seq=i + 1, created=TS0, keys=keys,
                        central_encryption_public=central.keys.encryption_public)
            for i in range(len(events) // BATCH)]


def ingest_run(data_dir: Path, label: str, database_url: str, keys: KeyPair,
               events: list[Event], uploads: int, pg_pid: int | None) -> dict[str, float]:
    """One run on a new central: ingest ``events`` (the first WARM batches unmeasured)
    over HTTP until triaged, then the baseline of the measured rows into the same
    database. ``pg_pid``: the PostgreSQL postmaster whose CPU counts as central's."""
    central, engine, keys = enrolled_central(data_dir, database_url, keys)
    wires = sealed_batches(central, keys, events)
    port = free_port()

    def pending() -> int:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(db.batches).where(
                db.batches.c.pending.isnot(None))).scalar_one())

    def db_cpu() -> float:
        return tree_cpu_seconds(pg_pid) if pg_pid is not None else 0.0

    with Procs(data_dir.parent) as procs:
        proc = procs.start(pinned([str(BART), "central", "run", "--data-dir",
                                   str(central.data_dir), "--http-port", str(port)], 0),
                           f"central-{label}")
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, 120)  # start-up takes long on a loaded machine
        # Worker on CPU 0; the projector (triage, off the ingest path) and this
        # client on CPU 1: two cores, as on the machines the goals are set for.
        proj = projector_pid(proc.pid)
        os.sched_setaffinity(proj, {1})
        os.sched_setaffinity(0, {1})
        with httpx.Client(timeout=60) as client:
            for w in wires[:WARM]:
                client.post(f"{url}/api/v1/batches", content=w,
                            headers={"Content-Type": "application/vnd.bart.batch"}
                            ).raise_for_status()
            while pending():
                time.sleep(0.05)
            cpu0, pcpu0 = cpu_seconds(proc.pid), cpu_seconds(proj)
            pg0 = pg_processes(pg_pid) if pg_pid is not None else {}
            all0, db0 = tree_cpu_seconds(proc.pid), db_cpu()
            t0 = time.perf_counter()
            if uploads == 1:
                for w in wires[WARM:]:
                    post(client, url, w)
            else:  # as many nodes uploading at once, each on its own connection
                clients = [httpx.Client(timeout=60) for _ in range(uploads)]
                with ThreadPoolExecutor(uploads) as pool:
                    list(pool.map(lambda iw: post(clients[iw[0] % uploads], url, iw[1]),
                                  enumerate(wires[WARM:])))
                for c in clients:
                    c.close()
            wall = time.perf_counter() - t0
            cpu = cpu_seconds(proc.pid) - cpu0
            # A poll every 50 ms until routed: on PostgreSQL each costs its backend a
            # fraction of a millisecond, counted as central's (against the goal).
            while pending():
                time.sleep(0.05)
            triaged = time.perf_counter() - t0
            pcpu = cpu_seconds(proj) - pcpu0
            all_cpu = tree_cpu_seconds(proc.pid) - all0
            dbcpu = db_cpu() - db0
            split: dict[str, float] = {}
            if pg_pid is not None:
                split = pg_breakdown(pg0, pg_processes(pg_pid),
                                     {"worker": proc.pid, "projector": proj, "bench": os.getpid()})
                # The bench's own polls are not central's work.
                dbcpu -= split.get("bench", 0.0)
        procs.stop(proc)
    engine.dispose()
    n = len(wires[WARM:]) * BATCH
    # The baseline on the worker's core, in the database the worker just filled.
    os.sched_setaffinity(0, {0})
    raw = raw_baseline(central.database_url, events[WARM * BATCH:], pg_pid)
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    total = all_cpu + dbcpu
    return {"events": n, "cpu": cpu, "wall_s": wall, "per_core": n / cpu if cpu else 0.0,
            "wall": n / wall, "triaged": triaged, "pcpu": pcpu, "all_cpu": all_cpu,
            "db_cpu": dbcpu, "total_cpu": total, "per_all": n / total if total else 0.0,
            **{f"db_{k}": v for k, v in split.items()}, **raw}


def ingest_bench(tmp: Path, label: str, database_urls: list[str], n_batches: int,
                 reports: list[dict[str, Any]], uploads: int = 1,
                 pg_pid: int | None = None) -> dict[str, float]:
    """Ingest against the baseline: one run per database URL; medians."""
    keys = KeyPair.generate()
    base = "COPY" if pg_pid is not None else "executemany"
    print(f"  [{label}] signing {(n_batches + WARM) * BATCH:,} events …", flush=True)
    events = report_events(keys, 1, (n_batches + WARM) * BATCH, reports)
    runs = []
    for i, url in enumerate(database_urls, 1):
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        r = ingest_run(tmp / f"central-{label}-{i}", label, url, keys, events, uploads, pg_pid)
        runs.append(r)
        other = r["all_cpu"] - r["cpu"] - r["pcpu"]
        print(f"  [{label}] run {i} (load {load}): {r['events']:,} events, {uploads} upload(s) "
              f"at a time, routed {r['triaged']:.2f} s after the first: "
              f"{r['per_all']:,.0f} events per CPU-second of all central processes "
              f"({r['total_cpu']:.2f} s = worker {r['cpu']:.2f} + projector {r['pcpu']:.2f} + "
              f"other {other:.2f} + database server {r['db_cpu']:.2f}); worker alone "
              f"{r['per_core']:,.0f}/CPU-s; {r['wall']:,.0f} events/s wall. Baseline {base}: "
              f"{r['raw']:,.0f} per CPU-second (client {r['raw_client']:.2f} s + server "
              f"{r['raw_server']:.2f} s; {r['raw_wall']:,.0f}/s wall) → ratio "
              f"{ratio(r['per_all'], r['raw'])}", flush=True)
        if pg_pid is not None:
            parts = ", ".join(f"{k[3:]} {v:.2f}" for k, v in r.items()
                              if k.startswith("db_") and k != "db_cpu")
            print(f"  [{label}]   database server CPU (s) by what its backends served: {parts} "
                  "(bench = this script's polls, not counted; ended backends show only in "
                  "the total)", flush=True)
    for r in runs:  # each run against its own baseline
        r["ratio"] = r["per_all"] / r["raw"] if r["raw"] else 0.0
        r["ratio_worker"] = r["per_core"] / r["raw"] if r["raw"] else 0.0
        r["ratio_wall"] = r["wall"] / r["raw_wall"] if r["raw_wall"] else 0.0
        r["projected"] = r["events"] / r["pcpu"] if r["pcpu"] else 0.0
    med = {k: statistics.median(r.get(k, 0.0) for r in runs) for k in runs[0]}
    med["min_all"] = min(r["per_all"] for r in runs)
    med["max_all"] = max(r["per_all"] for r in runs)
    print(f"  [{label}] {len(runs)} runs, min / median / max: events per CPU-second of all "
          f"central processes {med['min_all']:,.0f} / {med['per_all']:,.0f} / "
          f"{med['max_all']:,.0f} (median CPU per 1,000 events: worker "
          f"{med['cpu'] / med['events'] * 1e3 * 1e3:.1f} ms, projector "
          f"{med['pcpu'] / med['events'] * 1e6:.1f} ms, database server "
          f"{med['db_cpu'] / med['events'] * 1e6:.1f} ms); worker alone {med['per_core']:,.0f}; "
          f"{base} baseline {med['raw']:,.0f} per CPU-second")
    each = ", ".join(f"{r['ratio']:.2f}" for r in runs)
    print(f"  [{label}] → all central CPU / {base} CPU (client + server): median of the runs' "
          f"ratios {med['ratio']:.2f} (runs: {each}); worker alone / {base} "
          f"{med['ratio_worker']:.2f}; wall / {base} wall {med['ratio_wall']:.2f}")
    print(f"  [{label}] triage: all reports routed {med['triaged']:.2f} s after the first "
          f"batch, {med['projected']:,.0f} reports per projector CPU-second")
    return med


# -- 2. backlog drain --------------------------------------------------------------------

def drain_bench(tmp: Path, n_events: int, reports: list[dict[str, Any]]) -> float:
    """Seconds until central holds a node's backlog of ``n_events``."""
    from node.config import NodeSettings
    from node.store import Store

    with Procs(tmp) as procs:
        cdir = tmp / "drain-central"
        cport, hport, mport = free_port(), free_port(), free_port()
        subprocess.run([str(BART), "central", "init", "--data-dir", str(cdir), "--http-port",
                        str(cport), "--public-url", f"http://127.0.0.1:{cport}"], check=True,
                       stdout=subprocess.DEVNULL)
        cproc = procs.start(pinned([str(BART), "central", "run", "--data-dir", str(cdir)], 0),
                            "drain-central")
        curl = f"http://127.0.0.1:{cport}"
        wait_healthy(curl, cproc, 30)
        ndir = tmp / "drain-node"
        subprocess.run([str(BART), "node", "init", "--name", NODE, "--area", "ESC-01",
                        "--data-dir", str(ndir), "--http-port", str(hport), "--mqtt-port",
                        str(mport)], check=True, stdout=subprocess.DEVNULL)
        code = subprocess.run([str(BART), "central", "enroll-code", "--data-dir", str(cdir),
                               "--node", NODE, "--area", "ESC-01"], check=True,
                              capture_output=True, text=True).stdout.split(": ", 1)[1].split()[0]
        subprocess.run([str(BART), "node", "enroll", curl, "--code", code, "--data-dir",
                        str(ndir)], check=True, stdout=subprocess.DEVNULL)
        print(f"  filling the node's store with {n_events:,} events …", flush=True)
        settings = NodeSettings.load(ndir)
        keys = KeyPair.load(settings.keys_dir)
        store = Store(settings.db_path, origin=NODE, keys=keys)
        texts = [r for r in reports]
        for start in range(0, n_events, 2000):
            def fill(tx: Any, start: int = start) -> None:
                for i in range(start, min(n_events, start + 2000)):
                    r = texts[i % len(texts)]
                    tx.append_local("report", "private", {
                        "category": r["category"], "text": r["text"][:1000],
                        "place": {"point": None, "text": r["place"]["text"][:200]},
                        "audience": "authorities", "receipt": "K7F-3QX", "lang": "nl"})
            store.write_sync(fill, timeout=120)
        store.close()
        nproc = procs.start(pinned([str(BART), "node", "run", "--data-dir", str(ndir)], 1),
                            "drain-node", env={"BART_LOG_LEVEL": "WARNING"})
        t0 = time.perf_counter()
        engine = db.make_engine(f"sqlite:///{cdir / 'central.db'}")
        held = 0
        while time.perf_counter() - t0 < 120:
            with engine.connect() as conn:
                held = conn.execute(sa.select(sa.func.count()).select_from(db.events)).scalar_one()
            if held >= n_events:
                break
            if nproc.poll() is not None:
                raise RuntimeError("node exited during the drain")
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        engine.dispose()
        print(f"  backlog of {n_events:,} events: central held {held:,} after {elapsed:.1f} s "
              f"(from `bart node run`, start-up included)")
        return elapsed


# -- 3. wire bytes ----------------------------------------------------------------------------

def wire_bytes(reports: list[dict[str, Any]]) -> float:
    keys, central = KeyPair.generate(), KeyPair.generate()
    events = report_events(keys, 1, len(reports), reports)
    wire = sealed.seal(sealed.Payload.of(events), node_id=NODE, batch_seq=1, created=TS0,
                       keys=keys, central_encryption_public=central.encryption_public)
    as_json = sum(len(e.encode()) for e in events)
    print(f"  {len(events)} distinct realistic reports: {as_json / len(events):.0f} bytes of "
          f"JSON per event, {len(wire) / len(events):.0f} sealed bytes per event "
          f"→ {len(wire) / as_json:.0%} of JSON")
    return len(wire) / as_json


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40, help="batches of 1,000 to ingest")
    parser.add_argument("--runs", type=int, default=5,
                        help="ingest runs (each on a new central, then its raw baseline); "
                             "medians are reported")
    parser.add_argument("--skip-pg", action="store_true", help="SQLite only")
    parser.add_argument("--skip-drain", action="store_true", help="no backlog drain")
    parser.add_argument("--drain-events", type=int, default=100_000)
    parser.add_argument("--uploads", type=int, default=1,
                        help="concurrent uploads to the worker (as many nodes at once)")
    parser.add_argument("--pg-collation", choices=("C", "cluster"), default="cluster",
                        help="the PostgreSQL databases' LC_COLLATE: the test cluster's own "
                             "C.UTF-8 (default, as in every earlier session; PostgreSQL 15 "
                             "compares it through strcoll), or C, as docs/central.md has "
                             "deployers create central's (text compared bytewise, as on "
                             "SQLite)")
    args = parser.parse_args()
    reports = load_reports()
    print(f"bench/central_sync.py — {describe()}, {os.cpu_count()} CPUs")
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "central"],
                           capture_output=True, text=True, check=False).stdout.split("\n")
    if any(dirty):
        print(f"  central/ differs from the commit: {len([d for d in dirty if d])} files "
              "(work in progress in the tree is what is measured)")
    print("wire bytes:")
    wire_bytes(reports)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bart-bench-central-") as tmpdir:
        tmp = Path(tmpdir)
        print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print("ingest, all central CPU (SQLite):")
        results["SQLite"] = ingest_bench(tmp, "sqlite", [""] * args.runs, args.batches,
                                         reports, args.uploads)
        if not args.skip_pg:
            sys.path.insert(0, str(REPO))
            from tests.support.postgres import PostgresServer

            base = Path(tempfile.mkdtemp(prefix="bart-pg-"))
            pg = PostgresServer(base)
            pg.start()
            try:
                postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
                print("ingest, all central CPU (PostgreSQL, server processes counted; "
                      f"LC_COLLATE {args.pg_collation}):")
                results["PostgreSQL"] = ingest_bench(
                    tmp, "pg", [bench_database(pg, f"bench{i}", args.pg_collation)
                                for i in range(1, args.runs + 1)],
                    args.batches, reports, args.uploads, pg_pid=postmaster)
            finally:
                pg.stop()
                import shutil

                shutil.rmtree(base, ignore_errors=True)
        if not args.skip_drain:
            print("backlog drain over loopback:")
            drain_bench(tmp, args.drain_events, reports)
    met = all(r["per_all"] >= GOAL for r in results.values())
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("RESULT central_sync: " + "; ".join(
        f"{name} {r['per_all']:,.0f} events per CPU-second of all central processes "
        f"(median of {args.runs}; min {r['min_all']:,.0f}, max {r['max_all']:,.0f}), "
        f"{r['ratio']:.2f} of the baseline" for name, r in results.items())
        + f" (goal >= {GOAL:,} on each) {'MET' if met else 'NOT MET'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
