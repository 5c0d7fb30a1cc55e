"""Panic button → SSE latency: hold complete on a gpiozero mock pin until the
alarm's ``id:`` line arrives on GET /api/v1/stream.

The node runs in this process (uvicorn on its own thread and loop) and drives
its mock pin; the hold time is subtracted (the detector fires exactly at edge +
hold_s). The observer is another process, as a phone or a siren would be: a
raw-socket SSE client and, for the baseline in the same run on the node's own
Mosquitto, the paho subscriber of a raw paho QoS 1 publish made here. Both
processes read CLOCK_MONOTONIC (``time.perf_counter`` on Linux), so the
moment the pin goes low and the moment the line arrives come from one clock.
(Until the fourth session the observer was a thread of this process: it then
waited for the node's GIL, which no real client does.)

Run: ``.venv/bin/python bench/button.py [--quick]``.
Goal: p99 <= 3 x raw p99 and never above 50 ms.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import describe, free_port, percentile
from latency import SseClient, Waiter, paho_client, report, timed

from node.config import NodeSettings, load_secrets
from node.server import NodeServer, uvicorn_config
from node.setup import init_node

HOLD_S = 0.5
GOAL = 3.0
CEILING_MS = 50.0


_STAGES = ("callback", "writer starts", "COMMIT done", "event loop", "SSE client")


def _instrument() -> dict[str, list[Any]]:
    """Time stamps at each hand-over of the alarm path (``--stages``; a diagnostic).

    Wraps the button service's two hand-over methods and the store's submit;
    the figures of the run itself are the same code path plus these stamps.
    """
    import node.buttons as buttons
    import node.store as store

    stamps: dict[str, list[Any]] = {k: [] for k in (*_STAGES, "rows")}
    from_thread, stored, submit = (buttons.ButtonService._from_thread,
                                   buttons.ButtonService._stored, store.Store.submit)

    def from_thread_(self: Any, *args: Any) -> None:
        stamps["callback"].append(time.perf_counter())
        from_thread(self, *args)

    def stored_(self: Any, *args: Any) -> None:
        stamps["event loop"].append(time.perf_counter())
        stored(self, *args)

    def submit_(self: Any, fn: Any, **kwargs: Any) -> Any:
        if "covered" not in kwargs:  # not a press (arming, disarming, …)
            return submit(self, fn, **kwargs)

        def timed(tx: Any) -> Any:
            stamps["writer starts"].append(time.perf_counter())
            return fn(tx)

        future = submit(self, timed, **kwargs)
        future.add_done_callback(lambda _f: stamps["COMMIT done"].append(time.perf_counter()))
        return future

    buttons.ButtonService._from_thread = from_thread_  # type: ignore[method-assign,assignment]
    buttons.ButtonService._stored = stored_  # type: ignore[method-assign,assignment]
    store.Store.submit = submit_  # type: ignore[method-assign]
    return stamps


RAW_TOPIC = "bart/v1/bench/raw/x"


def observe(http_port: int, mqtt_port: int) -> int:
    """The observer process: print ``sse ID T`` / ``raw KEY T`` as lines arrive.

    The service password comes on stdin (first line); EOF on stdin ends it.
    """
    password = sys.stdin.readline().strip()
    lock = threading.Lock()

    def emit(kind: str, key: object, when: float) -> None:
        with lock:
            sys.stdout.write(f"{kind} {key} {when!r}\n")
            sys.stdout.flush()

    class Printer(Waiter):
        def seen(self, key: object, when: float) -> None:
            emit("sse", key, when)

    sse = SseClient(http_port, Printer())
    sse.start()
    subscribed = threading.Event()
    sub = paho_client("bench-sub", mqtt_port, password)
    sub.on_message = lambda _c, _u, msg: emit("raw", msg.payload[:4].hex(),
                                              time.perf_counter())
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.subscribe(RAW_TOPIC, qos=1)
    if not (sse.connected.wait(10) and subscribed.wait(10)):
        raise RuntimeError("observer: SSE stream or subscription did not start")
    emit("ready", "-", 0.0)
    sys.stdin.read()  # until the bench closes our stdin
    sub.disconnect()
    sub.loop_stop()
    sse.close()
    return 0


def main() -> int:
    """Start an in-process node with one wired mock button; press it N times."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 presses instead of 500")
    ap.add_argument("-n", type=int, help="presses")
    ap.add_argument("--warmup", type=int, default=20, help="unmeasured presses first")
    ap.add_argument("--switch-ms", type=float, help="sys.setswitchinterval for this process")
    ap.add_argument("--stages", action="store_true",
                    help="also print where the time goes: hold deadline → callback → writer "
                         "starts → COMMIT done → event loop → SSE client")
    ap.add_argument("--rows", metavar="FILE",
                    help="with --stages: write each measured hold's stage times (ms) as CSV")
    ap.add_argument("--observe", nargs=2, type=int, metavar=("HTTP_PORT", "MQTT_PORT"),
                    help=argparse.SUPPRESS)  # the observer process
    args = ap.parse_args()
    if args.observe:
        return observe(*args.observe)
    clock = time.get_clock_info("perf_counter").implementation
    if "CLOCK_MONOTONIC" not in clock:  # the two processes must share the clock
        raise SystemExit(f"perf_counter is {clock}: this benchmark needs CLOCK_MONOTONIC")
    if args.switch_ms:
        sys.setswitchinterval(args.switch_ms / 1000)
    n = args.n or (100 if args.quick else 500)
    stamps = _instrument() if args.stages else None
    tmp = Path(tempfile.mkdtemp(prefix="bart-bench-button-"))
    observer: subprocess.Popen[str] | None = None
    print(f"button: {n} holds of {HOLD_S} s on a mock pin (hold excluded) after "
          f"{args.warmup} warm-up holds; {describe()}")
    try:
        settings, _ = init_node(
            tmp / "node", name="bench-button", area="ESC-01", http_port=free_port(),
            mqtt_port=free_port(), gpio="mock", hold_s=HOLD_S, cooldown_s=0.0, point_port=0,
            log_level="WARNING",
            meeting_points=[{"id": "klimboom", "name": "Speeltuin", "panic_buttons": [
                {"id": "klimboom-hek", "device": "hub", "button_pin": 17, "led_pin": 23}]}])
        settings = NodeSettings.load(settings.data_dir)
        server = NodeServer(uvicorn_config(settings))
        thread = threading.Thread(target=server.run, name="node", daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        app = server.config.loaded_app
        while not hasattr(app, "state"):
            app = app.app
        pin = app.state.runtime.buttons.factory.pin(17)
        store = app.state.runtime.store

        arrivals: list[tuple[str, float]] = []
        arrived = threading.Event()
        raw_wait = Waiter()
        ready = threading.Event()
        password = load_secrets(settings.data_dir)["service_password"]
        observer = subprocess.Popen(
            [sys.executable, __file__, "--observe", str(settings.http_port),
             str(settings.mqtt_port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert observer.stdin is not None and observer.stdout is not None
        observer.stdin.write(password + "\n")
        observer.stdin.flush()

        def read(lines: Any) -> None:
            for line in lines:
                kind, key, when = line.split()
                if kind == "sse":
                    arrivals.append((key, float(when)))
                    arrived.set()
                elif kind == "raw":
                    raw_wait.seen(key, float(when))
                elif kind == "ready":
                    ready.set()

        threading.Thread(target=read, args=(observer.stdout,), daemon=True).start()
        if not ready.wait(20):
            raise RuntimeError("the observer process did not start")
        pub = paho_client("bench-pub", settings.mqtt_port, password)
        time.sleep(0.5)
        payload = b"x" * 600
        rng = random.Random(3)
        button: list[float] = []
        raw: list[float] = []
        lost = {"raw": 0, "node": 0}
        unflushed = 0
        for i in range(n + args.warmup):
            measured = i >= args.warmup  # the first presses warm caches on both paths
            if i == args.warmup:
                unflushed = store.unflushed_commits
            seq = i.to_bytes(4, "big") + payload
            value = timed(pub, raw_wait, seq[:4].hex(), RAW_TOPIC, seq)
            if value is None:
                lost["raw"] += measured
            elif measured:
                raw.append(value)
            before = len(arrivals)
            arrived.clear()
            start = time.perf_counter()
            pin.drive_low()
            arrived.wait(HOLD_S + 2.0)
            pin.drive_high()
            if len(arrivals) == before:
                lost["node"] += measured
            elif measured:
                button.append(arrivals[before][1] - start - HOLD_S)
                if stamps is not None:
                    t0 = start + HOLD_S
                    stamps["rows"].append([stamps[k][-1] - t0 for k in _STAGES[:-1]]
                                          + [arrivals[before][1] - t0])
            time.sleep(0.1 + rng.uniform(0, 0.05))  # release settles (debounce 50 ms)
        unflushed = store.unflushed_commits - unflushed
        pub.disconnect()
        pub.loop_stop()
        observer.stdin.close()
        observer.wait(10)
        server.should_exit = True
        thread.join(15)
    finally:
        if observer is not None and observer.poll() is None:  # a run that failed
            observer.kill()
            observer.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    raw_p99 = report("raw paho→paho", raw, lost["raw"])
    p99 = report("hold→SSE", button, lost["node"])
    r = p99 / raw_p99
    ok = r <= GOAL and p99 <= CEILING_MS and not lost["node"]
    print(f"RESULT button: p99 hold→SSE {p99:.3f} ms, raw {raw_p99:.3f} ms, ratio {r:.2f} "
          f"(goal <= {GOAL:g}, and <= {CEILING_MS:g} ms) {'MET' if ok else 'NOT MET'}")
    print(f"median {percentile([b * 1000 for b in button], 50):.3f} ms; "
          f"{unflushed} of {n} alarms committed without a second flush (armed during the hold)")
    if stamps is not None and args.rows:
        with open(args.rows, "w", encoding="utf-8") as out:
            out.write(",".join(name.replace(" ", "_") for name in _STAGES) + "\n")
            for row in stamps["rows"]:
                out.write(",".join(f"{v * 1000:.4f}" for v in row) + "\n")
    if stamps is not None:
        print("stages, ms after the hold deadline:")
        for j, name in enumerate(_STAGES):
            vals = [row[j] * 1000 for row in stamps["rows"]]
            print(f"  {name:15s} p50 {percentile(vals, 50):.3f}  p90 {percentile(vals, 90):.3f}"
                  f"  p99 {percentile(vals, 99):.3f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
