"""The event-loop probe the tests' nodes run with (node/server.py watch_loop_budget).

In a subprocess: it patches asyncio for the whole process. A callback that
computes for 30 ms of CPU is reported; one that waits 50 ms is not, and
neither is start-up's work before the portal serves (NodeServer.startup arms it).
"""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import asyncio, logging, time
logging.basicConfig(level=logging.WARNING, format="%(message)s")
from node.server import arm_loop_budget, watch_loop_budget
watch_loop_budget()
async def start_up():  # before the portal serves: not counted
    t = time.thread_time()
    while time.thread_time() - t < 0.03:
        pass
asyncio.run(start_up())
arm_loop_budget()
async def busy():
    t = time.thread_time()
    while time.thread_time() - t < 0.03:
        pass
async def waiting():
    await asyncio.sleep(0.05)
asyncio.run(waiting())
print("waited", flush=True)
asyncio.run(busy())
"""


def test_a_busy_callback_is_reported_and_a_waiting_one_is_not() -> None:
    env = {**os.environ, "BART_LOOP_BUDGET_MS": "10"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         env=env, timeout=30, check=True)
    held = [ln for ln in out.stderr.splitlines() if "event loop held" in ln]
    assert len(held) == 1 and "budget 10 ms" in held[0], out.stderr
    assert out.stdout.strip() == "waited"
    # Off without the variable.
    env.pop("BART_LOOP_BUDGET_MS")
    quiet = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                           env=env, timeout=30, check=True)
    assert "event loop held" not in quiet.stderr
