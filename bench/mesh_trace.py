"""Where a node's time goes between Mosquitto and the live stream (bench/mesh.py --trace).

As a node runner (``BART_BENCH_RUNNER=bench/mesh_trace.py``, set by ``mesh.py
--trace``), it monkeypatches the node - no product edits - to stamp each step of an
event with ``time.monotonic()`` (the clock of the bench's ``perf_counter``): the
MQTT message on paho's thread (``paho_in``) and on the event loop (``loop_in``); the
signature verified (``verified``); a relay's write queued (``queued``, after it passed
the event on) or a taken event's store task started (``task_start``); the writer's
transaction that holds it (``commit_start``/``commit_end``); a relay's hand-back to
the loop (``stored_cb``); the live stream's hub (``hub``). A thread writes the stamps
to ``$BART_MESH_TRACE_DIR/<node>-<pid>.jsonl`` every second, so the hot path only
appends to a list. :func:`stages` reads them back.
"""

from __future__ import annotations

import bisect
import importlib
import itertools
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

STEPS_RELAY = ("paho_in", "loop_in", "verified", "queued", "commit_start", "commit_end",
               "stored_cb", "hub")
STEPS_TAKEN = ("paho_in", "loop_in", "verified", "task_start", "commit_start", "commit_end",
               "hub")


def _event_id(data: object) -> object:
    """The event id in an MQTT payload: an event, or a mesh relay document."""
    if not isinstance(data, (bytes, bytearray)):
        return data
    try:
        doc = json.loads(data)
        inner = doc.get("event") or json.loads(doc.get("event_json") or "{}")
        return doc.get("id") or inner.get("id")
    except (ValueError, AttributeError):
        return None


def install(out: Path) -> None:
    """Patch the node's classes (before the node is built) to stamp its steps."""
    from broker import client as bclient
    from node import hub as nhub
    from node import store as nstore
    from node.mesh import engine as meng

    nrt: Any = importlib.import_module("node.runtime")

    buf: list[tuple[str, float, object]] = []
    mono = time.monotonic

    def flusher() -> None:
        while True:
            time.sleep(1.0)
            take = buf[:]
            del buf[:len(take)]
            if take:
                with out.open("a") as f:
                    for stage, t, x in take:
                        f.write(json.dumps([stage, t, x if stage == "commit"
                                            else _event_id(x)]) + "\n")

    threading.Thread(target=flusher, name="mesh-trace", daemon=True).start()
    C: Any = bclient.MqttClient
    paho_on_message, on_message = C._paho_on_message, C._on_message

    def paho_in(self: Any, c: Any, u: Any, msg: Any) -> None:
        buf.append(("paho_in", mono(), bytes(msg.payload)))
        paho_on_message(self, c, u, msg)

    def loop_in(self: Any, topic: str, payload: bytes, idents: list[int]) -> None:
        buf.append(("loop_in", mono(), payload))
        on_message(self, topic, payload, idents)

    C._paho_on_message, C._on_message = paho_in, loop_in
    M: Any = meng.Mesh
    refusal, write_soon = M.refusal, M._write_soon

    def verified_relay(self: Any, event: Any) -> Any:
        why = refusal(self, event)
        buf.append(("verified", mono(), event.id))
        return why

    def queued(self: Any, events: list[Any]) -> Any:
        fut = write_soon(self, events)
        buf.extend(("queued", mono(), e.id) for e in events)
        return fut

    M.refusal, M._write_soon = verified_relay, queued
    R: Any = nrt.NodeRuntime
    verify_event, store_foreign, mesh_stored = nrt.verify_event, R._store_foreign, \
        R._mesh_stored

    def verified_taken(event: Any, lookup: Any) -> None:
        verify_event(event, lookup)
        buf.append(("verified", mono(), event.id))

    async def task_start(self: Any, event: Any) -> None:
        buf.append(("task_start", mono(), event.id))
        await store_foreign(self, event)

    def stored_cb(self: Any, events: list[Any]) -> None:
        buf.extend(("stored_cb", mono(), e.id) for e in events)
        mesh_stored(self, events)

    nrt.verify_event = verified_taken
    R._store_foreign, R._mesh_stored = task_start, stored_cb
    S: Any = nstore.Store
    commit_batch = S._commit_batch

    def commit(self: Any, batch: list[Any]) -> None:
        t0 = mono()
        commit_batch(self, batch)
        buf.append(("commit", t0, [mono(), len(batch)]))

    S._commit_batch = commit
    H: Any = nhub.Hub
    publish = H.publish

    def hub(self: Any, event: Any) -> bool:
        buf.append(("hub", mono(), event.id))
        return bool(publish(self, event))

    H.publish = hub


def stages(directory: Path, node: str, steps: tuple[str, ...],
           ids: set[str]) -> dict[str, list[float]]:
    """Per step pair (``a->b``) the milliseconds each of ``ids`` spent on ``node``, and
    ``total`` (``paho_in->hub``); an event's transaction is the first that started
    after its write was queued (the writer takes work only after it was queued)."""
    recs: list[list[Any]] = []
    for path in sorted(directory.glob(f"{node}-*.jsonl")):
        recs += [json.loads(line) for line in path.read_text().splitlines() if line]
    commits = sorted((r[1], r[2][0]) for r in recs if r[0] == "commit")
    starts = [c[0] for c in commits]
    seen: dict[str, dict[str, float]] = {}
    for stage, t, x in recs:
        if stage != "commit" and x in ids:
            seen.setdefault(x, {}).setdefault(stage, t)
    before = steps[steps.index("commit_start") - 1]
    out: dict[str, list[float]] = {}
    for stamps in seen.values():
        if before not in stamps or "hub" not in stamps or "paho_in" not in stamps:
            continue
        i = bisect.bisect_left(starts, stamps[before])
        if i == len(commits):
            continue
        stamps["commit_start"], stamps["commit_end"] = commits[i]
        for a, b in itertools.pairwise(steps):
            if a in stamps and b in stamps:
                out.setdefault(f"{a}->{b}", []).append((stamps[b] - stamps[a]) * 1000)
        out.setdefault("total", []).append((stamps["hub"] - stamps["paho_in"]) * 1000)
    return out


if __name__ == "__main__":
    data_dir = Path(sys.argv[sys.argv.index("--data-dir") + 1])
    trace_dir = Path(os.environ.get("BART_MESH_TRACE_DIR", "."))
    install(trace_dir / f"{data_dir.name}-{os.getpid()}.jsonl")
    from bart.cli import main

    sys.exit(main())
