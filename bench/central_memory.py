"""Memory of ``bart central run --workers N``: RSS and PSS of every process, summed.

A central is made (``bart central init``, SQLite, a temporary directory) and run
with ``--workers N`` (default 2); once ``/healthz`` answers, R requests (default
100) go alternately to ``/staff/login`` (a page: templates, catalogues, the
session machinery) and ``/api/v1/cap/alerts.xml`` (the CAP index), then after a
2-s pause every process under ``bart central run`` (the supervisor, the HTTP
workers, the projector, anything else it started) is read from /proc: VmRSS
and the PSS of smaps_rollup. Issue 15's goal is on the sum of RSS: ≤ 250 MB
with two workers (tests/integration/test_central_memory.py checks it).

Baseline, in the same run and with the same requests: ``uvicorn --workers N``
serving a trivial ASGI app (one function that answers 200 with a few bytes),
with central's HTTP options (httptools, no access log): the same server stack
and the same number of serving processes, with uvicorn's own supervisor (its
spawned workers and multiprocessing's resource tracker). What central weighs
above it is its own: FastAPI, SQLAlchemy, cryptography, its code, and the
projector.

``--compare DIR`` measures a central of another checkout as well, in the same
run (``PYTHONPATH=DIR``, e.g. ``git worktree add /tmp/old 24c68aa``).

Run: ``.venv/bin/python bench/central_memory.py [--runs 3] [--workers 2]
[--requests 100] [--compare DIR]``. Figures are min/median/max over the runs;
``uptime`` is printed with them (memory hardly depends on load, but say it).
"""

from __future__ import annotations


async def trivial_app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    """The baseline's whole application (imports nothing)."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,  # type: ignore[operator]
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok\n"})  # type: ignore[operator]


def main() -> int:
    import argparse
    import os
    import signal
    import statistics
    import subprocess
    import sys
    import tempfile
    import time
    import urllib.request
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import REPO, descendants, describe, free_port

    bart = str(Path(sys.executable).parent / "bart")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--requests", type=int, default=100)
    p.add_argument("--compare", metavar="DIR", help="also measure the central of this checkout")
    args = p.parse_args()
    paths = ["/staff/login", "/api/v1/cap/alerts.xml"]

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

    def measure(label: str, proc: subprocess.Popen[bytes], port: int) -> tuple[float, float]:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{label} exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{label}: /healthz did not answer in 120 s") from None
                time.sleep(0.1)
        for i in range(args.requests):
            with urllib.request.urlopen(url + paths[i % len(paths)], timeout=10) as r:
                r.read()
        time.sleep(2.0)
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

    def stop(proc: subprocess.Popen[bytes]) -> None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def central(pythonpath: str | None) -> tuple[float, float]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BART_")}
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        port = free_port()
        with tempfile.TemporaryDirectory(prefix="bench-central-mem-") as d:
            subprocess.run([bart, "central", "init", "--data-dir", d, "--name", "bench",
                            "--http-port", str(port)], check=True, env=env,
                           stdout=subprocess.DEVNULL)
            proc = subprocess.Popen([bart, "central", "run", "--data-dir", d, "--workers",
                                     str(args.workers)], env=env, start_new_session=True,
                                    stdout=subprocess.DEVNULL)
            try:
                return measure(f"central{' of ' + pythonpath if pythonpath else ''}", proc,
                               port)
            finally:
                stop(proc)

    def baseline() -> tuple[float, float]:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(__file__).parent),
             "central_memory:trivial_app", "--workers", str(args.workers), "--port", str(port),
             "--http", "httptools", "--no-access-log", "--log-level", "warning"],
            start_new_session=True, cwd=REPO)
        try:
            return measure("baseline: uvicorn --workers N, trivial ASGI app", proc, port)
        finally:
            stop(proc)

    print(f"central memory, --workers {args.workers}, {args.requests} requests; {describe()}")
    print(f"load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    got: dict[str, list[tuple[float, float]]] = {"central": [], "baseline": [], "compare": []}
    for run in range(args.runs):
        print(f"run {run + 1}/{args.runs}")
        got["baseline"].append(baseline())
        got["central"].append(central(None))
        if args.compare:
            got["compare"].append(central(args.compare))

    def spread(values: list[float], digits: int = 1) -> str:
        return " / ".join(f"{v:6.{digits}f}" for v in
                          (min(values), statistics.median(values), max(values)))

    print(f"\nsummed over every process, MB, min / median / max of {args.runs} runs:")
    for key, label in (("central", "central"), ("compare", f"central of {args.compare}"),
                       ("baseline", "baseline")):
        if got[key]:
            print(f"  {label:<32} RSS {spread([r for r, _ in got[key]])}   "
                  f"PSS {spread([p for _, p in got[key]])}")
    ratios = [c[0] / b[0] for c, b in zip(got["central"], got["baseline"], strict=True)]
    print(f"  central / baseline (RSS, per run)    {spread(ratios, 2)}")
    rss = [r for r, _ in got["central"]]
    if args.workers == 2:
        print(f"goal: summed RSS <= 250 MB with 2 workers: median "
              f"{statistics.median(rss):.1f}, max {max(rss):.1f}: "
              f"{'met in every run' if max(rss) <= 250 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
