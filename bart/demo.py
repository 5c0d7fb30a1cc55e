"""``bart demo``: a node with its own Mosquitto and portal on free local ports.

Uses the fictional neighbourhood in ``demo_data/demo-neighbourhood.toml``
(the first node) and runs the real code paths; no root, no network changes.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import tomllib
import urllib.error
import urllib.request
from importlib.resources import files
from pathlib import Path
from typing import Any

from node.config import NodeSettings, load_secrets
from node.points import add_point, load_points, point_buttons
from node.portal.demo import DEMO_POINTS
from node.reports import validate_report_input
from node.runtime import INTEGRATION_USER
from node.server import NodeServer, uvicorn_config
from node.setup import init_node
from node.team import TEAM_DB, TeamAccounts

#: Where a running demo leaves its address for ``bart demo press``.
STATE_FILE = Path(tempfile.gettempdir()) / f"bart-demo-{os.getuid()}.json"

SAMPLE_REPORTS: list[dict[str, Any]] = [
    {"category": "suspicious", "text": "Twee mannen kijken bij auto's naar binnen.",
     "place": {"point": "hinkelbaan", "text": ""}, "audience": "both", "called_112": False},
    {"category": "nuisance", "text": "Harde muziek uit een auto bij de speeltuin.",
     "place": {"point": "klimboom", "text": ""}, "audience": "neighbours", "called_112": False},
]


def load_neighbourhood() -> dict[str, Any]:
    """The demo neighbourhood shipped with the package."""
    text = files("bart").joinpath("demo_data/demo-neighbourhood.toml").read_text("utf-8")
    data = tomllib.loads(text)
    if data.get("schema_version") != 1:
        raise ValueError("demo-neighbourhood.toml: unsupported schema_version")
    return data


def free_port() -> int:
    """A TCP port free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare(data_dir: Path, http_port: int, mqtt_port: int) -> NodeSettings:
    """Create (or reuse) the demo node in ``data_dir``."""
    hood = load_neighbourhood()
    spec = hood["nodes"][0]
    if (data_dir / "node.toml").exists():
        return NodeSettings.load(data_dir, http_port=http_port, mqtt_port=mqtt_port)
    points = [{"id": p["id"], "name": p["name"], "description": p.get("description", ""),
               "panic_buttons": p.get("panic_buttons", [])}
              for p in spec.get("meeting_points", [])]
    settings, _ = init_node(data_dir, name=spec["name"], area=spec["area_code"],
                            display_name=spec["display_name"], meeting_points=points,
                            http_host="127.0.0.1", http_port=http_port, mqtt_port=mqtt_port,
                            timezone=hood["demo"].get("timezone", "Europe/Amsterdam"),
                            demo=True, gpio="mock", point_port=free_port())
    for mp in settings.meeting_points:
        if point_buttons(settings, mp.id):
            add_point(settings, mp.id, host="127.0.0.1",
                      out=data_dir / f"point-{mp.id}.json")
    return settings


def start_points(settings: NodeSettings) -> list[subprocess.Popen[bytes]]:
    """One ``bart point run`` process per point device, on mock pins, with a control port.

    Writes ``demo-points.json`` (button → control URL) for the node's demo page.
    """
    procs = []
    controls: dict[str, str] = {}
    for name in sorted(load_points(settings)):
        port = free_port()
        bundle = settings.data_dir / f"point-{name}.json"
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "bart.cli", "point", "run", "--config", str(bundle),
             "--gpio", "mock", "--control-port", str(port),
             "--data-dir", str(settings.data_dir / f"point-{name}-data")],
            start_new_session=True))
        for button in point_buttons(settings, name):
            controls[button["id"]] = f"http://127.0.0.1:{port}"
    (settings.data_dir / DEMO_POINTS).write_text(json.dumps(controls))
    return procs


def stop_points(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop the point-device processes by their own handles."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


async def _serve(settings: NodeSettings, fresh: bool) -> None:
    server = NodeServer(uvicorn_config(settings))
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.05)
    if task.done():
        await task
        return
    app = server.config.loaded_app
    while not hasattr(app, "state"):
        app = app.app  # unwrap middleware to reach the FastAPI app
    runtime = app.state.runtime
    team_line = "(the demo's team account was made on its first run)"
    if fresh:
        for report in SAMPLE_REPORTS:
            await runtime.submit_report(validate_report_input({**report, "lang": "nl"}))
        with TeamAccounts(settings.data_dir / TEAM_DB) as team:
            team_line = f"log in as 'Demo' with one-time password {team.add('Demo')}"
    points = start_points(settings)
    base = f"http://127.0.0.1:{settings.http_port}"
    STATE_FILE.write_text(json.dumps({"url": base, "pid": os.getpid()}))
    secret = load_secrets(settings.data_dir)["integration_password"]
    print(f"""
Bart demo is running — node "{settings.display_name}" ({settings.name}, area {settings.area})

  Resident portal   {base}/
  Report something  {base}/report
  Panic buttons     {base}/demo   (or: bart demo press BUTTON_ID)
  Team page         {base}/team   {team_line}
  Receipt status    {base}/status
  API docs          {base}/api/docs
  Health            {base}/healthz
  Live alerts (SSE) {base}/api/v1/stream
  MQTT (read-only)  mosquitto_sub -h 127.0.0.1 -p {settings.mqtt_port} \\
                      -u {INTEGRATION_USER} -P {secret} -t 'bart/v1/+/public/#' -v
  Data directory    {settings.data_dir}

Press Ctrl-C to stop.
""", flush=True)
    try:
        await task
    finally:
        await asyncio.to_thread(stop_points, points)
        STATE_FILE.unlink(missing_ok=True)


def run_demo(*, data_dir: Path | None, http_port: int = 0, mqtt_port: int = 0) -> int:
    """Run the demo until Ctrl-C; remove a temporary data dir afterwards."""
    temporary = data_dir is None
    path = Path(tempfile.mkdtemp(prefix="bart-demo-")) if data_dir is None else data_dir
    try:
        fresh = not (path / "node.toml").exists()
        settings = prepare(path, http_port or free_port(), mqtt_port or free_port())
        asyncio.run(_serve(settings, fresh))
    finally:
        if temporary:
            shutil.rmtree(path, ignore_errors=True)
    print("Bart demo stopped.")
    return 0


def press(button: str, url: str | None = None) -> int:
    """``bart demo press BUTTON``: hold a simulated button of the running demo."""
    if url is None:
        try:
            url = json.loads(STATE_FILE.read_text())["url"]
        except (OSError, ValueError, KeyError):
            print("bart: no demo is running (start one: bart demo)", file=sys.stderr)
            return 1
    if not url.startswith(("http://", "https://")):
        print(f"bart: {url} is not an http URL", file=sys.stderr)
        return 1
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        f"{url}/demo/press/{button}", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 - local demo
            print(f"pressed {button}: {reply.status}")
    except urllib.error.HTTPError as exc:
        print(f"bart: {button}: {exc.code} {exc.reason}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"bart: demo at {url} did not answer: {exc}", file=sys.stderr)
        return 1
    return 0
