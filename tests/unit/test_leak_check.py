"""The suite's leak check (``no_leaks`` in tests/conftest.py, tests/support/leaks.py)
on a small test file run by a real pytest, alone and in two pytest-xdist workers:
a test that leaves a non-daemon thread or a child process running fails; one
whose thread ends within the grace period, a daemon thread, and what module
fixtures start (before the test or during it, a helper their process starts,
a thread of a pool they own) do not."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CONFTEST = """
from tests.conftest import no_leaks, pytest_fixture_setup  # noqa: F401
"""

TESTS = '''
import subprocess
import threading
import time

import pytest

from tests.support.leaks import owned_threads


def idle(seconds: float) -> None:
    time.sleep(seconds)


@pytest.fixture(scope="module")
def module_worker():
    thread = threading.Thread(target=idle, args=(3,), name="module-thread")
    thread.start()
    # A process of the fixture that starts a helper of its own later (as Chromium does).
    proc = subprocess.Popen(["sh", "-c", "sleep 0.3; sleep 3 & wait"])
    with owned_threads("module-pool"):
        yield
    proc.kill()
    proc.wait()
    thread.join()


@pytest.fixture(scope="module")
def late_worker():
    thread = threading.Thread(target=idle, args=(3,), name="late-module-thread")
    thread.start()
    proc = subprocess.Popen(["sleep", "3"])
    yield
    proc.kill()
    proc.wait()
    thread.join()


def test_leaves_a_thread():
    threading.Thread(target=idle, args=(3,), name="leaky-thread").start()


def test_leaves_a_process():
    subprocess.Popen(["sleep", "3.5"])


def test_thread_that_ends_soon():
    threading.Thread(target=idle, args=(0.5,)).start()


def test_daemon_thread():
    threading.Thread(target=idle, args=(3,), daemon=True).start()


def test_waited_process():
    subprocess.run(["true"], check=True)


def test_module_fixture(module_worker):
    time.sleep(0.6)  # the fixture's process starts its helper
    threading.Thread(target=idle, args=(3,), name="module-pool-0").start()


def test_module_fixture_set_up_during_the_test(request):
    request.getfixturevalue("late_worker")
'''


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["alone", "xdist"])
def test_leaks_fail_the_test_that_made_them(tmp_path: Path, workers: list[str]) -> None:
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (tmp_path / "test_leaky.py").write_text(TESTS)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q",
         "--rootdir", str(tmp_path), *workers, str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=110)
    out = result.stdout + result.stderr
    errors = set(re.findall(r"^ERROR \S+::(\w+)", out, re.M))
    passed = set(re.findall(r"^PASSED \S+::(\w+)", out, re.M))
    assert errors == {"test_leaves_a_thread", "test_leaves_a_process"}, out
    assert passed == {"test_leaves_a_thread", "test_leaves_a_process", "test_thread_that_ends_soon",
                      "test_daemon_thread", "test_waited_process", "test_module_fixture",
                      "test_module_fixture_set_up_during_the_test"}, out
    assert "'leaky-thread'" in out and "sleep 3.5" in out, out
    assert "module-thread" not in out.replace("late-module-thread", ""), out
