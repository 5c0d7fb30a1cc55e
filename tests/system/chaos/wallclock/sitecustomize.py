"""Test-only: a wrong wall clock for one Python process (the chaos run's ``clock`` fault).

Put this directory on ``PYTHONPATH`` and name a file in ``CHAOS_CLOCK_FILE``:
``time.time()`` and ``time.time_ns()`` are then off by the seconds written in
that file (``0`` when true; re-read every 0.2 s, so the clock can jump while
the process runs). The monotonic clock stays true, as on a Pi whose wall clock
NTP corrects. Only Python's own calls see it — SQLite's and Mosquitto's clocks
stay true, which the node does not use for its stamps or timers.

Why not libfaketime (Debian's faketime 0.9.10): with only the wall clock
faked, its ``clock_nanosleep`` makes Python's ``time.sleep`` fail with EINVAL
(a Mosquitto supervisor thread died of it); with the monotonic clock faked
too, ``threading.Event.wait`` blocked for the whole offset and the node never
finished starting.
"""

from __future__ import annotations

import os
import threading
import time

_PATH = os.environ.get("CHAOS_CLOCK_FILE")


def _read(path: str) -> float:
    try:
        with open(path, encoding="ascii") as fh:
            return float(fh.read().strip() or 0)
    except (OSError, ValueError):
        return 0.0


if _PATH:
    _offset = [_read(_PATH)]
    _real_time, _real_time_ns, _sleep = time.time, time.time_ns, time.sleep

    def _poll(path: str = _PATH) -> None:
        while True:
            _sleep(0.2)
            _offset[0] = _read(path)

    def _time() -> float:
        return _real_time() + _offset[0]

    def _time_ns() -> int:
        return _real_time_ns() + int(_offset[0] * 1_000_000_000)

    threading.Thread(target=_poll, name="chaos-clock", daemon=True).start()
    time.time = _time
    time.time_ns = _time_ns
