"""Shared helpers of the benchmarks: free ports, a real node subprocess, /proc reads.

Every process a benchmark starts is registered with a :class:`Procs`, which
stops it by its own pid (SIGTERM, then SIGKILL) and afterwards checks with
``pgrep -f`` that nothing whose command line names the benchmark's temporary
directory is left (a node's Mosquitto is started with ``-c <data dir>/…``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv" / "bin"
BART = VENV / "bart"
PYTHON = VENV / "python"
REPORTS = REPO / "tests" / "data" / "reports.jsonl"
NODE_NAME = "bench-node"
AREA = "ESC-01"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def describe() -> str:
    """The commit measured, marked dirty when product code differs from it."""
    def git(*args: str) -> str:
        res = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                             check=False)
        return res.stdout.strip()

    dirty = git("status", "--porcelain", "--", "node", "sync", "broker", "bart", "hardware")
    return f"commit {git('rev-parse', '--short', 'HEAD') or '?'}{' + local changes' * bool(dirty)}"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cmd: Sequence[str], core: int | None) -> list[str]:
    """``cmd`` run under ``taskset -c core`` (or as is when ``core`` is None)."""
    return (["taskset", "-c", str(core)] if core is not None else []) + list(cmd)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (which need not be sorted)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def ratio(a: float, b: float) -> str:
    """``a / b`` as text, or ``n/a`` when ``b`` is zero."""
    return f"{a / b:.2f}" if b else "n/a"


# -- /proc ----------------------------------------------------------------------------

def rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def proc_io(pid: int) -> dict[str, int]:
    """/proc/<pid>/io as a mapping (write_bytes, wchar, syscw, …)."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = int(value)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads) so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid: int, comm: str | None = None) -> list[int]:
    """Direct children of ``pid`` (optionally only those whose comm is ``comm``)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == pid and (comm is None or name == comm):
            found.append(int(entry.name))
    return found


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def descendants(pid: int) -> list[int]:
    """``pid``'s children, their children and so on (zombies included)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and every process under it, the ended ones included.

    For each process of the tree that still exists (zombies too): its own user +
    system time and that of its waited-for children that ended (cutime +
    cstime). A process that ended between two calls is counted in its parent's
    cutime once reaped, so the difference of two calls is all the tree spent —
    e.g. PostgreSQL backends that served a connection and exited.
    """
    total = 0
    for p in [pid, *descendants(pid)]:
        fields = _stat_fields(p)
        if fields is not None:
            total += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return total / CLK_TCK


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


# -- process registry -------------------------------------------------------------------

def _relay(src: IO[bytes], dest: IO[bytes]) -> None:
    with src:
        for chunk in iter(lambda: src.read1(65536), b""):  # type: ignore[attr-defined]
            dest.write(chunk)
            dest.flush()


class Procs:
    """Processes a benchmark started; all stopped and checked on exit."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.popens: list[subprocess.Popen[bytes]] = []
        self.extra_pids: list[int] = []  # grandchildren (a node's Mosquitto)
        self.patterns: list[str] = [str(tmp)]
        self._logs: list[IO[bytes]] = []
        self._relays: list[threading.Thread] = []

    def start(self, cmd: Sequence[str], name: str, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``cmd``; its output goes through a pipe into ``tmp/<name>.log``.

        A pipe, not the file itself, so that the log's disk writes are this
        process's and not counted in the child's /proc/<pid>/io ``write_bytes``
        (in production a node logs to journald through a pipe too).
        """
        log = (self.tmp / f"{name}.log").open("wb")
        self._logs.append(log)
        proc = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                cwd=cwd or self.tmp)
        assert proc.stdout is not None
        relay = threading.Thread(target=_relay, args=(proc.stdout, log), daemon=True)
        relay.start()
        self._relays.append(relay)
        self.popens.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
        """SIGTERM ``proc`` (a node then stops its own Mosquitto), SIGKILL if it lingers."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        """Stop everything, then verify with pgrep that nothing is left."""
        for proc in reversed(self.popens):
            self.stop(proc)
        for pid in self.extra_pids:
            if alive(pid):
                print(f"  warning: pid {pid} outlived its parent; killing it", file=sys.stderr)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for relay in self._relays:
            relay.join(timeout=5)
        for log in self._logs:
            log.close()
        left: list[str] = []
        for pattern in self.patterns:
            res = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True,
                                 check=False)
            left += [ln for ln in res.stdout.splitlines()
                     if ln.split()[0] != str(os.getpid()) and "pgrep" not in ln]
        left += [f"{pid} (still alive)" for pid in self.extra_pids if alive(pid)]
        print(f"cleanup: pgrep -af {' / '.join(self.patterns)} -> "
              f"{left or 'nothing left'}")

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close()
        if exc_type is not None:  # show why, before the caller removes the directory
            for log in sorted(self.tmp.glob("*.log")):
                tail = log.read_text(errors="replace").splitlines()[-15:]
                print(f"--- last lines of {log.name}:", *tail, sep="\n  ", file=sys.stderr)


# -- a real node ----------------------------------------------------------------------------

class Node:
    """``bart node init`` + ``bart node run`` in a subprocess on free ports."""

    def __init__(self, procs: Procs, *, peers: dict[str, str] | None = None,
                 core: int | None = None, log_level: str = "WARNING") -> None:
        self.procs = procs
        self.data_dir = procs.tmp / "node"
        self.http_port = free_port()
        self.mqtt_port = free_port()
        subprocess.run([str(BART), "node", "init", "--name", NODE_NAME, "--area", AREA,
                        "--data-dir", str(self.data_dir), "--http-port", str(self.http_port),
                        "--mqtt-port", str(self.mqtt_port)],
                       check=True, stdout=subprocess.DEVNULL)
        if peers:
            lines = [f'[peers.{o}]\nsigning_key = "{k}"\n' for o, k in peers.items()]
            (self.data_dir / "peers.toml").write_text("\n".join(lines))
            # Peers' events as fast as the bench sends them: no per-origin budget
            # (docs/mesh.md, "A peer's rate").
            with (self.data_dir / "node.toml").open("a", encoding="utf-8") as fh:
                fh.write("\n[mesh]\norigin_rate_per_min = 60000.0\norigin_burst = 1000000\n")
        self.env = {"BART_REPORTS_PER_MINUTE": "0", "BART_LOG_LEVEL": log_level}
        # BART_BENCH_RUNNER=script.py runs `python script.py node run …` instead of `bart`
        # (a script that patches something, then calls bart.cli.main): A/B without edits.
        runner = os.environ.get("BART_BENCH_RUNNER")
        front = [str(PYTHON), str(Path(runner).resolve())] if runner else [str(BART)]
        self.cmd = pinned([*front, "node", "run", "--data-dir", str(self.data_dir)], core)
        self.proc: subprocess.Popen[bytes] | None = None
        self.mosquitto_pid: int | None = None

    @property
    def url(self) -> str:
        """Base URL of the portal."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int:
        """Process id of the node (the uvicorn process)."""
        assert self.proc is not None
        return self.proc.pid

    def secrets(self) -> dict[str, str]:
        """The MQTT passwords written by ``bart node init``."""
        data: dict[str, str] = json.loads((self.data_dir / "secrets/mqtt.json").read_text())
        return data

    def start(self, timeout: float = 30.0) -> None:
        """Run the node and wait until /healthz says ok; remember Mosquitto's pid."""
        self.proc = self.procs.start(self.cmd, "node", env=self.env)
        wait_healthy(self.url, self.proc, timeout)
        found = children(self.pid, "mosquitto")
        if not found:
            raise RuntimeError("the node runs but no Mosquitto child was found")
        self.mosquitto_pid = found[0]
        self.procs.extra_pids.append(found[0])

    def stop(self) -> None:
        """SIGTERM the node; its lifespan stops Mosquitto."""
        if self.proc is not None:
            self.procs.stop(self.proc)


def wait_healthy(base_url: str, proc: subprocess.Popen[bytes], timeout: float,
                 path: str = "/healthz") -> None:
    """Poll ``base_url + path`` until it answers 200 (and status ok, when JSON says)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} while starting")
        try:
            with urllib.request.urlopen(base_url + path, timeout=2) as resp:
                body: Any = json.loads(resp.read() or b"{}")
                if resp.status == 200 and body.get("status", "ok") == "ok":
                    return
        except (OSError, urllib.error.URLError, ValueError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{base_url}{path} not healthy after {timeout:.0f}s")


def load_reports() -> list[dict[str, Any]]:
    """Non-adversarial reports of tests/data/reports.jsonl in the API's shape."""
    out: list[dict[str, Any]] = []
    for line in REPORTS.read_text(encoding="utf-8").splitlines():
        row = json.loads(line) if line.strip() else {"adversarial": True}
        if row.get("adversarial"):
            continue
        out.append({"category": row["category"], "text": row["text"],
                    "place": {"point": None, "text": row["place"]},
                    "audience": row["audience"], "called_112": row["called_112"],
                    "lang": row["lang"]})
    return out
