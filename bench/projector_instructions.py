"""Central's projector in instructions: triage and the reports insert, counted (issue 15).

valgrind's callgrind counts the instructions of ``Projector.drain`` (central/
projector.py: read a batch's report events back, parse, triage by the shipped
rules, insert the ``reports`` rows and their counts, clear the batch) over N
stored batches of 1,000 realistic report events on SQLite, as the difference
between a run that drains N batches and one that drains none, so that
start-up cancels out. Like ``ingest_instructions.py`` for the worker: the
same count on a busy or a quiet machine (to a few instructions per event),
for A/B of the projector, where ``central_sync.py``'s CPU figures move by
±10 % with the machine's load. Instructions are not time (the insert waits
on memory more than the triage does): only the direction carries over.

Usage: .venv/bin/python bench/projector_instructions.py [--batches 10]
Needs valgrind (Debian package ``valgrind``; ``install.sh --dev`` installs it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PYTHON, REPO, describe, load_reports


def prepare(work: Path, n: int) -> None:
    """A central under ``work`` whose store holds 1 + ``n`` ingested, unprojected batches."""
    from central_sync import BATCH, enrolled_central, report_events, sealed_batches

    from central.ingest import Ingest

    central, engine, keys = enrolled_central(work / "central", "")
    ingest = Ingest(engine, central)
    for wire in sealed_batches(central, keys,
                               report_events(keys, 1, (1 + n) * BATCH, load_reports())):
        ingest.handle(wire)
    engine.dispose()


def child(work: Path, n: int) -> None:
    """One counted run on a fresh copy of the central: one batch to warm up, then
    the other ``n`` (0: start-up and the warm batch only)."""
    from central import db
    from central.identity import load_central
    from central.projector import Projector
    from central.triage import router_for

    copy = Path(tempfile.mkdtemp(prefix="bart-bench-proj-"))
    try:
        shutil.copytree(work / "central", copy / "central")
        central = load_central(copy / "central", database_url=None)
        engine = db.make_engine(central.database_url)
        projector = Projector(engine, router_for(central.data_dir),
                              central_origin=central.origin)
        projector.run_once(1)
        if n:
            projector.drain()
        engine.dispose()
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def counted(work: Path, n: int) -> int:
    """Instructions of one child run under callgrind."""
    out = work / f"callgrind.{n}"
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                    str(PYTHON), __file__, "--child", "--work", str(work), "--batches", str(n)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONHASHSEED": "0"}, cwd=REPO)
    for line in out.read_text(errors="replace").splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no summary in {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batches", type=int, default=10, help="batches of 1,000 counted")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.work, args.batches)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: apt-get install valgrind (or ./install.sh --dev)",
              file=sys.stderr)
        return 2
    n = args.batches
    print(f"bench/projector_instructions.py — {describe()}, {n} batches of 1,000 counted")
    with tempfile.TemporaryDirectory(prefix="bart-bench-proj-") as tmp:
        work = Path(tmp)
        prepare(work, n)
        with ThreadPoolExecutor(2) as pool:
            none, some = pool.map(lambda k: counted(work, k), (0, n))
    print(f"  projector (Projector.drain, SQLite, in-process): "
          f"{(some - none) / (n * 1000):,.0f} instructions per event")
    return 0


if __name__ == "__main__":
    sys.exit(main())
