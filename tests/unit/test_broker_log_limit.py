"""Mosquitto's stderr relay keeps logs bounded whatever strangers send
(broker.process.LineLimiter): the mesh listener is reachable from the network,
and every refused TLS handshake makes Mosquitto write a line."""

from __future__ import annotations

import doctest

import broker.process
from broker.process import LineLimiter


def test_a_flood_of_refused_handshakes_logs_a_few_lines_a_minute() -> None:
    lim = LineLimiter()
    logged = [lim.admit(f"OpenSSL Error[0]: error:0A000086:SSL routines::certificate verify "
                        f"failed ({i})", i * 0.05) for i in range(1000)]  # 50 s of 20/s
    assert sum(v is not None for v in logged) == 5
    later = lim.admit("OpenSSL Error[0]: error:0A000086:SSL routines::certificate verify "
                      "failed (x)", 61.0)
    assert later == 995  # the next line says how many were held back


def test_other_kinds_of_line_are_not_held_back_by_a_flood() -> None:
    lim = LineLimiter(burst=2)
    for i in range(50):
        lim.admit(f"OpenSSL Error[{i}]: handshake", float(i) / 10)
    assert lim.admit("Error: Unable to open pwfile", 5.0) == 0
    assert lim.admit("Warning: Mosquitto should not be run as root", 5.0) == 0


def test_memory_is_bounded() -> None:
    lim = LineLimiter(kinds=16)
    for i in range(1000):
        lim.admit(f"line kind {chr(65 + i % 26)}{chr(65 + (i // 26) % 26)}", 0.0)
    assert len(lim._seen) <= 16


def test_doctests() -> None:
    assert doctest.testmod(broker.process).failed == 0
