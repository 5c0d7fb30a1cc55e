"""Shared fixtures: real components, found or started by the tests.

Fixtures only: the helpers they construct live in ``tests/support/`` (a missing
real component skips a test locally and fails it in CI, ``tests.support.require``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.base import require_binary
from tests.support.postgres import PostgresServer, postgres_running

# Every translator in this process and in every node, central and demo the tests
# start raises on a message missing from the catalogue (common/i18n.py) instead
# of logging it and showing its key to a resident.
os.environ["BART_I18N_STRICT"] = "1"


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
