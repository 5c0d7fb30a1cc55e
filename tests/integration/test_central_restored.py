"""Central restored from an older backup: the nodes send again what it lost.

A node prunes only what central said it holds, so the reports central received
after its backup are still on the node (within ``retention_days``). Central's
signed acknowledgement says what it holds now; a node whose record says more
goes back to central's figure and sends the rest again (docs/backup.md).
Everything through the real ``bart`` command: a central and a node as
processes, ``bart central backup`` while central runs, ``bart central restore``
into a new directory, the restored central on the same address.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from central import db
from tests.support.base import bart_command, wait_until
from tests.support.central import CentralProcess, init_central_process
from tests.support.node import NodeProcess, configure, init_node, stop_and_check

FAST_UPLINK = "uplink_max_age_s = 0.2\nuplink_backoff_max_s = 1.0\nuplink_poll_s = 1.0\n"


def _bart(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BART_")}
    return subprocess.run([*bart_command(), *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def _post(node: NodeProcess, text: str) -> str:
    r = httpx.post(f"{node.base_url}/api/v1/reports", timeout=15.0,
                   json={"category": "nuisance", "text": text, "audience": "both"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _private_ids(database: Path, origin: str) -> dict[int, str]:
    engine = db.make_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as conn:
            return {int(r.seq): str(r.id) for r in conn.execute(
                sa.select(db.events.c.seq, db.events.c.id).where(
                    db.events.c.origin == origin, db.events.c.stream == "private"))}
    finally:
        engine.dispose()


def _receipt_states(node: NodeProcess) -> dict[str, str]:
    conn = sqlite3.connect(f"file:{node.db_path}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT event_id, state FROM receipts").fetchall())
    finally:
        conn.close()


@pytest.mark.timeout(240)
def test_a_node_sends_again_what_a_restored_central_lost(tmp_path: Path,
                                                         mosquitto_bin: str) -> None:
    central = init_central_process(tmp_path / "c")
    central.start()
    node = init_node(tmp_path, mosquitto_bin)
    restored: CentralProcess | None = None
    try:
        configure(node, FAST_UPLINK)
        central.enrol(node)
        node.start()
        first = [_post(node, f"voor de backup {i}") for i in range(5)]
        old_db = central.data_dir / "central.db"
        wait_until(lambda: len(_private_ids(old_db, node.name)) == 5, 60,
                   message="5 reports at central")
        backup = tmp_path / "central.bart"
        made = _bart("central", "backup", str(backup), "--data-dir", str(central.data_dir))
        assert made.returncode == 0, made.stderr
        later = [_post(node, f"na de backup {i}") for i in range(7)]
        wait_until(lambda: len(_private_ids(old_db, node.name)) == 12, 60,
                   message="12 reports at central")
        assert central.stop() == 0

        # The disk of central dies; it comes back from the backup with 5 of the 12.
        target = tmp_path / "restored"
        done = _bart("central", "restore", str(backup), "--data-dir", str(target))
        assert done.returncode == 0, done.stderr
        new_db = target / "central.db"
        assert sorted(_private_ids(new_db, node.name)) == [1, 2, 3, 4, 5]
        restored = CentralProcess(data_dir=target, http_port=central.http_port,
                                  database_url="", log_path=tmp_path / "restored.log")
        restored.start()

        # Without a new report: the node's next poll learns what central holds.
        wait_until(lambda: len(_private_ids(new_db, node.name)) == 12, 60,
                   message="the 7 reports central lost, sent again")
        newest = _post(node, "na het herstel")
        wait_until(lambda: len(_private_ids(new_db, node.name)) == 13, 60,
                   message="the new report at the restored central")
        held = _private_ids(new_db, node.name)
        assert [held[seq] for seq in range(1, 14)] == [*first, *later, newest]
        # The residents' receipts still say "forwarded": nothing went backwards for them.
        states = _receipt_states(node)
        assert all(states[i] == "forwarded" for i in (*first, *later, newest)), states
        stop_and_check(node)
        assert restored.stop() == 0
    finally:
        for proc in (node, central, restored):
            if proc is not None and proc.proc is not None and proc.proc.poll() is None:
                proc.kill()
