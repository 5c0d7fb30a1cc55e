"""Durable report ingest: the node's POST /api/v1/reports against two baselines.

Three servers, each ``bart node run`` on a fresh ``bart node init`` data
directory, so the same CLI, settings, uvicorn settings, guarded h11 protocol
and ASGI entry (``StreamLimit`` → ``CaptivePortal`` → ``ReportIngest``) with the
same parsing and validation (``node.portal.intake``); only the storing differs
(``bench/_baseline_app.py``):

* **node** — the real node: two signed events, group-committed SQLite
  (``synchronous=FULL``), MQTT fan-out through its Mosquitto;
* **lean** — validates and answers 201, stores nothing;
* **naive** — one connection (WAL, ``synchronous=FULL``), INSERT + COMMIT of
  each request in its own transaction on one writer thread.

Each run starts the three one after the other (the order rotates from run to
run) under the same wrk parameters (``-t2 -c64``), servers pinned to CPU 0 and
wrk to CPU 1; afterwards the stored rows of node and naive must be at least
their 201 answers. Per run: req/s, p50/p99, CPU per request, node/naive and
node/lean. Summary: min/median/max of each figure and the **median of the
per-run ratios**; goal: node ≥ 1.2 × naive req/s.

``--fsync-ms 2`` simulates a slow disk for all three servers alike: an
LD_PRELOAD shim (``bench/slowfsync.c``, compiled here with ``cc``) makes every
fsync/fdatasync sleep that much longer.

Run: ``.venv/bin/python bench/ingest.py [--quick] [--runs 5] [--fsync-ms 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    PYTHON,
    REPO,
    Node,
    Procs,
    cpu_seconds,
    describe,
    load_reports,
    pinned,
    wait_healthy,
)

SERVER_CORE = 0
WRK_CORE = 1
GOAL = 1.2  # node req/s over the naive handler's, median of the runs' ratios
SERVERS = ("node", "naive", "lean")
SHIM = REPO / "bench" / "slowfsync.c"

LUA = r"""
local bodies = {
%(bodies)s
}
local n = #bodies
local i = 0
local headers = {["Content-Type"] = "application/json"}
local threads = {}

function setup(thread)
  thread:set("offset", #threads * 97)
  table.insert(threads, thread)
end

function init(args)
  i = offset
  created = 0
  other = 0
  codes = {}
end

function request()
  i = i %% n + 1
  return wrk.format("POST", "/api/v1/reports", headers, bodies[i])
end

function response(status, hdrs, body)
  if status == 201 then
    created = created + 1
  else
    other = other + 1
    codes[status] = (codes[status] or 0) + 1
  end
end

function done(summary, latency, requests)
  local c, o, sums, codes_all = 0, 0, {}, {}
  for _, t in ipairs(threads) do
    c = c + t:get("created")
    o = o + t:get("other")
    for k, v in pairs(t:get("codes")) do
      sums[k] = (sums[k] or 0) + v
    end
  end
  for k, v in pairs(sums) do
    table.insert(codes_all, string.format('"%%d":%%d', k, v))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%%d,"duration_us":%%d,"created":%%d,"other":%%d,' ..
    '"codes":{%%s},"connect":%%d,"read":%%d,"write":%%d,"timeout":%%d,' ..
    '"p50":%%d,"p90":%%d,"p99":%%d,"max":%%d}\n',
    summary.requests, summary.duration, c, o, table.concat(codes_all, ","),
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def lua_script(bodies: list[str]) -> str:
    """A wrk script rotating among ``bodies`` and counting non-201 answers."""
    items = []
    for body in bodies:
        level = "=" * 3
        while f"]{level}]" in body:
            level += "="
        items.append(f"  [{level}[{body}]{level}]")
    return LUA % {"bodies": ",\n".join(items)}


def run_wrk(url: str, script: Path, args: argparse.Namespace, seconds: float) -> dict[str, Any]:
    """One wrk run pinned to WRK_CORE; the figures printed by the script's done()."""
    cmd = pinned(["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds:g}s",
                  "--timeout", "10s", "-s", str(script), url + "/api/v1/reports"], WRK_CORE)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no figures:\n{out}")
    result: dict[str, Any] = json.loads(line[6:])
    return result


def measure(name: str, url: str, pids: list[int], script: Path,
            args: argparse.Namespace) -> dict[str, Any]:
    """Warm up, then the measured run; CPU seconds used by ``pids`` during it."""
    warm = run_wrk(url, script, args, args.warmup)
    cpu0 = [cpu_seconds(p) for p in pids]
    res = run_wrk(url, script, args, args.duration)
    res["cpu"] = [cpu_seconds(p) - c for p, c in zip(pids, cpu0, strict=True)]
    res["warm_created"] = warm["created"]
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
    res["errors"] = res["other"] + res["connect"] + res["read"] + res["write"] + res["timeout"]
    res["cpu_us"] = sum(res["cpu"]) / res["requests"] * 1e6 if res["requests"] else 0.0
    cpu = " + ".join(f"{c:.1f}" for c in res["cpu"])
    print(f"  {name:>5}: {res['rps']:6.0f} req/s  p50 {res['p50'] / 1000:6.2f} ms  "
          f"p99 {res['p99'] / 1000:6.2f} ms  max {res['max'] / 1000:6.0f} ms  "
          f"CPU {res['cpu_us']:4.0f} us/req ({cpu} s)  201s {res['created']}  "
          f"errors {res['errors']} {res['codes'] or ''}", flush=True)
    return res


def count_reports(db: Path) -> tuple[int, int, int]:
    """(report rows, all event rows, distinct commit timestamps of report rows)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        reports = conn.execute("SELECT COUNT(*) FROM events WHERE kind='report'").fetchone()[0]
        events = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        commits = conn.execute("SELECT COUNT(DISTINCT received_at) FROM events "
                               "WHERE kind='report'").fetchone()[0]
    finally:
        conn.close()
    return int(reports), int(events), int(commits)


def naive_rows(db: Path) -> int:
    """Reports the naive handler stored."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM reports").fetchone()[0])
    finally:
        conn.close()


def build_shim(tmp: Path, delay_ms: float) -> dict[str, str]:
    """Compile bench/slowfsync.c; the environment that slows fsync by ``delay_ms``."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("--fsync-ms needs a C compiler (cc): ./install.sh --dev installs gcc")
    lib = tmp / "slowfsync.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(SHIM), "-ldl"],
                   check=True)
    env = {"LD_PRELOAD": str(lib), "BART_FSYNC_DELAY_US": str(round(delay_ms * 1000))}
    # Proof that it works here: 20 commits with synchronous=FULL, with and without it.
    probe = ("import sqlite3,sys,time\n"
             "c=sqlite3.connect(sys.argv[1],isolation_level=None)\n"
             "c.execute('PRAGMA journal_mode=WAL');c.execute('PRAGMA synchronous=FULL')\n"
             "c.execute('CREATE TABLE IF NOT EXISTS t(x)');t=time.perf_counter()\n"
             "for i in range(20): c.execute('INSERT INTO t VALUES (?)',(i,))\n"
             "print((time.perf_counter()-t)/20*1000)")
    plain = float(subprocess.run([str(PYTHON), "-c", probe, str(tmp / "probe.db")],
                                 capture_output=True, text=True, check=True).stdout)
    slow = float(subprocess.run([str(PYTHON), "-c", probe, str(tmp / "probe.db")],
                                capture_output=True, text=True, check=True,
                                env={**os.environ, **env}).stdout)
    print(f"slow disk: LD_PRELOAD {lib.name} adds {delay_ms:g} ms to every fsync/fdatasync "
          f"of all three servers (and the node's Mosquitto); check: a COMMIT took "
          f"{plain:.2f} ms without it, {slow:.2f} ms with it")
    if slow < plain + 0.8 * delay_ms:
        raise SystemExit("the fsync shim had no effect here; not measuring")
    return env


def serve(kind: str, procs: Procs, env: dict[str, str]) -> tuple[Node, list[int]]:
    """Start server ``kind`` on a fresh data directory; (its node, pids to count CPU of)."""
    node = Node(procs, core=SERVER_CORE)
    node.env.update(env)
    # wrk's 64 connections all come from 127.0.0.1, over the node's cap of
    # MAX_CONNECTIONS_PER_CLIENT per address (64 residents would have 64
    # addresses): the bench's address is exempt, as a trusted proxy is. The same
    # for all three servers (uvicorn then also reads X-Forwarded-For; wrk sends none).
    node.env["BART_TRUSTED_PROXIES"] = '["127.0.0.1"]'
    if kind == "node":
        node.start()
        assert node.mosquitto_pid is not None
        return node, [node.pid, node.mosquitto_pid]
    node.cmd = pinned([str(PYTHON), str(REPO / "bench/_baseline_app.py"), kind, "node", "run",
                       "--data-dir", str(node.data_dir)], SERVER_CORE)
    node.proc = procs.start(node.cmd, kind, env=node.env)
    wait_healthy(node.url, node.proc, 30)
    return node, [node.pid]


def one_run(i: int, tmp: Path, script: Path, args: argparse.Namespace,
            env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The three servers one after the other (order rotated by ``i``); their figures."""
    order = SERVERS[i % 3:] + SERVERS[:i % 3]
    print(f"run {i + 1}/{args.runs} (order {', '.join(order)}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())})", flush=True)
    out: dict[str, dict[str, Any]] = {}
    for kind in order:
        with Procs(tmp / f"run{i + 1}-{kind}") as procs:
            node, pids = serve(kind, procs, env)
            res = measure(kind, node.url, pids, script, args)
            time.sleep(0.3)
            node.stop()
        answered = res["created"] + res["warm_created"]
        if kind == "node":
            stored, events, commits = count_reports(node.data_dir / "node.db")
            res["per_commit"] = stored / commits if commits else 0.0
            print(f"         node stored {stored} reports (+{events - stored} other events) "
                  f"in >= {commits} commits (<= {res['per_commit']:.1f} reports per COMMIT)")
        elif kind == "naive":
            stored = naive_rows(node.data_dir / "naive.db")
        else:
            stored = answered  # stores nothing by design
        res["durable"] = stored >= answered
        if not res["durable"]:
            print(f"         {kind}: only {stored} rows stored for {answered} answers 201: "
                  "DURABILITY FAILED")
        out[kind] = res
    n, naive, lean = out["node"], out["naive"], out["lean"]
    print(f"  ratios: node/naive req/s {n['rps'] / naive['rps']:.2f}, node/lean "
          f"{n['rps'] / lean['rps']:.2f}; p50 node/naive {n['p50'] / naive['p50']:.2f}, "
          f"p99 node/naive {n['p99'] / naive['p99']:.2f}", flush=True)
    if not args.keep:
        for kind in SERVERS:
            shutil.rmtree(tmp / f"run{i + 1}-{kind}", ignore_errors=True)
    return out


def spread(values: list[float], fmt: str = "{:.0f}") -> str:
    """min / median / max of ``values`` as text."""
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values),
                                              max(values)))


def main() -> int:
    """Run ``--runs`` rounds of node, naive and lean; print the medians of the ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 s runs instead of 10 s")
    ap.add_argument("--duration", type=float, help="seconds per measured run")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per server")
    ap.add_argument("--runs", type=int, default=5, help="rounds of the three servers (>= 1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--fsync-ms", type=float, default=0.0,
                    help="simulate a slow disk: every fsync/fdatasync takes this much longer")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    args.duration = args.duration or (5.0 if args.quick else 10.0)
    if args.runs < 1:
        ap.error("--runs must be at least 1")

    bodies = [json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in load_reports()]
    tmp = Path(tempfile.mkdtemp(prefix="bart-bench-ingest-"))
    script = tmp / "reports.lua"
    script.write_text(lua_script(bodies), encoding="utf-8")
    print(f"ingest: {len(bodies)} distinct report bodies (tests/data/reports.jsonl, "
          f"non-adversarial); wrk -t{args.threads} -c{args.connections} "
          f"-d{args.duration:g}s after {args.warmup:g}s warm-up; {args.runs} runs")
    print(f"{describe()}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"pinning: servers (uvicorn + the node's Mosquitto) on CPU {SERVER_CORE}, wrk on CPU "
          f"{WRK_CORE} (taskset); both share this {os.cpu_count()}-CPU machine")
    runs: list[dict[str, dict[str, Any]]] = []
    try:
        env = build_shim(tmp, args.fsync_ms) if args.fsync_ms > 0 else {}
        for i in range(args.runs):
            runs.append(one_run(i, tmp, script, args, env))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    disk = f"fsync +{args.fsync_ms:g} ms" if args.fsync_ms > 0 else "disk as is"
    print(f"summary over {len(runs)} runs ({disk}), min / median / max; load average now "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}:")
    for kind in SERVERS:
        rs = [r[kind] for r in runs]
        print(f"  {kind:>5}: req/s {spread([r['rps'] for r in rs])}; p50 ms "
              f"{spread([r['p50'] / 1000 for r in rs], '{:.1f}')}; p99 ms "
              f"{spread([r['p99'] / 1000 for r in rs], '{:.1f}')}; CPU us/req "
              f"{spread([r['cpu_us'] for r in rs])}")
    per_commit = [r["node"]["per_commit"] for r in runs]
    print(f"  node: <= {spread(per_commit, '{:.1f}')} reports per COMMIT")
    ratios = {
        "node/naive req/s": [r["node"]["rps"] / r["naive"]["rps"] for r in runs],
        "node/lean req/s": [r["node"]["rps"] / r["lean"]["rps"] for r in runs],
        "node/naive p50": [r["node"]["p50"] / r["naive"]["p50"] for r in runs],
        "node/naive p99": [r["node"]["p99"] / r["naive"]["p99"] for r in runs],
        "node/naive CPU per request": [r["node"]["cpu_us"] / r["naive"]["cpu_us"]
                                       for r in runs],
    }
    for name, values in ratios.items():
        print(f"  {name}: median {statistics.median(values):.2f} (runs "
              f"{', '.join(f'{v:.2f}' for v in values)})")
    sound = all(r[k]["durable"] and r[k]["errors"] == 0 for r in runs for k in SERVERS)
    if not sound:
        print("UNSOUND: non-201 answers, socket errors or fewer stored rows than 201s above")
    med = statistics.median(ratios["node/naive req/s"])
    print(f"RESULT ingest ({disk}): node/naive req/s = {med:.2f}, median of {len(runs)} runs "
          f"(goal >= {GOAL}) {'MET' if med >= GOAL else 'NOT MET'}; node "
          f"{statistics.median(r['node']['rps'] for r in runs):.0f} req/s, naive "
          f"{statistics.median(r['naive']['rps'] for r in runs):.0f}, lean "
          f"{statistics.median(r['lean']['rps'] for r in runs):.0f}; node/lean "
          f"{statistics.median(ratios['node/lean req/s']):.2f}; p99 node/naive "
          f"{statistics.median(ratios['node/naive p99']):.2f}")
    if args.keep:
        print(f"kept {tmp}")
    return 0 if sound and med >= GOAL else 1 if sound else 2


if __name__ == "__main__":
    sys.exit(main())
