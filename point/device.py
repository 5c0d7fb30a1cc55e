"""``bart point run``: buttons and lights of one meeting point, outbox, MQTT/TLS."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from functools import partial
from pathlib import Path
from typing import Any

from broker import MqttClient
from broker.topics import point_topic
from hardware import ButtonSpec, PanicButton, StatusLight, check_buttons, pin_factory_for

from .outbox import Outbox

log = logging.getLogger(__name__)

RETRY_S = 2.0
BUNDLE_KEYS = {"node", "point", "host", "port", "username", "password", "hold_s",
               "cooldown_s", "ca_pem", "buttons"}
KIND = {"alarm": "alarm", "refresh": "repeat", "fault": "fault",
        "fault_cleared": "fault_cleared"}


class BundleError(ValueError):
    """The point device's set-up file is missing, unsafe or malformed."""


def load_bundle(path: Path) -> dict[str, Any]:
    """Read the set-up file written by ``bart node point add`` (must be 0600)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise BundleError(f"{path} is missing (create it on the node: "
                          "bart node point add NAME)") from exc
    if mode & 0o077:
        raise BundleError(f"{path} holds a password: it must be mode 0600 (chmod 600 {path})")
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or set(data) != BUNDLE_KEYS:
        raise BundleError(f"{path} is not a point set-up file")
    return data


class PointDevice:
    """One point device: presses go to the outbox first, then to the node."""

    def __init__(self, bundle: dict[str, Any], data_dir: Path, *, gpio: str = "auto",
                 control_port: int | None = None) -> None:
        self.bundle = bundle
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        ca = data_dir / "node-ca.pem"
        ca.write_text(bundle["ca_pem"])
        self.outbox = Outbox(data_dir / "outbox.db")
        self.specs = [ButtonSpec(id=b["id"], meeting_point=bundle["point"], device="point",
                                 button_pin=b["button_pin"], led_pin=b["led_pin"],
                                 buzzer_pin=b.get("buzzer_pin")) for b in bundle["buttons"]]
        check_buttons(self.specs)
        self.factory = pin_factory_for("mock" if gpio == "mock" else "auto")
        self.control_port = control_port
        self.mqtt = MqttClient(host=bundle["host"], port=bundle["port"],
                               username=bundle["username"], password=bundle["password"],
                               client_id=f"point-{bundle['point']}", tls_ca=str(ca))
        self.lights: dict[str, StatusLight] = {}
        self.buttons: dict[str, PanicButton] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kick = asyncio.Event()

    # -- presses ------------------------------------------------------------------

    def _from_thread(self, button: str, kind: str, _event: object) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._pressed, button, kind)

    def _pressed(self, button: str, kind: str) -> None:
        press = self.outbox.add(button, KIND[kind])
        log.info("stored %s of %s as %s", press.kind, button, press.id)
        if press.kind in ("alarm", "repeat"):
            self.lights[button].set_state("not_delivered")
        self._kick.set()

    def _on_state(self, _topic: str, payload: bytes) -> None:
        try:
            data = json.loads(payload)
            button, state, press = data["button"], data["state"], data.get("press")
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed state message")
            return
        if press and self.outbox.delivered(press):
            log.info("node confirmed %s", press)
        pending = {p.button for p in self.outbox.pending()}
        if button in self.lights and button not in pending:
            self.lights[button].set_state(state)

    async def _deliver(self) -> None:
        topic = point_topic(self.bundle["node"], self.bundle["point"], "press")
        while True:
            for press in self.outbox.pending():
                if not self.mqtt.connected:
                    break
                body = json.dumps({"v": 1, "id": press.id, "button": press.button,
                                   "kind": press.kind, "ts": press.ts}).encode()
                try:
                    await self.mqtt.publish(topic, body, qos=1, timeout=5.0)
                except Exception as exc:
                    log.debug("press %s not delivered yet: %s", press.id, exc)
                    break
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), RETRY_S)

    # -- demo control ---------------------------------------------------------------

    async def press(self, button: str, hold_s: float | None = None) -> None:
        """Hold a button's mock pin (demo, tests): the real path from pin to node."""
        spec = next(s for s in self.specs if s.id == button)
        pin = self.factory.pin(spec.button_pin)
        pin.drive_low()
        try:
            await asyncio.sleep(self.bundle["hold_s"] + 0.2 if hold_s is None else hold_s)
        finally:
            pin.drive_high()

    async def _control(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        try:
            request = (await asyncio.wait_for(reader.readline(), 5)).decode("latin-1")
            parts = request.split()
            status = "404 Not Found"
            body = b""
            if parts[:2] == ["GET", "/state"]:
                pending = [p.id for p in self.outbox.pending()]
                body = json.dumps({"lights": self.light_states(), "pending": pending,
                                   "connected": self.mqtt.connected}).encode()
                status = "200 OK"
            elif len(parts) >= 2 and parts[0] == "POST" and parts[1].startswith("/press/"):
                button = parts[1][len("/press/"):]
                if any(s.id == button for s in self.specs):
                    asyncio.get_running_loop().create_task(self.press(button))
                    status = "202 Accepted"
            writer.write(f"HTTP/1.0 {status}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
        finally:
            writer.close()

    # -- run ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set."""
        self._loop = asyncio.get_running_loop()
        for spec in self.specs:
            self.lights[spec.id] = StatusLight(spec.led_pin, buzzer_pin=spec.buzzer_pin,
                                               name=spec.id, pin_factory=self.factory)
            self.buttons[spec.id] = PanicButton(
                spec.button_pin, button_id=spec.id, hold_s=self.bundle["hold_s"],
                cooldown_s=self.bundle["cooldown_s"], pin_factory=self.factory,
                on_alarm=partial(self._from_thread, spec.id, "alarm"),
                on_refresh=partial(self._from_thread, spec.id, "refresh"),
                on_fault=partial(self._from_thread, spec.id, "fault"),
                on_fault_cleared=partial(self._from_thread, spec.id, "fault_cleared"))
        for press in self.outbox.pending():  # kept across a restart
            if press.kind in ("alarm", "repeat"):
                self.lights[press.button].set_state("not_delivered")
        self.mqtt.subscribe(point_topic(self.bundle["node"], self.bundle["point"], "state"),
                            self._on_state)
        await self.mqtt.start()
        server = None
        if self.control_port is not None:
            server = await asyncio.start_server(self._control, "127.0.0.1", self.control_port)
        deliver = asyncio.create_task(self._deliver())
        try:
            await stop.wait()
        finally:
            deliver.cancel()
            if server is not None:
                server.close()
            await self.mqtt.close()
            for button in self.buttons.values():
                button.close()
            for light in self.lights.values():
                light.close()
            self.outbox.close()

    def light_states(self) -> dict[str, str]:
        """Each button's light state (for the demo and tests)."""
        return {b: light.state.value for b, light in self.lights.items()}
