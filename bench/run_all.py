"""Run every benchmark in turn and repeat their RESULT lines at the end.

Run: ``.venv/bin/python bench/run_all.py [--quick]``. Exit status 0 only when
every benchmark ran and met its goal; 1 when one missed its goal; 2 or more when
one failed (errors, lost messages, a durability check that did not hold). Each
benchmark starts and stops its own node on free ports; nothing else should load
the machine meanwhile.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("ingest", "latency", "idle")


def main() -> int:
    """Run each benchmark as its own process; summarise."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="pass --quick to each benchmark")
    ap.add_argument("only", nargs="*", help=f"run only these of {', '.join(BENCHMARKS)}")
    args = ap.parse_args()
    if unknown := set(args.only) - set(BENCHMARKS):
        ap.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    summary: list[str] = []
    worst = 0
    for name in args.only or BENCHMARKS:
        cmd = [sys.executable, str(HERE / f"{name}.py"), *(["--quick"] if args.quick else [])]
        print(f"=== {' '.join(cmd)}", flush=True)
        start = time.monotonic()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
        print(proc.stdout, end="", flush=True)
        results = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
        status = {0: "goal met", 1: "goal NOT met"}.get(proc.returncode,
                                                        f"FAILED (exit {proc.returncode})")
        summary += results or [f"RESULT {name}: no result"]
        summary.append(f"  -> {name}: {status} in {time.monotonic() - start:.0f} s")
        worst = max(worst, proc.returncode)
    print("=== summary")
    print("\n".join(summary))
    return worst


if __name__ == "__main__":
    sys.exit(main())
