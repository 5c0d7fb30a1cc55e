"""An asyncio-friendly MQTT client over paho-mqtt 2.x (MQTT v5).

paho is driven by the asyncio event loop itself, as in paho's own asyncio
example: the socket is watched with ``add_reader``/``add_writer`` and
``loop_misc`` runs once a second for keep-alives. There is no network thread,
so a publish or a received message costs no thread hand-over (measured: the
hand-over was most of the publish → SSE latency and a quarter of ingest CPU).
Only the blocking TCP connect (and TLS handshake) runs in a worker thread;
whatever paho calls back from there is handed to the loop with
``call_soon_threadsafe`` (STYLE rule 6). All state — pending PUBACK futures,
subscriptions, the connected flag — is only touched on the event loop, so it
needs no locks.

Why MQTT v5 and not 3.1.1: Mosquitto answers a publish that its ACL denies
with PUBACK reason code 0x87 under v5, but with a plain success PUBACK under
3.1.1 (the message is silently dropped). v5 turns an ACL mistake into a
:class:`PublishError`. v5 subscription identifiers also let overlapping
subscriptions reach each handler exactly once, and CONNACK tells the client the
broker's maximum packet size, so an oversized publish is refused here instead
of making the broker drop the connection (and paho resend it forever).

>>> # client = MqttClient(host="127.0.0.1", port=1883, username="node",
>>> #                     password="…", client_id="node-portal")
>>> # await client.start(); await client.wait_connected(5)
>>> # client.subscribe(PUBLIC_EVENTS_FILTER, on_event)
>>> # await client.publish(event_topic("n1", "public", "alert"), event.encode())
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from .errors import PublishError, TopicError

logger = logging.getLogger(__name__)

Handler = Callable[[str, bytes], None]

#: Bytes of a PUBLISH besides topic and payload, rounded up (header, id, properties).
_PUBLISH_OVERHEAD: Final = 16
_MAX_SUBSCRIPTION_ID: Final = 268_435_455


def check_filter(topic_filter: str) -> str:
    """Return ``topic_filter`` if it is a valid MQTT filter, else raise :class:`TopicError`."""
    levels = topic_filter.split("/") if isinstance(topic_filter, str) and topic_filter else []
    if not levels or "\0" in topic_filter:
        raise TopicError(f"invalid topic filter {topic_filter!r}")
    for i, level in enumerate(levels):
        if ("#" in level and (level != "#" or i != len(levels) - 1)) or \
                ("+" in level and level != "+"):
            raise TopicError(f"invalid topic filter {topic_filter!r}")
    return topic_filter


class _DemoteBenignPahoErrors(logging.Filter):
    """paho 2.2 logs ERROR "Client is not connected" on every clean disconnect; demote it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and str(record.msg).startswith(
                "Client is not connected"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


_PAHO_LOGGER: Final = logging.getLogger(f"{__name__}.paho")
_PAHO_LOGGER.addFilter(_DemoteBenignPahoErrors())


@dataclass
class _Subscription:
    topic_filter: str
    qos: int
    ident: int
    handlers: list[Handler] = field(default_factory=list)
    no_local: bool = False


@dataclass
class _Batch:
    """QoS 1 publishes waiting together: message id → index, and the answers so far."""

    done: asyncio.Future[None] | None
    index: dict[int, int] = field(default_factory=dict)
    acked: dict[int, ReasonCode | None] = field(default_factory=dict)


class MqttClient:
    """One MQTT connection, driven from asyncio; reconnects and resubscribes by itself."""

    def __init__(self, *, host: str, port: int, username: str | None, password: str | None,
                 client_id: str, max_inflight: int = 200, reconnect_min: float = 0.5,
                 reconnect_max: float = 30.0, publish_timeout: float = 10.0,
                 keepalive: int = 30, tls_ca: str | None = None,
                 tls_cert: str | None = None, tls_key: str | None = None,
                 tls_check_hostname: bool = True,
                 will: tuple[str, bytes] | None = None,
                 on_connect: Callable[[], None] | None = None) -> None:
        if max_inflight < 1:
            raise ValueError("max_inflight must be positive")
        self.host = host
        self.port = port
        self.client_id = client_id
        self.publish_timeout = publish_timeout
        self._keepalive = keepalive
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._closed = False
        self._connected = False
        self._connected_event = asyncio.Event()
        self._trouble_logged = False
        self._ever_connected = False
        self._inflight = asyncio.Semaphore(max_inflight)
        self._max_inflight = max_inflight
        self._pending: dict[int, asyncio.Future[ReasonCode]] = {}
        self._batches: dict[int, _Batch] = {}
        self._subs: dict[str, _Subscription] = {}
        self._by_ident: dict[int, _Subscription] = {}
        self._sub_mids: dict[int, str] = {}
        self._max_packet: int | None = None

        paho = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                           protocol=MQTTProtocolVersion.MQTTv5)
        if username is not None:
            paho.username_pw_set(username, password)
        if tls_ca is not None:
            # Verify the broker against exactly this CA (a node's own, for point
            # devices; central's for mesh peers). Host name checking stays on
            # unless the caller checks the certificate's name itself (the mesh
            # dials peers by address: see peer_certificate()).
            paho.tls_set(ca_certs=tls_ca, certfile=tls_cert, keyfile=tls_key)
            if not tls_check_hostname:
                paho.tls_insecure_set(True)
        if will is not None:
            paho.will_set(will[0], will[1], qos=1)
        self._on_connect_hook = on_connect
        # Jitter on the first delay keeps many clients of one node from reconnecting in
        # lock-step after a broker restart; paho doubles it up to reconnect_max.
        self._jitter = random.uniform(1.0, 1.5)  # noqa: S311 - timing jitter, not a secret
        self._reconnect_min = reconnect_min
        self._reconnect_max = reconnect_max
        self._loop_thread: int | None = None
        self._socket: Any = None
        self._socket_closed = asyncio.Event()
        self._try_now = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._backoff = reconnect_min * self._jitter
        # Bound paho's own queue too: it loses QoS 1 messages past 65,535 (DESIGN §9).
        paho.max_inflight_messages_set(max_inflight)
        paho.max_queued_messages_set(2 * max_inflight)
        paho.enable_logger(_PAHO_LOGGER)
        paho.on_connect = self._paho_on_connect
        paho.on_connect_fail = self._paho_on_connect_fail
        paho.on_disconnect = self._paho_on_disconnect
        paho.on_message = self._paho_on_message
        paho.on_publish = self._paho_on_publish
        paho.on_subscribe = self._paho_on_subscribe
        self._paho = paho

    # -- public API -----------------------------------------------------------------

    def peer_certificate(self) -> dict[str, Any] | None:
        """The broker's verified TLS certificate (``ssl.getpeercert()``), if any."""
        sock = self._paho.socket()
        getpeercert = getattr(sock, "getpeercert", None)
        if getpeercert is None:
            return None
        try:
            cert: dict[str, Any] | None = getpeercert()
        except (OSError, ValueError):
            return None
        return cert

    @property
    def connected(self) -> bool:
        """True between a successful CONNACK and the next connection loss."""
        return self._connected

    async def start(self) -> None:
        """Bind to the running loop and start connecting in the background; returns at once."""
        if self._started:
            return
        if self._closed:
            raise PublishError("client is closed")
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._started = True
        paho = self._paho
        paho.on_socket_open = self._paho_socket_open
        paho.on_socket_close = self._paho_socket_close
        paho.on_socket_register_write = self._paho_want_write
        paho.on_socket_unregister_write = self._paho_no_write
        self._runner = self._loop.create_task(self._run(), name=f"mqtt-{self.client_id}")

    async def _run(self) -> None:
        """Connect, keep alive, reconnect with exponential backoff (and jitter).

        The backoff resets only after a successful CONNACK, so a broker that
        accepts TCP but refuses the login is not hammered.
        """
        first = True
        while not self._closed:
            if self._socket is None:
                if not first:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._try_now.wait(), self._backoff)
                    self._try_now.clear()
                    self._backoff = min(self._backoff * 2, self._reconnect_max)
                first = False
                self._socket_closed.clear()
                try:
                    # TCP connect and TLS handshake block: off the event loop.
                    await asyncio.to_thread(self._paho.connect, self.host, self.port,
                                            self._keepalive, clean_start=True)
                except (OSError, ValueError) as exc:
                    self._on_lost(f"{type(exc).__name__}: {exc}")
                    continue
            if self._paho.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS and \
                    self._socket is not None:
                self._forget_socket(self._socket)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._socket_closed.wait()

    async def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a connection; True if connected."""
        if self._connected:
            return True
        try:
            await asyncio.wait_for(self._connected_event.wait(), timeout)
        except TimeoutError:
            return False
        return self._connected

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1, *,
                  no_local: bool = False) -> None:
        """Call ``handler(topic, payload)`` on the event loop for each matching message.

        Must be called on the event loop (or before :meth:`start`). The
        subscription is made again after every reconnect. A handler that raises
        is logged; other handlers and messages carry on. ``no_local`` (MQTT v5)
        asks the broker not to send back this client's own publishes.
        """
        check_filter(topic_filter)
        if qos not in (0, 1, 2):
            raise ValueError("qos must be 0, 1 or 2")
        sub = self._subs.get(topic_filter)
        if sub is None:
            ident = len(self._by_ident) + 1
            if ident > _MAX_SUBSCRIPTION_ID:
                raise TopicError("too many subscriptions")
            sub = _Subscription(topic_filter, qos, ident, no_local=no_local)
            self._subs[topic_filter] = sub
            self._by_ident[ident] = sub
        elif qos > sub.qos:
            sub.qos = qos
        sub.handlers.append(handler)
        if self._connected:
            self._send_subscribe(sub)

    def reconnect_now(self) -> None:
        """Cut the wait before the next connection attempt short (the broker is
        known to be back, e.g. just restarted by its supervisor)."""
        self._backoff = self._reconnect_min * self._jitter
        self._try_now.set()

    def remove_handler(self, topic_filter: str, handler: Handler) -> None:
        """Stop calling ``handler`` for ``topic_filter`` (the subscription itself stays)."""
        sub = self._subs.get(topic_filter)
        if sub is not None and handler in sub.handlers:
            sub.handlers.remove(handler)

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                      timeout: float | None = None) -> None:
        """Publish and, for QoS 1/2, wait for the broker's acknowledgement.

        Raises :class:`PublishError` when not connected, when the broker refuses
        the message (e.g. ACL: reason code 0x87), or when no acknowledgement
        comes within ``timeout`` (default :attr:`publish_timeout`). At most
        ``max_inflight`` publishes wait at once; further calls wait their turn.
        """
        if qos not in (0, 1, 2):
            raise ValueError("qos must be 0, 1 or 2")
        if not topic or any(ch in topic for ch in "+#\0"):
            raise TopicError(f"cannot publish to {topic!r}")
        size = len(topic.encode("utf-8")) + len(payload) + _PUBLISH_OVERHEAD
        if self._max_packet is not None and size > self._max_packet:
            raise PublishError(f"{size} bytes exceed the broker's limit of {self._max_packet}")
        if qos == 0:
            self._check_connected()
            info = self._paho.publish(topic, payload, qos=0, retain=retain)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise PublishError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
            return
        async with self._inflight:
            self._check_connected()
            assert self._loop is not None
            future: asyncio.Future[ReasonCode] = self._loop.create_future()
            info = self._paho.publish(topic, payload, qos=qos, retain=retain)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise PublishError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
            # Registered before any await: the PUBACK callback is queued behind us.
            self._pending[info.mid] = future
            try:
                async with asyncio.timeout(
                        self.publish_timeout if timeout is None else timeout):
                    reason = await future
            except TimeoutError:
                raise PublishError(f"no acknowledgement for {topic} in time") from None
            finally:
                self._pending.pop(info.mid, None)
        if reason.is_failure:
            raise PublishError(f"broker refused publish to {topic}: {reason}")

    async def publish_batch(self, messages: list[tuple[str, bytes]], *,
                            timeout: float | None = None) -> list[Exception | None]:
        """Publish several QoS 1 messages at once and wait for all their PUBACKs.

        One await for the whole batch instead of one task and timer per
        message; at most ``max_inflight`` messages per call. Meant for one
        caller at a time (the node's publisher task): its batch comes on top of
        what :meth:`publish` has in flight, and paho's own queue (twice
        ``max_inflight``) bounds the sum far below paho's 65,535 (DESIGN §9).
        Returns, per message, None when acknowledged or the error.
        """
        if len(messages) > self._max_inflight:
            raise ValueError(f"at most {self._max_inflight} messages per batch")
        assert self._loop is not None or not messages
        results: list[Exception | None] = [None] * len(messages)
        batch = _Batch(self._loop.create_future() if self._loop else None)
        for i, (topic, payload) in enumerate(messages):
            try:
                self._check_connected()
                info = self._paho.publish(topic, payload, qos=1)
            except (PublishError, ValueError) as exc:
                results[i] = exc
                continue
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                results[i] = PublishError(f"publish to {topic} failed: "
                                          f"{mqtt.error_string(info.rc)}")
                continue
            # One future for the whole batch, resolved by the last PUBACK.
            batch.index[info.mid] = i
            self._batches[info.mid] = batch
        if batch.index and batch.done is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.publish_timeout if timeout is None
                                           else timeout):
                    await asyncio.shield(batch.done)
        for mid, i in batch.index.items():
            self._batches.pop(mid, None)
            if mid not in batch.acked:
                results[i] = PublishError("no acknowledgement in time")
            elif (reason := batch.acked[mid]) is not None and reason.is_failure:
                results[i] = PublishError(f"broker refused: {reason}")
        return results

    async def close(self) -> None:
        """Disconnect and stop paho's thread; fail publishes still waiting. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._connected = False
        self._connected_event.clear()
        if self._started:
            if self._socket is not None:
                self._paho.disconnect()
                with contextlib.suppress(OSError):
                    self._paho.loop_write()  # send DISCONNECT now; paho then closes
            if self._runner is not None:
                self._runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._runner
            if self._socket is not None:
                self._forget_socket(self._socket)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(PublishError("client closed before acknowledgement"))
        self._pending.clear()
        for batch in self._batches.values():  # their waiters see the missing PUBACKs
            if batch.done is not None and not batch.done.done():
                batch.done.set_result(None)
        self._batches.clear()

    async def __aenter__(self) -> MqttClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- on the event loop ----------------------------------------------------------

    def _check_connected(self) -> None:
        if self._closed or not self._started:
            raise PublishError("client is not running")
        if not self._connected:
            raise PublishError(f"not connected to broker {self.host}:{self.port}")

    def _send_subscribe(self, sub: _Subscription) -> None:
        props = Properties(PacketTypes.SUBSCRIBE)  # type: ignore[no-untyped-call]
        props.SubscriptionIdentifier = sub.ident
        rc, mid = self._paho.subscribe(
            sub.topic_filter, options=SubscribeOptions(qos=sub.qos, noLocal=sub.no_local),
            properties=props)
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
            self._sub_mids[mid] = sub.topic_filter
        else:
            logger.debug("subscribe to %s not sent (%s); retried on reconnect",
                         sub.topic_filter, mqtt.error_string(rc))

    def _trouble(self, message: str, *args: object) -> None:
        # Loudly once, then quietly until the next successful connect (STYLE rule 12).
        level = logging.DEBUG if self._trouble_logged else logging.WARNING
        self._trouble_logged = True
        logger.log(level, message, *args)

    def _on_connected(self, max_packet: int | None) -> None:
        if self._closed:
            return
        self._max_packet = max_packet
        self._connected = True
        self._backoff = self._reconnect_min * self._jitter
        self._connected_event.set()
        if self._trouble_logged or not self._ever_connected:
            logger.info("MQTT %s %s to %s:%d", self.client_id,
                        "reconnected" if self._ever_connected else "connected",
                        self.host, self.port)
        self._trouble_logged = False
        self._ever_connected = True
        for sub in self._subs.values():
            self._send_subscribe(sub)
        if self._on_connect_hook is not None:
            try:
                self._on_connect_hook()
            except Exception:
                logger.exception("MQTT %s: on_connect hook failed", self.client_id)

    def _on_refused(self, reason: str) -> None:
        self._trouble("MQTT %s: broker %s:%d refused the connection: %s",
                      self.client_id, self.host, self.port, reason)

    def _on_lost(self, reason: str) -> None:
        was_connected = self._connected
        self._connected = False
        self._connected_event.clear()
        self._sub_mids.clear()
        if self._closed:
            return
        self._trouble("MQTT %s: %s %s:%d (%s); reconnecting in the background",
                      self.client_id, "lost connection to" if was_connected
                      else "cannot connect to", self.host, self.port, reason)

    def _on_message(self, topic: str, payload: bytes, idents: list[int]) -> None:
        subs = [self._by_ident[i] for i in idents if i in self._by_ident]
        if not subs:  # no identifier (should not happen with v5): match by filter
            subs = [s for s in self._subs.values() if mqtt.topic_matches_sub(s.topic_filter, topic)]
        for sub in subs:
            for handler in list(sub.handlers):
                try:
                    handler(topic, payload)
                except Exception:
                    logger.exception("MQTT handler for %s failed on %s", sub.topic_filter, topic)

    def _on_puback(self, mid: int, reason: ReasonCode) -> None:
        batch = self._batches.pop(mid, None)
        if batch is not None:
            batch.acked[mid] = reason
            if len(batch.acked) == len(batch.index) and batch.done and not batch.done.done():
                batch.done.set_result(None)
            return
        future = self._pending.get(mid)
        if future is not None and not future.done():
            future.set_result(reason)

    def _on_suback(self, mid: int, reasons: list[ReasonCode]) -> None:
        topic_filter = self._sub_mids.pop(mid, None)
        for reason in reasons:
            if reason.is_failure:
                logger.warning("MQTT %s: broker refused subscription to %s: %s",
                               self.client_id, topic_filter, reason)

    # -- the socket, watched by the event loop -------------------------------------------

    def _paho_socket_open(self, client: mqtt.Client, _u: Any, sock: Any) -> None:
        self._to_loop(self._watch_socket, client, sock)

    def _watch_socket(self, client: mqtt.Client, sock: Any) -> None:
        if self._loop is None or self._closed:
            return
        self._socket = sock
        # paho leaves Nagle on: a PUBLISH written right after another waits for
        # the peer's delayed ACK (~40 ms), measured as mesh round trips of 50 ms.
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._loop.add_reader(sock, client.loop_read)
        if client.want_write():
            self._loop.add_writer(sock, client.loop_write)

    def _paho_socket_close(self, _c: mqtt.Client, _u: Any, sock: Any) -> None:
        self._to_loop(self._forget_socket, sock)

    def _forget_socket(self, sock: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(sock)
                self._loop.remove_writer(sock)
        if self._socket is sock:
            self._socket = None
            self._socket_closed.set()

    def _paho_want_write(self, client: mqtt.Client, _u: Any, sock: Any) -> None:
        self._to_loop(self._want_write, client, sock)

    def _want_write(self, client: mqtt.Client, sock: Any) -> None:
        if self._loop is not None and sock is self._socket:
            self._loop.add_writer(sock, client.loop_write)

    def _paho_no_write(self, _c: mqtt.Client, _u: Any, sock: Any) -> None:
        self._to_loop(self._no_write, sock)

    def _no_write(self, sock: Any) -> None:
        if self._loop is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_writer(sock)

    # -- paho callbacks: on the loop already, or handed over from the connect thread ------

    def _to_loop(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            callback(*args)
            return
        with contextlib.suppress(RuntimeError):  # loop closed between check and call
            loop.call_soon_threadsafe(callback, *args)

    def _paho_on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode,
                         props: Properties | None) -> None:
        if reason.is_failure:
            self._to_loop(self._on_refused, str(reason))
        else:
            self._to_loop(self._on_connected, getattr(props, "MaximumPacketSize", None))

    def _paho_on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        self._to_loop(self._on_lost, "connection failed")

    def _paho_on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode,
                            _p: Properties | None) -> None:
        self._to_loop(self._on_lost, str(reason))

    def _paho_on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            return
        idents = getattr(msg.properties, "SubscriptionIdentifier", None) or []
        if isinstance(idents, int):
            idents = [idents]
        self._to_loop(self._on_message, topic, bytes(msg.payload), list(idents))

    def _paho_on_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason: ReasonCode,
                         _p: Properties) -> None:
        self._to_loop(self._on_puback, mid, reason)

    def _paho_on_subscribe(self, _c: mqtt.Client, _u: Any, mid: int,
                           reasons: list[ReasonCode], _p: Properties) -> None:
        self._to_loop(self._on_suback, mid, list(reasons))
