"""Idle footprint of a node: memory (VmRSS) and bytes written to disk while idle.

A real node (``bart node run``) is started, waits until healthy, then idles for
a window (300 s; ``--quick`` 60 s). Measured over the window, for the node
process and its Mosquitto separately: VmRSS (sampled every few seconds),
``write_bytes`` from /proc/<pid>/io (bytes sent to the block layer), and the
growth of the files in the data directory; writes are extrapolated to bytes
per hour. Baselines over the same window, running at the same time: a bare
``python -S -c`` sleeping (imports nothing) and a bare ``mosquitto -p PORT``
with its default configuration.

``--enrolled`` first starts a central (``bart central run``, SQLite, in the same
temporary directory) and enrols the node with ``bart node enroll``: its uplink
then polls central all through the window, which is what a deployed node does
(central's own writes are not counted: it runs elsewhere).

``--reports N`` fills the node's store with N reports first (straight into its
SQLite file after a first start made the schema; held by central already, so an
enrolled node's uplink polls instead of sending them; recent stamps, so
retention prunes nothing). ``--streams K`` opens K live streams
(``GET /api/v1/stream``, from K loopback addresses 127.0.1.x) before the window
and keeps them open through it. Issue 15's memory goal is for ``--enrolled
--reports 100000 --streams 100``. ``--no-discovery`` turns mDNS discovery off
(``[mesh] discovery = false``; on by default, as in production).

Run: ``.venv/bin/python bench/idle.py [--quick] [--enrolled] [--reports N]
[--streams K] [--no-discovery]``. Goals: node RSS <= 80 MB, node + Mosquitto
write <= 1 MB/h.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support
from _common import (
    AREA,
    BART,
    NODE_NAME,
    PYTHON,
    Node,
    Procs,
    alive,
    children,
    describe,
    free_port,
    proc_io,
    ratio,
    rss_kb,
    wait_healthy,
)

from tests.support.node import fill_reports

RSS_GOAL_MB = 80.0
WRITE_GOAL_MB_H = 1.0
MB = 1024 * 1024


@dataclass
class Watch:
    """One process watched over the window."""

    name: str
    pid: int
    rss: list[int] = field(default_factory=list)
    io0: dict[str, int] = field(default_factory=dict)
    io1: dict[str, int] = field(default_factory=dict)

    def sample(self) -> None:
        if alive(self.pid):
            self.rss.append(rss_kb(self.pid))

    def delta(self, key: str) -> int:
        return self.io1.get(key, 0) - self.io0.get(key, 0)


def tree_sizes(root: Path) -> dict[str, int]:
    """Apparent size of every file under ``root``."""
    out: dict[str, int] = {}
    for path in root.rglob("*"):
        try:
            if path.is_file():
                out[str(path.relative_to(root))] = path.stat().st_size
        except OSError:
            continue
    return out


def main() -> int:
    """Start node + baselines, idle for the window, print footprint and ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="60 s window instead of 300 s")
    ap.add_argument("--window", type=float, help="seconds to idle")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds after healthy")
    ap.add_argument("--every", type=float, default=5.0, help="seconds between RSS samples")
    ap.add_argument("--enrolled", action="store_true",
                    help="enrol the node with a central first (its uplink polls all along)")
    ap.add_argument("--reports", type=int, default=0, help="reports in the store first")
    ap.add_argument("--streams", type=int, default=0, help="live streams open all along")
    ap.add_argument("--no-discovery", action="store_true", help="mDNS discovery off")
    args = ap.parse_args()
    window = args.window or (60.0 if args.quick else 300.0)
    print(f"idle: {'enrolled' if args.enrolled else 'unenrolled'} node, "
          f"{args.reports} reports, {args.streams} streams, discovery "
          f"{'off' if args.no_discovery else 'on'}, "
          f"window {window:g} s after {args.settle:g} s settle; {describe()}; "
          f"load average {os.getloadavg()[0]:.2f}")

    tmp = Path(tempfile.mkdtemp(prefix="bart-bench-idle-"))
    try:
        with Procs(tmp) as procs:
            node = Node(procs, log_level="INFO")
            if args.no_discovery:
                with (node.data_dir / "node.toml").open("a", encoding="utf-8") as fh:
                    fh.write("\n[mesh]\ndiscovery = false\n")
            if args.enrolled:
                enrol(procs, node)
            if args.reports:
                node.start(timeout=60)  # the schema
                node.stop()
                fill_reports(node.data_dir / "node.db", NODE_NAME, args.reports)
            node.start(timeout=60)
            streams = [open_stream(node.http_port, f"127.0.1.{i % 250 + 1}")
                       for i in range(args.streams)]
            assert node.mosquitto_pid is not None
            sleeper = "import time\nwhile 1: time.sleep(3600)"
            bare_py = procs.start([str(PYTHON), "-S", "-c", sleeper], "bare-python")
            bare_dir = tmp / "bare-mosquitto"
            bare_dir.mkdir()
            mq_port = free_port()
            procs.patterns.append(f"mosquitto -p {mq_port}")
            bare_mq = procs.start([node_mosquitto_binary(), "-p", str(mq_port)], "bare-mosquitto",
                                  cwd=bare_dir)
            time.sleep(args.settle)
            if bare_mq.poll() is not None:
                raise RuntimeError("bare mosquitto exited (see bare-mosquitto.log)")
            watches = [Watch("node (python)", node.pid),
                       Watch("node's mosquitto", node.mosquitto_pid),
                       Watch("bare python -S", bare_py.pid),
                       Watch("bare mosquitto", bare_mq.pid)]
            for w in watches:
                w.io0 = proc_io(w.pid)
                w.sample()
            files0 = tree_sizes(node.data_dir)
            start = time.monotonic()
            while (left := window - (time.monotonic() - start)) > 0:
                time.sleep(min(args.every, left))
                for w in watches:
                    w.sample()
            elapsed = time.monotonic() - start
            for w in watches:
                w.io1 = proc_io(w.pid)
            files1 = tree_sizes(node.data_dir)
            if args.enrolled:
                import httpx
                up = httpx.get(f"{node.url}/healthz", timeout=5).json().get("uplink", {})
                print(f"uplink after the window: {up}")
            if children(node.pid, "mosquitto") != [node.mosquitto_pid]:
                print("warning: the node's Mosquitto was restarted during the window")
            node_log = (tmp / "node.log").read_text(errors="replace")
            for sock in streams:
                sock.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    per_h = 3600.0 / elapsed
    print(f"{'process':>18} {'RSS start':>10} {'RSS end':>9} {'RSS max':>9} "
          f"{'write_bytes':>12} {'=> per hour':>12} {'wchar':>9} {'syscw':>6}")
    for w in watches:
        print(f"{w.name:>18} {w.rss[0] / 1024:8.1f}MB {w.rss[-1] / 1024:7.1f}MB "
              f"{max(w.rss) / 1024:7.1f}MB {w.delta('write_bytes'):12d} "
              f"{w.delta('write_bytes') * per_h / 1024:10.1f}KB {w.delta('wchar'):9d} "
              f"{w.delta('syscw'):6d}")
    grown = {k: files1.get(k, 0) - files0.get(k, 0) for k in set(files0) | set(files1)}
    changed = {k: v for k, v in sorted(grown.items()) if v}
    print(f"data dir growth: {sum(grown.values())} bytes in {elapsed:.0f} s "
          f"({sum(grown.values()) * per_h / 1024:.1f} KB/h); files changed in size: "
          f"{changed or 'none'}")
    log_lines = [ln for ln in node_log.splitlines() if ln.strip()]
    print(f"node log lines (level INFO, to a pipe, not the data dir): {len(log_lines)}")

    node_w, node_mq, bare_w, bare_m = watches
    node_rss = node_w.rss[-1] / 1024
    written = (node_w.delta("write_bytes") + node_mq.delta("write_bytes")) * per_h / MB
    base_written = (bare_w.delta("write_bytes") + bare_m.delta("write_bytes")) * per_h / MB
    print(f"ratios vs baseline: node RSS / bare python RSS = "
          f"{ratio(node_w.rss[-1], bare_w.rss[-1])}, node's mosquitto RSS / bare mosquitto "
          f"RSS = {ratio(node_mq.rss[-1], bare_m.rss[-1])}, writes node+mosquitto / bare = "
          f"{ratio(written, base_written)} ({base_written * 1024:.1f} KB/h bare)")
    rss_ok = node_rss <= RSS_GOAL_MB
    w_ok = written <= WRITE_GOAL_MB_H
    print(f"RESULT idle: node RSS {node_rss:.1f} MB (goal <= {RSS_GOAL_MB:g}) "
          f"{'MET' if rss_ok else 'NOT MET'}; Mosquitto RSS {node_mq.rss[-1] / 1024:.1f} MB; "
          f"written {written * 1024:.1f} KB/h node+mosquitto (goal <= "
          f"{WRITE_GOAL_MB_H:g} MB/h) {'MET' if w_ok else 'NOT MET'}")
    return 0 if rss_ok and w_ok else 1


def enrol(procs: Procs, node: Node) -> None:
    """Start a central on SQLite and enrol ``node`` with it (before the node runs)."""
    cdir = procs.tmp / "central"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    subprocess.run([str(BART), "central", "init", "--data-dir", str(cdir), "--http-port",
                    str(port), "--public-url", url], check=True, stdout=subprocess.DEVNULL)
    central = procs.start([str(BART), "central", "run", "--data-dir", str(cdir)], "central")
    wait_healthy(url, central, 30)
    out = subprocess.run([str(BART), "central", "enroll-code", "--data-dir", str(cdir),
                          "--node", NODE_NAME, "--area", AREA], check=True,
                         capture_output=True, text=True).stdout
    code = out.split(": ", 1)[1].split()[0]
    subprocess.run([str(BART), "node", "enroll", url, "--code", code, "--data-dir",
                    str(node.data_dir)], check=True, stdout=subprocess.DEVNULL)


def open_stream(port: int, source: str) -> socket.socket:
    """A live stream from ``source`` (a loopback address), read up to ``: connected``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock.sendall(b"GET /api/v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    got = b""
    while b": connected" not in got:
        chunk = sock.recv(4096)
        if not chunk or (not got and not chunk.startswith(b"HTTP/1.1 200 ")):
            raise RuntimeError(f"stream from {source} refused: {(got + chunk)[:200]!r}")
        got += chunk
    return sock


def node_mosquitto_binary() -> str:
    """The Mosquitto the node uses (``mosquitto`` on PATH, else /usr/sbin/mosquitto)."""
    return shutil.which("mosquitto") or "/usr/sbin/mosquitto"


if __name__ == "__main__":
    sys.exit(main())
