"""Cost against history: the same request on a small and on a large store.

A system that runs for years must answer as fast with a million stored events
as with a thousand. This benchmark fills a store to each size and times the
same requests; the baseline is the smallest size, measured in the same run,
and the figure is the ratio p99(size) / p99(smallest). Goal (issue "cost flat
in history"): each within 2x of its 10^3 time.

Part ``node``: a node's store filled with N events (70 % reports with their
receipts, 20 % alerts of this node and two peers, 10 % answers), then a real
``bart node run`` on it: its start-up time (goal < 3 s at 10^6), and the
resident's requests: ``GET /``, ``GET /api/v1/alerts``, a receipt lookup
(``/status?receipt=``) and ``POST /api/v1/reports``.

Part ``central``: a central on SQLite (``--database-url``
for PostgreSQL) filled with N report events from five nodes (routes split as
triage does, states spread as a desk leaves them: most handled, some open,
a few emergencies untaken), then the staff pages a desk member reloads all
day, through the real FastAPI app with a logged-in member:

* admin ``/staff/reports`` (open), admin ``?state=all``, admin ``?state=handled``,
  police ``/staff/reports`` (open), and one older page of ``?state=all``;
* ``/staff/api/alarms``.

Run: ``.venv/bin/python bench/scale.py node|central [--sizes 1000,100000,1000000]
[--requests 40]``. Filling 10^6 takes about a minute on SQLite.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from _common import describe, percentile
from fastapi.testclient import TestClient

from central import db
from central.app import create_app
from central.identity import CentralSettings, init_central
from central.staff.accounts import StaffAccounts

PASSWORD = "een lange zin voor de bench"
NODES = ("escamp-a", "escamp-b", "escamp-c", "ypenburg-a", "ypenburg-b")
CATEGORIES = ("nuisance", "suspicious", "social", "emergency", "other")
BODY = ('{{"audience":"both","called_112":false,"category":"{cat}","contact":"",'
        '"lang":"nl","place":{{"point":null,"text":"Hoefkade {n}"}},"receipt":"{rc}",'
        '"text":"Melding {n}: fietsen worden bekeken bij de speeltuin, twee personen"}}')


def _state(i: int, n: int) -> str:
    """Most reports handled long ago; the newest few hundred still open."""
    if i < n - 600:
        return "handled"
    return ("new", "in_progress", "reopened", "handled")[i % 4]


def fill(engine: sa.Engine, n: int) -> None:
    """N report events and their triaged rows, oldest first, in big transactions."""
    rnd = random.Random(7)
    start = 1_700_000_000_000
    chunk = 20_000
    for base in range(0, n, chunk):
        events, reports = [], []
        for i in range(base, min(n, base + chunk)):
            ident = str(uuid.UUID(int=rnd.getrandbits(128)))
            origin = NODES[i % len(NODES)]
            cat = CATEGORIES[i % len(CATEGORIES)]
            ts = start + i * 1000
            receipt = f"K{i % 10}F-{i % 1000:03d}"[:7]
            route = "police" if cat in ("suspicious", "emergency") else "municipality"
            events.append((ident, origin, "private", i // len(NODES) + 1 + 1_000_000 * 0, ts,
                           "report", BODY.format(cat=cat, n=i, rc=receipt), "c2ln", origin, ts))
            reports.append((ident, origin, receipt, cat, ts, route, f"default-{route}",
                            _state(i, n), ts, 1))
        with engine.begin() as conn:
            cur = conn.connection.cursor()
            p = "?" if engine.dialect.name == "sqlite" else "%s"
            # (origin, stream, seq) must be unique: seq counts per origin.
            cur.executemany(f"INSERT INTO events (id, origin, stream, seq, ts, kind, body, sig, "
                            f"via, received_at) VALUES ({', '.join([p] * 10)})",
                            [(e[0], e[1], e[2], idx + 1, *e[4:]) for idx, e in
                             zip(range(base, base + len(events)), events, strict=True)])
            cur.executemany(f"INSERT INTO reports (event_id, origin, receipt, category, ts, "
                            f"route, rule, state, updated_at, version) "
                            f"VALUES ({', '.join([p] * 10)})", reports)
            cur.close()


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, html[:300]
    return found.group(1)


def member(app: Any, accounts: StaffAccounts, name: str, role: str) -> TestClient:
    otp = accounts.add(name, role)
    client = TestClient(app, base_url="http://central.test", follow_redirects=False)
    page = client.get("/staff/login").text
    token = re.search(r'name="login_token" value="([^"]+)"', page)
    assert token is not None
    client.post("/staff/login", data={"name": name, "password": otp,
                                      "login_token": token.group(1)})
    page = client.get("/staff/password").text
    r = client.post("/staff/password", data={"csrf": _csrf(page), "old": otp, "new": PASSWORD,
                                             "repeat": PASSWORD})
    assert r.status_code == 303, r.text[:300]
    return client


def timed(client: TestClient, url: str, requests: int) -> list[float]:
    out = []
    client.get(url)  # warm caches (as a desk that has the page open)
    for _ in range(requests):
        t0 = time.perf_counter()
        r = client.get(url)
        out.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, (url, r.status_code, r.text[:300])
    return out


def central_part(sizes: list[int], requests: int, database_url: str) -> dict[str, dict[int, Any]]:
    results: dict[str, dict[int, Any]] = {}
    for n in sizes:
        tmp = Path(tempfile.mkdtemp(prefix="bart-bench-scale-"))
        try:
            url = database_url
            central = init_central(tmp / "central", CentralSettings(
                name="bench", public_url="http://central.test", database_url=url))
            if url:
                with sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"),
                                      isolation_level="AUTOCOMMIT").connect() as c:
                    c.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
            db.upgrade(central.database_url)
            engine = db.make_engine(central.database_url)
            t0 = time.perf_counter()
            fill(engine, n)
            filled = time.perf_counter() - t0
            app = create_app(central, engine)
            accounts = StaffAccounts(engine, scrypt_n=2**10)
            admin = member(app, accounts, "Anna", "admin")
            police = member(app, accounts, "Piet", "police")
            older = admin.get("/staff/reports?state=all").text
            more = re.search(r'href="(/staff/reports\?[^"]*before=[^"]+)"', older)
            pages = {
                "admin open": (admin, "/staff/reports"),
                "admin all": (admin, "/staff/reports?state=all"),
                "admin handled": (admin, "/staff/reports?state=handled"),
                "police open": (police, "/staff/reports"),
                "admin all, older page": (admin, more.group(1).replace("&amp;", "&")
                                          if more else "/staff/reports?state=all"),
                "alarms api": (police, "/staff/api/alarms"),
            }
            for name, (client, page) in pages.items():
                results.setdefault(name, {})[n] = timed(client, page, requests)
            print(f"  filled {n:>9,} reports in {filled:5.1f} s; "
                  f"{'paged' if more else 'NO older-page link'}", flush=True)
            engine.dispose()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return results


NODE_BODY_REPORT = ('{{"audience":"authorities","called_112":false,"category":"nuisance",'
                    '"contact":"","lang":"nl","place":{{"point":null,"text":"Hoefkade {n}"}},'
                    '"receipt":"{rc}","text":"Melding {n}: geluidsoverlast van een scooter"}}')
NODE_BODY_ALERT = ('{{"areas":["ESC-01"],"button":null,"called_112":false,"called_112_by":"",'
                   '"category":"other","expires":{exp},"place":{{"point":null,"text":""}},'
                   '"ref":null,"severity":"moderate","source":"team","text":"Let op {n}",'
                   '"title":"Waarschuwing {n}"}}')
NODE_BODY_ACK = '{{"action":"seen","by":"team","note":"","ref":"{ref}","to":null}}'


def fill_node(db_path: Path, n: int, origin: str) -> str:
    """N events straight into the node's SQLite file (schema made by a first start);
    returns a receipt code that exists."""
    import sqlite3

    from node.reports import new_receipt

    rnd = random.Random(11)
    conn = sqlite3.connect(db_path)
    seqs: dict[tuple[str, str], int] = {}
    start = 1_700_000_000_000
    alerts: list[str] = []
    receipt = ""
    chunk = 50_000
    for base in range(0, n, chunk):
        events, receipts = [], []
        for i in range(base, min(n, base + chunk)):
            ident = str(uuid.UUID(int=rnd.getrandbits(128)))
            ts = start + i * 1000
            kind = "report" if i % 10 < 7 else "alert" if i % 10 < 9 else "ack"
            if kind == "report":
                who, stream = origin, "private"
                rc = new_receipt()
                receipt = rc
                body = NODE_BODY_REPORT.format(n=i, rc=rc)
                receipts.append((rc, ident, "forwarded", ts))
            elif kind == "alert":
                who, stream = (origin, "peer-a", "peer-b")[i % 3], "public"
                body = NODE_BODY_ALERT.format(n=i, exp=ts + 3_600_000)
                alerts.append(ident)
            else:
                who, stream = origin, "public"
                body = NODE_BODY_ACK.format(ref=alerts[-1] if alerts else ident)
            seq = seqs[(who, stream)] = seqs.get((who, stream), 0) + 1
            events.append((ident, who, stream, seq, ts, kind, body, b"s", ts))
        conn.executemany("INSERT INTO events (id, origin, stream, seq, ts, kind, body, sig, "
                         "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", events)
        conn.executemany("INSERT INTO receipts (receipt, event_id, state, updated_at) "
                         "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING", receipts)
        conn.commit()
    got = conn.execute("SELECT receipt FROM receipts ORDER BY rowid DESC LIMIT 1").fetchone()
    conn.close()
    return str(got[0]) if got else receipt


def node_part(sizes: list[int], requests: int) -> dict[str, dict[int, Any]]:
    import httpx
    from _common import NODE_NAME, Node, Procs

    results: dict[str, dict[int, Any]] = {}
    for n in sizes:
        tmp = Path(tempfile.mkdtemp(prefix="bart-bench-scale-node-"))
        try:
            with Procs(tmp) as procs:
                node = Node(procs)
                node.start()
                node.stop()
                t0 = time.perf_counter()
                receipt = fill_node(node.data_dir / "node.db", n, NODE_NAME)
                filled = time.perf_counter() - t0
                t0 = time.perf_counter()
                node.start(timeout=120)
                started = time.perf_counter() - t0
                results.setdefault("start-up (s)", {})[n] = [started * 1000]
                report = {"category": "nuisance", "text": "Scooter scheurt door de straat",
                          "place": {"point": None, "text": "Hoefkade 3"},
                          "audience": "authorities"}
                with httpx.Client(base_url=node.url, timeout=30) as client:
                    calls: dict[str, Callable[[], httpx.Response]] = {
                        "GET /": partial(client.get, "/"),
                        "GET /api/v1/alerts": partial(client.get, "/api/v1/alerts"),
                        "receipt lookup": partial(client.get, "/status",
                                                  params={"receipt": receipt}),
                        "POST report": partial(client.post, "/api/v1/reports", json=report),
                    }
                    for name, call in calls.items():
                        call()
                        times = []
                        for _ in range(requests):
                            t1 = time.perf_counter()
                            r = call()
                            times.append((time.perf_counter() - t1) * 1000)
                            if r.status_code >= 400:
                                raise SystemExit(f"{name}: {r.status_code} {r.text[:200]}")
                        results.setdefault(name, {})[n] = times
                node.stop()
            print(f"  filled {n:>9,} events in {filled:5.1f} s; node up in {started:4.1f} s",
                  flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=["node", "central"])
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--database-url", default="",
                        help="PostgreSQL URL (its public schema is dropped!); default SQLite")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"scale ({args.part}), {describe()}, load {os.getloadavg()[0]:.2f}, "
          f"{'PostgreSQL' if args.database_url else 'SQLite'}")
    results = (central_part(sizes, args.requests, args.database_url) if args.part == "central"
               else node_part(sizes, args.requests))
    worst = 0.0
    print(f"  {'page':<24}" + "".join(f"{n:>22,}" for n in sizes) + "   ratio p99")
    for name, by_size in results.items():
        base = percentile(by_size[sizes[0]], 99)
        cells = "".join(f"{statistics.median(v):9.1f} /{percentile(v, 99):7.1f} ms"
                        for v in by_size.values())
        ratio = percentile(by_size[sizes[-1]], 99) / base
        worst = max(worst, ratio)
        print(f"  {name:<24}{cells}   {ratio:5.2f}x")
    print(f"  (p50 / p99 per size; ratio = p99 at {sizes[-1]:,} / p99 at {sizes[0]:,}; "
          f"goal <= 2x: {'met' if worst <= 2 else 'NOT met'}, worst {worst:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
