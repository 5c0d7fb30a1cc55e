"""Panic button → SSE latency: hold complete on a gpiozero mock pin until the
alarm's ``id:`` line arrives on GET /api/v1/stream.

The node runs in this process (uvicorn on its own thread and loop) so that the
moment the pin goes low and the moment the SSE line arrives are read from one
clock; the hold time is subtracted (the detector fires exactly at edge +
hold_s). The SSE client is a raw socket on another thread. Baseline in the same
run, on the node's own Mosquitto: a raw paho QoS 1 publish → paho subscriber.

Run: ``.venv/bin/python bench/button.py [--quick]``.
Goal: p99 <= 3 x raw p99 and never above 50 ms.
"""

from __future__ import annotations

import argparse
import random
import shutil
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

    def submit_(self: Any, fn: Any) -> Any:
        def timed(tx: Any) -> Any:
            stamps["writer starts"].append(time.perf_counter())
            return fn(tx)

        future = submit(self, timed)
        future.add_done_callback(lambda _f: stamps["COMMIT done"].append(time.perf_counter()))
        return future

    buttons.ButtonService._from_thread = from_thread_  # type: ignore[method-assign]
    buttons.ButtonService._stored = stored_  # type: ignore[method-assign]
    store.Store.submit = submit_  # type: ignore[method-assign]
    return stamps


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
    args = ap.parse_args()
    if args.switch_ms:
        sys.setswitchinterval(args.switch_ms / 1000)
    n = args.n or (100 if args.quick else 500)
    stamps = _instrument() if args.stages else None
    tmp = Path(tempfile.mkdtemp(prefix="bart-bench-button-"))
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

        waiter = Waiter()
        arrivals: list[tuple[str, float]] = []
        arrived = threading.Event()
        sse = SseClient(settings.http_port, waiter)

        def seen(key: object, when: float) -> None:
            arrivals.append((str(key), when))
            arrived.set()

        waiter.seen = seen  # type: ignore[method-assign]
        sse.start()
        if not sse.connected.wait(10):
            raise RuntimeError("SSE stream did not start")
        password = load_secrets(settings.data_dir)["service_password"]
        raw_wait = Waiter()
        sub = paho_client("bench-sub", settings.mqtt_port, password)
        sub.on_message = lambda _c, _u, msg: raw_wait.seen(msg.payload, time.perf_counter())
        sub.subscribe("bart/v1/bench/raw/x", qos=1)
        pub = paho_client("bench-pub", settings.mqtt_port, password)
        time.sleep(0.5)
        payload = b"x" * 600
        rng = random.Random(3)
        button: list[float] = []
        raw: list[float] = []
        lost = {"raw": 0, "node": 0}
        for i in range(n + args.warmup):
            measured = i >= args.warmup  # the first presses warm caches on both paths
            seq = i.to_bytes(4, "big") + payload
            value = timed(pub, raw_wait, seq, "bart/v1/bench/raw/x", seq)
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
        for client in (pub, sub):
            client.disconnect()
            client.loop_stop()
        sse.close()
        server.should_exit = True
        thread.join(15)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    raw_p99 = report("raw paho→paho", raw, lost["raw"])
    p99 = report("hold→SSE", button, lost["node"])
    r = p99 / raw_p99
    ok = r <= GOAL and p99 <= CEILING_MS and not lost["node"]
    print(f"RESULT button: p99 hold→SSE {p99:.3f} ms, raw {raw_p99:.3f} ms, ratio {r:.2f} "
          f"(goal <= {GOAL:g}, and <= {CEILING_MS:g} ms) {'MET' if ok else 'NOT MET'}")
    print(f"median {percentile([b * 1000 for b in button], 50):.3f} ms")
    if stamps is not None:
        print("stages, ms after the hold deadline:")
        for j, name in enumerate(_STAGES):
            vals = [row[j] * 1000 for row in stamps["rows"]]
            print(f"  {name:15s} p50 {percentile(vals, 50):.3f}  p90 {percentile(vals, 90):.3f}"
                  f"  p99 {percentile(vals, 99):.3f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
