"""Central beyond one machine (issue 18; docs/central-scale.md): two hosts' worth of
``bart central run`` — two processes, two data directories, one PostgreSQL.

The second data directory is made the way docs/central-scale.md says: the first
host's ``keys/``, ``ca/``, ``cap/`` and ``central.toml`` copied (keys 0600), its
own port. Both take batches from enrolled nodes (the test batch sender of
tests/integration/ingest.py, real sealed batches over HTTP); one
projector works at a time. The holder is killed three times — the whole central
process group (SIGKILL) and the projector process alone (SIGKILL) — and the
failover time is measured: from the kill until a batch sent afterwards is
projected by whichever projector took over. At the end every report event is
projected exactly once and nothing is left pending.

A data directory with other keys (a second ``bart central init``, or a copy
without ``cap/``) is refused by ``bart central run`` in words.

Run: .venv/bin/pytest tests/system/test_central_failover.py -q -x -s
(``-s`` prints the failover times.)
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from central import db
from central.cluster import STANDBY_POLL_S, ProjectorLock, lock_holders
from central.identity import Central, load_central
from central.projector import Projector, run_when_holding
from central.staff.accounts import StaffAccounts
from sync import KeyPair
from sync.exchange import Ack
from tests.support import ingest, require_binary

BART = str(Path(sys.executable).parent / "bart")
STAFF_PASSWORD = "een-lange-zin-voor-de-meldkamer"
BATCH_TYPE = "application/vnd.bart.batch"
EVENTS_PER_BATCH = 5
#: A failover must finish within this (honest under a loaded 2-core machine:
#: the standby tries every STANDBY_POLL_S; a restarted projector needs a few s).
FAILOVER_LIMIT_S = 15.0
START_S = 60.0


def wait(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(step)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parent_of(pid: int) -> int:
    """The parent of ``pid`` (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


class CentralHost:
    """One ``bart central run`` with a data directory of its own: one "host"."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    scheme = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self, *extra: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BART_")}
        env["PYTHONUNBUFFERED"] = "1"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [BART, "central", "run", "--data-dir", str(self.data_dir), *extra],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True)

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"central exited:\n{self.log_tail()}")
            return httpx.get(f"{self.url}/healthz", timeout=2.0).status_code == 200

        wait(up, START_S, f"{self.data_dir.name} /healthz", 0.1)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole central: supervisor, worker, projector."""
        if self.alive():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def second_host(first: Path, second: Path, port: int, *, with_cap: bool = True) -> None:
    """docs/central-scale.md: the second host's data directory, from the first's files."""
    second.mkdir(mode=0o700)
    for sub in ("keys", "ca", "cap") if with_cap else ("keys", "ca"):
        shutil.copytree(first / sub, second / sub)  # copy2 keeps the 0600 modes
    toml = (first / "central.toml").read_text()
    old_port = next(line for line in toml.splitlines() if line.startswith("http_port"))
    (second / "central.toml").write_text(toml.replace(old_port, f"http_port = {port}"))


def init_central(base: Path, name: str, database_url: str) -> CentralHost:
    port = free_port()
    data_dir = base / name
    subprocess.run([BART, "central", "init", "--name", "haaglanden", "--data-dir",
                    str(data_dir), "--database-url", database_url, "--http-port", str(port),
                    "--public-url", "https://central.example.nl"],
                   check=True, capture_output=True, timeout=120)
    return CentralHost(data_dir, port)


class Sender:
    """Sealed batches from enrolled nodes, each node's seqs without gaps."""

    def __init__(self, central: Central, engine: sa.Engine, nodes: int) -> None:
        self.central = central
        self.keys: dict[str, KeyPair] = {}
        for i in range(nodes):
            name = f"buurthuis-{i}"
            self.keys[name] = ingest.enrol(engine, central, name)
        self.next: dict[str, int] = dict.fromkeys(self.keys, 1)
        self.sent: set[tuple[str, int]] = set()
        self.lock = threading.Lock()

    def send(self, host: CentralHost, node: str, seq: int | None = None,
             client: httpx.Client | None = None) -> tuple[str, int]:
        """Send ``node``'s next batch (or batch ``seq`` again) to ``host``."""
        if seq is None:
            with self.lock:
                seq = self.next[node]
                self.next[node] += 1
        first = (seq - 1) * EVENTS_PER_BATCH + 1
        events = ingest.reports(self.keys[node], node,
                                        range(first, first + EVENTS_PER_BATCH))
        wire = ingest.batch(self.keys[node], node, seq, events, self.central)
        r = (client.post if client is not None else httpx.post)(
            f"{host.url}/api/v1/batches", content=wire, headers={"content-type": BATCH_TYPE},
            timeout=30.0)
        assert r.status_code == 200, (host.data_dir.name, r.status_code, r.text)
        # Signed with the one central identity, whichever host answered.
        ack = Ack.verify(r.json()["ack"], self.central.keys.signing_public)
        assert ack.node == node and ack.batch_seq == seq and ack.count == len(events), ack
        with self.lock:
            self.sent.add((node, seq))
        return node, seq


def projected(engine: sa.Engine, node: str, seq: int) -> bool:
    b = db.batches.c
    with engine.connect() as conn:
        row = conn.execute(sa.select(b.pending).where(b.node == node, b.batch_seq == seq)).first()
    return row is not None and row.pending is None


def holder_of(engine: sa.Engine, hosts: list[CentralHost]) -> tuple[CentralHost, int] | None:
    """The central whose projector holds the lock now, and the projector's pid."""
    with engine.connect() as conn:
        holders = lock_holders(conn)
    assert len(holders) <= 1, holders
    for h in holders:
        for host in hosts:
            if host.alive() and host.proc is not None and parent_of(h.pid) == host.proc.pid:
                return host, h.pid
    return None


@pytest.fixture
def pg_url(postgres_url: str) -> str:
    return postgres_url


@pytest.fixture
def hosts(tmp_path: Path, pg_url: str) -> Iterator[tuple[CentralHost, CentralHost]]:
    a = init_central(tmp_path, "host-a", pg_url)
    b = CentralHost(tmp_path / "host-b", free_port())
    second_host(a.data_dir, b.data_dir, b.port)
    try:
        yield a, b
    finally:
        for host in (a, b):
            host.stop()


@pytest.mark.timeout(600)
def test_two_hosts_ingest_and_the_projector_fails_over(
        hosts: tuple[CentralHost, CentralHost], pg_url: str) -> None:
    a, b = hosts
    central = load_central(a.data_dir)
    engine = db.make_engine(pg_url)
    try:
        sender = Sender(central, engine, nodes=4)
        nodes = list(sender.keys)
        a.start()
        held = wait(lambda: holder_of(engine, [a, b]), 30, "host A's projector takes the lock")
        assert held[0] is a
        b.start()
        # B stands by: A keeps the lock while B's projector runs.
        time.sleep(STANDBY_POLL_S * 3)
        assert holder_of(engine, [a, b]) == held
        assert "projector standing by" in b.log_tail()

        # Both hosts ingest (each answers with the one central identity's ack).
        for i, node in enumerate(nodes * 3):
            sender.send(a if i % 2 else b, node)
        wait(lambda: all(projected(engine, n, s) for n, s in sender.sent), 30,
             "batches from both hosts projected")

        # Batches keep arriving at both hosts throughout (as behind nginx).
        stop = threading.Event()
        errors: list[BaseException] = []

        ready = {a, b}  # the hosts a proxy would send to (the test changes it)

        def keep_sending() -> None:
            i = 0
            while not stop.is_set():
                live = sorted(ready, key=lambda h: h.port)
                node = nodes[i % len(nodes)]
                if live:
                    host = live[i % len(live)]
                    with sender.lock:
                        seq = sender.next[node]
                        sender.next[node] += 1
                    while not stop.is_set():
                        try:
                            sender.send(host, node, seq)
                            break
                        except (AssertionError, httpx.HTTPError) as exc:
                            if host in ready:
                                errors.append(exc)
                                return
                        # The host died under this batch: the same batch goes elsewhere,
                        # as a node retries it.
                        host = next(iter(sorted(ready, key=lambda h: h.port)), host)
                        stop.wait(0.05)
                i += 1
                stop.wait(0.05)

        background = threading.Thread(target=keep_sending, daemon=True)
        background.start()
        times: list[tuple[str, float]] = []

        def failover(what: str, kill: Callable[[], None], survivor: CentralHost,
                     dies: CentralHost | None = None) -> None:
            ready.discard(dies)  # type: ignore[arg-type]
            t0 = time.monotonic()
            kill()
            node, seq = sender.send(survivor, nodes[0])
            wait(lambda: projected(engine, node, seq), FAILOVER_LIMIT_S * 2,
                 f"a batch projected after {what}")
            took = time.monotonic() - t0
            times.append((what, took))
            now = wait(lambda: holder_of(engine, [a, b]), 30, "a new lock holder")
            print(f"failover after {what}: {took:.2f} s (now {now[0].data_dir.name})")

        try:
            # 1: the holder's whole central dies; B's standby takes over.
            failover("SIGKILL of host A's central", a.kill, b, a)
            assert holder_of(engine, [a, b])[0] is b  # type: ignore[index]
            a.start()  # back as a standby
            ready.add(a)
            # 2: only the holder's projector process dies (its supervisor restarts
            # it later; A's standby is quicker).
            wait(lambda: "projector standing by" in a.log_tail(5), 60, "A standing by")
            _, pid = holder_of(engine, [a, b])  # type: ignore[misc]
            mark = b.log_path.stat().st_size
            failover("SIGKILL of host B's projector", lambda: os.kill(pid, signal.SIGKILL), b)
            # 3: the whole central of whichever holds it now, once the other's
            # projector stands by again (B's supervisor restarts it after ~2 s).
            owner = holder_of(engine, [a, b])
            assert owner is not None
            other = b if owner[0] is a else a
            if other is b:
                wait(lambda: "projector standing by" in b.log_path.read_text()[mark:], 60,
                     "B's restarted projector standing by")
            failover(f"SIGKILL of {owner[0].data_dir.name}'s central", owner[0].kill, other,
                     owner[0])
        finally:
            stop.set()
            background.join(30)
        assert not errors, errors

        live = next(h for h in (a, b) if h.alive())
        for node in nodes:
            sender.send(live, node)
        wait(lambda: all(projected(engine, n, s) for n, s in sender.sent), 60,
             "every batch projected")
        with engine.connect() as conn:
            report_events = conn.execute(sa.select(sa.func.count()).select_from(db.events)
                                         .where(db.events.c.kind == "report")).scalar_one()
            reports = conn.execute(sa.select(sa.func.count()).select_from(db.reports)
                                   ).scalar_one()
            routed = conn.execute(sa.text("SELECT coalesce(sum(n), 0) FROM report_counts")
                                  ).scalar_one()
            unprojected = conn.execute(
                sa.text("SELECT count(*) FROM events e LEFT JOIN reports r ON r.event_id = e.id"
                        " WHERE e.kind = 'report' AND r.event_id IS NULL")).scalar_one()
            pending = conn.execute(sa.select(sa.func.count()).select_from(db.batches)
                                   .where(db.batches.c.pending.isnot(None))).scalar_one()
        sent_events = len(sender.sent) * EVENTS_PER_BATCH
        # Exactly once: every report event has its one row, counted once by the
        # report_counts trigger (a second insert would have counted again).
        assert report_events == sent_events
        assert reports == sent_events and routed == sent_events and unprojected == 0
        assert pending == 0
        took = [t for _, t in times]
        print(f"failover s: min {min(took):.2f} median {statistics.median(took):.2f} "
              f"max {max(took):.2f} over {len(took)}; {len(sender.sent)} batches")
        assert max(took) < FAILOVER_LIMIT_S, times
    finally:
        engine.dispose()


@pytest.mark.timeout(300)
def test_a_central_with_other_keys_is_refused(tmp_path: Path, pg_url: str) -> None:
    a = init_central(tmp_path, "host-a", pg_url)
    a.start()
    try:
        # Another `bart central init` on the same database: other keys altogether.
        c = init_central(tmp_path, "host-c", pg_url)
        # A copy that forgot cap/: central makes a CAP key of its own at load.
        d = CentralHost(tmp_path / "host-d", free_port())
        second_host(a.data_dir, d.data_dir, d.port, with_cap=False)
        for host, differs in ((c, "signing key (keys/)"), (d, "CAP signing key (cap/)")):
            env = {k: v for k, v in os.environ.items() if not k.startswith("BART_")}
            result = subprocess.run([BART, "central", "run", "--data-dir", str(host.data_dir)],
                                    capture_output=True, text=True, timeout=120, env=env)
            assert result.returncode == 1, result.stderr
            assert "this database belongs to central central-haaglanden" in result.stderr
            assert differs in result.stderr, result.stderr
            assert "fix: copy keys/, ca/ and cap/ from the first host" in result.stderr
            assert "Traceback" not in result.stderr
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"{host.url}/healthz", timeout=1.0)
        assert httpx.get(f"{a.url}/healthz", timeout=5.0).status_code == 200
    finally:
        a.stop()


@pytest.mark.timeout(120)
def test_a_lost_lock_session_sends_the_projector_to_standby(
        tmp_path: Path, pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The lock's session carries keepalives (a vanished host is dropped by
    PostgreSQL in ~25 s); a projector whose session is ended stops projecting,
    stands by and takes the lock again when it is free."""
    central = ingest.new_central(tmp_path, pg_url)
    engine = db.make_engine(pg_url)
    first, second, lock = ProjectorLock(pg_url), ProjectorLock(pg_url), ProjectorLock(pg_url)
    stop = threading.Event()
    worker: threading.Thread | None = None
    try:
        assert first.try_acquire() and first.held()
        conn = first._connection()
        assert conn.execute(sa.text("SHOW tcp_keepalives_idle")).scalar_one() == "10"
        assert conn.execute(sa.text("SHOW tcp_keepalives_interval")).scalar_one() == "5"
        assert conn.execute(sa.text("SHOW tcp_keepalives_count")).scalar_one() == "3"
        assert not second.try_acquire()
        first.close()
        assert second.try_acquire()  # released at once on a clean close

        # A projector holding it through run_when_holding; its session is ended.
        second.close()
        projector = Projector(engine, central_origin=central.origin)
        caplog.set_level("INFO", logger="central.projector")
        worker = threading.Thread(target=run_when_holding, args=(projector, lock, stop),
                                  kwargs={"poll_s": 0.05, "standby_s": 0.1}, daemon=True)
        worker.start()

        def holder_pid() -> int | None:
            with engine.connect() as c:
                return c.execute(sa.text(
                    "SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted "
                    "AND l.classid = 1111577172 AND l.objid = 1")).scalar()

        pid = wait(holder_pid, 10, "the projector takes the lock")
        with engine.connect() as c:
            c.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        again = wait(lambda: (holder_pid() or pid) != pid and holder_pid(), 10,
                     "the lock taken again on a new session")
        assert again != pid
        assert "projector lock lost" in caplog.text
        assert caplog.text.count("this process projects now") == 2
    finally:
        stop.set()
        if worker is not None:
            worker.join(10)
        for each in (first, second, lock):
            each.close()
        engine.dispose()


# ------------------------------------------------------------------ behind nginx


DOCS = Path(__file__).resolve().parents[2] / "docs" / "central-scale.md"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A TLS certificate for 127.0.0.1 and its key (the test's stand-in for Let's Encrypt)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "fullchain.pem", folder / "privkey.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def documented_nginx(folder: Path, a: CentralHost, b: CentralHost, http: int,
                     https: int) -> Path:
    """docs/central-scale.md's nginx config, with this test's addresses, ports and
    certificate, inside a main config that keeps nginx's files in ``folder``."""
    text = DOCS.read_text()
    site = text.split("```nginx\n", 1)[1].split("```", 1)[0]
    cert, key = self_signed(folder)
    for old, new in (("10.0.0.11:8090", f"127.0.0.1:{a.port}"),
                     ("10.0.0.12:8090", f"127.0.0.1:{b.port}"),
                     ("listen 80;", f"listen 127.0.0.1:{http};"),
                     ("listen 443 ssl http2;", f"listen 127.0.0.1:{https} ssl http2;"),
                     ("/etc/letsencrypt/live/bart.example.nl/fullchain.pem", str(cert)),
                     ("/etc/letsencrypt/live/bart.example.nl/privkey.pem", str(key))):
        assert old in site, f"{old} no longer in docs/central-scale.md's nginx config"
        site = site.replace(old, new)
    (folder / "site.conf").write_text(site)
    temp = " ".join(f"{kind}_temp_path {folder / kind};"
                    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = folder / "nginx.conf"
    conf.write_text(
        f"daemon off;\nworker_processes 1;\npid {folder / 'nginx.pid'};\n"
        f"error_log {folder / 'error.log'} info;\n"
        + ("user root;\n" if os.geteuid() == 0 else "")
        + "events { worker_connections 256; }\n"
        f"http {{ access_log off; {temp} include {folder / 'site.conf'}; }}\n")
    return conf


def ingested(metrics_port: int) -> float:
    """``bart_central_ingest_seconds_count`` of one host's /metrics."""
    r = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10.0)
    for line in r.text.splitlines():
        if line.startswith("bart_central_ingest_seconds_count"):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.timeout(600)
def test_the_documented_nginx_config_in_front_of_two_hosts(
        hosts: tuple[CentralHost, CentralHost], pg_url: str, tmp_path: Path) -> None:
    """TLS, both upstreams ingest, batches go on when a host dies, staff sessions
    hold on either host, and /staff/live streams through the proxy at once."""
    nginx = require_binary("nginx", "/usr/sbin/nginx")
    a, b = hosts
    folder = tmp_path / "nginx"
    folder.mkdir()
    http, https = free_port(), free_port()
    conf = documented_nginx(folder, a, b, http, https)
    checked = subprocess.run([nginx, "-t", "-p", str(folder), "-c", str(conf)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    metrics = {a: free_port(), b: free_port()}
    for host in (a, b):
        host.start("--metrics-port", str(metrics[host]))
    proxy = subprocess.Popen([nginx, "-p", str(folder), "-c", str(conf)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                             start_new_session=True)
    central = load_central(a.data_dir)
    engine = db.make_engine(pg_url)
    tls = httpx.Client(base_url=f"https://127.0.0.1:{https}",
                       verify=ssl.create_default_context(cafile=folder / "fullchain.pem"),
                       timeout=30.0)
    try:
        wait(lambda: tls.get("/healthz").status_code == 200, 30, "central through nginx")
        redirect = httpx.get(f"http://127.0.0.1:{http}/staff", timeout=10.0)
        assert redirect.status_code == 301
        assert redirect.headers["location"].startswith("https://")

        sender = Sender(central, engine, nodes=2)
        node = next(iter(sender.keys))
        front = CentralHost(folder, https)  # what nodes and staff see: the proxy
        front.scheme = "https"
        for _ in range(10):
            sender.send(front, node, client=tls)
        # Round robin: both hosts took batches.
        counts = {h: ingested(p) for h, p in metrics.items()}
        assert counts[a] >= 1 and counts[b] >= 1 and sum(counts.values()) == 10, counts

        # A desk member logs in through the proxy; the session is good on both hosts.
        otp = StaffAccounts(engine).add("meldkamer-1", "police")
        page = tls.get("/staff/login")
        token = re.search(r'name="login_token" value="([^"]+)"', page.text)
        assert token, page.text[:300]
        r = tls.post("/staff/login", data={"name": "meldkamer-1", "password": otp,
                                           "login_token": token.group(1)})
        assert r.status_code == 303 and r.headers["location"] == "/staff/password", r.text
        page = tls.get("/staff/password")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf, page.text[:300]
        r = tls.post("/staff/password", data={"csrf": csrf.group(1), "old": otp,
                                              "new": STAFF_PASSWORD,
                                              "repeat": STAFF_PASSWORD})
        assert r.status_code == 303, r.text[:300]
        for _ in range(4):  # alternately on A and B
            assert tls.get("/staff/reports").status_code == 200

        # The desk's live stream: its first event through nginx at once.
        started = time.monotonic()
        with tls.stream("GET", "/staff/live", timeout=30.0) as live:
            assert live.status_code == 200
            assert live.headers["content-type"].startswith("text/event-stream")
            got = b""
            for chunk in live.iter_bytes():
                got += chunk
                if b"event: desk" in got:
                    break
        first_event_s = time.monotonic() - started
        assert b"retry: 2000" in got and first_event_s < 5.0, (got, first_event_s)

        # Host A dies: nodes' batches go on through the proxy, to B.
        a.kill()
        before = ingested(metrics[b])
        for _ in range(6):
            sender.send(front, node, client=tls)
        assert ingested(metrics[b]) - before == 6
        assert tls.get("/staff/reports").status_code == 200  # the session, now on B alone
        wait(lambda: all(projected(engine, n, s) for n, s in sender.sent), 60,
             "everything sent through nginx projected")
        print(f"/staff/live first event through nginx after {first_event_s * 1000:.0f} ms")
    finally:
        tls.close()
        os.killpg(proxy.pid, signal.SIGTERM)
        proxy.wait(30)
        engine.dispose()
