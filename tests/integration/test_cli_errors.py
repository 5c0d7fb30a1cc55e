"""Every `bart` command says what is wrong in words: the typical mistakes, made with the
real command (`.venv/bin/bart` as a process) against real parts — a PostgreSQL that is
down (a closed port), a port held by a real socket, a node that runs or does not.
Each answer is one or two lines in the command's own terms with the documented exit
code (docs/cli.md), and never a traceback or a library's URL unless --debug."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

BART = str(Path(sys.executable).parent / "bart")
NOT_SHOWN = ("Traceback", "pydantic.dev", "sqlalche.me", "urlopen error", "Errno")


def bart(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BART_")}
    return subprocess.run([BART, *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def said(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """The error's words: exit ``code``, every one of ``words`` on stderr, at most two
    lines of it, and nothing a person cannot act on."""
    err = result.stderr
    assert result.returncode == code, (result.returncode, result.stdout, err)
    for w in words:
        assert w in err, (w, err)
    for bad in NOT_SHOWN:
        assert bad not in err + result.stdout, (bad, err)
    assert len(err.strip().splitlines()) <= 2, err
    return err


def closed_port() -> int:
    """A port nothing listens on (a PostgreSQL that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another program holds: a real listening socket."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    path = tmp_path / "node"
    done = bart("node", "init", "--name", "escamp-west", "--area", "ESCAMP",
                "--data-dir", str(path), "--http-port", str(closed_port()),
                "--mqtt-port", str(closed_port()), "--mesh-port", "0")
    assert done.returncode == 0, done.stderr
    return path


@pytest.fixture
def central_dir(tmp_path: Path) -> Path:
    path = tmp_path / "central"
    done = bart("central", "init", "--name", "test", "--data-dir", str(path),
                "--http-port", str(closed_port()))
    assert done.returncode == 0, done.stderr
    return path


# -- names and values ------------------------------------------------------------------


def test_node_init_names_the_flag_and_its_rule(tmp_path: Path) -> None:
    area = bart("node", "init", "--name", "escamp-west", "--area", "escamp",
                "--data-dir", str(tmp_path / "a"))
    said(area, 1, "bart: --area must be an area code", "ESCAMP", "(not 'escamp')")
    name = bart("node", "init", "--name", "Escamp West", "--area", "ESCAMP",
                "--data-dir", str(tmp_path / "b"))
    said(name, 1, "--name 'Escamp West' is not a node name", "e.g. escamp-west")
    port = bart("node", "init", "--name", "escamp-west", "--area", "ESCAMP",
                "--http-port", "0", "--data-dir", str(tmp_path / "c"))
    said(port, 1, "--http-port must be a port number from 1 to 65535")
    assert not (tmp_path / "a" / "node.toml").exists()  # nothing half-made
    assert not (tmp_path / "b" / "keys").exists()


def test_a_node_name_is_refused_by_central_as_by_the_node(central_dir: Path,
                                                          tmp_path: Path) -> None:
    """One rule (node.config.check_node_name) wherever a node name is taken."""
    at_node = said(bart("node", "init", "--name", "Escamp West", "--area", "ESCAMP",
                        "--data-dir", str(tmp_path / "n")), 1)
    at_central = said(bart("central", "enroll-code", "--node", "Escamp West", "--area",
                           "ESCAMP", "--data-dir", str(central_dir)), 1,
                      "bart: ")
    rule = "'Escamp West' is not a node name: use lower-case letters"
    assert rule in at_node and rule in at_central
    said(bart("central", "revoke", "Escamp West", "--data-dir", str(central_dir)), 1, rule)
    ok = bart("central", "enroll-code", "--node", "escamp-west", "--area", "ESCAMP",
              "--data-dir", str(central_dir))
    assert ok.returncode == 0 and "bart node enroll" in ok.stdout, ok.stderr


def test_a_wrong_setting_in_node_toml_is_named_with_the_file(node_dir: Path) -> None:
    toml = node_dir / "node.toml"
    toml.write_text(toml.read_text().replace('area = "ESCAMP"', 'area = "escamp"'))
    err = said(bart("keys", "show", "--data-dir", str(node_dir)), 1,
               f"area in {toml} must be an area code", "fix: correct it in")
    assert "--area" not in err


def test_no_node_and_no_central_say_how_to_make_one(tmp_path: Path) -> None:
    said(bart("node", "run", "--data-dir", str(tmp_path / "none")), 1, "bart node init")
    said(bart("central", "nodes", "--data-dir", str(tmp_path / "none")), 1,
         "bart central init")


def test_wrong_usage_is_exit_2(tmp_path: Path) -> None:
    result = bart("node", "init", "--area", "ESCAMP")
    assert result.returncode == 2 and "--name" in result.stderr


# -- PostgreSQL down, ports in use -------------------------------------------------------


def test_central_with_postgresql_down(central_dir: Path, tmp_path: Path) -> None:
    url = f"postgresql://bart@127.0.0.1:{closed_port()}/bart"
    run = bart("central", "run", "--data-dir", str(central_dir), "--database-url", url)
    said(run, 3, "bart: PostgreSQL at 127.0.0.1", "does not answer",
         "sudo systemctl start postgresql", "--database-url")
    said(bart("central", "nodes", "--data-dir", str(central_dir), "--database-url", url),
         3, "does not answer")
    # init checks the database before it makes anything: a retry is not refused later
    fresh = tmp_path / "fresh"
    said(bart("central", "init", "--data-dir", str(fresh), "--database-url", url), 3,
         "does not answer")
    assert not fresh.exists()
    said(bart("central", "nodes", "--data-dir", str(central_dir), "--database-url",
              "mysql://x@localhost/bart"), 1, "--database-url", "postgresql://USER@HOST")


def test_debug_shows_the_traceback_anywhere_on_the_line(central_dir: Path) -> None:
    url = f"postgresql://bart@127.0.0.1:{closed_port()}/bart"
    for args in (["--debug", "central", "nodes"], ["central", "nodes", "--debug"]):
        result = bart(*args, "--data-dir", str(central_dir), "--database-url", url)
        assert result.returncode == 3
        assert "Traceback" in result.stderr and "does not answer" in result.stderr


def test_ports_in_use_stop_node_and_central_before_they_start(
        node_dir: Path, central_dir: Path, held_port: int) -> None:
    portal = bart("node", "run", "--data-dir", str(node_dir), "--http-port", str(held_port))
    said(portal, 3, f"bart: port {held_port} is in use by another program",
         "the portal", f"ss -ltnp 'sport = :{held_port}'", "--http-port N")
    assert "is up" not in portal.stdout + portal.stderr
    broker = bart("node", "run", "--data-dir", str(node_dir), "--mqtt-port", str(held_port))
    said(broker, 3, "Mosquitto", "--mqtt-port N")
    central = bart("central", "run", "--data-dir", str(central_dir), "--http-port",
                   str(held_port))
    said(central, 3, "bart: port", "so central cannot listen")


# -- a node that does not run, or runs already -------------------------------------------


def test_a_stopped_node_is_said_to_be_stopped(node_dir: Path) -> None:
    for args in (["status"], ["node", "mesh"]):
        said(bart(*args, "--data-dir", str(node_dir)), 3,
             "node escamp-west is not running: nothing answers on http://127.0.0.1:",
             f"bart node run --data-dir {node_dir}")
    doctor = bart("node", "doctor", "--data-dir", str(node_dir))
    assert doctor.returncode == 1, doctor.stdout
    assert "Everything checked is fine" not in doctor.stdout
    assert "portal: the node is not running" in doctor.stdout
    assert f"fix: start it: bart node run --data-dir {node_dir}" in doctor.stdout
    # in a chroot or an image (--offline, no systemd) not running is expected: no
    # failure, but the summary says so
    offline = bart("node", "doctor", "--offline", "--data-dir", str(node_dir))
    assert "Everything checked is fine" not in offline.stdout
    assert "the node is not running" in offline.stdout


@pytest.mark.timeout(120)
def test_a_second_run_of_a_running_node_is_refused(mosquitto_bin: str, node_dir: Path,
                                                   tmp_path: Path) -> None:
    port = tomllib.loads((node_dir / "node.toml").read_text())["http_port"]
    log = (tmp_path / "node.log").open("w")
    proc = subprocess.Popen([BART, "node", "run", "--data-dir", str(node_dir)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while bart("status", "--data-dir", str(node_dir), "--debug").returncode == 3:
            assert proc.poll() is None, (tmp_path / "node.log").read_text()
            assert time.monotonic() < deadline, "the node did not start"
            time.sleep(0.2)
        again = bart("node", "run", "--data-dir", str(node_dir))
        said(again, 3, "node escamp-west is running already", f"127.0.0.1:{port}",
             "sudo systemctl stop bart-node")
        assert proc.poll() is None  # the first one runs on
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


def test_enrolment_over_plain_http_on_the_internet_is_refused(node_dir: Path) -> None:
    """The one-time code would cross the network unprotected and the answer is
    authenticated with that code only (docs/threat-model.md): plain http only for
    this machine or a private network address. Nothing is sent, nothing written."""
    err = said(bart("node", "enroll", "http://bart.example.nl", "--code", "ABCD-EFGH-JKMN",
                    "--data-dir", str(node_dir)), 1,
               "central's URL is plain http (http://bart.example.nl)", "https://")
    assert "one-time code" in err
    assert not (node_dir / "central").exists()
