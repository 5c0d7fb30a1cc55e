"""A login leaves no password hash's working memory behind (issue 15, memory).

scrypt works in 16 MiB. glibc served the first hash from a mapping of its own
and, once it was freed, raised its threshold for such mappings: every later
hash came from the heap and its 16 MiB stayed resident, once per thread that
ever hashed. One staff login (a one-time password checked, the new password
hashed) left a central worker 32 MB larger; one team login did the same to a
node, whose whole budget is 80 MB (common/passwords.py).

A real ``bart node run`` and a real ``bart central run`` (one worker, which is
the process answering), logged into over HTTP three times each.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.base import require_binary
from tests.support.central import init_central_process, staff_http_login
from tests.support.node import init_node
from tests.support.team import TeamBrowser

#: What three logins may add to the process, MiB: the pages' own first-use
#: costs (templates, caches), far below one hash's 16.
GROWTH_MB = 6.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_team_logins_leave_the_node_its_memory(tmp_path: Path) -> None:
    node = init_node(tmp_path, require_binary("mosquitto", "/usr/sbin/mosquitto"))
    node.start()
    try:
        assert node.proc is not None
        httpx.get(f"{node.base_url}/team/login", timeout=10.0)  # the page's first use
        before = rss_mb(node.proc.pid)
        for i in range(3):
            member = TeamBrowser(node, f"Lid {i}")
            member.first_login()  # a one-time password checked, a new one hashed
            member.http.close()
        grown = rss_mb(node.proc.pid) - before
    finally:
        node.stop()
    assert grown < GROWTH_MB, f"three team logins grew the node by {grown:.1f} MB"


@pytest.mark.parametrize("rounds", [3])
def test_staff_logins_leave_central_its_memory(tmp_path: Path, rounds: int) -> None:
    central = init_central_process(tmp_path)
    central.start()
    try:
        assert central.proc is not None
        staff_http_login(central.url, "Opwarmer", central.add_staff("Opwarmer", "police"),
                         "een lang wachtwoord 0").close()
        before = rss_mb(central.proc.pid)
        for i in range(rounds):
            name = f"Agent {i}"
            staff_http_login(central.url, name, central.add_staff(name, "police"),
                             f"een lang wachtwoord {i + 1}").close()
        grown = rss_mb(central.proc.pid) - before
    finally:
        central.stop()
    assert grown < GROWTH_MB, f"{rounds} staff logins grew central by {grown:.1f} MB"
