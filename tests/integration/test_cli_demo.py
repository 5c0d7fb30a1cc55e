"""The README's first command: `bart demo` runs, serves, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

BART = str(Path(sys.executable).parent / "bart")


def _mosquittos_under(path: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "mosquitto" in cmd and path in cmd:
            found.append(int(pid))
    return found


@pytest.mark.timeout(60)
def test_demo_serves_and_stops_on_ctrl_c(mosquitto_bin: str, tmp_path: Path) -> None:
    data = tmp_path / "demo"
    proc = subprocess.Popen([BART, "demo", "--data-dir", str(data)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        url = None
        lines = []
        deadline = time.monotonic() + 30
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            match = re.search(r"Resident portal\s+(http://127\.0\.0\.1:\d+)/", line)
            if match:
                url = match.group(1)
                break
            if proc.poll() is not None:
                break
        assert url, "".join(lines)
        home = httpx.get(url + "/", timeout=5)
        assert home.status_code == 200
        assert "Buurthuis De Kleine Wereld" in home.text
        assert len(home.content) < 100_000
        assert httpx.get(url + "/healthz", timeout=5).json()["status"] == "ok"
        # The demo seeds two resident warnings through the real report path.
        assert len(httpx.get(url + "/api/v1/alerts", timeout=5).json()["alerts"]) >= 2
        assert _mosquittos_under(str(data))
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out
        assert "Bart demo stopped." in out
        assert not _mosquittos_under(str(data)), "Mosquitto left running after Ctrl-C"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_init_refuses_existing_node_and_keys_show(tmp_path: Path) -> None:
    args = [BART, "node", "init", "--name", "test-node", "--area", "ESC-01",
            "--data-dir", str(tmp_path)]
    first = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert first.returncode == 0, first.stderr
    fingerprint = re.search(r"fingerprint: (\S+)", first.stdout)
    assert fingerprint
    again = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr
    show = subprocess.run([BART, "keys", "show", "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=30)
    assert show.returncode == 0 and fingerprint.group(1) in show.stdout
    assert oct((tmp_path / "keys" / "signing.key").stat().st_mode)[-3:] == "600"
    assert oct((tmp_path / "secrets" / "mqtt.json").stat().st_mode)[-3:] == "600"
    status = subprocess.run([BART, "status", "--data-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=30)
    assert status.returncode == 1 and "not running" in status.stdout


def test_run_without_init_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run([BART, "node", "run", "--data-dir", str(tmp_path / "none")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "bart node init" in result.stderr
