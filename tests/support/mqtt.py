"""An MQTT probe: a plain paho client that test code uses to collect and publish."""

from __future__ import annotations

import contextlib
import queue
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


class MqttProbe:
    """A plain paho client (MQTT 3.1.1) used from test code: collect and publish."""

    def __init__(self, host: str, port: int, user: str | None, password: str | None,
                 client_id: str) -> None:
        self.host, self.port = host, port
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connack: queue.Queue[Any] = queue.Queue()
        self.subacks: queue.Queue[list[Any]] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311)
        if user is not None:
            self.client.username_pw_set(user, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self._started = False

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connack.put(reason)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        self.messages.put((msg.topic, bytes(msg.payload)))

    def _on_subscribe(self, _c: Any, _u: Any, _mid: Any, reasons: Any, _p: Any) -> None:
        self.subacks.put(list(reasons))

    def __enter__(self) -> MqttProbe:
        self.client.reconnect_delay_set(60, 60)  # a refused CONNACK must stay refused
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self._started = True
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        if self._started:
            self.client.loop_stop()

    def first_connack(self, timeout: float = 5.0) -> Any:
        return self.connack.get(timeout=timeout)

    def wait_connected(self, timeout: float = 5.0) -> None:
        reason = self.first_connack(timeout)
        assert not reason.is_failure, f"CONNACK refused: {reason}"

    def subscribe(self, *filters: str, timeout: float = 5.0) -> list[Any]:
        self.client.subscribe([(f, 1) for f in filters])
        return self.subacks.get(timeout=timeout)

    def publish(self, topic: str, payload: bytes, timeout: float = 5.0) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout)
        assert info.is_published(), f"no PUBACK for {topic}"

    def drain(self, seconds: float) -> list[tuple[str, bytes]]:
        """Everything that arrives within ``seconds``."""
        out = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                out.append(self.messages.get(timeout=left))
            except queue.Empty:
                break
        return out

