"""A central as a real subprocess: ``bart central init`` + ``bart central run``."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.base import bart_command, free_port, log_tail, wait_until
from tests.support.html import csrf_of
from tests.support.node import (
    AREA,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    NodeProcess,
    assert_no_asgi_error,
)
from tests.support.processes import kill_group, terminate


@dataclass
class CentralProcess:
    """A central created with ``bart central init`` and run with ``bart central run``."""

    data_dir: Path
    http_port: int
    database_url: str
    log_path: Path
    workers: int = 1
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``bart central ARGS --data-dir …`` and return the finished process."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("BART_")}
        result = subprocess.run(
            [*bart_command(), "central", *args, "--data-dir", str(self.data_dir)],
            capture_output=True, text=True, env=env, timeout=60, check=False)
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def start(self, timeout: float = START_TIMEOUT_S, extra: Sequence[str] = ()) -> None:
        """``bart central run`` (with the flags in ``extra``); wait for /healthz."""
        assert self.proc is None or self.proc.poll() is not None, "central already running"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BART_")}
        env["PYTHONUNBUFFERED"] = "1"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*bart_command(), "central", "run", "--data-dir", str(self.data_dir),
                 "--workers", str(self.workers), *extra],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True)

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"central exited with {self.proc.returncode}:\n"
                                     f"{self.log_tail()}")
            return httpx.get(f"{self.url}/healthz", timeout=2.0).status_code == 200

        try:
            wait_until(up, timeout, 0.1, "central /healthz")
        except AssertionError as exc:
            self.kill()  # a supervisor whose workers failed may linger
            raise AssertionError(f"{exc}\n--- central log ---\n{self.log_tail()}") from None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        assert self.proc is not None
        code = terminate(self.proc, timeout, self.kill, "central", self.log_path)
        assert_no_asgi_error(self.log_path, "central")
        return code

    def kill(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            kill_group(proc.pid)
            proc.wait(10)

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)

    def add_staff(self, name: str, role: str) -> str:
        """``bart central staff add``: a new member's one-time password."""
        out = self.cli("staff", "add", name, "--role", role).stdout
        found = re.search(r"one-time password: (\S+)", out)
        assert found, out
        return found.group(1)

    def enrol(self, node: NodeProcess, area: str = AREA) -> None:
        """Enrol ``node`` the way a volunteer does: a code here, ``bart node enroll`` there."""
        out = self.cli("enroll-code", "--node", node.name, "--area", area).stdout
        code = out.split(": ", 1)[1].split()[0]
        result = subprocess.run(
            [*bart_command(), "node", "enroll", self.url, "--code", code,
             "--data-dir", str(node.data_dir)],
            capture_output=True, text=True, env=node.env(), timeout=60, check=False)
        assert result.returncode == 0, result.stderr


def init_central_process(base: Path, database_url: str = "", *, workers: int = 1,
                         name: str = "haaglanden") -> CentralProcess:
    """``bart central init`` in ``base/central`` on a free port (SQLite unless a URL is given)."""
    port = free_port()
    central = CentralProcess(data_dir=base / "central", http_port=port,
                             database_url=database_url, log_path=base / "central.log",
                             workers=workers)
    args = ["init", "--name", name, "--http-port", str(port),
            "--public-url", f"http://127.0.0.1:{port}"]
    if database_url:
        args += ["--database-url", database_url]
    central.cli(*args)
    return central


def staff_http_login(url: str, name: str, otp: str, password: str) -> httpx.Client:
    """A staff member's first login over HTTP (a browser without JavaScript): the
    one-time password, then their own. The logged-in client (close it)."""
    client = httpx.Client(base_url=url, timeout=10.0)
    page = client.get("/staff/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token, page.text[:300]
    r = client.post("/staff/login", data={"name": name, "password": otp,
                                          "login_token": token.group(1)})
    assert r.status_code == 303 and r.headers["location"] == "/staff/password", r.text[:300]
    page = client.get("/staff/password")
    r = client.post("/staff/password", data={"csrf": csrf_of(page.text), "old": otp,
                                             "new": password, "repeat": password})
    assert r.status_code == 303, r.text[:300]
    return client


def staff_real_use(url: str, otp: str, password: str, requests: int = 100) -> None:
    """Central used as staff use it (issue 15's memory; bench/central_memory.py and
    tests/integration/test_central_memory.py): an admin logs in with the one-time
    password ``otp`` and sets ``password`` (scrypt twice), makes a broadcast (a
    CAP document signed with XML-DSig), then ``requests`` requests go in turn to
    the login page, the CAP index and the signed document; every 10th the admin
    also opens the report list, the insight page and the nodes page. Raises
    AssertionError when any answer is not what a person would get."""
    staff = staff_http_login(url, "Ada Admin", otp, password)
    try:
        with httpx.Client(base_url=url, timeout=30.0) as public:
            page = staff.get("/staff/broadcasts").text
            r = staff.post("/staff/broadcasts", data={
                "csrf": csrf_of(page), "title": "Inbraakgolf", "text": "Sluit ramen en deuren.",
                "areas": "ESC-01", "severity": "severe", "category": "suspicious",
                "hours": "24"})
            assert r.status_code == 303, r.text[:300]
            docs: list[str] = []
            deadline = time.monotonic() + 20
            while True:  # the CAP index shows it once the projector has it
                index = public.get("/api/v1/cap/alerts.xml")
                docs = re.findall(r'(/api/v1/cap/alerts/[^"<\s]+\.xml)', index.text)
                if docs or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert docs, f"no CAP document in the index: {index.text[:300]}"
            paths = ("/staff/login", "/api/v1/cap/alerts.xml", docs[0])
            for i in range(requests):
                r = public.get(paths[i % len(paths)])
                assert r.status_code == 200, (paths[i % len(paths)], r.status_code)
                if i % len(paths) == 2:
                    assert b"Signature" in r.content, f"{docs[0]} is not signed"
                if i % 10 == 0:
                    for path in ("/staff/reports", "/staff/insight", "/staff/nodes"):
                        assert staff.get(path).status_code == 200, path
    finally:
        staff.close()
