"""common.files.write_atomic: the one atomic write of node and central.

Before issue 16 there were seven copies; only the broker's fsynced the
directory after the rename (without that a power cut can lose the rename).
The fsyncs are counted with strace on a real child process; a crash is a real
SIGKILL (strace's fault injection) at the rename, and a write cut short by the
file-size limit.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bart import demo_control
from central import identity
from common import files
from common.files import write_atomic
from node import enrol, hotspot, points, tls, trust
from tests.support import require_binary


def _child(code: str, *prefix: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=60, check=False)


def _write_code(target: Path, data: bytes, mode: int = 0o600) -> str:
    return (f"from common.files import write_atomic\n"
            f"write_atomic({str(target)!r}, {data!r}, mode={mode:#o})\n")


def test_replaces_the_content_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_atomic(target, b"one")
    write_atomic(target, b"two" * 100_000)
    assert target.read_bytes() == b"two" * 100_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o640, 0o755])
def test_the_mode_is_kept_whatever_the_umask(tmp_path: Path, mode: int) -> None:
    target = tmp_path / "file"
    target.write_bytes(b"old")
    target.chmod(0o666)
    old_umask = os.umask(0o077)
    try:
        write_atomic(target, b"new", mode=mode)
    finally:
        os.umask(old_umask)
    assert target.stat().st_mode & 0o7777 == mode


def test_the_file_and_then_its_directory_are_fsynced(tmp_path: Path) -> None:
    strace = require_binary("strace")
    target = tmp_path / "roster.json"
    trace = tmp_path / "trace"
    run = _child(_write_code(target, b"{}"), strace, "-f", "-qq", "-o", str(trace), "-e",
                 "trace=openat,fsync,fdatasync,rename,renameat,renameat2,close")
    assert run.returncode == 0, run.stderr
    assert target.read_bytes() == b"{}"
    lines = trace.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if ".roster.json." in line and "openat(" in line)
    tmp_fd = re.search(r"= (\d+)$", lines[start])
    assert tmp_fd, lines[start]
    tail = lines[start:]
    syncs = [i for i, line in enumerate(tail) if re.search(r"\b(fsync|fdatasync)\(", line)]
    renames = [i for i, line in enumerate(tail) if "rename" in line and "roster.json" in line]
    dir_open = [i for i, line in enumerate(tail)
                if "O_DIRECTORY" in line and f'"{tmp_path}"' in line]
    assert len(renames) == 1 and len(dir_open) == 1, tail
    assert f"fsync({tmp_fd.group(1)})" in tail[syncs[0]] and syncs[0] < renames[0], tail
    dir_fd = re.search(r"= (\d+)$", tail[dir_open[0]])
    assert dir_fd and renames[0] < dir_open[0], tail
    assert any(f"fsync({dir_fd.group(1)})" in tail[i] for i in syncs if i > dir_open[0]), tail


def test_a_crash_before_the_rename_leaves_the_old_file(tmp_path: Path) -> None:
    strace = require_binary("strace")
    target = tmp_path / "points.json"
    target.write_bytes(b"old")
    target.chmod(0o600)
    run = _child(_write_code(target, b"new" * 10_000), strace, "-f", "-qq", "-o", os.devnull,
                 "-e", "trace=rename,renameat,renameat2",
                 "-e", "inject=rename,renameat,renameat2:signal=SIGKILL")
    assert run.returncode != 0
    assert target.read_bytes() == b"old"


def test_a_write_cut_short_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "hostapd.conf"
    target.write_bytes(b"old")
    code = ("import resource, signal\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
            "try:\n" + "".join("    " + line + "\n"
                                for line in _write_code(target, b"x" * 100_000).splitlines())
            + "except OSError as exc:\n    raise SystemExit(f'refused: {exc.errno}')\n")
    run = _child(code)
    assert "refused: 27" in run.stderr, run.stderr  # EFBIG
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostapd.conf"]


def test_every_former_copy_uses_it() -> None:
    """The seven copies of issue 16 (the broker's aside, see below) call write_atomic."""
    for module in (enrol, tls, points, hotspot, trust, identity, demo_control):
        source = inspect.getsource(module)
        assert "write_atomic(" in source, module.__name__
        assert "os.replace(" not in source, module.__name__
    assert "os.replace(" in inspect.getsource(files)


def test_callers_keep_their_modes(tmp_path: Path) -> None:
    enrol._atomic(tmp_path / "roster.json", b"{}", private=False)
    enrol._atomic(tmp_path / "secret", b"k", private=True)
    tls._write(tmp_path / "server.key", b"k", True)
    tls._write(tmp_path / "server.pem", b"c", False)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {"roster.json": 0o644, "secret": 0o600, "server.key": 0o600,
                     "server.pem": 0o644}
