"""BrokerProcess with the real Mosquitto: start, logins, ACL, snapshots, supervision, stop."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from broker import (
    DB_MAGIC,
    BrokerProcess,
    BrokerSettings,
    BrokerStartError,
    MqttUser,
    probe,
    write_files,
)
from tests.support.base import free_port, require_binary

pytestmark = pytest.mark.timeout(30)

NODE = MqttUser("node", "node-secret", "service")
SIREN = MqttUser("siren", "siren-secret", "integration")


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def process_gone(pid: int) -> bool:
    """True if ``pid`` no longer runs (a zombie waiting for init to reap it counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("Z", "X")


@pytest.fixture
def settings(tmp_path: Path) -> BrokerSettings:
    return BrokerSettings(state_dir=tmp_path / "mqtt", port=free_port(), users=(NODE, SIREN))


@pytest.fixture
def broker(mosquitto_bin: str, settings: BrokerSettings) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(settings, mosquitto_bin, restart_min=0.05, restart_max=0.5)
    proc.start(timeout=10)
    yield proc
    pid = proc.pid
    proc.stop()
    assert pid is None or process_gone(pid)


def login(port: int, user: str | None, password: str | None) -> int:
    return probe("127.0.0.1", port, user, password, timeout=2.0)


def test_starts_and_accepts_service_login(broker: BrokerProcess) -> None:
    assert broker.running and broker.pid is not None
    assert login(broker.port, "node", "node-secret") == 0
    assert login(broker.port, "siren", "siren-secret") == 0


def test_anonymous_and_wrong_passwords_refused(broker: BrokerProcess) -> None:
    assert login(broker.port, None, None) != 0
    assert login(broker.port, "node", "wrong") != 0
    assert login(broker.port, "node", "") != 0
    assert login(broker.port, "nobody", "node-secret") != 0


def test_stop_leaves_no_process_and_is_idempotent(mosquitto_bin: str,
                                                  settings: BrokerSettings) -> None:
    before = {t.name for t in threading.enumerate()}
    proc = BrokerProcess(settings, mosquitto_bin)
    with proc:
        pid = proc.pid
        assert pid is not None
        assert os.getpgid(pid) == pid  # own process group
    assert not proc.running and proc.pid is None
    assert process_gone(pid)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    proc.stop()
    proc.stop()
    leaked = {t.name for t in threading.enumerate()} - before
    assert not {name for name in leaked if name.startswith("mosquitto-")}
    with pytest.raises(OSError):
        login(settings.port, "node", "node-secret")


def test_rendered_files_are_private_and_rewritten_only_when_changed(
        broker: BrokerProcess, settings: BrokerSettings) -> None:
    for path in (settings.conf_path, settings.passwd_path, settings.acl_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert write_files(settings) == []  # idempotent: same content, same salts kept
    os.chmod(settings.acl_path, 0o644)
    assert write_files(settings) == []
    assert stat.S_IMODE(settings.acl_path.stat().st_mode) == 0o600
    changed = replace(settings, users=(NODE, replace(SIREN, password="new-secret")))
    assert write_files(changed) == [settings.passwd_path]
    assert not list(settings.state_dir.glob(".*tmp*"))


def test_reload_picks_up_a_new_user(broker: BrokerProcess, settings: BrokerSettings) -> None:
    extra = MqttUser("display", "display-secret", "integration")
    assert login(broker.port, "display", "display-secret") != 0
    broker.reload(replace(settings, users=(*settings.users, extra)))
    assert wait_for(lambda: login(broker.port, "display", "display-secret") == 0, 5)


def test_zero_filled_snapshot_is_moved_aside(mosquitto_bin: str, settings: BrokerSettings,
                                             caplog: pytest.LogCaptureFixture) -> None:
    settings.state_dir.mkdir(parents=True)
    settings.db_path.write_bytes(b"\0" * 4096)
    with caplog.at_level(logging.WARNING, logger="broker.process"), \
            BrokerProcess(settings, mosquitto_bin) as proc:
        assert login(proc.port, "node", "node-secret") == 0
        aside = list(settings.state_dir.glob("mosquitto.db.corrupt-*"))
        assert len(aside) == 1 and aside[0].read_bytes() == b"\0" * 4096
    assert "moved Mosquitto snapshot" in caplog.text
    # Mosquitto wrote a fresh, valid snapshot on exit.
    assert settings.db_path.read_bytes().startswith(DB_MAGIC)


def test_snapshot_that_stops_mosquitto_is_moved_aside_and_start_retried(
        mosquitto_bin: str, settings: BrokerSettings) -> None:
    settings.state_dir.mkdir(parents=True)
    bad = DB_MAGIC + b"\0" * 4 + (99).to_bytes(4, "big")  # right magic, unknown version
    settings.db_path.write_bytes(bad)
    with BrokerProcess(settings, mosquitto_bin) as proc:
        assert login(proc.port, "node", "node-secret") == 0
        aside = list(settings.state_dir.glob("mosquitto.db.corrupt-*"))
        assert [p.read_bytes() for p in aside] == [bad]


def test_real_snapshot_survives_a_restart(mosquitto_bin: str, settings: BrokerSettings) -> None:
    with BrokerProcess(settings, mosquitto_bin):
        pass
    assert settings.db_path.read_bytes().startswith(DB_MAGIC)
    with BrokerProcess(settings, mosquitto_bin) as proc:
        assert login(proc.port, "node", "node-secret") == 0
    assert not list(settings.state_dir.glob("mosquitto.db.corrupt-*"))


def test_port_in_use_raises_with_mosquitto_output(mosquitto_bin: str,
                                                  settings: BrokerSettings) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", settings.port))
        blocker.listen()
        proc = BrokerProcess(settings, mosquitto_bin)
        with pytest.raises(BrokerStartError, match=r"(?i)address already in use"):
            proc.start(timeout=5)
        assert not proc.running


def test_missing_binary_raises(settings: BrokerSettings) -> None:
    with pytest.raises(BrokerStartError, match="cannot run"):
        BrokerProcess(settings, "/nonexistent/mosquitto").start(timeout=2)


def test_supervisor_restarts_a_killed_broker(broker: BrokerProcess) -> None:
    first = broker.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert wait_for(lambda: broker.restarts == 1 and broker.running, 10)
    assert broker.pid not in (None, first)
    assert login(broker.port, "node", "node-secret") == 0
    second = broker.pid
    assert second is not None
    os.kill(second, signal.SIGKILL)
    assert wait_for(lambda: broker.restarts == 2 and broker.running, 10)


def test_supervisor_outlives_a_restart_that_cannot_write_its_files(
        broker: BrokerProcess, settings: BrokerSettings, caplog: pytest.LogCaptureFixture) -> None:
    """A full disk or a vanished state directory makes a restart raise OSError, not
    BrokerStartError: the supervisor keeps trying and brings the broker back."""
    first = broker.pid
    assert first is not None
    away = settings.state_dir.with_name("mqtt-away")
    settings.state_dir.rename(away)
    settings.state_dir.write_text("not a directory")  # the files cannot be written: OSError
    caplog.set_level(logging.DEBUG, logger="broker.process")
    os.kill(first, signal.SIGKILL)
    assert wait_for(lambda: sum("restarting Mosquitto failed" in r.getMessage()
                                for r in caplog.records) >= 2, 10)
    assert "FileExistsError" in caplog.text or "NotADirectoryError" in caplog.text
    settings.state_dir.unlink()
    away.rename(settings.state_dir)
    assert wait_for(lambda: broker.restarts == 1 and broker.running, 10)
    assert login(broker.port, "node", "node-secret") == 0


def _sub(port: int, user: str, password: str, topic: str, out: Path) -> subprocess.Popen[bytes]:
    exe = require_binary("mosquitto_sub", "/usr/bin/mosquitto_sub")
    return subprocess.Popen(
        [exe, "-h", "127.0.0.1", "-p", str(port), "-u", user, "-P", password, "-V", "mqttv311",
         "-q", "1", "-v", "-t", topic], stdout=out.open("wb"), stderr=subprocess.STDOUT)


def _pub(port: int, user: str, password: str, topic: str, message: str) -> None:
    exe = require_binary("mosquitto_pub", "/usr/bin/mosquitto_pub")
    subprocess.run([exe, "-h", "127.0.0.1", "-p", str(port), "-u", user, "-P", password,
                    "-V", "mqttv311", "-q", "1", "-t", topic, "-m", message],
                   check=True, timeout=10, capture_output=True)


def test_acl_with_mqtt311_tools(broker: BrokerProcess, tmp_path: Path) -> None:
    """The ACL itself, seen by plain MQTT 3.1.1 clients (Mosquitto drops denied publishes)."""
    service_out, siren_out = tmp_path / "service.txt", tmp_path / "siren.txt"
    subs = [_sub(broker.port, "node", "node-secret", "bart/v1/#", service_out),
            _sub(broker.port, "siren", "siren-secret", "bart/v1/#", siren_out)]
    try:
        time.sleep(0.5)
        _pub(broker.port, "siren", "siren-secret", "bart/v1/x/public/alert", "forged")
        _pub(broker.port, "node", "node-secret", "bart/v1/x/private/report", "private")
        _pub(broker.port, "node", "node-secret", "bart/v1/x/public/alert", "public")
        assert wait_for(lambda: b"public" in siren_out.read_bytes()
                        and b"public" in service_out.read_bytes(), 5)
    finally:
        for sub in subs:
            sub.terminate()
            sub.wait(5)
    service, siren = service_out.read_text(), siren_out.read_text()
    assert "forged" not in service and "forged" not in siren
    assert "bart/v1/x/private/report private" in service
    assert "private" not in siren
    assert "bart/v1/x/public/alert public" in siren


def test_root_runs_the_broker_as_the_configured_account(mosquitto_bin: str) -> None:
    """DESIGN §9: started as root, Mosquitto switches to `user` and must still read its files."""
    if os.geteuid() != 0:
        pytest.skip("only meaningful when the tests run as root")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' account")
    base = Path(tempfile.mkdtemp(prefix="bart-broker-"))  # /tmp: traversable by nobody
    try:
        base.chmod(0o755)
        settings = BrokerSettings(state_dir=base / "mqtt", port=free_port(), users=(NODE,),
                                  run_as_user="nobody")
        with BrokerProcess(settings, mosquitto_bin) as proc:
            assert login(proc.port, "node", "node-secret") == 0
            assert proc.pid is not None
            assert os.stat(f"/proc/{proc.pid}").st_uid == nobody.pw_uid
        for path in (settings.state_dir, settings.passwd_path, settings.acl_path):
            assert path.stat().st_uid == nobody.pw_uid
        assert settings.db_path.read_bytes().startswith(DB_MAGIC)  # nobody could write it
    finally:
        shutil.rmtree(base)


def test_a_broker_that_never_answers_times_out_and_leaves_nothing(
        settings: BrokerSettings, tmp_path: Path) -> None:
    """A hung start is killed with its whole process group (no orphaned children)."""
    fake = tmp_path / "fake-mosquitto"
    pid_file = tmp_path / "child.pid"
    fake.write_text("#!/bin/sh\n"
                    "echo 'Error: simulated hang' >&2\n"
                    f"sleep 60 & echo $! > {pid_file}\n"
                    "wait\n")
    fake.chmod(0o755)
    proc = BrokerProcess(settings, str(fake))
    started = time.monotonic()
    with pytest.raises(BrokerStartError, match="simulated hang"):
        proc.start(timeout=1.0)
    assert time.monotonic() - started < 8
    child = int(pid_file.read_text())
    assert wait_for(lambda: process_gone(child), 5)
    assert not proc.running
