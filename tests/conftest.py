"""Shared fixtures: real components, found or started by the tests.

Fixtures only: the helpers they construct live in ``tests/support/`` (a missing
real component skips a test locally and fails it in CI, ``tests.support.require``).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.support.base import require_binary
from tests.support.leaks import LeakWatch, descendants
from tests.support.postgres import PostgresServer, postgres_running

# Every translator in this process and in every node, central and demo the tests
# start raises on a message missing from the catalogue (common/i18n.py) instead
# of logging it and showing its key to a resident.
os.environ["BART_I18N_STRICT"] = "1"


# ------------------------------------------------------------------ leaks

#: The watch of the test that is running in this process (None between tests).
_watch: LeakWatch | None = None


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves a non-daemon thread or a process below pytest running.

    How: pytest sets up the fixtures of wider scope (session, module) that a test
    asks for before its function-scoped ones, and autouse fixtures first among
    those; so this fixture's snapshot (``LeakWatch``) already holds what those
    wider fixtures started, and its teardown runs after every other
    function-scoped fixture's teardown and before any module or session fixture
    is torn down. A wider fixture set up *during* the test (through
    ``request.getfixturevalue``) adds what is alive then to the snapshot
    (``pytest_fixture_setup`` below). What is new after the teardown gets
    ``GRACE_S`` (2 s) to end; then the test fails at teardown, naming each
    thread and process. Threads that were there already (pytest-xdist's
    execnet threads, a module's browser, a session's PostgreSQL) and daemon
    threads do not count; processes are counted below the pytest process
    (children, and their children), zombies not. A test that restarts a
    process of a wider fixture (which stops it later) says so with
    ``@pytest.mark.leaves_running("what, and who stops it")``: its new
    processes are then allowed, its threads still checked.
    """
    global _watch
    _watch = watch = LeakWatch()
    try:
        yield
    finally:
        _watch = None
    marker = request.node.get_closest_marker("leaves_running")
    if marker is not None:  # a wider fixture's process, restarted by the test: allowed
        watch.procs |= descendants()
    leftovers = watch.leftovers()
    if leftovers:
        pytest.fail(f"{request.node.nodeid} left running after its teardown:\n  "
                    + "\n  ".join(leftovers), pytrace=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "leaves_running(reason): the test restarts a process of a wider-scoped "
        "fixture, which stops it; the leak check allows the test's new processes")


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[object],
                         request: pytest.FixtureRequest) -> Generator[None, object, object]:
    """After a fixture of wider scope is set up during a test, what it started
    may outlive the test (see ``no_leaks``)."""
    result = yield
    if _watch is not None and fixturedef.scope != "function":
        _watch.allow_current()
    return result


@pytest.fixture(scope="session")
def mosquitto_bin() -> str:
    """Path of the real mosquitto binary."""
    return require_binary("mosquitto", "/usr/sbin/mosquitto")


@pytest.fixture
def chromium_bin() -> str:
    """Path of the real Chromium browser."""
    return require_binary("chromium", "/usr/bin/chromium", "chromium-browser")


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """An empty directory for one node's data."""
    path = tmp_path / "node"
    path.mkdir()
    yield path


# ------------------------------------------------------------------ PostgreSQL


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the whole test session."""
    with postgres_running() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    return postgres_server.database_for(request.node.name)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each central test runs on both backends: a SQLite file and real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'central.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
