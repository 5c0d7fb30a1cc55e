"""What must hold after a chaos run, read from the stores and logs the processes left.

- every acknowledged report is at central exactly once (its event, and one
  triaged ``reports`` row made by the projector) and on its node once;
- every acknowledged alert, and every public event any node holds, is on
  every node exactly once (and at central);
- every acknowledged press is one alarm (or one ``repeated`` answer) on node-a,
  then on every node and at central;
- no seq reused: one id per (origin, stream, seq) across all four stores, and
  each node's own streams gapless;
- ``PRAGMA integrity_check`` is ``ok`` on every SQLite file;
- no process ended but by the nemesis's SIGKILL (nodes, their Mosquitto,
  central, the projector), and every one stops cleanly at the end;
- no unhandled exception ("Traceback", "Exception in ASGI application") in any log.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .history import History

UNHANDLED = ("Traceback", "Exception in ASGI application")
BROKER_EXIT = re.compile(r"mosquitto\[(\d+)\] exited with code (-?\d+)")
PROJECTOR_EXIT = re.compile(r"projector exited with (-?\d+)")
#: An alarm's ts is the moment its hold completed: after the press was sent and
#: before the light said stored (one machine's clock). Slack for rounding.
PRESS_SLACK_MS = 100


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    try:
        yield conn
    finally:
        conn.close()


def rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with read_only(path) as conn:
        return list(conn.execute(sql, args).fetchall())


@dataclass
class Verdict:
    """What the checker found, and the run's figures."""

    problems: list[str] = field(default_factory=list)
    focus: set[str] = field(default_factory=set)  # event ids / texts the problems name
    figures: dict[str, Any] = field(default_factory=dict)

    def add(self, problem: str, *focus: str) -> None:
        self.problems.append(problem)
        self.focus.update(f for f in focus if f)


class ProcessWatch:
    """Notes every node or central process that ends without the nemesis having killed it."""

    def __init__(self, hood: Any, killed: set[int], history: History) -> None:
        self.hood, self.killed, self.history = hood, killed, history
        self.unexpected: list[str] = []
        self._stop = threading.Event()
        self._seen: set[int] = set()
        self._thread = threading.Thread(target=self._run, name="chaos-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            procs = [(n, node.proc) for n, node in self.hood.nodes.items()]
            procs.append(("central", self.hood.central.proc))
            for name, proc in procs:
                if proc is None or proc.pid in self._seen:
                    continue
                code = proc.poll()
                if code is not None and proc.pid not in self.killed:
                    self._seen.add(proc.pid)
                    text = f"{name} (pid {proc.pid}) exited with {code} by itself"
                    self.unexpected.append(text)
                    self.history.note(text)


class Checker:
    """Reads the stores of ``hood`` (a tests.support.neighbourhood.Neighbourhood)."""

    def __init__(self, hood: Any, history: History, *, button: str, press_node: str) -> None:
        self.hood = hood
        self.history = history
        self.button = button
        self.press_node = press_node

    # -- paths -------------------------------------------------------------------------

    def node_db(self, name: str) -> Path:
        path: Path = self.hood[name].db_path
        return path

    @property
    def central_db(self) -> Path:
        path: Path = self.hood.central.data_dir / "central.db"
        return path

    def public_ids(self, name: str) -> set[str]:
        return {r[0] for r in rows(self.node_db(name),
                                   "SELECT id FROM events WHERE stream = 'public'")}

    # -- convergence -----------------------------------------------------------------------

    def converged(self) -> str | None:
        """None when the neighbourhood has converged; else what is still missing."""
        nodes = list(self.hood.nodes)
        public = {n: self.public_ids(n) for n in nodes}
        union = set().union(*public.values())
        lacking = {n: len(union - ids) for n, ids in public.items() if union - ids}
        if lacking:
            return f"public events lacking on nodes: {lacking} (of {len(union)})"
        central = {r[0] for r in rows(self.central_db, "SELECT id FROM events")}
        for n in nodes:
            own = {r[0] for r in rows(self.node_db(n), "SELECT id FROM events WHERE origin = ?",
                                      n)}
            if own - central:
                return f"central lacks {len(own - central)} of {n}'s {len(own)} events"
        reports, triaged = rows(self.central_db,
                                "SELECT (SELECT COUNT(*) FROM events WHERE kind = 'report'), "
                                "(SELECT COUNT(*) FROM reports)")[0]
        if reports != triaged:
            return f"the projector triaged {triaged} of {reports} reports"
        return None

    # -- the verdict -------------------------------------------------------------------------

    def check(self, verdict: Verdict, killed: set[int], kill_projector: int,
              logs: dict[str, Path]) -> None:
        self._acknowledged(verdict)
        self._public(verdict)
        self._seqs(verdict)
        self._clock(verdict)
        self._integrity(verdict)
        self._logs(verdict, killed, kill_projector, logs)

    def _acknowledged(self, v: Verdict) -> None:
        nodes = list(self.hood.nodes)
        lost = duplicated = 0
        acked = {"report": 0, "alert": 0, "press": 0}
        for op in self.history.ops:
            if not op.acknowledged:
                continue
            acked[op.kind] += 1
            if op.kind == "press":
                found = self._press_events(op.wall0, op.wall1 or op.wall0)
                if not found:
                    lost += 1
                    v.add(f"press at {op.t0:.1f}s was 'stored' on {op.node}'s light, "
                          "but no alarm of that hold is in its store", op.text)
                    continue
                if len(found) > 1:
                    duplicated += 1
                    v.add(f"press at {op.t0:.1f}s made {len(found)} events: {found}",
                          op.text, *found)
                op.event_id = found[0]
                event_ids = [found[0]]
            else:
                assert op.event_id is not None
                held = rows(self.node_db(op.node), "SELECT COUNT(*) FROM events WHERE id = ?",
                            op.event_id)[0][0]
                at_central = rows(self.central_db,
                                  "SELECT (SELECT COUNT(*) FROM events WHERE id = ?), "
                                  "(SELECT COUNT(*) FROM reports WHERE event_id = ?)",
                                  op.event_id, op.event_id)[0]
                if held != 1 or at_central != (1, 1):
                    lost += held == 0 or at_central[0] == 0
                    v.add(f"acknowledged report {op.event_id} of {op.node}: {held} on its node, "
                          f"{at_central[0]} events and {at_central[1]} triaged rows at central "
                          "(want 1, 1, 1)", op.event_id)
                same_text = rows(self.central_db, "SELECT COUNT(*) FROM events WHERE "
                                 "kind = 'report' AND json_extract(body, '$.text') = ?",
                                 op.text)[0][0]
                if same_text > 1:
                    duplicated += 1
                    v.add(f"report {op.text!r} is {same_text} times at central", op.event_id)
                event_ids = []
                if op.kind == "alert":
                    alerts = rows(self.node_db(op.node), "SELECT id FROM events WHERE "
                                  "kind = 'alert' AND json_extract(body, '$.ref') = ?",
                                  op.event_id)
                    if len(alerts) != 1:
                        lost += not alerts
                        duplicated += len(alerts) > 1
                        v.add(f"acknowledged report {op.event_id} for the neighbours has "
                              f"{len(alerts)} alerts on {op.node} (want 1)", op.event_id)
                        continue
                    event_ids = [alerts[0][0]]
            for event_id in event_ids:
                for n in nodes:
                    count = rows(self.node_db(n), "SELECT COUNT(*) FROM events WHERE id = ?",
                                 event_id)[0][0]
                    if count != 1:
                        lost += count == 0
                        v.add(f"{op.kind} {event_id} (made on {op.node} at {op.t0:.1f}s) is "
                              f"{count} times on {n} (want 1)", event_id, op.event_id or "")
                count = rows(self.central_db, "SELECT COUNT(*) FROM events WHERE id = ?",
                             event_id)[0][0]
                if count != 1:
                    lost += count == 0
                    v.add(f"{op.kind} {event_id} of {op.node} is {count} times at central",
                          event_id)
        v.figures.update(acknowledged=acked, lost=lost, duplicated=duplicated)

    def _press_events(self, wall0: float, wall1: float) -> list[str]:
        lo, hi = int(wall0 * 1000) - PRESS_SLACK_MS, int(wall1 * 1000) + PRESS_SLACK_MS
        found = rows(self.node_db(self.press_node),
                     "SELECT id FROM events WHERE origin = ? AND ts BETWEEN ? AND ? AND ("
                     "(kind = 'alert' AND json_extract(body, '$.button') = ?) OR "
                     "(kind = 'ack' AND json_extract(body, '$.action') = 'repeated' "
                     "AND json_extract(body, '$.by') = ?)) ORDER BY ts",
                     self.press_node, lo, hi, self.button, self.button)
        return [r[0] for r in found]

    def _public(self, v: Verdict) -> None:
        nodes = list(self.hood.nodes)
        public = {n: self.public_ids(n) for n in nodes}
        union = set().union(*public.values())
        for n, ids in public.items():
            missing = union - ids
            if missing:
                v.add(f"{n} lacks {len(missing)} of the {len(union)} public events, e.g. "
                      f"{sorted(missing)[:3]}", *sorted(missing)[:5])
        v.figures["public_events"] = len(union)
        for n in nodes:
            twice = rows(self.node_db(n), "SELECT json_extract(body, '$.ref'), COUNT(*) "
                         "FROM events WHERE kind = 'alert' AND json_extract(body, '$.source') "
                         "= 'resident' GROUP BY 1 HAVING COUNT(*) > 1")
            for ref, count in twice:
                v.add(f"{n} holds {count} alerts for report {ref}", ref)

    def _seqs(self, v: Verdict) -> None:
        stores = {n: self.node_db(n) for n in self.hood.nodes}
        stores["central"] = self.central_db
        owner: dict[tuple[str, str, int], set[str]] = {}
        for path in stores.values():
            for origin, stream, seq, event_id in rows(
                    path, "SELECT origin, stream, seq, id FROM events"):
                owner.setdefault((origin, stream, seq), set()).add(event_id)
        reused = {k: ids for k, ids in owner.items() if len(ids) > 1}
        for (origin, stream, seq), ids in sorted(reused.items())[:10]:
            v.add(f"seq {seq} of ({origin}, {stream}) names {len(ids)} events: {sorted(ids)}",
                  *ids)
        v.figures["seq_reused"] = len(reused)
        for n in self.hood.nodes:
            for stream, count, top in rows(stores[n], "SELECT stream, COUNT(*), MAX(seq) "
                                           "FROM events WHERE origin = ? GROUP BY stream", n):
                if count != top:
                    v.add(f"{n}'s own {stream} stream has {count} events up to seq {top} "
                          "(a gap)")

    def _clock(self, v: Verdict) -> None:
        """A wrong wall clock must not reorder: within each of a node's own streams, ts
        never goes down as seq goes up. (A wired button's alarm is stamped with the moment
        its hold completed, made during the hold, so a report committed in between may
        rightly carry a later ts: button events are left out.) Figure: events stamped more
        than an hour away from when central received them (a wrong clock believed)."""
        with read_only(self.central_db) as conn:
            received = dict(conn.execute("SELECT id, received_at FROM events").fetchall())
        off: dict[str, int] = {}
        for n in self.hood.nodes:
            last: dict[str, tuple[int, int]] = {}
            for stream, seq, ts, event_id in rows(
                    self.node_db(n), "SELECT stream, seq, ts, id FROM events WHERE origin = ? "
                    "AND json_extract(body, '$.button') IS NULL AND "
                    "COALESCE(json_extract(body, '$.by'), '') != ? ORDER BY stream, seq",
                    n, self.button):
                if stream in last and ts < last[stream][1]:
                    v.add(f"{n}'s {stream} seq {seq} has ts {ts}, before seq {last[stream][0]}'s "
                          f"{last[stream][1]}: a clock reordered its events", event_id)
                last[stream] = (seq, ts)
                at = received.get(event_id)
                if at is not None and abs(at - ts) > 3_600_000:
                    off[n] = off.get(n, 0) + 1
        v.figures["stamped_over_1h_off"] = off

    def _integrity(self, v: Verdict) -> None:
        files = [self.central_db]
        for n in self.hood.nodes:
            files += sorted(p for p in self.hood[n].data_dir.rglob("*.db")
                            if p.name != "mosquitto.db")
        for path in files:
            result = rows(path, "PRAGMA integrity_check")
            if result != [("ok",)]:
                v.add(f"PRAGMA integrity_check of {path}: {result[:5]}")
        v.figures["sqlite_files_checked"] = len(files)

    def _logs(self, v: Verdict, killed: set[int], kill_projector: int,
              logs: dict[str, Path]) -> None:
        projector_exits = 0
        for who, path in logs.items():
            text = path.read_text(errors="replace") if path.exists() else ""
            for needle in UNHANDLED:
                at = text.find(needle)
                if at >= 0:
                    start = text.rfind("\n", 0, max(0, at - 1)) + 1  # the line before it
                    v.add(f"{who}'s log has {needle!r} ({text.count(needle)} times), first:\n"
                          f"{text[start:at + 1500]}")
            for pid, code in BROKER_EXIT.findall(text):
                if int(pid) not in killed:
                    v.add(f"{who}: its Mosquitto {pid} exited with {code}, not killed by the "
                          "nemesis")
            for code in PROJECTOR_EXIT.findall(text):
                projector_exits += 1
                if code != "-9":
                    v.add(f"{who}: the projector exited with {code}")
        if projector_exits > kill_projector:
            v.add(f"the projector exited {projector_exits} times; the nemesis killed it "
                  f"{kill_projector} times")
