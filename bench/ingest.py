"""Durable report ingest: wrk against POST /api/v1/reports of a real node.

Baseline in the same run: ``bench/_baseline_app.py`` (same pydantic model, same
uvicorn settings, stores nothing) under the same wrk parameters. Servers are
pinned to CPU 0 and wrk to CPU 1 with taskset. Afterwards the node's SQLite
must hold at least as many reports as wrk counted 201 answers.

Run: ``.venv/bin/python bench/ingest.py [--quick]``. Goal: node/baseline >= 0.5.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
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
    free_port,
    load_reports,
    pinned,
    ratio,
    wait_healthy,
)

SERVER_CORE = 0
WRK_CORE = 1
GOAL = 0.5

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
    errors = res["other"] + res["connect"] + res["read"] + res["write"] + res["timeout"]
    res["errors"] = errors
    cpu = " + ".join(f"{c:.1f}" for c in res["cpu"])
    print(f"{name:>9}: {res['rps']:8.0f} req/s  p50 {res['p50'] / 1000:6.2f} ms  "
          f"p90 {res['p90'] / 1000:6.2f} ms  p99 {res['p99'] / 1000:6.2f} ms  "
          f"max {res['max'] / 1000:7.1f} ms  201s {res['created']}  errors {errors} "
          f"{res['codes'] or ''}  server CPU {cpu} s in {res['duration_us'] / 1e6:.1f} s")
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


def main() -> int:
    """Run baseline then node with the same wrk parameters; print the ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 s runs instead of 10 s")
    ap.add_argument("--duration", type=float, help="seconds per measured run")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per server")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    args.duration = args.duration or (5.0 if args.quick else 10.0)

    bodies = [json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in load_reports()]
    tmp = Path(tempfile.mkdtemp(prefix="bart-bench-ingest-"))
    script = tmp / "reports.lua"
    script.write_text(lua_script(bodies), encoding="utf-8")
    print(f"ingest: {len(bodies)} distinct report bodies (tests/data/reports.jsonl, "
          f"non-adversarial); wrk -t{args.threads} -c{args.connections} "
          f"-d{args.duration:g}s after {args.warmup:g}s warm-up")
    print(f"{describe()}; load average {os.getloadavg()[0]:.2f}")
    print(f"pinning: servers (uvicorn + its Mosquitto) on CPU {SERVER_CORE}, wrk on CPU "
          f"{WRK_CORE} (taskset); both share this {os.cpu_count()}-CPU machine")
    try:
        with Procs(tmp) as procs:
            port = free_port()
            base = procs.start(pinned([str(PYTHON), str(REPO / "bench/_baseline_app.py"),
                                       str(port)], SERVER_CORE), "baseline")
            wait_healthy(f"http://127.0.0.1:{port}", base, 30)
            b = measure("baseline", f"http://127.0.0.1:{port}", [base.pid], script, args)
            procs.stop(base)

            node = Node(procs, core=SERVER_CORE)
            node.start()
            assert node.mosquitto_pid is not None
            n = measure("node", node.url, [node.pid, node.mosquitto_pid], script, args)
            time.sleep(0.5)
            node.stop()
            reports, events, commits = count_reports(node.data_dir / "node.db")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    answered = n["created"] + n["warm_created"]
    durable = reports >= answered
    sound = durable and n["errors"] == 0 and b["errors"] == 0
    r = n["rps"] / b["rps"] if b["rps"] else 0.0
    print(f"durability: {reports} report rows in SQLite (+{events - reports} alert/other "
          f"rows) >= {answered} answers 201 (warm-up + run): {'OK' if durable else 'FAILED'}")
    print(f"group commit: reports were stored in >= {commits} commits "
          f"(distinct received_at ms) -> <= {ratio(reports, commits)} reports per commit")
    cpu_req = sum(n["cpu"]) / n["requests"] * 1e6 if n["requests"] else 0.0
    cpu_base = sum(b["cpu"]) / b["requests"] * 1e6 if b["requests"] else 0.0
    print(f"server CPU per request: node {cpu_req:.0f} us, baseline {cpu_base:.0f} us "
          f"(ratio {ratio(cpu_req, cpu_base)})")
    print(f"RESULT ingest: node {n['rps']:.0f} req/s, baseline {b['rps']:.0f} req/s, "
          f"ratio node/baseline = {r:.2f} (goal >= {GOAL}) "
          f"{'MET' if r >= GOAL else 'NOT MET'}; p99 node {n['p99'] / 1000:.1f} ms vs "
          f"baseline {b['p99'] / 1000:.1f} ms")
    if args.keep:
        print(f"kept {tmp}")
    return 0 if sound and r >= GOAL else 1 if sound else 2


if __name__ == "__main__":
    sys.exit(main())
