"""Publish → SSE latency: a signed peer alert published to the node's Mosquitto
until its ``id:`` line arrives on GET /api/v1/stream.

Baseline in the same run, on the same Mosquitto: a raw paho QoS 1 publish of a
payload of the same size to a second paho client (subscribed at QoS 1 to a
topic the node does not read). The two are interleaved message by message.
Events are created and signed before any timer starts.

Run: ``.venv/bin/python bench/latency.py [--quick]``. Goal: node p99 <= 3 x raw p99.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from _common import AREA, Node, Procs, describe, load_reports, percentile
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from broker.topics import event_topic
from sync.event import Event, make_event
from sync.keys import KeyPair, b64

PEER = "bench-peer"
RAW_TOPIC = f"bart/v1/{PEER}/raw/alert"  # not matched by the node's bart/v1/+/public/#
NODE_CORE = 0
BENCH_CORE = 1
GOAL = 3.0


class Waiter:
    """One expected message at a time; the receiving thread stamps its arrival."""

    def __init__(self) -> None:
        self.expected: object = None
        self.arrived = 0.0
        self.event = threading.Event()

    def expect(self, key: object) -> None:
        self.expected, self.arrived = key, 0.0
        self.event.clear()

    def seen(self, key: object, when: float) -> None:
        if key == self.expected and not self.event.is_set():
            self.arrived = when
            self.event.set()


class SseClient(threading.Thread):
    """A raw-socket SSE reader of /api/v1/stream that reports each ``id:`` line."""

    def __init__(self, port: int, waiter: Waiter) -> None:
        super().__init__(name="sse-client", daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.waiter = waiter
        self.connected = threading.Event()
        self.received = 0
        self.sock.sendall(b"GET /api/v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Accept: text/event-stream\r\n\r\n")

    def run(self) -> None:
        buf = b""
        self.sock.settimeout(None)
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            now = time.perf_counter()
            if not data:
                return
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.startswith(b"id: "):
                    self.received += 1
                    self.waiter.seen(line[4:].strip().decode("ascii"), now)
                elif line.startswith(b": connected"):
                    self.connected.set()

    def close(self) -> None:
        self.sock.close()


def paho_client(name: str, port: int, password: str) -> mqtt.Client:
    """A connected MQTT v5 client (user bart-node) running its own network thread."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name,
                         protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set("bart-node", password)
    connected = threading.Event()
    client.on_connect = lambda *_a: connected.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    if not connected.wait(10):
        raise RuntimeError(f"{name} did not connect to 127.0.0.1:{port}")
    return client


def make_alerts(keys: KeyPair, count: int) -> list[Event]:
    """``count`` signed public alerts of PEER with texts from tests/data/reports.jsonl."""
    reports = load_reports()
    now = time.time_ns() // 1_000_000
    out = []
    for i in range(count):
        r = reports[i % len(reports)]
        body = {"source": "team", "category": r["category"], "severity": "moderate",
                "title": "Bench", "text": r["text"], "place": r["place"], "areas": [AREA],
                "expires": None, "ref": None, "called_112": False}
        out.append(make_event(keys, origin=PEER, stream="public", seq=i + 1, kind="alert",
                              body=body, ts=now + i))
    return out


def timed(client: mqtt.Client, waiter: Waiter, key: object, topic: str, payload: bytes,
          timeout: float = 2.0) -> float | None:
    """Seconds from just before publish to arrival, or None when it never came."""
    waiter.expect(key)
    start = time.perf_counter()
    info = client.publish(topic, payload, qos=1)
    got = waiter.event.wait(timeout)
    info.wait_for_publish(timeout)  # PUBACK: at most one message outstanding
    return waiter.arrived - start if got else None


def report(name: str, values: list[float], lost: int) -> float:
    """Print p50/p99/max in ms; return p99."""
    ms = [v * 1000 for v in values]
    p99 = percentile(ms, 99)
    print(f"{name:>18}: n={len(ms)} lost={lost}  p50 {percentile(ms, 50):.3f} ms  "
          f"p90 {percentile(ms, 90):.3f} ms  p99 {p99:.3f} ms  max {max(ms):.3f} ms")
    return p99


def main() -> int:
    """Start a node trusting PEER; interleave raw and node measurements."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="500 messages instead of 1000")
    ap.add_argument("-n", type=int, help="messages per path")
    ap.add_argument("--warmup", type=int, default=50, help="unmeasured messages per path")
    ap.add_argument("--gap-ms", type=float, default=5.0, help="mean pause between messages")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help=f"do not pin the node + Mosquitto to CPU {NODE_CORE} and this "
                    f"client to CPU {BENCH_CORE}")
    args = ap.parse_args()
    n = args.n or (500 if args.quick else 1000)
    total = n + args.warmup

    if args.pin:
        os.sched_setaffinity(0, {BENCH_CORE})
    peer = KeyPair.generate()
    alerts = make_alerts(peer, total)
    raw_payloads = [e.encode() for e in make_alerts(peer, total)]
    payloads = [e.encode() for e in alerts]
    topic = event_topic(PEER, "public", "alert")
    print(f"latency: {n} messages per path after {args.warmup} warm-up, ~{args.gap_ms:g} ms "
          f"apart, payload {min(map(len, payloads))}-{max(map(len, payloads))} bytes; "
          + (f"node and its Mosquitto on CPU {NODE_CORE}, this client on CPU {BENCH_CORE} "
             "(taskset)" if args.pin else "no CPU pinning")
          + f"; {describe()}; load average {os.getloadavg()[0]:.2f}")

    tmp = Path(tempfile.mkdtemp(prefix="bart-bench-latency-"))
    raw: list[float] = []
    via_node: list[float] = []
    lost = {"raw": 0, "node": 0}
    try:
        with Procs(tmp) as procs:
            node = Node(procs, peers={PEER: b64(peer.signing_public)},
                        core=NODE_CORE if args.pin else None)
            node.start()
            password = node.secrets()["service_password"]
            node_wait, raw_wait = Waiter(), Waiter()
            sse = SseClient(node.http_port, node_wait)
            sse.start()
            if not sse.connected.wait(10):
                raise RuntimeError("the SSE stream did not start")
            sub = paho_client("bench-sub", node.mqtt_port, password)
            sub.on_message = lambda _c, _u, msg: raw_wait.seen(msg.payload, time.perf_counter())
            sub.subscribe(RAW_TOPIC, qos=1)
            time.sleep(0.5)  # SUBACK
            pub = paho_client("bench-pub", node.mqtt_port, password)
            rng = random.Random(7)
            try:
                for i in range(total):
                    r = timed(pub, raw_wait, raw_payloads[i], RAW_TOPIC, raw_payloads[i])
                    time.sleep(rng.uniform(0.6, 1.4) * args.gap_ms / 1000)
                    s = timed(pub, node_wait, alerts[i].id, topic, payloads[i])
                    time.sleep(rng.uniform(0.6, 1.4) * args.gap_ms / 1000)
                    if i < args.warmup:
                        continue
                    for name, value, dest in (("raw", r, raw), ("node", s, via_node)):
                        if value is None:
                            lost[name] += 1
                        else:
                            dest.append(value)
            finally:
                for client in (pub, sub):
                    client.disconnect()
                    client.loop_stop()
                sse.close()
                time.sleep(0.3)
                node.stop()
            conn = sqlite3.connect(f"file:{node.data_dir / 'node.db'}?mode=ro", uri=True)
            stored = conn.execute("SELECT COUNT(*) FROM events WHERE origin = ?",
                                  (PEER,)).fetchone()[0]
            conn.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    raw_p99 = report("raw paho→paho", raw, lost["raw"])
    node_p99 = report("node paho→SSE", via_node, lost["node"])
    print(f"node stored {stored} of {total} peer alerts; SSE delivered {sse.received}")
    r = node_p99 / raw_p99
    sound = not lost["node"] and not lost["raw"] and stored == total
    print(f"RESULT latency: p99 node {node_p99:.3f} ms, raw {raw_p99:.3f} ms, ratio "
          f"node/raw = {r:.2f} (goal <= {GOAL:g}) {'MET' if r <= GOAL else 'NOT MET'}")
    return 0 if sound and r <= GOAL else 1 if sound else 2


if __name__ == "__main__":
    sys.exit(main())
