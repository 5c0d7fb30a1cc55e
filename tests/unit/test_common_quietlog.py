"""common/quietlog.py: the one "loudly once, then quietly" logger (issue 16)."""

from __future__ import annotations

import doctest
import logging

import pytest

import common.quietlog
from common.quietlog import QuietLog

LOG = logging.getLogger("bart.test.quiet")


def levels(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOG.name]


def test_first_loud_then_quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOG.name)
    quiet = QuietLog(LOG)
    for peer in ("a", "a", "a", "b"):
        quiet.say(f"malformed:{peer}", "refused a document from %s", peer)
    assert levels(caplog) == [
        (logging.WARNING, "refused a document from a"),
        (logging.DEBUG, "refused a document from a"),
        (logging.DEBUG, "refused a document from a"),
        (logging.WARNING, "refused a document from b")]
    assert quiet.repeats("malformed:a") == 2


def test_a_flood_of_distinct_keys_is_one_warning_and_bounded_memory(
        caplog: pytest.LogCaptureFixture) -> None:
    """A peer sending 10,000 different bad things: memory stays bounded, and the
    log does not get 10,000 warnings (the old mesh copy cleared its table and
    warned again; the old runtime copy did the same at 256)."""
    caplog.set_level(logging.DEBUG, logger=LOG.name)
    quiet = QuietLog(LOG, max_keys=100)
    for i in range(10_000):
        quiet.say(f"k{i}", "bad thing %d", i)
    warnings = [m for lvl, m in levels(caplog) if lvl == logging.WARNING]
    assert len(warnings) == 101  # 100 keys, then one "more than 100" line
    assert "more than 100 distinct problems" in warnings[-1]
    assert len(quiet._counts) == 100
    # A key already known stays quiet after the table is full.
    caplog.clear()
    quiet.say("k5", "bad thing %d", 5)
    assert levels(caplog) == [(logging.DEBUG, "bad thing 5")]


def test_doctest() -> None:
    assert doctest.testmod(common.quietlog).failed == 0
