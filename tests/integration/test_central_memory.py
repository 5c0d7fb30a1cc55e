"""Central's memory with two workers (issue 15): ``bart central run --workers 2``
stays within 250 MB, counted as the sum of the RSS of every process it runs.

A real central (SQLite) serves pages and the CAP index for a while; then the
RSS of the supervising process and of everything under it (the HTTP workers,
the projector, whatever else it started) is added up. bench/central_memory.py
prints the same figures per process, with PSS and a baseline.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.central import CentralProcess, init_central_process
from tests.support.processes import live_processes

WORKERS = 2
#: Issue 15's goal for ``--workers 2``, MiB (what bench/central_memory.py prints as
#: MB). Measured: ~235 (343 before central's own supervisor, bench/README.md).
RSS_BUDGET_MB = 250.0
REQUESTS = 100
PAGES = ("/staff/login", "/api/v1/cap/alerts.xml")


def tree(root: int) -> list[int]:
    """``root`` and every live process under it."""
    kids: dict[int, list[int]] = {}
    for pid, _cmdline, ppid in live_processes():
        kids.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += kids.get(pid, [])
    return found


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.timeout(240)
def test_two_workers_and_the_projector_fit_in_250_mb(tmp_path: Path) -> None:
    central: CentralProcess = init_central_process(tmp_path, workers=WORKERS)
    central.start()
    try:
        assert central.proc is not None
        with httpx.Client(base_url=central.url, timeout=10.0) as client:
            for i in range(REQUESTS):
                assert client.get(PAGES[i % len(PAGES)]).status_code == 200
        processes = tree(central.proc.pid)
        # The supervisor, two workers and the projector at least.
        assert len(processes) >= WORKERS + 2, processes
        each = {pid: rss_mb(pid) for pid in processes}
        total = sum(each.values())
        assert total <= RSS_BUDGET_MB, (
            f"bart central run --workers {WORKERS}: {total:.1f} MB summed RSS over "
            f"{len(each)} processes (budget {RSS_BUDGET_MB}): "
            + ", ".join(f"{pid} {mb:.1f}" for pid, mb in each.items()))
    finally:
        assert central.stop() == 0
