"""``bart demo``: central plus the three nodes of the demo neighbourhood, on free local ports.

Uses the fictional neighbourhood in ``demo_data/demo-neighbourhood.toml`` and
runs the real code paths; no root, no network changes (DESIGN.md §8):

* central is created as ``bart central init`` does and runs as its own
  ``bart central run`` process, with a staff account per role (as ``bart
  central staff add`` makes them);
* each node is created as ``bart node init`` does, with its own Mosquitto,
  store and portal (served in this process, one event loop for the three), and
  enrolled online with a one-time code, as ``bart central enroll-code`` and
  ``bart node enroll URL --code`` do (see :mod:`bart.demo_nodes`);
* each point device runs as its own ``bart point run`` process on mock pins.

The three nodes form a mesh: each dials the other two (static peers on this
run's mesh ports, no mDNS on one loopback), once enrolment gave them central's
certificates and roster (:func:`bart.demo_nodes.join`).

Start-up runs in parallel where nothing waits on it: central's process starts
first and boots while the node code loads, the nodes are created and started
and their point devices connect; then the nodes are enrolled and their uplinks
and mesh start. Ctrl-C (or SIGTERM) stops point devices, nodes (and their
Mosquitto) and central, each by its own handle, and exits 0.

This module imports only what central's start needs; the node side is loaded
after central's process has started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from central.identity import Central, CentralSettings, init_central, load_central

from .demo_control import claim_state, clear_state, write_state

if TYPE_CHECKING:
    from .demo_nodes import DemoNode

CENTRAL_DIR = "central"
#: One staff account per role at central: (name, role).
STAFF = (("Demo Politie", "police"), ("Demo Gemeente", "municipality"),
         ("Demo Beheer", "admin"))
#: Central's staff pages show a node as silent after a minute without contact.
CENTRAL_SILENT_AFTER_S = 60
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
POINTS_TIMEOUT_S = 20.0


class DemoError(Exception):
    """The demo could not start; the message says what to do."""


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


def bart_command() -> list[str]:
    """How to run ``bart`` in a child process: the console script next to this Python."""
    script = Path(sys.executable).with_name("bart")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bart.cli"]


def child_env() -> dict[str, str]:
    """Our environment without ``BART_…``: settings meant for the user's own node or
    central must not steer the demo's."""
    return {k: v for k, v in os.environ.items() if not k.startswith("BART_")}


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM a child we started (its own process group); SIGKILL it if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


# -- central ---------------------------------------------------------------------------


@dataclass
class DemoCentral:
    """The demo's central: its data, its process and the staff accounts made for it."""

    central: Central
    fresh: bool
    proc: subprocess.Popen[bytes] | None = None
    staff: list[tuple[str, str, str]] = field(default_factory=list)  # name, role, password

    @property
    def url(self) -> str:
        """Where central listens (also the URL the nodes are enrolled with)."""
        return f"http://127.0.0.1:{self.central.settings.http_port}"


def prepare_central(data_dir: Path, hood: dict[str, Any], port: int) -> DemoCentral:
    """Create central's keys, CA and settings as ``bart central init`` does, or load the
    kept one. Its database schema is made by ``bart central run``."""
    if (data_dir / "central.toml").exists():
        central = load_central(data_dir)
        if port and port != central.settings.http_port:
            print(f"bart demo: the kept central stays on port {central.settings.http_port} "
                  "(its nodes know it by that URL)", file=sys.stderr)
        return DemoCentral(central, fresh=False)
    port = port or free_port()
    central = init_central(data_dir, CentralSettings(
        name=hood["central"]["name"], public_url=f"http://127.0.0.1:{port}",
        http_host="127.0.0.1", http_port=port, silent_after_s=CENTRAL_SILENT_AFTER_S))
    return DemoCentral(central, fresh=True)


def start_central(demo: DemoCentral) -> subprocess.Popen[bytes]:
    """``bart central run`` as a process of its own (stdout quiet; warnings on stderr)."""
    areas = demo.central.data_dir / "areas.toml"  # names and outlines in CAP (central/areas.py)
    if not areas.exists():
        areas.write_bytes(files("bart").joinpath("demo_data/demo-areas.toml").read_bytes())
    return subprocess.Popen(
        [*bart_command(), "central", "run", "--data-dir", str(demo.central.data_dir)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=child_env(),
        start_new_session=True)


async def wait_central(demo: DemoCentral, timeout: float = START_TIMEOUT_S) -> None:
    """Until central answers ``/healthz``; DemoError when its process ends first."""
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            assert demo.proc is not None
            if demo.proc.poll() is not None:
                raise DemoError(f"central exited with {demo.proc.returncode} before it answered "
                                f"(is port {demo.central.settings.http_port} taken?)")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{demo.url}/healthz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise DemoError(f"central did not answer on {demo.url} within {timeout:.0f} s")
            await asyncio.sleep(0.05)


def _import_central_db() -> None:
    import central.db
    import central.enrol
    import central.staff.accounts  # noqa: F401


def add_staff(demo: DemoCentral) -> list[tuple[str, str, str]]:
    """A staff account per role, as ``bart central staff add NAME --role ROLE`` makes it
    (on a fresh central only: a kept one has them)."""
    from central.db import make_engine
    from central.staff.accounts import StaffAccounts

    if not demo.fresh:
        return []
    engine = make_engine(demo.central.database_url)
    try:
        accounts = StaffAccounts(engine)
        return [(name, role, accounts.add(name, role, by="bart demo")) for name, role in STAFF]
    finally:
        engine.dispose()


def issue_codes(demo: DemoCentral, nodes: list[tuple[str, str]]) -> dict[str, str]:
    """One-time enrolment codes, as ``bart central enroll-code --node --area`` issues them."""
    from central.db import make_engine
    from central.enrol import issue_code

    if not nodes:
        return {}
    engine = make_engine(demo.central.database_url)
    try:
        return {name: issue_code(engine, demo.central, name, area)[0] for name, area in nodes}
    finally:
        engine.dispose()


# -- the whole demo ----------------------------------------------------------------------


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Only errors from ``logger`` meanwhile: what else it says then is expected."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


class _RootNotice(logging.Filter):
    """Drops Mosquitto's "should not be run as root" warning (one per broker): the
    README starts the demo as root, and it says nothing the demo's user can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "should not be run as root" not in record.getMessage()


@dataclass
class Demo:
    """Central, the nodes and their point devices of one ``bart demo`` run."""

    path: Path
    http_port: int = 0
    mqtt_port: int = 0
    central_port: int = 0
    log_level: str = "WARNING"
    central: DemoCentral | None = None
    nodes: list[DemoNode] = field(default_factory=list)
    hood: dict[str, Any] = field(default_factory=dict)
    #: (phase, seconds since start-up began), printed with --verbose.
    timings: list[tuple[str, float]] = field(default_factory=list)
    _t0: float = 0.0

    def mark(self, phase: str) -> None:
        """Record how long start-up took up to ``phase``."""
        elapsed = time.monotonic() - self._t0
        self.timings.append((phase, elapsed))
        if self.log_level == "INFO":
            print(f"bart demo: {elapsed:5.2f} s  {phase}", file=sys.stderr)

    @property
    def ready_s(self) -> float:
        """Seconds from the start of start-up to ready."""
        return self.timings[-1][1] if self.timings else 0.0

    async def start(self) -> None:
        """Create what is missing, start, enrol; in parallel where nothing waits on it."""
        self._t0 = time.monotonic()
        hood = self.hood = load_neighbourhood()
        if (self.path / "node.toml").exists():
            raise DemoError(f"{self.path} holds a one-node demo of an earlier version; "
                            "start this demo with another --data-dir")
        central = self.central = prepare_central(self.path / CENTRAL_DIR, hood,
                                                 self.central_port)
        central.proc = start_central(central)
        self.mark("central created, its process started")

        from . import demo_nodes as dn  # loads while central boots

        timezone = str(hood["demo"].get("timezone", "Europe/Amsterdam"))
        # A kept node's uplink starts with the node, before central answers: its
        # first failed attempt is expected, not news. Tried again once central is up.
        with _quiet("bart.node.uplink"):
            await self._start_nodes(timezone)
            await wait_central(central)
        for node in self.nodes:
            uplink = node.runtime().uplink
            if uplink is not None and uplink.state.enabled:
                uplink.pause(False)  # not paused: try now instead of after the back-off
        self.mark("central answers")
        fresh = any(dn.needs_enrolment(n) for n in self.nodes)
        await self._enrol(central)
        if fresh:
            # After enrolment: joining the mesh restarts each node's broker (central's
            # CA and certificate), which point devices connected before would see as
            # a lost connection (seven warnings on a first run).
            self._start_points()
        lost = await dn.wait_points(self.nodes, POINTS_TIMEOUT_S)
        if lost:
            print(f"bart demo: point devices not connected yet: {', '.join(lost)}",
                  file=sys.stderr)
        self.mark("point devices connected")
        write_state({"pid": os.getpid(), "data_dir": str(self.path), "central": central.url,
                     "url": self.nodes[0].url if self.nodes else "",
                     "nodes": [{"name": n.name, "url": n.url, "buttons": n.buttons()}
                               for n in self.nodes]})

    async def _start_nodes(self, timezone: str) -> None:
        """Create the nodes, start them and their point devices, seed fresh ones."""
        from . import demo_nodes as dn

        specs = self.hood["nodes"]
        # Every node dials the others' mesh listeners: all ports are chosen first.
        mesh_ports = [free_port() for _ in specs]
        self.nodes = list(await asyncio.gather(*(asyncio.to_thread(
            dn.prepare_node, spec, self.path / spec["name"],
            http_port=self.http_port + i if self.http_port else free_port(),
            mqtt_port=self.mqtt_port + i if self.mqtt_port else free_port(),
            mesh=dn.mesh_settings(port, [p for p in mesh_ports if p != port]),
            timezone=timezone, log_level=self.log_level)
            for i, (spec, port) in enumerate(zip(specs, mesh_ports, strict=True)))))
        self.mark("nodes created")
        await asyncio.gather(*(dn.start_node(n) for n in self.nodes))
        if not any(dn.needs_enrolment(n) for n in self.nodes):
            self._start_points()  # no broker restart ahead (see _enrol)
        self.mark("nodes started (Mosquitto, store, portal)")
        await asyncio.gather(*(dn.seed(n) for n in self.nodes))
        # Load central's database code while central finishes booting.
        await asyncio.to_thread(_import_central_db)

    def _start_points(self) -> None:
        from . import demo_nodes as dn

        for node in self.nodes:
            dn.start_points(node)

    async def _enrol(self, central: DemoCentral) -> None:
        """Enrol new nodes with one-time codes; start their uplinks and their mesh with
        central's certificates and roster; staff accounts."""
        from . import demo_nodes as dn

        staff = asyncio.create_task(asyncio.to_thread(add_staff, central))
        todo = [n for n in self.nodes if dn.needs_enrolment(n)]
        codes = await asyncio.to_thread(issue_codes, central,
                                        [(n.name, n.settings.area) for n in todo])
        self.mark("codes issued")
        await asyncio.gather(*(dn.enrol(n, central.url, codes[n.name]) for n in todo))
        if todo:  # every node's mesh must know all that are enrolled now
            roster = await dn.newest_roster(central.url)
            if roster is not None:
                for node in self.nodes:
                    dn.adopt_roster(node, roster)
        # Joining restarts a new node's Mosquitto with its mesh listener: its own
        # connection drops and comes back, and a peer's listener may not be up yet
        # when it is first dialled. Expected, not news.
        with _quiet("broker.client"):
            await asyncio.gather(*(dn.join(n) for n in self.nodes))
        central.staff = await staff
        self.mark("nodes enrolled, uplinks and mesh started; staff accounts made")
        dn.write_links(self.nodes, {
            "name": central.central.origin,
            "display_name": str(self.hood["central"].get("display_name",
                                                         central.central.origin)),
            "url": central.url, "staff_url": f"{central.url}/staff/login"})

    def failed(self) -> str | None:
        """What stopped by itself (central, a node), or None while everything runs."""
        if self.central and self.central.proc and self.central.proc.poll() is not None:
            return f"central exited with {self.central.proc.returncode}"
        for node in self.nodes:
            if node.task is not None and node.task.done():
                return f"node {node.name} stopped"
        return None

    async def stop(self) -> None:
        """Point devices first (so none logs a lost node), then the nodes, then central."""
        if self.nodes:
            from . import demo_nodes as dn

            await asyncio.to_thread(dn.stop_points, self.nodes)
            await asyncio.gather(*(dn.stop_node(n) for n in self.nodes))
        if self.central is not None:
            await asyncio.to_thread(stop_process, self.central.proc)
        clear_state()

    def announce(self) -> str:
        """What ``bart demo`` prints once everything runs."""
        from . import demo_nodes as dn

        assert self.central is not None
        c = self.central
        title = self.hood.get("demo", {}).get("title", "Bart demo")
        lines = [f"\nBart demo is running — {title}",
                 f"Central, {len(self.nodes)} nodes and their point devices were ready in "
                 f"{self.ready_s:.1f} s.", "",
                 f"Central (police and municipality): {c.central.origin}",
                 f"  Staff pages       {c.url}/staff/login"]
        if c.staff:
            lines += [f"                    log in as {name!r} ({role}) with one-time password "
                      f"{password}" for name, role, password in c.staff]
        else:
            lines.append("                    staff accounts "
                         + ", ".join(f"{n!r} ({r})" for n, r in STAFF)
                         + " were made on the first run (new password: bart central staff "
                         f"reset NAME --data-dir {c.central.data_dir})")
        lines += [f"  Node health       {c.url}/staff/nodes",
                  f"  CAP feed          {c.url}/api/v1/cap/alerts.xml",
                  f"  Data directory    {c.central.data_dir}"]
        for number, node in enumerate(self.nodes, 1):
            lines += dn.describe(node, number)
        at = 1 if len(self.nodes) > 1 else 0
        example = self.nodes[at]
        button = example.buttons()[0] if example.buttons() else "BUTTON_ID"
        others = " and ".join(str(i) for i in range(1, len(self.nodes) + 1) if i != at + 1)
        lines += ["",
                  "Every node also serves /report, /status, /api/docs and /api/v1/stream (SSE).",
                  f"Try: bart demo press {button}",
                  "     bart demo link 1 2 cut    (the nodes form a mesh: press a button on "
                  "node 1, and node 2 gets it through node 3)",
                  "     bart demo link 1 2 heal",
                  f"     bart demo uplink {example.name} cut    (cut its links with nodes "
                  f"{others} too: a report there then waits; see its backlog on /demo)",
                  f"     bart demo uplink {example.name} restore",
                  "", "Press Ctrl-C to stop.", ""]
        return "\n".join(lines)


async def _run(demo: Demo) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    code = 0
    try:
        startup = asyncio.create_task(demo.start(), name="demo start-up")
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({startup, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not startup.done():  # Ctrl-C during start-up
            startup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await startup
            return 0
        stopper.cancel()
        startup.result()
        print(demo.announce(), flush=True)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            problem = demo.failed()
            if problem and not stop.is_set():
                print(f"bart demo: {problem}; stopping the demo", file=sys.stderr)
                code = 1
                break
    except Exception as exc:  # a start-up failure: say it, then stop what runs
        print(f"bart demo: {exc}", file=sys.stderr)
        code = 1
    finally:
        await demo.stop()
    return code


def run_demo(*, data_dir: Path | None, http_port: int = 0, mqtt_port: int = 0,
             central_port: int = 0, verbose: bool = False) -> int:
    """Run the demo until Ctrl-C; remove a temporary data dir afterwards. A CommandError
    (before anything starts) when another demo runs on this machine."""
    claim_state(data_dir.resolve() if data_dir is not None else None)
    try:
        return _run_demo(data_dir=data_dir, http_port=http_port, mqtt_port=mqtt_port,
                         central_port=central_port, verbose=verbose)
    finally:
        clear_state()


def _run_demo(*, data_dir: Path | None, http_port: int, mqtt_port: int, central_port: int,
              verbose: bool) -> int:
    temporary = data_dir is None
    path = Path(tempfile.mkdtemp(prefix="bart-demo-")) if data_dir is None else data_dir
    path.mkdir(parents=True, exist_ok=True)
    demo = Demo(path.resolve(), http_port=http_port, mqtt_port=mqtt_port,
                central_port=central_port, log_level="INFO" if verbose else "WARNING")
    if not verbose:
        logging.getLogger("broker.process").addFilter(_RootNotice())
    try:
        code = asyncio.run(_run(demo))
    finally:
        if temporary:
            shutil.rmtree(path, ignore_errors=True)
    print("Bart demo stopped.")
    return code
