"""The node side of ``bart demo``: create, enrol, serve and stop the demo's nodes.

Imported by :mod:`bart.demo` only after central's process is started, so that
central boots while this (heavier) part loads. The nodes are served in one
event loop, each with its own Mosquitto, store and portal; their point devices
run as ``bart point run`` processes on mock pins.

The three nodes form a mesh (docs/mesh.md): on one loopback they do not look
for each other with mDNS but dial each other as static peers, on the mesh
ports of this run. Their mesh listeners open once they are enrolled: before,
no one can be a peer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import signal
import subprocess
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.config import NodeSettings, load_secrets
from node.enrol import enrol_online, is_enrolled, load_enrolment, load_roster, save_roster
from node.points import add_point, load_points, point_buttons
from node.portal.demo import DEMO_LINKS, DEMO_POINTS
from node.reports import validate_report_input
from node.runtime import INTEGRATION_USER, NodeRuntime
from node.server import NodeServer, uvicorn_config
from node.setup import init_node
from node.team import TEAM_DB, TeamAccounts

from .demo import STOP_TIMEOUT_S, bart_command, child_env, free_port, stop_process

TEAM_MEMBER = "Demo"
#: Node settings for the demo: reports reach central within a second, broadcasts
#: within seconds, and a restored uplink (or a restarted central) is tried again soon.
NODE_DEMO_SETTINGS: dict[str, Any] = {"uplink_max_age_s": 0.5, "uplink_poll_s": 5.0,
                                      "uplink_backoff_max_s": 5.0}
#: The demo's mesh: three nodes on one loopback dial each other (no mDNS); vectors
#: every few seconds, so that what went round a cut link shows as caught up soon;
#: a node that starts later than its peers is reached within seconds.
NODE_DEMO_MESH: dict[str, Any] = {"host": "127.0.0.1", "discovery": False, "sync_s": 5.0,
                                  "retry_max_s": 2.0}

#: Seeded on a fresh node through the real report path, per node name.
SAMPLE_REPORTS: dict[str, list[dict[str, Any]]] = {
    "escamp-kleine-wereld": [
        {"category": "suspicious", "text": "Twee mannen kijken bij auto's naar binnen.",
         "place": {"point": "hinkelbaan", "text": ""}, "audience": "both",
         "called_112": False},
        {"category": "nuisance", "text": "Harde muziek uit een auto bij de speeltuin.",
         "place": {"point": "klimboom", "text": ""}, "audience": "neighbours",
         "called_112": False},
    ],
    "escamp-zandloper": [
        {"category": "nuisance", "text": "Brommers racen over het plein bij de winkels.",
         "place": {"point": "kompasplein", "text": ""}, "audience": "both",
         "called_112": False},
    ],
    "ypenburg-propeller": [
        {"category": "social", "text": "Oudere mevrouw zit al lang alleen bij de steiger, "
         "ze lijkt de weg kwijt.", "place": {"point": "steiger", "text": ""},
         "audience": "authorities", "called_112": False},
    ],
}


class NodeStartFailed(Exception):
    """A demo node did not start (its own messages say why)."""


class DemoNodeServer(NodeServer):
    """A node's uvicorn server that leaves signals alone: the demo stops all nodes."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass
class DemoNode:
    """One node of the demo neighbourhood."""

    spec: dict[str, Any]
    settings: NodeSettings
    fresh: bool
    team_password: str | None = None
    points: list[DemoPoint] = field(default_factory=list)
    server: DemoNodeServer | None = None
    task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        """The node's name (its origin)."""
        return self.settings.name

    @property
    def url(self) -> str:
        """The node's portal."""
        return f"http://127.0.0.1:{self.settings.http_port}"

    def buttons(self) -> list[str]:
        """Ids of the node's panic buttons (wired and on point devices)."""
        return [b["id"] for mp in self.spec.get("meeting_points", [])
                for b in mp.get("panic_buttons", [])]

    def runtime(self) -> NodeRuntime:
        """The running node (the app behind the server's middleware)."""
        assert self.server is not None
        app: Any = self.server.config.loaded_app
        while not hasattr(app, "state"):
            app = app.app  # unwrap middleware to reach the FastAPI app
        runtime: NodeRuntime = app.state.runtime
        return runtime


def mesh_settings(port: int, peer_ports: list[int]) -> dict[str, Any]:
    """A demo node's ``[mesh]``: its listener on ``port``, the other nodes as static peers."""
    return {**NODE_DEMO_MESH, "port": port,
            "peers": [{"host": "127.0.0.1", "port": p} for p in peer_ports]}


def prepare_node(spec: dict[str, Any], data_dir: Path, *, http_port: int, mqtt_port: int,
                 mesh: dict[str, Any], timezone: str, log_level: str) -> DemoNode:
    """Create (or reuse) a node of the neighbourhood in ``data_dir``, with its team account
    and point devices; the ports (and ``mesh``, see :func:`mesh_settings`) are this run's."""
    overrides = {"http_port": http_port, "mqtt_port": mqtt_port, "log_level": log_level,
                 "mesh": mesh}
    if (data_dir / "node.toml").exists():
        return DemoNode(spec, NodeSettings.load(data_dir, **overrides), fresh=False)
    points = [{"id": p["id"], "name": p["name"], "description": p.get("description", ""),
               "panic_buttons": p.get("panic_buttons", [])}
              for p in spec.get("meeting_points", [])]
    settings, _ = init_node(data_dir, name=spec["name"], area=spec["area_code"],
                            display_name=spec["display_name"], meeting_points=points,
                            http_host="127.0.0.1", http_port=http_port, mqtt_port=mqtt_port,
                            timezone=timezone, demo=True, gpio="mock", point_port=free_port(),
                            mesh=mesh, **NODE_DEMO_SETTINGS)
    for mp in settings.meeting_points:
        if point_buttons(settings, mp.id):
            add_point(settings, mp.id, host="127.0.0.1", out=data_dir / f"point-{mp.id}.json")
    with TeamAccounts(data_dir / TEAM_DB) as team:
        password = team.add(TEAM_MEMBER)
    return DemoNode(spec, NodeSettings.load(data_dir, **overrides), fresh=True,
                    team_password=password)


@dataclass
class DemoPoint:
    """One point device: a ``bart point run`` process with a local control port."""

    name: str  # the meeting point it serves
    buttons: list[str]
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0


def start_point(node: DemoNode, point: DemoPoint) -> None:
    """Start (or start again) a point device on mock pins, on a fresh control port."""
    point.port = free_port()
    point.starts += 1
    data_dir = node.settings.data_dir
    point.proc = subprocess.Popen(
        [*bart_command(), "point", "run", "--config", str(data_dir / f"point-{point.name}.json"),
         "--gpio", "mock", "--control-port", str(point.port),
         "--data-dir", str(data_dir / f"point-{point.name}-data")],
        stdin=subprocess.DEVNULL, env=child_env(), start_new_session=True)


def write_controls(node: DemoNode) -> None:
    """``demo-points.json``: button → control URL of its point device, for ``/demo``."""
    controls = {b: f"http://127.0.0.1:{p.port}" for p in node.points for b in p.buttons}
    (node.settings.data_dir / DEMO_POINTS).write_text(json.dumps(controls))


def start_points(node: DemoNode) -> None:
    """One ``bart point run`` process per point device of the node.

    A device started before its node's Mosquitto keeps its presses and connects
    when the broker is up.
    """
    for name in sorted(load_points(node.settings)):
        point = DemoPoint(name, [b["id"] for b in point_buttons(node.settings, name)])
        start_point(node, point)
        node.points.append(point)
    write_controls(node)


async def point_connected(port: int) -> bool:
    """True when the point device behind control ``port`` is connected to its node."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"GET /state HTTP/1.0\r\n\r\n")
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(65536), 2)
        return bool(json.loads(reply.split(b"\r\n\r\n", 1)[-1]).get("connected"))
    except (OSError, TimeoutError, ValueError, AttributeError):
        return False
    finally:
        writer.close()


async def wait_points(nodes: list[DemoNode], timeout: float) -> list[str]:
    """Until every point device is connected to its node; the names of those that are not.

    A device that exited (its control port was taken between our choosing and its
    binding it: ports from the kernel's free range) is started again on another port.
    """
    deadline = time.monotonic() + timeout
    waiting = [(n, p) for n in nodes for p in n.points]
    while waiting and time.monotonic() < deadline:
        for node, point in waiting:
            if point.proc is not None and point.proc.poll() is not None and point.starts < 4:
                start_point(node, point)
                write_controls(node)
        done = await asyncio.gather(*(point_connected(p.port) for _, p in waiting))
        waiting = [w for w, ok in zip(waiting, done, strict=True) if not ok]
        if waiting:
            await asyncio.sleep(0.1)
    return sorted(f"{n.name}/{p.name}" for n, p in waiting)


def stop_points(nodes: list[DemoNode]) -> None:
    """Stop the point-device processes by their own handles."""
    procs = [p.proc for n in nodes for p in n.points if p.proc is not None]
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    for proc in procs:
        stop_process(proc)


async def _serve(node: DemoNode) -> None:
    assert node.server is not None
    try:
        await node.server.serve()
    except SystemExit as exc:  # uvicorn's answer to a failed lifespan start-up
        raise NodeStartFailed(f"node {node.name} did not start (see the messages above)") \
            from exc


async def start_node(node: DemoNode) -> None:
    """Serve the node in this event loop; return once its lifespan has started it."""
    node.server = DemoNodeServer(uvicorn_config(node.settings), name=node.settings.name)
    node.task = asyncio.create_task(_serve(node), name=f"node {node.name}")
    while not node.server.started and not node.task.done():
        await asyncio.sleep(0.02)
    if node.task.done():
        node.task.result()  # raises what stopped it
        raise NodeStartFailed(f"node {node.name} stopped while starting")


async def stop_node(node: DemoNode) -> None:
    """Graceful stop: the lifespan stops the node's Mosquitto and closes its store."""
    if node.server is None or node.task is None:
        return
    node.server.should_exit = True
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(node.task, STOP_TIMEOUT_S)


async def seed(node: DemoNode) -> None:
    """Sample reports (and their warnings) on a fresh node, through the real report path."""
    if not node.fresh:
        return
    runtime = node.runtime()
    for report in SAMPLE_REPORTS.get(node.name, []):
        await runtime.submit_report(validate_report_input({**report, "lang": "nl"}))


def needs_enrolment(node: DemoNode) -> bool:
    """True until the node holds central's enrolment answer."""
    return not is_enrolled(node.settings)


async def enrol(node: DemoNode, central_url: str, code: str) -> None:
    """``bart node enroll CENTRAL_URL --code CODE`` for the running node."""
    await asyncio.to_thread(enrol_online, node.settings, central_url, code)


async def newest_roster(central_url: str) -> dict[str, Any] | None:
    """Central's current signed roster (``GET /api/v1/roster``), None when it has none."""
    import httpx

    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        reply = await client.get(f"{central_url}/api/v1/roster")
    if reply.status_code == 404:
        return None
    reply.raise_for_status()
    signed: dict[str, Any] = reply.json()
    return signed


def adopt_roster(node: DemoNode, signed: dict[str, Any]) -> None:
    """Keep ``signed`` as the node's roster when it verifies and is newer.

    The nodes are enrolled side by side: the roster in one's enrolment answer
    may not list those enrolled after it yet. Its uplink brings the newer one
    with its first exchange, and the mesh's trust follows; until then its mesh
    would refuse those peers (a warning each). With the newest roster kept
    before the uplink and mesh start, the triangle forms at once.
    """
    enrolment = load_enrolment(node.settings)
    if enrolment is None:
        return
    key = base64.b64decode(str(enrolment["signing_pub"]))
    current = load_roster(node.settings, key)
    save_roster(node.settings, signed, key, current.serial if current else 0)


async def join(node: DemoNode) -> None:
    """Start an enrolled node's uplink, and its mesh with central's certificate, CA and
    roster (its Mosquitto restarts with the mesh listener); no change for a node whose
    uplink and mesh run already."""
    runtime = node.runtime()
    runtime.start_uplink()
    await runtime.refresh_mesh()


def write_links(nodes: list[DemoNode], central: dict[str, str]) -> None:
    """``demo-links.json`` in every node: what each node's ``/demo`` page links."""
    links = {"central": central,
             "nodes": [{"name": n.name, "display_name": n.settings.display_name,
                        "area": n.settings.area, "url": n.url} for n in nodes]}
    for node in nodes:
        (node.settings.data_dir / DEMO_LINKS).write_text(json.dumps(links, indent=1))


def describe(node: DemoNode, number: int) -> list[str]:
    """The lines ``bart demo`` prints for a node."""
    s = node.settings
    secret = load_secrets(s.data_dir)["integration_password"]
    team = (f"log in as {TEAM_MEMBER!r} with one-time password {node.team_password}"
            if node.team_password else
            f"(the team account {TEAM_MEMBER!r} was made on the first run)")
    return ["", f"Node {number}: {s.display_name} ({s.name}, area {s.area})",
            f"  Resident portal   {node.url}/",
            f"  Team page         {node.url}/team   {team}",
            f"  Demo page         {node.url}/demo   buttons: "
            f"{', '.join(node.buttons()) or '(none)'}; uplink cut/restore; mesh links",
            f"  Health            {node.url}/healthz",
            f"  Mesh              {node.url}/api/v1/mesh   (peers dial 127.0.0.1:"
            f"{s.mesh.port}, mutual TLS)",
            f"  MQTT (read-only)  mosquitto_sub -h 127.0.0.1 -p {s.mqtt_port} "
            f"-u {INTEGRATION_USER} -P {secret} -t 'bart/v1/+/public/#' -v",
            f"  Data directory    {s.data_dir}"]
