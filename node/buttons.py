"""Panic buttons on the node: wired (hub) buttons and point devices, one path.

A hold of a wired button (gpiozero, :mod:`hardware`) and a press message from
a point device (MQTT over TLS) both end in the same writer task: the alarm is
stored first, then shown and published; then the button's light says
"stored". Team answers move the light on: "on my way" → *coming*, "resolved" →
*resolved*. A press id from a point device is remembered with the event it
produced, so a press delivered twice raises one alarm.

A wired button's alarm is *armed* during the hold: made, signed and flushed
to disk in ``armed_alarms`` as soon as the press has settled (~2 s before the
hold completes). When the hold completes it is moved into the event log in a
COMMIT that does not wait for the disk (the store's *already durable* work); a release
before then deletes it. An armed alarm found at start-up — the node lost
power during a hold, or right after one — is stored then: a panic button
errs towards the alarm, as it cannot tell whether the hold was long enough.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from broker import MqttClient
from broker.topics import POINT_PRESS_FILTER, parse_point_topic, point_topic
from hardware import (
    ButtonEvent,
    ButtonEventKind,
    ButtonSpec,
    HardwareError,
    load_buttons,
    pin_factory_for,
)
from sync import Event, SyncError
from sync.bodies import SLUG

from .alarms import button_alarm_body, store_ack
from .config import NodeSettings
from .errors import NodeError
from .store import Store, WriteTx

if TYPE_CHECKING:
    from hardware import PanicButton, StatusLight

#: A prepared alarm is stored only when the hold's deadline is at most this far
#: behind the wall clock when the hold completes (else the clock jumped).
PREPARED_LAG_MS = 1000

log = logging.getLogger(__name__)

PRESS_KINDS = ("alarm", "repeat", "fault", "fault_cleared")
MAX_PRESS_BYTES = 512
#: Light state of a button after each team answer on its alarm.
LIGHT_AFTER = {"new": "stored", "seen": "stored", "on_my_way": "coming",
               "escalated": "coming", "resolved": "resolved", "hidden": "resolved"}


class ButtonRuntime(Protocol):
    """What the button service needs of the running node (not the whole
    :class:`node.runtime.NodeRuntime`: no import of it, no cycle)."""

    @property
    def store(self) -> Store | None:
        """The open store (None while the node is not running)."""

    @property
    def mqtt(self) -> MqttClient | None:
        """The node's MQTT client (None while the node is not running)."""

    def require_store(self) -> Store:
        """The open store; raises when the node is not running."""

    def after_commit(self, event: Event) -> None:
        """Fan a committed local event out."""

    def spawn(self, coro: Any) -> None:
        """Run a coroutine as a task the node keeps."""


def button_specs(settings: NodeSettings) -> list[ButtonSpec]:
    """The configured buttons as hardware specs (validated: ids, pins)."""
    return load_buttons([p.model_dump() for p in settings.meeting_points], area=settings.area)


def parse_press(payload: bytes) -> dict[str, Any]:
    """Validate a point device's press message; raise ValueError when it is bad."""
    if len(payload) > MAX_PRESS_BYTES:
        raise ValueError("press message too large")
    data = json.loads(payload)
    if not isinstance(data, dict) or data.get("v") != 1:
        raise ValueError("press message must be an object with v = 1")
    if set(data) != {"v", "id", "button", "kind", "ts"}:
        raise ValueError("press message has missing or unknown fields")
    if not isinstance(data["id"], str) or not 8 <= len(data["id"]) <= 64:
        raise ValueError("press id must be text of 8-64 characters")
    if not isinstance(data["button"], str) or not SLUG.fullmatch(data["button"]):
        raise ValueError("button must be a button id")
    if data["kind"] not in PRESS_KINDS:
        raise ValueError(f"kind must be one of {', '.join(PRESS_KINDS)}")
    if not isinstance(data["ts"], int) or isinstance(data["ts"], bool):
        raise ValueError("ts must be Unix milliseconds")
    return data


def arm_task(button: str, event: Event) -> Callable[[WriteTx], None]:
    """Writer task: keep ``event``, the alarm of a hold in progress, on disk."""

    def task(tx: WriteTx) -> None:
        tx.arm_alarm(button, event)

    return task


def disarm_task(button: str, event_id: str) -> Callable[[WriteTx], None]:
    """Writer task: the hold ended early (or the node stops): forget its alarm."""

    def task(tx: WriteTx) -> None:
        tx.disarm_alarm(button, event_id)

    return task


def armed_buttons(tx: WriteTx) -> list[str]:
    """Buttons with an armed alarm, the earliest hold first."""
    return tx.armed_buttons()


def recover_armed(button: str) -> Callable[[WriteTx], Event | None]:
    """Writer task at start-up: the armed alarm ``button`` left behind becomes an alarm.

    Stored exactly as armed when its seq is still the next one — it may
    already have been shown and relayed before a power cut took its COMMIT —
    and made afresh (same body) when its seq was taken, which means it was
    never stored, so never shown. (Only an armed alarm whose seq no other
    armed alarm has is stored without a flush: see :func:`press_task`.)
    """

    def task(tx: WriteTx) -> Event | None:
        armed = tx.armed_alarm(button)
        if armed is None:
            return None
        tx.disarm_alarm(button)
        if tx.has_event(armed.id):
            return None  # stored already (cannot happen: the same COMMIT deletes the row)
        if armed.origin == tx.origin and armed.seq == tx.head(armed.stream) + 1:
            tx.insert(armed)
            return armed
        return tx.append_local(armed.kind, armed.stream, armed.body)

    return task


def press_task(button: str, meeting_point: str, kind: str, area: str,
               press_id: str | None, prepared: Event | None = None, point_name: str = "",
               ) -> Callable[[WriteTx], Event | None]:
    """Writer task: the event of one press, de-duplicated by ``press_id``.

    A hold raises an alarm, or — when the button's last alarm is still open —
    answers it with ``repeated`` (the person is still pressing: same alarm).
    ``prepared`` is the alarm made during the hold (see
    :meth:`ButtonService._hold`); it is stored when it still fits. A wired
    button's armed alarm (``press_id`` None) is consumed here, whichever event
    the press gives.
    """

    def task(tx: WriteTx) -> Event | None:
        if press_id is not None and tx.press_known(press_id):
            return None
        if press_id is None:
            tx.disarm_alarm(button)
        if prepared is not None and tx.seq_armed(prepared.stream, prepared.seq):
            # Another button's alarm is armed with the same seq: were this
            # COMMIT lost, recovery could not tell which of the two was shown.
            tx.wrote_new = True
        event: Event
        if kind == "alarm":  # the hold detector already decided: a new incident
            event = tx.append_local("alert", "public",
                                    button_alarm_body(button, meeting_point, area, point_name),
                                    prepared=prepared)
        elif kind == "repeat":
            last = tx.last_button_alarm(button)
            if last is not None and not tx.alarm_closed(last):
                event = store_ack(tx, last, "repeated", button)
            else:  # nothing open to repeat: this hold is a new alarm
                event = tx.append_local("alert", "public",
                                        button_alarm_body(button, meeting_point, area, point_name))
        else:
            event = tx.append_local("status", "private",
                                    {"event": f"button_{kind}", "button": button})
        if press_id is not None:
            tx.add_press(press_id, meeting_point, button, kind, event.id)
        return event

    return task


def _disarmed(button: str, done: concurrent.futures.Future[None]) -> None:
    if done.cancelled() or done.exception() is not None:
        # The row stays until this button's next press; a restart before
        # then stores it as an alarm (erring towards the alarm).
        log.error("panic button %s: armed alarm not disarmed: %s", button,
                  "cancelled" if done.cancelled() else done.exception())


def _done_ok(future: concurrent.futures.Future[None]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


class ButtonService:
    """The node's panic buttons: gpiozero devices, point-device messages, lights."""

    def __init__(self, settings: NodeSettings, runtime: ButtonRuntime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.specs = {s.id: s for s in button_specs(settings)}
        self.buttons: dict[str, PanicButton] = {}
        self.lights: dict[str, StatusLight] = {}
        self.factory: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Point button -> id of its last press that is COMMITTED: only such an
        # id may go back to the device, which then drops it from its outbox.
        self._last_press: dict[str, str] = {}
        # Wired button -> (hold deadline, the alarm made for it during the hold,
        # the writer's future of arming it).
        self._prepared: dict[str, tuple[float, Event, concurrent.futures.Future[None]]] = {}

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Store alarms armed before a power cut; claim the pins of wired
        buttons; subscribe to point devices."""
        self._loop = loop
        self._recover()
        hub = [s for s in self.specs.values() if s.device == "hub"]
        if hub and self.settings.gpio != "off":
            try:
                self.factory = pin_factory_for(
                    "mock" if self.settings.gpio == "mock" else "auto")
            except HardwareError as exc:
                # No GPIO must never stop the node from taking reports: say it loudly.
                log.error("panic buttons disabled: %s", exc)
                hub = []
            for spec in hub:
                try:
                    self._claim(spec)
                except HardwareError as exc:
                    log.error("panic button %s disabled: %s", spec.id, exc)
        if self.runtime.mqtt is not None and any(
                s.device == "point" for s in self.specs.values()):
            self.runtime.mqtt.subscribe(POINT_PRESS_FILTER, self._on_point_message)

    def _claim(self, spec: ButtonSpec) -> None:
        # gpiozero only for wired buttons (a node without them never loads it).
        from hardware import PanicButton, StatusLight

        light = StatusLight(spec.led_pin, buzzer_pin=spec.buzzer_pin, name=spec.id,
                            pin_factory=self.factory)
        try:
            button = PanicButton(
                spec.button_pin, button_id=spec.id, hold_s=self.settings.hold_s,
                cooldown_s=self.settings.cooldown_s, pin_factory=self.factory,
                on_alarm=partial(self._from_thread, spec.id, "alarm"),
                on_refresh=partial(self._from_thread, spec.id, "repeat"),
                on_fault=partial(self._from_thread, spec.id, "fault"),
                on_fault_cleared=partial(self._from_thread, spec.id, "fault_cleared"),
                on_hold=partial(self._hold, spec.id),
                on_hold_abandoned=partial(self._abandoned, spec.id))
        except HardwareError:
            light.close()
            raise
        self.lights[spec.id] = light
        self.buttons[spec.id] = button

    def close(self) -> None:
        """Release every pin; disarm the alarms of holds still in progress.

        A clean stop is not a power cut: a hold it interrupts did not complete.
        """
        for button in self.buttons.values():
            button.close()
        for light in self.lights.values():
            light.close()
        self.buttons.clear()
        self.lights.clear()
        store = self.runtime.store
        for button_id, (_, event, _armed) in self._prepared.items():
            if store is not None:
                with contextlib.suppress(NodeError):
                    store.submit(disarm_task(button_id, event.id))
        self._prepared.clear()

    def _recover(self) -> None:
        store = self.runtime.store
        if store is None:
            return
        try:
            buttons = store.write_sync(armed_buttons)
        except NodeError as exc:
            log.critical("armed alarms not read: %s", exc)
            return
        for button in buttons:
            try:
                event = store.write_sync(recover_armed(button))
            except Exception as exc:  # one bad row must not keep the node down
                log.critical("panic button %s: armed alarm left at start-up could not be "
                             "stored (%s); it stays in armed_alarms", button, exc)
                continue
            if event is None:
                continue
            log.warning("panic button %s: alarm of a hold in progress when the node "
                        "stopped stored now (%s)", button, event.id)
            self.runtime.after_commit(event)
            if button in self.specs:
                self.runtime.spawn(self._light_after(button, "alarm"))

    # -- wired buttons ------------------------------------------------------------

    def _hold(self, button: str, hold: ButtonEvent) -> None:
        """A press settled (button's thread): make its alarm now, store it at the deadline.

        Id, body check and signature (a third of an alarm's path) are done
        during the hold; the alarm's ts is the moment the hold completes.
        It is armed at once (flushed to disk, see the module's docstring).
        When the hold ends early it is disarmed: never stored as an event,
        never published (only a power cut before the disarm lets it be, at
        the next start).
        """
        store = self.runtime.store
        self._prepared.pop(button, None)
        if hold.kind is not ButtonEventKind.ALARM or store is None:
            return
        spec = self.specs[button]
        # The button's clock is time.monotonic (PanicButton's default, see _claim).
        ts = store.clock_ms() + math.floor((hold.at - time.monotonic()) * 1000)
        try:
            event = store.prepare_local(
                "alert", "public", button_alarm_body(button, spec.meeting_point,
                                                     self.settings.area,
                                                     self._point_name(spec.meeting_point)), ts)
        except SyncError as exc:  # the alarm is then made at the deadline
            log.warning("panic button %s: alarm not prepared: %s", button, exc)
            return
        try:
            armed = store.submit(arm_task(button, event))
        except NodeError as exc:
            log.warning("panic button %s: alarm not armed: %s", button, exc)
            return
        self._prepared[button] = (hold.at, event, armed)

    def _abandoned(self, button: str, hold: ButtonEvent) -> None:
        """Released before the hold completed (button's thread): disarm its alarm."""
        prepared = self._prepared.pop(button, None)
        store = self.runtime.store
        if prepared is None or prepared[0] != hold.at or store is None:
            return
        try:
            done = store.submit(disarm_task(button, prepared[1].id))
        except NodeError as exc:
            log.error("panic button %s: armed alarm not disarmed: %s", button, exc)
            return
        done.add_done_callback(partial(_disarmed, button))

    def _from_thread(self, button: str, kind: str, event: ButtonEvent) -> None:
        # Called on the button's own thread. The write is queued from here, at
        # once (the store's queue is thread-safe); only what follows the COMMIT
        # is handed to the event loop. One thread hop fewer before "stored".
        loop = self._loop
        store = self.runtime.store
        prepared = self._prepared.pop(button, None)
        if loop is None or loop.is_closed() or store is None:
            return
        spec = self.specs[button]
        made = prepared[1] if prepared is not None and prepared[0] == event.at else None
        if made is not None and not 0 <= store.clock_ms() - made.ts <= PREPARED_LAG_MS:
            made = None  # the wall clock moved during the hold: ts would be wrong
        # Armed, i.e. on disk already: the COMMIT need not wait for the disk
        # (if the store makes a new event after all, it flushes as usual).
        already_durable = made is not None and prepared is not None and _done_ok(prepared[2])
        try:
            future = store.submit(press_task(button, spec.meeting_point, kind,
                                             self.settings.area, None, made,
                                             self._point_name(spec.meeting_point)),
                                  already_durable=already_durable)
        except NodeError as exc:
            log.error("panic button %s: %s not stored: %s", button, kind, exc)
            return

        def stored(done: concurrent.futures.Future[Event | None]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._stored, button, kind, done)

        future.add_done_callback(stored)

    def _stored(self, button: str, kind: str,
                done: concurrent.futures.Future[Event | None]) -> None:
        # On the loop, right after the COMMIT: fan out first (no task in between),
        # then the light.
        try:
            event = done.result()
        except Exception as exc:
            log.error("panic button %s: %s not stored: %s", button, kind, exc)
            self.runtime.spawn(self.show(button, "fault"))
            return
        if event is not None:
            self.runtime.after_commit(event)
        if kind == "alarm" and event is not None and event.kind == "alert":
            # A new alarm has no answer yet: no read on the loop (the live
            # streams are about to send it).
            self.runtime.spawn(self.show(button, "stored"))
        else:
            self.runtime.spawn(self._light_after(button, kind))

    async def press(self, button_id: str, hold_s: float | None = None) -> None:
        """Hold a wired button's mock pin (demo and tests): the real code path."""
        spec = self.specs.get(button_id)
        if spec is None or spec.device != "hub" or self.factory is None:
            raise KeyError(f"no wired button {button_id!r} with mock pins")
        pin = self.factory.pin(spec.button_pin)
        pin.drive_low()
        try:
            await asyncio.sleep(self.settings.hold_s + 0.2 if hold_s is None else hold_s)
        finally:
            pin.drive_high()

    # -- point devices ------------------------------------------------------------

    def _on_point_message(self, topic: str, payload: bytes) -> None:
        try:
            node, point, message = parse_point_topic(topic)
            press = parse_press(payload)
        except ValueError as exc:
            log.warning("refused point message on %s: %s", topic, exc)
            return
        spec = self.specs.get(press["button"])
        if node != self.settings.name or message != "press" or spec is None or \
                spec.device != "point" or spec.meeting_point != point:
            log.warning("refused press for %s from point %s", press["button"], point)
            return
        self.runtime.spawn(self.handle(spec.id, press["kind"], press_id=press["id"]))

    # -- one path for both ----------------------------------------------------------

    async def handle(self, button: str, kind: str, *,
                     press_id: str | None = None) -> Event | None:
        """Store what a press means, fan it out, and update the button's light."""
        spec = self.specs[button]
        task = press_task(button, spec.meeting_point, kind, self.settings.area, press_id,
                          point_name=self._point_name(spec.meeting_point))
        event: Event | None = await self.runtime.require_store().write(task)
        if press_id is not None:
            self._last_press[button] = press_id  # stored now (or stored before)
        await self._after(button, kind, event)
        return event

    async def _after(self, button: str, kind: str, event: Event | None) -> None:
        """After the COMMIT: fan out, then the light."""
        if event is not None:
            self.runtime.after_commit(event)
            await asyncio.sleep(0)  # let the live streams send it before the light work
        await self._light_after(button, kind)

    async def _light_after(self, button: str, kind: str) -> None:
        state = {"fault": "fault", "fault_cleared": "idle"}.get(kind)
        if state is None:
            found = self.runtime.require_store().open_alarm(button)
            state = LIGHT_AFTER.get(found[1], "stored") if found else "stored"
        await self.show(button, state)

    def _point_name(self, point: str) -> str:
        """The name residents know a meeting point by ("" if unknown)."""
        return next((p.name for p in self.settings.meeting_points if p.id == point), "")

    async def on_ack(self, ack: Event) -> None:
        """A team answer: move the light of the button whose alarm it answers."""
        alarm = self.runtime.require_store().get_event(ack.body["ref"])
        if alarm is None or alarm.kind != "alert" or not alarm.body.get("button"):
            return
        button = alarm.body["button"]
        if ack.body["action"] in ("resolved", "hidden") and button in self.buttons:
            self.buttons[button].reset_cooldown()  # the next hold is a new incident
        if button in self.specs and ack.body["action"] in LIGHT_AFTER:
            # The furthest answer on the button's newest alarm, not this one alone:
            # a desk's "seen" after "on my way" must not turn "coming" back.
            found = self.runtime.require_store().open_alarm(button)
            if found is not None and found[0].id == alarm.id:
                await self.show(button, LIGHT_AFTER.get(found[1], "stored"))

    async def show(self, button: str, state: str) -> None:
        """Set a wired light, or publish the state to the point device (retained)."""
        if button in self.lights:
            self.lights[button].set_state(state)
            return
        spec = self.specs.get(button)
        mqtt = self.runtime.mqtt
        if spec is None or spec.device != "point" or mqtt is None:
            return
        payload = json.dumps({"v": 1, "button": button, "press": self._last_press.get(button),
                              "state": state, "ts": int(time.time() * 1000)}).encode()
        topic = point_topic(self.settings.name, spec.meeting_point, "state")
        try:
            await mqtt.publish(topic, payload, qos=1, retain=True)
        except Exception as exc:
            log.warning("could not tell point %s its state: %s", spec.meeting_point, exc)
