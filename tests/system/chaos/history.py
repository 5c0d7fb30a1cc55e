"""What happened during a chaos run: client operations and faults, on one clock.

Every operation records when it was sent and when its answer came (seconds
since the run started, ``time.monotonic``) and the wall-clock time it was
sent (to match events' ``ts``). Faults record when they began and ended. The
printed timeline names, for each acknowledged operation, the faults active
while it was in flight — what a reader needs to replay a failure in their head.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Op:
    """One client operation: a report, an alert (a report shown to the neighbours), a press."""

    kind: str  # "report" | "alert" | "press"
    node: str
    text: str
    t0: float  # sent (s since start)
    wall0: float  # sent (wall clock, s)
    t1: float | None = None  # answered (s since start)
    wall1: float | None = None
    outcome: str = "pending"  # "ok" (2xx / "stored"), "refused" (an answer, not 2xx), "unknown"
    status: int | None = None
    event_id: str | None = None  # the report's id; for a press, the alarm found after the run
    detail: str = ""

    @property
    def acknowledged(self) -> bool:
        return self.outcome == "ok"


@dataclass
class Fault:
    """One fault the nemesis injected."""

    kind: str
    target: str
    t0: float
    t1: float | None = None  # healed (None: still active, or instantaneous when ``instant``)
    instant: bool = False
    detail: str = ""

    def active_during(self, start: float, end: float) -> bool:
        stop = self.t0 if self.instant else (self.t1 if self.t1 is not None else float("inf"))
        return self.t0 <= end and stop >= start

    def __str__(self) -> str:
        if self.instant:
            return f"{self.kind} {self.target} at {self.t0:.1f}s {self.detail}".rstrip()
        end = f"{self.t1:.1f}s" if self.t1 is not None else "end"
        return f"{self.kind} {self.target} {self.t0:.1f}s-{end} {self.detail}".rstrip()


@dataclass
class History:
    """Thread-safe record of a run."""

    seed: int
    started: float = field(default_factory=time.monotonic)
    ops: list[Op] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        return time.monotonic() - self.started

    def begin(self, kind: str, node: str, text: str) -> Op:
        op = Op(kind, node, text, self.now(), time.time())
        with self._lock:
            self.ops.append(op)
        return op

    def end(self, op: Op, outcome: str, status: int | None = None, event_id: str | None = None,
            detail: str = "") -> None:
        op.t1, op.wall1 = self.now(), time.time()
        op.outcome, op.status, op.event_id, op.detail = outcome, status, event_id, detail[:200]

    def fault(self, kind: str, target: str, *, instant: bool = False, detail: str = "") -> Fault:
        fault = Fault(kind, target, self.now(), instant=instant, detail=detail)
        with self._lock:
            self.faults.append(fault)
        return fault

    def healed(self, fault: Fault) -> None:
        fault.t1 = self.now()

    def note(self, text: str) -> None:
        with self._lock:
            self.notes.append(f"{self.now():7.1f}s {text}")

    # -- figures and printing --------------------------------------------------------

    def counts(self) -> dict[str, dict[str, int]]:
        """Per kind: how many operations ended how."""
        out: dict[str, dict[str, int]] = {}
        for op in self.ops:
            out.setdefault(op.kind, {}).setdefault(op.outcome, 0)
            out[op.kind][op.outcome] += 1
        return out

    def fault_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.faults:
            out[f.kind] = out.get(f.kind, 0) + 1
        return out

    def active(self, start: float, end: float) -> list[Fault]:
        return [f for f in self.faults if f.active_during(start, end)]

    def describe(self, op: Op) -> str:
        end = op.t1 if op.t1 is not None else self.now()
        faults = "; ".join(str(f) for f in self.active(op.t0, end)) or "no fault"
        answer = f"{op.outcome} {op.status or ''}".strip()
        return (f"{op.t0:7.2f}s-{end:7.2f}s {op.kind:6} on {op.node}: {answer} "
                f"id={op.event_id} text={op.text!r} {op.detail} [faults: {faults}]")

    def timeline(self, focus: set[str] | None = None, limit: int = 400) -> str:
        """The readable history: faults, notes, then operations (those in ``focus`` first)."""
        lines = [f"seed {self.seed}: {len(self.ops)} operations, {len(self.faults)} faults",
                 "faults:"]
        lines += [f"  {f}" for f in self.faults]
        if self.notes:
            lines.append("notes:")
            lines += [f"  {n}" for n in self.notes[-80:]]
        ops = self.ops
        if focus:
            lines.append("operations the checker names:")
            lines += [f"  {self.describe(op)}" for op in ops
                      if op.event_id in focus or op.text in focus]
        lines.append(f"all operations (first {limit}):")
        lines += [f"  {self.describe(op)}" for op in ops[:limit]]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "ops": [vars(o) for o in self.ops],
                "faults": [vars(f) for f in self.faults], "notes": self.notes}
