"""Chaos run (issue 17): record what every client was acknowledged, inject random faults,
heal, and compare with what the stores hold. docs/chaos.md says what and why.

Central and three nodes in network namespaces (tests/support/neighbourhood.py):
a triangle of mesh links that the nemesis cuts into lines and back, each node
with its own Mosquitto and SQLite store, node-c's data on a small tmpfs.
Residents report on every node (half of it for the neighbours too: a public
alert), node-a's panic button is held again and again; the nemesis, seeded,
partitions, drops packets, SIGKILLs nodes, brokers, central and its projector,
zero-fills ``mosquitto.db`` at restarts and fills node-c's disk. Then every
fault is healed and the checker (tests/system/chaos/checker.py) reads every
store and log.

Replay a seed:    BART_CHAOS_SEED=N .venv/bin/pytest tests/system/test_chaos.py -s
Soak (outside CI): BART_CHAOS_SECONDS=3600 .venv/bin/pytest tests/system/test_chaos.py -s

Needs root (namespaces, tmpfs, nftables).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from chaos import Checker, History, Nemesis, Verdict, Workload
from chaos.checker import ProcessWatch
from chaos.nemesis import KINDS

from tests.support.base import require, require_binary
from tests.support.neighbourhood import Neighbourhood, Shape
from tests.support.netns import BUTTON, LINKS, NODES, A, B, C, TeamMember, in_netns

#: The nemesis phase in CI; BART_CHAOS_SECONDS for soak runs.
CI_SECONDS = 45.0
SECONDS = float(os.environ.get("BART_CHAOS_SECONDS", CI_SECONDS))
#: BART_CHAOS_FAULTS=cut-link,loss,…: only these kinds of fault (default: all).
FAULTS = tuple(k for k in os.environ.get("BART_CHAOS_FAULTS", "").split(",") if k) or \
    tuple(k for k, _ in KINDS)
#: After the last heal, everything must be everywhere within this.
CONVERGE_BOUND_S = 60.0
TMPFS_MIB = 96
FULL_DISK_NODE = C
#: Nodes whose clock the nemesis moves (not node-a: a press is matched to its alarm by time).
CLOCK_NODES = (B, C)

pytestmark = pytest.mark.timeout(int(SECONDS) + 300)


#: CI's seed: the same schedule on every run, so that a red CI is the code's doing
#: and replays exactly; seed 1 has disk-full 4 times and clock jumps 2 times and
#: lost 7 acknowledged reports before ca2e230 (docs/chaos.md, finding 1).
CI_SEED = 1


def seed() -> int:
    text = os.environ.get("BART_CHAOS_SEED")
    if text:
        return int(text)
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return CI_SEED
    return random.SystemRandom().randrange(1, 1_000_000)  # locally: a new schedule each run


def replay(run_seed: int) -> str:
    extra = f"BART_CHAOS_SECONDS={SECONDS:g} " if SECONDS != CI_SECONDS else ""
    if os.environ.get("BART_CHAOS_FAULTS"):
        extra += f"BART_CHAOS_FAULTS={','.join(FAULTS)} "
    return f"{extra}BART_CHAOS_SEED={run_seed} .venv/bin/pytest tests/system/test_chaos.py -s"


def test_chaos_run() -> None:
    require(os.geteuid() == 0, "network namespaces, tmpfs and nftables need root")
    require_binary("ip", "/usr/sbin/ip", "/sbin/ip")
    require_binary("nft", "/usr/sbin/nft")
    mosquitto = require_binary("mosquitto", "/usr/sbin/mosquitto")
    require_binary("gcc")  # builds the wall-clock shifter of tests/integration/test_clock.py
    unknown = set(FAULTS) - {k for k, _ in KINDS}
    assert not unknown, f"BART_CHAOS_FAULTS names unknown faults: {sorted(unknown)}"
    run_seed = seed()
    print(f"\n[chaos] seed {run_seed}, {SECONDS:g} s of faults; replay: {replay(run_seed)}")
    wall = time.monotonic()
    # Not pytest's tmp_path: other sessions' runs rotate those away, and a failed
    # run's logs and history must stay where the message says.
    work = Path(tempfile.mkdtemp(prefix=f"bart-chaos-{run_seed}-"))
    links = ((A, B), (B, C), (A, C))
    # /healthz calls a disk with less than min_free_disk_mb free degraded: on the small
    # tmpfs, only a full one should be.
    shape = Shape(links=links, tmpfs_mib={FULL_DISK_NODE: TMPFS_MIB},
                     settings={FULL_DISK_NODE: ["min_free_disk_mb = 8"]},
                     clock_nodes=CLOCK_NODES)
    hood = Neighbourhood(work, shape, mosquitto)
    print(f"[chaos] logs and history in {work} (removed if the run passes, unless "
          "BART_CHAOS_KEEP=1)")
    history = History(run_seed)
    verdict = Verdict()
    logs = {n: work / f"{n}.log" for n in NODES}
    logs["central"] = work / "central.log"
    try:
        hood.build()
        hood.sessions(links, timeout=60.0)
        set_up = time.monotonic() - wall
        print(f"[chaos] central and three nodes up, triangle meshed in {set_up:.1f} s")
        history.started = time.monotonic()
        logins = itertools.count(1)

        def team_member() -> Any:
            return TeamMember.log_in(hood[A], f"Chaos {next(logins)}")

        interfaces = {n: ["up0"] + [LINKS[k][k.index(n)][0] for k in links if n in k]
                      for n in NODES}
        nemesis = Nemesis(hood, history, links, interfaces, full_disk_nodes=(FULL_DISK_NODE,),
                          clock_files={n: hood.clock_file(n) for n in CLOCK_NODES},
                          kinds=FAULTS)
        watch = ProcessWatch(hood, nemesis.killed, history)
        workload = Workload(history, hood.nodes, in_netns, button=BUTTON,
                            press_node=A, team_member=team_member)
        watch.start()
        workload.start()
        nemesis.start()
        time.sleep(SECONDS)
        nemesis.stop()
        healed = history.now()
        history.note("nemesis stopped; every fault healed")
        time.sleep(2.0)  # residents keep going a little on the healed neighbourhood
        workload.stop()
        watch.stop()
        for exc in nemesis.errors:  # e.g. a node that did not come back after a kill
            verdict.add(f"the nemesis stopped: {exc}")
        for exc in workload.errors:
            verdict.add(f"a client stopped: {exc!r}")
        for name, node in hood.nodes.items():  # one that died by itself: back for the check
            if node.proc is None or node.proc.poll() is not None:
                history.note(f"{name} not running after the run; started for the check")
                node.launch()
                node.wait_healthy(60.0)

        checker = Checker(hood, history, button=BUTTON, press_node=A)
        last: str | None = "not checked yet"
        deadline = time.monotonic() + CONVERGE_BOUND_S
        waited_for = ""  # what converged last: where a slow convergence spent its time
        while time.monotonic() < deadline:
            last = checker.converged()
            if last is None:
                break
            waited_for = f"{history.now() - healed:.1f}s: {last}"
            time.sleep(0.5)
        verdict.figures["last_waited_for"] = waited_for
        converge_s = history.now() - healed
        verdict.figures["converged_s"] = round(converge_s, 1) if last is None else None
        if last is not None:
            verdict.add(f"not converged {converge_s:.0f} s after the last heal: {last}")
        verdict.problems += watch.unexpected

        for name, node in hood.nodes.items():  # a clean stop of each, then the files
            code = node.stop()
            if code != 0:
                verdict.add(f"{name} exited with {code} after SIGTERM:\n{node.log_tail(30)}")
            left = hood.mosquitto_pids(name)
            if left:
                verdict.add(f"{name}'s Mosquitto {left} outlived the node")
        code = hood.central.stop()
        if code != 0:
            verdict.add(f"central exited with {code} after SIGTERM")
        checker.check(verdict, nemesis.killed, history.fault_counts().get("kill-projector", 0),
                      logs)
    finally:
        hood.close()
        (work / "history.json").write_text(json.dumps(history.to_json(), indent=1))

    zeroed = sum("zero-filled" in n for n in history.notes)
    moved = sum(len(re.findall(r"moved Mosquitto snapshot \S+ aside", log.read_text(
        errors="replace"))) for name, log in logs.items() if name != "central" and log.exists())
    verdict.figures.update(zero_filled_db_restarts=zeroed, snapshots_moved_aside=moved)
    verdict.figures.update(seed=run_seed, faults=history.fault_counts(),
                           operations=history.counts(),
                           wall_s=round(time.monotonic() - wall, 1))
    print("[chaos] " + json.dumps(verdict.figures))
    if not verdict.problems:
        if not os.environ.get("BART_CHAOS_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    else:
        pytest.fail(
            f"chaos run, seed {run_seed}: {len(verdict.problems)} problem(s)\n"
            + "\n".join(f"- {p}" for p in verdict.problems[:30])
            + f"\n\nreplay: {replay(run_seed)}\nhistory: {work / 'history.json'}\n\n"
            + history.timeline(verdict.focus), pytrace=False)
