"""common/server.py: node and central stop on SIGTERM/SIGINT with exit 0 (one class)."""

from __future__ import annotations

import doctest
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from central.server import CentralServer
from common import server
from node.server import NodeServer

ROOT = Path(__file__).resolve().parents[2]

APP = """
import socket, sys
import uvicorn
from common.server import Server

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            # The signal handlers are in place before the lifespan starts.
            print("ready", flush=True)
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})

sock = socket.socket()
sock.bind(("127.0.0.1", 0))
Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
"""


def test_doctests() -> None:
    assert doctest.testmod(server).failed == 0


def test_node_and_central_use_the_one_signal_handling() -> None:
    assert issubclass(NodeServer, server.Server) and issubclass(CentralServer, server.Server)
    assert NodeServer.capture_signals is server.Server.capture_signals
    assert CentralServer.capture_signals is server.Server.capture_signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_is_a_clean_exit(sig: signal.Signals) -> None:
    """uvicorn's own Server re-raises the signal: exit -15 (or 130), a 'crash' to systemd."""
    proc = subprocess.Popen([sys.executable, "-c", APP], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=30)  # generous: the machine may be loaded
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
