"""Fixtures for integration tests that run a whole node as a real subprocess.

``bart node init`` + ``bart node run`` in a temporary data directory, talking
to it only from the outside: HTTP (httpx), MQTT (paho, as the node's own
service user or the read-only integration user) and the files it leaves on
disk. Nothing of the node is mocked. Fixtures only: what they construct lives
in ``tests/support/`` (``node``, ``central``, ``browser``, ``disk``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.base import require_binary
from tests.support.browser import launch_chromium
from tests.support.disk import tmpfs
from tests.support.node import NodeProcess, init_node, node_running

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture(scope="module")
def running_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node run by ``bart node run`` for the whole module (stopped with SIGTERM)."""
    mosquitto = require_binary("mosquitto", "/usr/sbin/mosquitto")
    with node_running(tmp_path_factory.mktemp("node"), mosquitto) as node:
        yield node


@pytest.fixture
def fresh_node(tmp_path: Path, mosquitto_bin: str) -> Iterator[NodeProcess]:
    """A node of its own for one test (for tests that break things)."""
    with node_running(tmp_path, mosquitto_bin) as node:
        yield node


@pytest.fixture
def stopped_node(tmp_path: Path, mosquitto_bin: str) -> Iterator[NodeProcess]:
    """An initialised node that is not running; killed at the end if a test left it on."""
    node = init_node(tmp_path, mosquitto_bin)
    yield node
    if node.proc is not None and node.proc.poll() is None:
        node.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium driven by Playwright (never a downloaded browser)."""
    with launch_chromium() as b:
        yield b


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs: a node's disk that can fill (root only; CI runs the tests as root)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    with tmpfs(disk, "64m"):
        yield disk

