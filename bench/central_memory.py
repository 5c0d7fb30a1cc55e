"""Memory of ``bart central run --workers N``: RSS and PSS of every process, summed.

A central is made (``bart central init``, a temporary directory; SQLite, or a
fresh database on PostgreSQL) with an admin, and run with ``--workers N``
(default 2). Once ``/healthz`` answers it is used as staff use it: the admin
logs in with the one-time password and sets their own (scrypt, twice), makes a
broadcast (a CAP document, signed with XML-DSig: lxml and signxml), then R
requests (default 100) go in turn to ``/staff/login`` (a page: templates,
catalogues, the session machinery), ``/api/v1/cap/alerts.xml`` (the CAP index)
and the broadcast's signed CAP document, and every 10th request the logged-in
admin also opens the report list, the insight page and the nodes page. After a
3-s pause (an idle worker hands freed heap back within 2 s, central/server.py)
every process under ``bart central run`` (the supervisor, the HTTP
workers, the projector, anything else it started) is read from /proc: VmRSS
and the PSS of smaps_rollup. Issue 15's goal is on the sum of RSS: ≤ 250 MB
with two workers, on SQLite and on PostgreSQL
(tests/integration/test_central_memory.py checks it).

``--database-url URL`` runs central on PostgreSQL: each run gets a new
database on the server of URL (created through it, dropped after); ``--postgres``
starts a PostgreSQL server of its own for that (as the tests do,
tests/support/postgres.py).

Baseline, in the same run and with the same requests: ``uvicorn --workers N``
serving a trivial ASGI app (one function that answers 200 with a few bytes),
with central's HTTP options (httptools, no access log): the same server stack
and the same number of serving processes, with uvicorn's own supervisor (its
spawned workers and multiprocessing's resource tracker), asked for ``/`` as
often. What central weighs above it is its own: FastAPI, SQLAlchemy, the
database driver, cryptography, lxml, its code, and the projector.

``--compare DIR`` measures a central of another checkout as well, in the same
run (``PYTHONPATH=DIR``, e.g. ``git worktree add /tmp/old 24c68aa``).

Run: ``.venv/bin/python bench/central_memory.py [--runs 3] [--workers 2]
[--requests 100] [--compare DIR] [--database-url URL | --postgres]``. Figures
are min/median/max over the runs; ``uptime`` is printed with them (memory hardly
depends on load, but say it).
"""

from __future__ import annotations


async def trivial_app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    """The baseline's whole application (imports nothing)."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,  # type: ignore[operator]
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"status": "ok"}'})  # type: ignore[operator]


def main() -> int:
    import argparse
    import os
    import re
    import shutil
    import signal
    import statistics
    import subprocess
    import sys
    import tempfile
    import time
    import uuid
    from pathlib import Path

    import httpx

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import REPO, descendants, describe, free_port, wait_healthy

    sys.path.insert(0, str(REPO))
    from tests.support.central import staff_real_use

    bart = str(Path(sys.executable).parent / "bart")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--requests", type=int, default=100)
    p.add_argument("--compare", metavar="DIR", help="also measure the central of this checkout")
    db_opts = p.add_mutually_exclusive_group()
    db_opts.add_argument("--database-url", metavar="URL",
                         help="PostgreSQL: a new database per run on this URL's server")
    db_opts.add_argument("--postgres", action="store_true",
                         help="PostgreSQL: start a server of its own (tests/support/postgres.py)")
    args = p.parse_args()
    password = "een lang wachtwoord voor de beheerder"

    def pss_kb(pid: int) -> int:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
        return 0

    def rss_kb(pid: int) -> int:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def command(pid: int) -> str:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:90]

    def read_tree(label: str, proc: subprocess.Popen[bytes]) -> tuple[float, float]:
        time.sleep(3.0)  # a worker trims its heap within 2 s of its last request
        rows = []
        for pid in [proc.pid, *descendants(proc.pid)]:
            try:
                rows.append((pid, rss_kb(pid) / 1024, pss_kb(pid) / 1024, command(pid)))
            except OSError:  # gone meanwhile
                continue
        print(f"  {label}")
        for pid, rss, pss, cmd in rows:
            print(f"    {pid:>7}  RSS {rss:6.1f}  PSS {pss:6.1f}  {cmd}")
        rss_sum, pss_sum = sum(r[1] for r in rows), sum(r[2] for r in rows)
        print(f"    {'sum':>7}  RSS {rss_sum:6.1f}  PSS {pss_sum:6.1f}  ({len(rows)} processes)")
        return rss_sum, pss_sum

    def use(url: str, otp: str) -> None:
        """Real use (tests.support.central.staff_real_use): a login with a password
        change, a broadcast, signed CAP documents, staff pages."""
        try:
            staff_real_use(url, otp, password, args.requests)
        except AssertionError as exc:
            raise SystemExit(f"central did not answer as staff expect: {exc}") from None

    def stop(proc: subprocess.Popen[bytes]) -> None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    server_url = args.database_url
    pg_server = None
    if args.postgres:
        from tests.support.postgres import PostgresServer

        pg_base = Path(tempfile.mkdtemp(prefix="bench-central-mem-pg-"))
        pg_server = PostgresServer(pg_base)
        pg_server.start()
        server_url = pg_server.url()

    def new_database() -> tuple[str, str]:
        """A new database on ``server_url``'s server: its URL and name ("" on SQLite)."""
        if not server_url:
            return "", ""
        import psycopg

        name = f"bench_mem_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        base = server_url.rsplit("/", 1)[0]
        return f"{base}/{name}", name

    def drop_database(name: str) -> None:
        if name:
            import psycopg

            with psycopg.connect(server_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')

    def central(pythonpath: str | None) -> tuple[float, float]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BART_")}
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        database_url, database = new_database()
        try:
            with tempfile.TemporaryDirectory(prefix="bench-central-mem-") as d:
                subprocess.run([bart, "central", "init", "--data-dir", d, "--name", "bench",
                                "--http-port", str(port), "--public-url", url,
                                *(["--database-url", database_url] if database_url else [])],
                               check=True, env=env, stdout=subprocess.DEVNULL)
                out = subprocess.run([bart, "central", "staff", "add", "Ada Admin", "--role",
                                      "admin", "--data-dir", d], check=True, env=env,
                                     capture_output=True, text=True).stdout
                found = re.search(r"one-time password: (\S+)", out)
                if not found:
                    raise SystemExit(f"bart central staff add: {out}")
                proc = subprocess.Popen([bart, "central", "run", "--data-dir", d, "--workers",
                                         str(args.workers)], env=env, start_new_session=True,
                                        stdout=subprocess.DEVNULL)
                label = f"central{' of ' + pythonpath if pythonpath else ''}"
                try:
                    wait_healthy(url, proc, 120)
                    use(url, found.group(1))
                    return read_tree(label, proc)
                finally:
                    stop(proc)
        finally:
            drop_database(database)

    def baseline() -> tuple[float, float]:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(__file__).parent),
             "central_memory:trivial_app", "--workers", str(args.workers), "--port", str(port),
             "--http", "httptools", "--no-access-log", "--log-level", "warning"],
            start_new_session=True, cwd=REPO)
        label = "baseline: uvicorn --workers N, trivial ASGI app"
        try:
            wait_healthy(url, proc, 120)
            with httpx.Client(base_url=url, timeout=10) as client:
                for _ in range(args.requests):
                    client.get("/").raise_for_status()
            return read_tree(label, proc)
        finally:
            stop(proc)

    backend = "PostgreSQL" if server_url else "SQLite"
    print(f"central memory, --workers {args.workers}, {backend}, real use and "
          f"{args.requests} requests; {describe()}")
    print(f"load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    got: dict[str, list[tuple[float, float]]] = {"central": [], "baseline": [], "compare": []}
    try:
        for run in range(args.runs):
            print(f"run {run + 1}/{args.runs}")
            got["baseline"].append(baseline())
            got["central"].append(central(None))
            if args.compare:
                got["compare"].append(central(args.compare))
    finally:
        if pg_server is not None:
            pg_server.stop()
            shutil.rmtree(pg_server.base, ignore_errors=True)

    def spread(values: list[float], digits: int = 1) -> str:
        return " / ".join(f"{v:6.{digits}f}" for v in
                          (min(values), statistics.median(values), max(values)))

    print(f"\nsummed over every process, MB, min / median / max of {args.runs} runs "
          f"({backend}):")
    for key, label in (("central", "central"), ("compare", f"central of {args.compare}"),
                       ("baseline", "baseline")):
        if got[key]:
            print(f"  {label:<32} RSS {spread([r for r, _ in got[key]])}   "
                  f"PSS {spread([p for _, p in got[key]])}")
    ratios = [c[0] / b[0] for c, b in zip(got["central"], got["baseline"], strict=True)]
    print(f"  central / baseline (RSS, per run)    {spread(ratios, 2)}")
    print(f"load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    rss = [r for r, _ in got["central"]]
    if args.workers == 2:
        print(f"goal: summed RSS <= 250 MB with 2 workers ({backend}): median "
              f"{statistics.median(rss):.1f}, max {max(rss):.1f}: "
              f"{'met in every run' if max(rss) <= 250 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
