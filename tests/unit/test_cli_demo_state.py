"""The demo's state file as its claim on the machine (bart.demo_control): one demo at a
time, a file left by a demo that has ended is taken over, commands say in words when
no demo runs or it is still starting. A real second process plays the running demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bart import demo_control
from bart.errors import EXIT_UNAVAILABLE, Unavailable


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "demo-state.json"
    monkeypatch.setenv("BART_DEMO_STATE", str(path))
    return path


@pytest.fixture
def other_demo() -> Iterator[subprocess.Popen[bytes]]:
    """A live process whose command line is a demo's (`… demo`)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "demo"])
    deadline = time.monotonic() + 10
    # Until it has exec'd: right after the fork its command line is still ours.
    while b"demo" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(5)


def test_the_first_demo_claims_the_file(state: Path, tmp_path: Path) -> None:
    demo_control.claim_state(tmp_path / "data")
    held = json.loads(state.read_text())
    assert held["pid"] == os.getpid() and held["starting"] is True
    assert held["data_dir"] == str(tmp_path / "data")
    assert not list(tmp_path.glob("*.tmp"))
    demo_control.clear_state()
    assert not state.exists()


def test_a_running_demo_is_named_and_kept(state: Path,
                                          other_demo: subprocess.Popen[bytes]) -> None:
    theirs = {"pid": other_demo.pid, "data_dir": "/srv/demo", "central": "http://127.0.0.1:9",
              "url": "http://127.0.0.1:8", "nodes": []}
    state.write_text(json.dumps(theirs))
    with pytest.raises(Unavailable) as refused:
        demo_control.claim_state(None)
    err = refused.value
    assert err.code == EXIT_UNAVAILABLE
    assert (f"a demo is running already on this machine (pid {other_demo.pid}, data in "
            "/srv/demo): http://127.0.0.1:8/demo, central http://127.0.0.1:9") == err.what
    assert f"kill {other_demo.pid}" in err.fix and "BART_DEMO_STATE" in err.fix
    assert json.loads(state.read_text()) == theirs
    demo_control.clear_state()  # not ours: kept
    assert state.exists()


def test_a_starting_demo_is_named_as_starting(state: Path,
                                              other_demo: subprocess.Popen[bytes]) -> None:
    state.write_text(json.dumps({"pid": other_demo.pid, "starting": True, "nodes": []}))
    with pytest.raises(Unavailable, match=r"\(still starting\)"):
        demo_control.claim_state(None)
    with pytest.raises(Unavailable, match="is still starting") as err:
        demo_control.read_state()
    assert "try again in a few seconds" in err.value.fix


def test_a_file_left_by_an_ended_demo_is_taken_over(state: Path) -> None:
    ended = subprocess.Popen([sys.executable, "-c", "pass", "demo"])
    ended.wait(5)
    state.write_text(json.dumps({"pid": ended.pid, "url": "http://127.0.0.1:8", "nodes": []}))
    with pytest.raises(Unavailable, match="no demo is running on this machine"):
        demo_control.read_state()
    demo_control.claim_state(None)
    assert json.loads(state.read_text())["pid"] == os.getpid()
    demo_control.clear_state()


def test_another_process_with_the_pid_is_no_demo(state: Path) -> None:
    """A pid reused by a program that is not a demo does not hold the demo's place."""
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        state.write_text(json.dumps({"pid": sleeper.pid, "nodes": []}))
        demo_control.claim_state(None)
        assert json.loads(state.read_text())["pid"] == os.getpid()
    finally:
        sleeper.kill()
        sleeper.wait(5)
        demo_control.clear_state()
