"""Central ingest in instructions: a figure that does not move with the machine (issue #4).

valgrind's callgrind counts the instructions of

* **ingest**: ``Ingest.handle`` (parse, verify, decrypt, decompress, check,
  store, signed reply — in-process, no HTTP; ``central_sync.py`` measures the
  whole worker) over N sealed batches of 1,000 realistic report events, and
* **raw** (the baseline): a bare DB-API ``executemany`` of the same rows into
  a table with the same columns and indexes in the same database, one
  transaction per 1,000 rows,

each as the difference between a run that does N batches and one that does
none, so that start-up cancels out. The same binaries and inputs give the
same counts (to a few instructions per event) however busy the machine is:
use it to tell whether a change to the ingest path helps, where the timed
benchmark's run-to-run spread (±10 % on this VM) hides a few per cent.
Instructions are not time — the insert waits on memory and the disk more than
the checks do — so the ratio here is not the timed ratio, only its direction.

Usage: .venv/bin/python bench/ingest_instructions.py [--batches 20]
Needs valgrind (Debian package ``valgrind``; ``install.sh --dev`` installs it).
"""

from __future__ import annotations

import argparse
import binascii
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PYTHON, REPO, describe, load_reports

WARM = 3


def prepare(work: Path, n: int) -> None:
    """A central with one enrolled node, and its sealed batches, under ``work``."""
    from central_sync import BATCH, enrolled_central, report_events, sealed_batches

    central, engine, keys = enrolled_central(work / "central", "")
    engine.dispose()
    events = report_events(keys, 1, (WARM + n) * BATCH, load_reports())
    wires = sealed_batches(central, keys, events)
    (work / "wires.pkl").write_bytes(pickle.dumps(wires))


def child(mode: str, work: Path, n: int) -> None:
    """One counted run: ``n`` batches (0: start-up only) on a fresh copy of the central."""
    from central import db
    from central.identity import load_central
    from central.ingest import Ingest
    from sync import sealed

    copy = Path(tempfile.mkdtemp(prefix="bart-bench-instr-"))
    try:
        shutil.copytree(work / "central", copy / "central")
        central = load_central(copy / "central", database_url=None)
        engine = db.make_engine(central.database_url)
        wires = pickle.loads((work / "wires.pkl").read_bytes())
        ingest = Ingest(engine, central)
        for wire in wires[:WARM]:
            ingest.handle(wire)
        if mode == "ingest":
            for wire in wires[WARM:WARM + n]:
                ingest.handle(wire)
            return
        # raw: rows built for every batch in both runs (not counted), inserted in one.
        b64 = binascii.b2a_base64
        rowsets = []
        for wire in wires[WARM:]:
            payload = sealed.open_envelope(sealed.parse(wire), central.keys.encryption)
            rowsets.append([(e[0], e[1], e[2], e[3], e[4], e[5], e[6],
                             b64(e[7], newline=False).decode(), e[1], 1)
                            for e in sealed.iter_lean(payload)])
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE raw_events AS SELECT * FROM events WHERE 0")
            conn.exec_driver_sql("CREATE UNIQUE INDEX raw_id ON raw_events (id)")
            conn.exec_driver_sql("CREATE UNIQUE INDEX raw_oss ON raw_events (origin, stream, seq)")
            conn.exec_driver_sql("CREATE INDEX raw_kind_ts ON raw_events (kind, ts) "
                                 "WHERE kind IN ('alert', 'ack')")  # as events' (0012)
        for rows in rowsets[:n]:
            with engine.begin() as conn:
                cur = conn.connection.cursor()
                cur.executemany(f"INSERT INTO raw_events VALUES ({', '.join('?' * 10)})", rows)
                cur.close()
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def counted(mode: str, work: Path, n: int) -> int:
    """Instructions of one child run under callgrind."""
    out = work / f"callgrind.{mode}.{n}"
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                    str(PYTHON), __file__, "--child", mode, "--work", str(work),
                    "--batches", str(n)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONHASHSEED": "0"}, cwd=REPO)
    for line in out.read_text(errors="replace").splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no summary in {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20, help="batches of 1,000 counted")
    parser.add_argument("--child", choices=("ingest", "raw"), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.work, args.batches)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: apt-get install valgrind (or ./install.sh --dev)",
              file=sys.stderr)
        return 2
    n = args.batches
    print(f"bench/ingest_instructions.py — {describe()}, {n} batches of 1,000 counted")
    with tempfile.TemporaryDirectory(prefix="bart-bench-instr-") as tmp:
        work = Path(tmp)
        prepare(work, n)
        runs = [(mode, k) for mode in ("ingest", "raw") for k in (0, n)]
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            got = dict(zip(runs, pool.map(lambda r: counted(r[0], work, r[1]), runs),
                           strict=True))
    per = {mode: (got[(mode, n)] - got[(mode, 0)]) / (n * 1000) for mode in ("ingest", "raw")}
    print(f"  ingest (Ingest.handle, in-process): {per['ingest']:,.0f} instructions per event")
    print(f"  raw executemany of the same rows:   {per['raw']:,.0f} instructions per event")
    print(f"  → ratio raw / ingest {per['raw'] / per['ingest']:.2f} "
          "(instructions; the timed ratio is central_sync.py's)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
