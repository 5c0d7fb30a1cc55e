"""The running node: store, broker, MQTT client and live hub wired together.

Order of every local write (DESIGN.md §4, path 1): SQLite COMMIT first, then
the live hub, then Mosquitto. A reply to a resident waits only for the COMMIT;
Mosquitto being down never stops the node from taking reports.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import logging
import shutil
import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from broker import BrokerProcess, BrokerSettings, MqttClient, MqttUser
from broker.topics import PUBLIC_EVENTS_FILTER, event_topic, health_topic, parse_event_topic
from common.quietlog import QuietLog
from sync import Event, KeyPair, SyncError, decode_event, verify_event

from .alarms import store_team_ack, team_alert_body
from .buttons import ButtonService
from .clock import NodeClock, newest_stamp
from .config import NodeSettings, load_secrets
from .enrol import load_enrolment, load_roster
from .errors import NodeError
from .hub import Hub
from .mesh.budget import OriginBudget
from .mesh.carry import Carrier
from .mesh.engine import Mesh
from .mesh.identity import MeshIdentity, ensure_identity
from .metrics import EventCounts, MetricsRuntime, start_metrics
from .points import POINTS_FILE, point_users
from .reports import ReceiptTaken, Submitted, store_report
from .store import Store
from .tls import ensure_tls
from .trust import TrustedKeys
from .uplink import Uplink

if TYPE_CHECKING:
    from .buttons import ButtonRuntime
    from .portal.demo import DemoRuntime
    from .portal.deps import PortalRuntime
    from .team.session import TeamRuntime

log = logging.getLogger(__name__)

SERVICE_USER = "bart-node"
POINTS_POLL_S = 2.0
PUBLISH_BATCH = 100
PUBLISH_BACKLOG = 10_000
PUBLISH_WAIT_S = 5.0
#: Alert sources a node (not central) may sign.
PEER_SOURCES = frozenset({"resident", "team", "button", "integration"})
INTEGRATION_USER = "integration"


class RefusalLog:
    """Log refused input loudly once per reason, then quietly (common/quietlog.py)."""

    def __init__(self) -> None:
        self._quiet = QuietLog(log)

    def refuse(self, reason: str, detail: str) -> None:
        self._quiet.say(reason, "refused MQTT message (%s): %s", reason, detail)


def broker_settings(settings: NodeSettings,
                    mesh: MeshIdentity | None = None) -> BrokerSettings:
    """The node's Mosquitto set-up: the node, read-only integrations, point devices,
    and the mesh listener for peers.

    The TLS listener for point devices exists only while one is registered;
    the mesh listener only when the mesh is on and someone can be a peer.
    """
    secrets = load_secrets(settings.data_dir)
    points = point_users(settings)
    tls = ensure_tls(settings.tls_dir, settings.name) if points and settings.point_port else None
    return BrokerSettings(
        state_dir=settings.broker_dir,
        port=settings.mqtt_port,
        bind_address=settings.mqtt_host,
        users=(
            MqttUser(SERVICE_USER, secrets["service_password"], "service"),
            MqttUser(INTEGRATION_USER, secrets["integration_password"], "integration"),
            *points,
        ),
        tls_port=settings.point_port if tls else None,
        tls_cert=tls.cert if tls else None,
        tls_key=tls.key if tls else None,
        mesh_port=settings.mesh.port if mesh is not None else None,
        mesh_bind_address=settings.mesh.host,
        mesh_cafile=mesh.cafile if mesh is not None else None,
        mesh_cert=mesh.cert if mesh is not None else None,
        mesh_key=mesh.key if mesh is not None else None,
    )


class NodeRuntime:
    """Everything a running node holds; started and stopped by the app lifespan."""

    def __init__(self, settings: NodeSettings, *, start_broker: bool = True) -> None:
        self.settings = settings
        self.keys = KeyPair.load(settings.keys_dir)
        self.trust = TrustedKeys.load(settings.data_dir, settings.name, self.keys.signing_public)
        self.hub = Hub()  # public events, for residents
        self.team_hub = Hub()  # every event, for the logged-in team
        self.store: Store | None = None
        self.broker: BrokerProcess | None = None
        self.mqtt: MqttClient | None = None
        self.buttons: ButtonService | None = None
        self.uplink: Uplink | None = None
        self.mesh: Mesh | None = None
        self.carrier: Carrier | None = None
        self.discovery: Any = None
        self.mesh_identity: MeshIdentity | None = None
        self.started_at = time.monotonic()  # uptime: a wall clock jump must not change it
        #: The time events are stamped with and expiry judged by (node/clock.py).
        self.clock = NodeClock()
        self._start_broker = start_broker
        self._tasks: set[asyncio.Task[None]] = set()
        self._refusals = RefusalLog()
        self._outbox: asyncio.Queue[Event] = asyncio.Queue(maxsize=10_000)
        # Foreign events shown live whose COMMIT is still pending.
        self._pending: dict[tuple[str, str, int], str] = {}
        self._pending_ids: set[str] = set()
        self.event_counts = EventCounts(settings.name)  # read by /metrics (node/metrics.py)
        #: Per-origin rate of peers' public events, mesh and MQTT alike (docs/mesh.md).
        self.origin_budget = OriginBudget.of(settings.mesh, self._is_central)
        self._metrics: Any = None

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, start Mosquitto and connect to it.

        If anything fails half-way, what was started is stopped again: no
        orphaned Mosquitto holding the port, no store left open.
        """
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        s = self.settings
        self.store = Store(s.db_path, origin=s.name, keys=self.keys, clock_ms=self.clock.now_ms)
        enrolment = load_enrolment(s)
        self.clock.observe_floor(await asyncio.to_thread(
            newest_stamp, s.db_path, [s.name, str(enrolment["origin"]) if enrolment else ""]))
        self._load_central_trust()
        if s.mesh.port:
            self.mesh_identity = await asyncio.to_thread(ensure_identity, s, self.trust)
        bsettings = broker_settings(s, self.mesh_identity)
        if self._start_broker:
            self.broker = BrokerProcess(bsettings, binary=s.mosquitto_binary)
            try:
                await asyncio.to_thread(self.broker.start)
            except Exception as exc:
                # The store is the truth: run without live fan-out and say so loudly.
                log.error("Mosquitto did not start (%s); reports are still stored", exc)
        secrets = load_secrets(s.data_dir)
        self.mqtt = MqttClient(host=s.mqtt_host, port=s.mqtt_port, username=SERVICE_USER,
                               password=secrets["service_password"],
                               client_id=f"{s.name}-node")
        # No Local: the node's own publishes are already shown and stored.
        self.mqtt.subscribe(PUBLIC_EVENTS_FILTER, self._on_mqtt_message, no_local=True)
        self.buttons = ButtonService(s, self)
        self.buttons.start(asyncio.get_running_loop())
        await self.mqtt.start()
        await self.mqtt.wait_connected(5.0)
        self.spawn(self._publisher())
        self.spawn(self._publish_health(online=True))
        if not self.start_uplink():
            log.info("not enrolled with a central: no uplink (bart node enroll)")
        if s.mesh.port:
            await self._start_mesh()
        # Everything made at start-up lives as long as the node: keep it out of the
        # cyclic collector's generations, whose full passes were p99 latency spikes.
        gc.collect()
        gc.freeze()
        if self._start_broker:
            self.spawn(self._watch_points())
        self._metrics = start_metrics(self)

    def start_uplink(self) -> bool:
        """Start the uplink when the node is enrolled; True when it runs.

        Called at start-up, and again by ``bart demo`` once it has enrolled a
        running node: then the uplink starts without a restart.
        """
        if self.uplink is not None and self.uplink.state.enabled:
            return True
        self.uplink = Uplink(self.settings, self.require_store(), self.keys,
                             on_central_event=self._central_event, clock=self.clock)
        if not self.uplink.state.enabled:
            return False
        self.require_store().desk_origin = self.uplink.central_origin
        self._load_central_trust()
        self.spawn(self.uplink.run())
        return True

    def _load_central_trust(self) -> None:
        """Central's key and roster, once enrolled, decide whom the mesh trusts."""
        enrolment = load_enrolment(self.settings)
        if enrolment is None:
            return
        central_key = base64.b64decode(str(enrolment["signing_pub"]))
        self.trust.set_central(str(enrolment["origin"]), central_key)
        uplink = self.uplink
        if uplink is not None and uplink.state.enabled:
            self.trust.follow_roster(lambda: uplink.roster)
        else:
            self.trust.set_roster(load_roster(self.settings, central_key))

    async def _start_mesh(self) -> None:
        """Sessions with peers: accepted on our broker's mesh listener, dialled to theirs."""
        assert self.mqtt is not None
        enrolment = load_enrolment(self.settings)
        self.carrier = Carrier(self.require_store(),
                               str(enrolment["url"]) if enrolment is not None else None)
        self.mesh = Mesh(self.settings, self.require_store(), self.trust,
                         signing_public=self.keys.signing_public, local=self.mqtt,
                         identity=self.mesh_identity, on_stored=self._mesh_stored,
                         uplink_up=self._uplink_up, carry=self.carrier.take,
                         on_carried=self.carrier.answered, budget=self.origin_budget)
        await self.mesh.start()
        self._mesh_tasks = [self.spawn_task(self.carrier.retry(self.mesh))]
        if self.uplink is not None and self.uplink.state.enabled:
            mesh, carrier, name = self.mesh, self.carrier, self.settings.name
            self.uplink.carry = lambda seq, wire: carrier.send(mesh, name, seq, wire)
            self.uplink.carry_ready = lambda: bool(mesh.live_links())
        if self.settings.mesh.discovery and self.mesh_identity is not None:
            self._mesh_tasks.append(self.spawn_task(self._discover(self.mesh)))

    async def refresh_mesh(self) -> None:
        """After enrolment (or a trust change): new certificate and CAs for the mesh.

        The broker is restarted with the new listener files and the sessions
        start again; ``bart demo`` calls this once it enrolled a running node.
        """
        s = self.settings
        if not s.mesh.port:
            return
        self._load_central_trust()
        identity = await asyncio.to_thread(ensure_identity, s, self.trust)
        if identity == self.mesh_identity and self.mesh is not None:
            return
        self.mesh_identity = identity
        await self._stop_mesh()
        if self.broker is not None:
            await asyncio.to_thread(self.broker.stop)
            self.broker = BrokerProcess(broker_settings(s, identity), binary=s.mosquitto_binary)
            await asyncio.to_thread(self.broker.start)
            if self.mqtt is not None:
                self.mqtt.reconnect_now()
                await self.mqtt.wait_connected(5.0)
        await self._start_mesh()

    async def _discover(self, mesh: Mesh) -> None:
        """Advertise this node and browse for peers (mDNS) while the mesh runs."""
        from .mesh.discovery import Advert, Discovery, DiscoveryError

        s = self.settings
        advert = Advert(name=s.name, area=s.area, port=s.mesh.port, fp=mesh.fp)
        discovery = Discovery(advert, on_change=mesh.discovered,
                              interfaces=s.mesh.interfaces or None)
        try:
            await discovery.start()
        except DiscoveryError as exc:
            log.error("mDNS discovery did not start (%s); static peers only", exc)
            return
        self.discovery = discovery
        try:
            await asyncio.Event().wait()  # until cancelled with the mesh
        finally:
            self.discovery = None
            await discovery.close()

    async def _stop_mesh(self) -> None:
        for task in getattr(self, "_mesh_tasks", []):
            task.cancel()
        if self.mesh is not None:
            await self.mesh.close()
            self.mesh = None
        if self.carrier is not None:
            await self.carrier.close()

    def _mesh_health(self) -> dict[str, Any]:
        """The mesh in ``/healthz`` and ``bart status``: peers, round trips, what they lack."""
        mesh = self.mesh
        if mesh is None:
            return {"enabled": False}
        return {"enabled": True, "listening": mesh.identity is not None,
                "peers": [{"name": lk.peer, "how": lk.how, "rtt_ms": lk.rtt_ms,
                           "lacks": sum(mesh.lacks(lk.vector).values())}
                          for lk in sorted(mesh.live_links(), key=lambda lk: lk.peer)]}

    def mesh_peers(self) -> list[str] | None:
        """Names of the community centres connected now (None: the mesh is off)."""
        if self.mesh is None:
            return None
        names = self.mesh.names
        return sorted(names.get(lk.peer, lk.peer) for lk in self.mesh.live_links())

    def peer_names(self) -> dict[str, str]:
        """Community-centre names of peers, by origin (from their mesh hello)."""
        return self.mesh.names if self.mesh is not None else {}

    def _uplink_up(self) -> bool:
        """Whether this node can reach central now (peers may then carry through us)."""
        up = self.uplink
        return bool(up is not None and up.state.enabled and not up.state.paused
                    and up.state.failures == 0 and up.state.last_success_ms)

    def _mesh_stored(self, events: list[Event]) -> None:
        """Events from peers were committed: show them, tell integrations and buttons."""
        for event in events:
            self.event_counts.count(event, "mesh")
            if event.stream == "public":
                self.hub.publish(event)
            self.team_hub.publish(event)
            try:
                self._outbox.put_nowait(event)
            except asyncio.QueueFull:
                self._refusals.refuse("publish-backlog", f"{event.id} not published live")
            if event.kind == "ack" and self.buttons is not None:
                self.spawn(self.buttons.on_ack(event))
        if self.uplink is not None:
            self.uplink.wake(events)

    async def _watch_points(self) -> None:
        """Restart the broker when point devices are added or removed."""
        path = self.settings.data_dir / POINTS_FILE
        seen = path.stat().st_mtime_ns if path.exists() else 0
        while True:
            await asyncio.sleep(POINTS_POLL_S)
            now = path.stat().st_mtime_ns if path.exists() else 0
            if now == seen:
                continue
            seen = now
            log.info("point devices changed: restarting the broker with their users")
            try:
                bsettings = broker_settings(self.settings, self.mesh_identity)
                if self.broker is not None:
                    await asyncio.to_thread(self.broker.stop)
                self.broker = BrokerProcess(bsettings, binary=self.settings.mosquitto_binary)
                await asyncio.to_thread(self.broker.start)
                if self.mqtt is not None:
                    self.mqtt.reconnect_now()
            except Exception as exc:
                log.error("broker restart after a point-device change failed: %s", exc)

    async def stop(self) -> None:
        """Stop in reverse order; safe to call twice."""
        if self._metrics is not None:
            await asyncio.to_thread(self._metrics.close)
            self._metrics = None
        self.hub.close()
        self.team_hub.close()
        if self.buttons is not None:
            self.buttons.close()
        await self._stop_mesh()
        for task in list(self._tasks):
            task.cancel()
        if self.mqtt is not None:
            await self.mqtt.close()
            self.mqtt = None
        if self.broker is not None:
            await asyncio.to_thread(self.broker.stop)
            self.broker = None
        if self.store is not None:
            await asyncio.to_thread(self.store.close)
            self.store = None

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` as a task the runtime keeps (and cancels on stop); log failures."""
        self.spawn_task(coro)

    def spawn_task(self, coro: Any) -> asyncio.Task[None]:
        """:meth:`spawn`, returning the task."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("node task %s failed", task.get_coro(), exc_info=task.exception())

    # -- local events ----------------------------------------------------------

    def now_ms(self) -> int:
        """The node's time (node/clock.py): what alerts expire by, not the wall clock."""
        return self.clock.now_ms()

    def require_store(self) -> Store:
        """The open store (raises when the node is not running)."""
        if self.store is None:
            raise NodeError("the node is not running")
        return self.store

    async def submit_report(self, clean: Mapping[str, Any]) -> Submitted:
        """Store a validated report (and its public warning), then fan out."""
        area = self.settings.area
        for _ in range(5):
            try:
                done = await self.require_store().write(
                    lambda tx: store_report(tx, clean, area))
                break
            except ReceiptTaken:
                continue  # rolled back to its savepoint: nothing stored, try a new code
        else:  # pragma: no cover - five collisions in 10^9 codes
            raise NodeError("could not allocate a receipt code")
        for event in (done.report, done.warning):
            if event is not None:
                self.after_commit(event)
        return done

    async def team_ack(self, ref: str, action: str, by: str, note: str = "",
                       to: str | None = None) -> Event:
        """A team member's answer to an alert or report (stored, then fanned out)."""
        events = await self.require_store().write(
            lambda tx: store_team_ack(tx, ref, action, by, note, to))
        for event in events:
            self.after_commit(event)
        if self.buttons is not None:
            await self.buttons.on_ack(events[0])
        return events[-1]  # the one with the member's name

    async def team_alert(self, title: str, text: str, severity: str, expires_ms: int | None,
                         by: str) -> Event:
        """A public alert raised by a team member for this node's area.

        ``by`` is recorded in the team's audit log, not in the public event.
        """
        body = team_alert_body(title, text, severity, expires_ms, self.settings.area)
        event = await self.require_store().write(
            lambda tx: tx.append_local("alert", "public", body))
        self.after_commit(event)
        return event

    def after_commit(self, event: Event) -> None:
        """Fan a committed local event out: live pages, team, Mosquitto."""
        self.event_counts.count(event, "local")
        if event.stream == "public":
            self.hub.publish(event)
        self.team_hub.publish(event)
        if self.uplink is not None:
            self.uplink.wake((event,))
        if self.mesh is not None:
            self.mesh.local_event(event)
        try:
            self._outbox.put_nowait(event)
        except asyncio.QueueFull:  # bounded memory; the store has the event
            self._refusals.refuse("publish-backlog", f"{event.id} not published live")

    def _central_event(self, event: Event) -> None:
        """A verified event from central (a broadcast, a desk's answer on an alarm)
        was stored: show it live; an answer moves the button's light."""
        self.event_counts.count(event, "central")
        if event.stream == "public":
            self.hub.publish(event)
            if self.mesh is not None:
                self.mesh.local_event(event)  # for peers without an uplink
        self.team_hub.publish(event)
        if event.kind == "ack":
            if self.buttons is not None:
                self.spawn(self.buttons.on_ack(event))
            if self.uplink is not None:
                self.uplink.wake((event,))

    async def _publisher(self) -> None:
        """Publish committed local events on Mosquitto, a batch at a time.

        One task for all events (not one each); at most PUBLISH_BATCH waiting for
        their PUBACK at once (DESIGN.md §9). While Mosquitto is away (restarting
        after a point device was added, say) events wait, in order and bounded,
        and go out when it is back: a panic alarm must reach the siren late
        rather than never. Past the bound the oldest are dropped, loudly; the
        store has them and the sync paths carry them.
        """
        waiting: deque[Event] = deque()
        while True:
            if not waiting:
                waiting.append(await self._outbox.get())
            while len(waiting) < PUBLISH_BACKLOG and not self._outbox.empty():
                waiting.append(self._outbox.get_nowait())
            mqtt = self.mqtt
            if mqtt is None:
                waiting.clear()
                continue
            if not mqtt.connected and not await mqtt.wait_connected(PUBLISH_WAIT_S):
                self._refusals.refuse("publish-waiting",
                                      f"{len(waiting)} event(s) wait for Mosquitto")
                continue
            batch = [waiting.popleft() for _ in range(min(PUBLISH_BATCH, len(waiting)))]
            messages = [(event_topic(e.origin, e.stream, e.kind), e.encode()) for e in batch]
            results = await mqtt.publish_batch(messages)
            retry = [e for e, error in zip(batch, results, strict=True)
                     if error is not None and not mqtt.connected]
            for event, error in zip(batch, results, strict=True):
                if error is not None and mqtt.connected:  # refused, not merely away
                    self._refusals.refuse("publish-failed", f"{event.id}: {error}")
            waiting.extendleft(reversed(retry))
            while len(waiting) > PUBLISH_BACKLOG:
                self._refusals.refuse("publish-backlog",
                                      f"{waiting.popleft().id} not published live")

    async def _publish_health(self, *, online: bool) -> None:
        if self.mqtt is None:
            return
        body = json.dumps({"node": self.settings.name, "online": online,
                           "area": self.settings.area}).encode()
        try:
            await self.mqtt.publish(health_topic(self.settings.name), body, qos=1, retain=True)
        except Exception as exc:
            self._refusals.refuse("publish-failed", f"health: {exc}")

    # -- events arriving over MQTT ---------------------------------------------

    def _on_mqtt_message(self, topic: str, payload: bytes) -> None:
        """Verify a public event from Mosquitto, show it at once, store it."""
        try:
            origin, stream, kind = parse_event_topic(topic)
        except Exception as exc:
            self._refusals.refuse("topic", f"{topic}: {exc}")
            return
        try:
            event = decode_event(payload)
        except SyncError as exc:
            self._refusals.refuse("malformed", f"{topic}: {exc}")
            return
        if (event.origin, event.stream, event.kind) != (origin, stream, kind):
            self._refusals.refuse("topic-mismatch", f"{topic} carries {event.id}")
            return
        if self.hub.seen(event.id):
            return
        try:
            verify_event(event, self.trust.lookup)
        except SyncError as exc:
            self._refusals.refuse("signature", f"{event.id} from {event.origin}: {exc}")
            return
        if event.kind == "alert" and event.body["source"] not in PEER_SOURCES:
            # A node may not speak for police or municipality: a "central" alert
            # is believed only with central's own signature (central issue).
            self._refusals.refuse("source", f"{event.id}: {event.origin} may not send "
                                  f"{event.body['source']} alerts")
            return
        store = self.store
        if store is None:
            return
        if event.origin == self.settings.name and store.get_event(event.id) is None:
            # Signed with our key but not made here: a copied key or a replay.
            self._refusals.refuse("own-origin", f"{event.id} was not created by this node")
            return
        conflict = self._conflict(store, event)
        if conflict is not None:
            if conflict:
                self._refusals.refuse("conflict", conflict)
            return
        if not self.origin_budget.take(event, "live"):  # the mesh's live bucket, shared
            n = self.origin_budget.count_refused(event, "mqtt")
            self._refusals.refuse("over-budget", f"{event.id}: {event.origin} sends more "
                                  f"public events than its budget ({n} refused so far)")
            return
        # Stored before shown (DESIGN §5): pages and teams see it after its
        # COMMIT, so that an answer shown next always finds its alert stored.
        # Until then it is pending, and a second copy is not taken twice.
        key = (event.origin, event.stream, event.seq)
        self._pending[key] = event.id
        self._pending_ids.add(event.id)
        self.spawn(self._store_foreign(event))

    def _is_central(self, origin: str) -> bool:
        """Whether ``origin`` is the enrolled central's (exempt from the budget)."""
        central = self.trust.central
        return central is not None and origin == central[0]

    def _conflict(self, store: Store, event: Event) -> str | None:
        """None if ``event`` is new; "" if already held; else why it is refused."""
        key = (event.origin, event.stream, event.seq)
        if event.seq > store.head(event.origin, event.stream) and key not in self._pending \
                and event.id not in self._pending_ids:
            return None  # past everything held: new (the store re-checks the id on insert)
        held = self._pending.get(key) or store.id_at(*key)
        if held == event.id:
            return ""
        if held is not None:
            return f"{event.origin}/{event.stream}/{event.seq} is held by {held}, not {event.id}"
        if event.id in self._pending_ids or store.get_event(event.id) is not None:
            return f"event {event.id} is held under another seq"
        return None

    async def _store_foreign(self, event: Event) -> None:
        store = self.store
        if store is None:
            return
        try:
            if await store.write(lambda tx: tx.insert(event)):
                self.event_counts.count(event, "mqtt")
                self.hub.publish(event)
                self.team_hub.publish(event)
        except BaseException as exc:
            # Not stored, not shown: a resend or catch-up is taken again.
            self._refusals.refuse("store", f"{event.id}: {exc}")
            if not isinstance(exc, Exception):
                raise
        finally:
            self._pending.pop((event.origin, event.stream, event.seq), None)
            self._pending_ids.discard(event.id)

    # -- health ----------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """State of broker, store and disk for ``/healthz`` and ``bart status``."""
        store_ok = self.store is not None and self.store.check()
        disk = shutil.disk_usage(self.settings.data_dir)
        disk_ok = disk.free >= self.settings.min_free_disk_mb * 1024 * 1024
        broker = {
            "running": bool(self.broker and self.broker.running),
            "restarts": self.broker.restarts if self.broker else 0,
            "connected": bool(self.mqtt and self.mqtt.connected),
            "port": self.settings.mqtt_port,
        }
        clock = self.clock.health()
        # A wrong wall clock does not stop reports (they are stamped with the node's
        # own time), but someone must set it: degraded, and said in "clock".
        status = "ok" if store_ok and disk_ok and broker["connected"] and clock["ok"] else (
            "degraded" if store_ok and disk_ok else "failing")
        return {
            "status": status,
            "node": self.settings.name,
            "area": self.settings.area,
            "uptime_s": int(time.monotonic() - self.started_at),
            "broker": broker,
            "store": {"ok": store_ok,
                      "events": self.store.count_events() if store_ok and self.store else None},
            "disk": {"ok": disk_ok, "free_bytes": disk.free},
            "clock": clock,
            "live_subscribers": self.hub.subscriber_count,
            # Team pages with their live stream open now: 0 means an alarm is seen
            # by nobody until someone opens /team (a closed or sleeping phone).
            "team_watching": self.team_hub.subscriber_count,
            "uplink": self.uplink.state.to_dict() if self.uplink else {"enabled": False},
            "mesh": self._mesh_health(),
        }


def narrow_views(rt: NodeRuntime) -> tuple[ButtonRuntime, PortalRuntime, DemoRuntime,
                                           TeamRuntime, MetricsRuntime]:
    """The runtime as the button service, the resident pages and API, the demo
    pages, the team pages and the metrics see it: each receives one of these small
    interfaces, never :class:`NodeRuntime` itself. mypy checks here that the
    runtime provides every one of them (tests/unit/test_runtime_interfaces.py)."""
    return rt, rt, rt, rt, rt
