"""A neighbourhood for system tests: central and three nodes in network namespaces.

The building blocks (``in_netns``, ``run``, ``MeshNode``, ``MeshCentral``,
``TeamMember``) are those of ``tests.support.netns``, which
``tests/system/test_mesh_netns.py`` uses too. What this module adds is a
neighbourhood that a test can shape — which mesh links exist and start up,
who dials whom, a node's data directory on a small tmpfs (a disk that can
fill), extra ``node.toml`` settings — and the plumbing the chaos run needs to
break and heal it (``Neighbourhood.link``, ``Neighbourhood.uplink``, nftables
loss rules).

Topology (same addresses as test_mesh_netns; each run has its own namespaces)::

                      central 10.66.0.1 (bridge br0, ports isolated)
                     /        |        \\
                  up0        up0        up0
                 node-a ---- node-b ---- node-c
                    \\     A-B        B-C     /
                     `--------- A-C --------'

Needs root. ``Neighbourhood.close()`` removes everything it made.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sync import KeyPair
from tests.support.base import bart_command, require, wait_until
from tests.support.netns import (
    AREAS,
    BUTTON,
    CENTRAL_IP,
    CENTRAL_PORT,
    CENTRAL_URL,
    CENTRES,
    HTTP_PORT,
    LINKS,
    MEETING_POINT,
    MESH_PORT,
    MQTT_PORT,
    NODES,
    UPLINK_IPS,
    A,
    B,
    C,
    MeshCentral,
    MeshNode,
    in_netns,
    run,
)
from tests.support.processes import kill_group, live_processes, mosquitto_pids_for
from tests.support.wallclock import wallshift


def link_key(one: str, other: str) -> tuple[str, str]:
    """The key of the mesh link between two nodes in ``LINKS``."""
    return (one, other) if (one, other) in LINKS else (other, one)


def peer_address(dialler: str, peer: str) -> str:
    """``peer``'s address on its link with ``dialler``."""
    key = link_key(dialler, peer)
    (_, ip1), (_, ip2) = LINKS[key]
    return ip2 if key[0] == dialler else ip1


@dataclass
class Shape:
    """What a test wants of the neighbourhood."""

    #: Mesh links that exist (the others are never made).
    links: tuple[tuple[str, str], ...] = ((A, B), (B, C), (A, C))
    #: Links that start down.
    down: tuple[tuple[str, str], ...] = ()
    #: Who dials whom (static peers; mDNS is off).
    dials: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {A: (B, C), B: (), C: (B,)})
    #: Nodes whose data directory is a tmpfs of this many MiB (a disk that can fill).
    tmpfs_mib: dict[str, int] = field(default_factory=dict)
    #: Nodes whose wall clock a test can move while they run (``wallshift``, reading
    #: the whole seconds in ``clock_file(name)``; the monotonic clock stays true).
    clock_nodes: tuple[str, ...] = ()
    #: Extra top-level settings per node (``key = value`` lines of node.toml).
    settings: dict[str, list[str]] = field(default_factory=dict)
    sync_s: float = 5.0
    hop_limit: int = 4


def node_toml(name: str, shape: Shape) -> str:
    """node.toml of one node of ``shape`` (the whole file)."""
    lines = [
        f'name = "{name}"', f'area = "{AREAS[name]}"', f'display_name = "{CENTRES[name]}"',
        f"http_port = {HTTP_PORT}", f"mqtt_port = {MQTT_PORT}", "point_port = 0",
        "reports_per_minute = 0", 'log_level = "INFO"',
        "uplink_poll_s = 2.0", "uplink_max_age_s = 0.2", "uplink_backoff_max_s = 2.0",
    ]
    if name == A:
        lines += ['gpio = "mock"', "demo = true", "hold_s = 0.5"]
    else:
        lines += ['gpio = "off"']
    lines += shape.settings.get(name, [])
    lines += ["", "[mesh]", f"port = {MESH_PORT}", "discovery = false",
              f"sync_s = {shape.sync_s}", f"hop_limit = {shape.hop_limit}", "retry_max_s = 2.0"]
    for peer in shape.dials.get(name, ()):
        if link_key(name, peer) in shape.links:
            lines += ["", "[[mesh.peers]]", f'host = "{peer_address(name, peer)}"',
                      f"port = {MESH_PORT}"]
    if name == A:
        lines += ["", "[[meeting_points]]", 'id = "klimboom"', f'name = "{MEETING_POINT}"',
                  "", "[[meeting_points.panic_buttons]]", f'id = "{BUTTON}"',
                  'device = "hub"', "button_pin = 17", "led_pin = 23"]
    return "\n".join(lines) + "\n"


NFT_TABLE = "bart_chaos"


@dataclass
class Neighbourhood:
    """Central and three nodes in namespaces of their own, joined as ``shape`` says."""

    work: Path
    shape: Shape
    mosquitto: str
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    ns: dict[str, str] = field(default_factory=dict)
    central: Any = None
    nodes: dict[str, Any] = field(default_factory=dict)
    mounts: list[Path] = field(default_factory=list)
    _made: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> Any:
        return self.nodes[name]

    # -- building -------------------------------------------------------------------

    def build(self) -> None:
        """Namespaces, links, central (started), nodes enrolled and started, meshed."""
        self.ns = {"central": f"bc{self.tag}-central",
                   **{n: f"bc{self.tag}-{n[-1]}" for n in NODES}}
        for name in self.ns.values():
            result = run("ip", "netns", "add", name, check=False)
            require(result.returncode == 0,
                    f"cannot create a network namespace: {result.stderr.strip()}")
            self._made.append(name)
            run("ip", "-n", name, "link", "set", "lo", "up")
        cns = self.ns["central"]
        run("ip", "-n", cns, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", cns, "address", "add", f"{CENTRAL_IP}/24", "dev", "br0")
        run("ip", "-n", cns, "link", "set", "br0", "up")
        for name in NODES:
            port = f"p{name[-1]}"
            run("ip", "link", "add", "up0", "netns", self.ns[name], "type", "veth",
                "peer", "name", port, "netns", cns)
            run("ip", "-n", cns, "link", "set", port, "master", "br0")
            run("ip", "-n", cns, "link", "set", "dev", port, "type", "bridge_slave",
                "isolated", "on")
            run("ip", "-n", cns, "link", "set", port, "up")
            run("ip", "-n", self.ns[name], "address", "add", f"{UPLINK_IPS[name]}/24",
                "dev", "up0")
            run("ip", "-n", self.ns[name], "link", "set", "up0", "up")
        for key in self.shape.links:
            (if1, ip1), (if2, ip2) = LINKS[key]
            one, other = key
            run("ip", "link", "add", if1, "netns", self.ns[one], "type", "veth",
                "peer", "name", if2, "netns", self.ns[other])
            run("ip", "-n", self.ns[one], "address", "add", f"{ip1}/24", "dev", if1)
            run("ip", "-n", self.ns[other], "address", "add", f"{ip2}/24", "dev", if2)
            if key not in self.shape.down:
                self.link(one, other, up=True)

        self.central = MeshCentral(data_dir=self.work / "central", http_port=CENTRAL_PORT,
                                   database_url="", log_path=self.work / "central.log",
                                   netns=cns)
        shift: dict[str, str] = {}
        if self.shape.clock_nodes:
            shift = wallshift(self.work, self.work / "clock-offset-unused")
        for name in NODES:
            self.nodes[name] = self._node(name, shift)

        def start_central() -> None:
            self.central.cli("init", "--name", "haaglanden", "--http-host", CENTRAL_IP,
                             "--http-port", str(CENTRAL_PORT), "--public-url", CENTRAL_URL)
            self.central.start(timeout=60.0)

        def init(node: Any) -> None:
            run(*bart_command(), "node", "init", "--name", node.name, "--area",
                node.area, "--data-dir", str(node.data_dir), "--mesh-port", str(MESH_PORT),
                env=node.env())
            (node.data_dir / "node.toml").write_text(node_toml(node.name, self.shape))

        # Each step is a few CLI runs of a second or more on a loaded machine: side by side.
        with ThreadPoolExecutor(4) as pool:
            for done in [pool.submit(start_central),
                         *(pool.submit(init, n) for n in self.nodes.values())]:
                done.result()
            # Every roster lists every node before the first start (a roster that
            # grows later reaches the mesh too, but that is test_mesh_netns's subject).
            for done in [pool.submit(self.central.enrol_node, n) for n in self.nodes.values()]:
                done.result()
        for node in self.nodes.values():
            node.launch()
        for node in self.nodes.values():
            node.wait_healthy(60.0)

    def _node(self, name: str, shift: dict[str, str]) -> Any:
        data_dir = self.work / name
        if name in self.shape.tmpfs_mib:
            data_dir.mkdir(parents=True)
            run("mount", "-t", "tmpfs", "-o", f"size={self.shape.tmpfs_mib[name]}m,mode=0700",
                "tmpfs", str(data_dir))
            self.mounts.append(data_dir)
            data_dir = data_dir / "data"  # `bart node init` wants to make the directory
        node = MeshNode(data_dir=data_dir, http_port=HTTP_PORT, mqtt_port=MQTT_PORT,
                        mosquitto=self.mosquitto, peer=KeyPair.generate(),
                        log_path=self.work / f"{name}.log", name=name, area=AREAS[name],
                        netns=self.ns[name])
        if name in self.shape.clock_nodes:
            self.clock_file(name).write_text("0\n")
            node.env_extra.update({**shift, "WALL_OFFSET_FILE": str(self.clock_file(name))})
        return node

    def clock_file(self, name: str) -> Path:
        """The wall-clock offset file of node ``name`` (see ``Shape.clock_nodes``)."""
        return self.work / f"{name}.clock"

    def sessions(self, pairs: Iterable[tuple[str, str]], timeout: float = 30.0) -> None:
        """Wait until each pair sees the other among its mesh peers."""
        pairs = list(pairs)

        def up() -> bool:
            return all(y in self[x].peers() and x in self[y].peers() for x, y in pairs)

        wait_until(up, timeout, 0.2, f"mesh sessions {pairs}")

    # -- breaking and healing --------------------------------------------------------

    def link(self, one: str, other: str, up: bool) -> None:
        """Cut or heal a mesh link: ``ip link set`` on both ends."""
        key = link_key(one, other)
        (if1, _), (if2, _) = LINKS[key]
        state = "up" if up else "down"
        run("ip", "-n", self.ns[key[0]], "link", "set", "dev", if1, state)
        run("ip", "-n", self.ns[key[1]], "link", "set", "dev", if2, state)

    def uplink(self, name: str, up: bool) -> None:
        """Cut or heal a node's line to central."""
        run("ip", "-n", self.ns[name], "link", "set", "dev", "up0", "up" if up else "down")

    def loss(self, name: str, interface: str, percent: int) -> None:
        """Drop ``percent`` % of the packets in and out of ``interface`` in ``name``'s namespace
        (nftables ``numgen random``; this kernel may lack tc netem)."""
        ruleset = (
            f"table inet {NFT_TABLE} {{\n"
            f"  chain input {{ type filter hook input priority -10; policy accept;\n"
            f'    iifname "{interface}" numgen random mod 100 < {percent} drop\n  }}\n'
            f"  chain output {{ type filter hook output priority -10; policy accept;\n"
            f'    oifname "{interface}" numgen random mod 100 < {percent} drop\n  }}\n'
            "}\n")
        self.no_loss(name)
        subprocess.run(["ip", "netns", "exec", self.ns[name], "nft", "-f", "-"],
                       input=ruleset, text=True, check=True, capture_output=True, timeout=30)

    def no_loss(self, name: str) -> None:
        """Remove the loss rules of ``name``'s namespace (none is fine)."""
        run("ip", "netns", "exec", self.ns[name], "nft", "delete", "table", "inet", NFT_TABLE,
            check=False)

    def processes_of(self, root: int) -> list[tuple[int, bytes]]:
        """(pid, command line) of ``root`` and its descendants."""
        children: dict[int, list[int]] = {}
        cmdlines: dict[int, bytes] = {}
        for pid, cmdline, ppid in live_processes():
            children.setdefault(ppid, []).append(pid)
            cmdlines[pid] = cmdline
        out, todo = [], [root]
        while todo:
            pid = todo.pop()
            if pid in cmdlines:
                out.append((pid, cmdlines[pid]))
            todo.extend(children.get(pid, []))
        return out

    def mosquitto_pids(self, name: str) -> list[int]:
        """The live Mosquitto processes of node ``name``."""
        pids: list[int] = mosquitto_pids_for(self[name].data_dir)
        return pids

    def projector_pid(self) -> int | None:
        """Central's projector (``python -m central.worker projector``, its child)."""
        proc = self.central.proc
        if proc is None or proc.poll() is not None:
            return None
        for pid, cmdline in self.processes_of(proc.pid):
            if pid != proc.pid and b"central.worker\0projector" in cmdline:
                return pid
        return None

    # -- tearing down ------------------------------------------------------------------

    def close(self) -> None:
        """Kill what still runs, unmount, delete the namespaces (idempotent)."""
        for node in self.nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                node.kill()
            for pid in mosquitto_pids_for(node.data_dir):
                kill_group(pid)
        if self.central is not None:
            self.central.kill()
        for path in self.mounts:
            subprocess.run(["umount", "-l", str(path)], check=False, timeout=30)
        self.mounts.clear()
        for name in self._made:
            subprocess.run(["ip", "netns", "delete", name], check=False, timeout=30)
        self._made.clear()


__all__ = ["NODES", "A", "B", "C", "Neighbourhood", "Shape", "in_netns", "run"]
