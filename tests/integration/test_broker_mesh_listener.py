"""The mesh listener with the real Mosquitto and real mutual TLS (docs/mesh.md, "Transport").

Certificates are made here the way central issues them (``central.identity``:
a CA, node certificates with CN = SAN DNS = node name, EKU client+server auth).
The broker is this node's, ``escamp-1``: its mesh listener serves escamp-1's
own certificate and accepts peers whose certificates chain to central's CA.
"""

from __future__ import annotations

import os
import queue
import socket
import ssl
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from broker import (
    MESH_UP_FILTER,
    BrokerProcess,
    BrokerSettings,
    BrokerStartError,
    ConfigError,
    MqttUser,
    event_topic,
    mesh_topic,
    probe,
    render_mesh_acl,
    write_files,
)
from broker.probe import connect_packet, parse_connack
from central.identity import Central, CentralSettings, init_central
from tests.support.base import free_port, require_binary

pytestmark = pytest.mark.timeout(60)

NODE_NAME = "escamp-1"
PEER = "escamp-west"
SERVICE = MqttUser("node", "node-secret", "service")
SIREN = MqttUser("siren", "siren-secret", "integration")
NOT_AUTHORIZED = 0x87
QUIET_S = 0.5  # how long "nothing arrives" is watched after a later message did arrive


# ------------------------------------------------------------------ certificates

@dataclass(frozen=True)
class Identity:
    """A certificate and its key on disk."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path  # central's CA: the mesh listener's cafile
    node: Identity  # escamp-1, the node whose broker this is
    peer: Identity  # escamp-west, issued by central
    impostor: Identity  # "escamp-west" as well, issued by another CA
    other_ca: Path  # that other CA
    service_named: Identity  # CN "node", the local service account's name, issued by central


def issue(central: Central, name: str, directory: Path) -> Identity:
    """A key made here and central's certificate for it (as ``bart node enrol`` does)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .sign(key, hashes.SHA256()))
    pem = central.issue_node_cert(csr.public_bytes(serialization.Encoding.PEM), name)
    directory.mkdir(parents=True, exist_ok=True)
    identity = Identity(directory / f"{name}.pem", directory / f"{name}.key")
    identity.cert.write_bytes(pem)
    fd = os.open(identity.key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    return identity


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("pki")
    central = init_central(base / "central", CentralSettings(name="central"))
    other = init_central(base / "other-central", CentralSettings(name="elsewhere"))
    return Pki(ca=central.data_dir / "ca" / "ca.pem",
               node=issue(central, NODE_NAME, base / "node"),
               peer=issue(central, PEER, base / "peer"),
               impostor=issue(other, PEER, base / "impostor"),
               other_ca=other.data_dir / "ca" / "ca.pem",
               service_named=issue(central, SERVICE.name, base / "service-named"))


# ------------------------------------------------------------------ broker

def mesh_settings(tmp_path: Path, pki: Pki) -> BrokerSettings:
    return BrokerSettings(state_dir=tmp_path / "mqtt", port=free_port(), users=(SERVICE, SIREN),
                          mesh_port=free_port(), mesh_bind_address="127.0.0.1",
                          mesh_cafile=pki.ca, mesh_cert=pki.node.cert, mesh_key=pki.node.key)


@pytest.fixture
def settings(tmp_path: Path, pki: Pki) -> BrokerSettings:
    return mesh_settings(tmp_path, pki)


@pytest.fixture
def broker(settings: BrokerSettings) -> Iterator[BrokerProcess]:
    binary = require_binary("mosquitto", "/usr/sbin/mosquitto")
    proc = BrokerProcess(settings, binary, restart_min=0.05, restart_max=0.5)
    proc.start(timeout=10)  # readiness: the probe's CONNACK on the local listener
    try:
        yield proc
    finally:
        proc.stop()


# ------------------------------------------------------------------ clients

class Client:
    """A paho MQTT v5 client: CONNACK, PUBACK reason codes and messages, as values."""

    def __init__(self, port: int, client_id: str, *, ca: Path | None = None,
                 identity: Identity | None = None, user: str | None = None,
                 password: str | None = None) -> None:
        self.port = port
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=MQTTProtocolVersion.MQTTv5)
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca),
                                certfile=str(identity.cert) if identity else None,
                                keyfile=str(identity.key) if identity else None)
            # We dial 127.0.0.1; the chain is still verified, and the name the
            # server's certificate carries is checked by server_names().
            self.client.tls_insecure_set(True)
        if user is not None:
            self.client.username_pw_set(user, password)
        self.connacks: queue.Queue[Any] = queue.Queue()
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.pubacks: dict[int, int] = {}
        self.subacks: queue.Queue[list[int]] = queue.Queue()
        self.client.on_connect = lambda _c, _u, _f, reason, _p: self.connacks.put(reason)
        self.client.on_message = lambda _c, _u, msg: self.messages.put(
            (msg.topic, bytes(msg.payload)))
        self.client.on_publish = lambda _c, _u, mid, reason, _p: self.pubacks.__setitem__(
            mid, reason.value)
        self.client.on_subscribe = lambda _c, _u, _mid, reasons, _p: self.subacks.put(
            [r.value for r in reasons])

    def __enter__(self) -> Client:
        self.client.reconnect_delay_set(60, 60)
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        reason = self.connacks.get(timeout=5)
        assert not reason.is_failure, f"CONNACK refused: {reason}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def server_names(self) -> list[tuple[str, str]]:
        """subjectAltName of the (verified) certificate the server presented."""
        sock = self.client.socket()
        assert isinstance(sock, ssl.SSLSocket)
        cert = sock.getpeercert()
        assert cert
        return list(cert["subjectAltName"])  # type: ignore[arg-type]

    def publish(self, topic: str, payload: bytes = b"{}", timeout: float = 5.0) -> int:
        """QoS 1 publish; the PUBACK's reason code."""
        mid = self.client.publish(topic, payload, qos=1).mid
        deadline = time.monotonic() + timeout
        while mid not in self.pubacks:
            assert time.monotonic() < deadline, f"no PUBACK for {topic}"
            time.sleep(0.01)
        return self.pubacks.pop(mid)

    def subscribe(self, *filters: str) -> list[int]:
        self.client.subscribe([(f, 1) for f in filters])
        return self.subacks.get(timeout=5)

    def next_message(self, timeout: float = 5.0) -> tuple[str, bytes]:
        return self.messages.get(timeout=timeout)

    def drain(self, seconds: float) -> list[tuple[str, bytes]]:
        out = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                out.append(self.messages.get(timeout=left))
            except queue.Empty:
                break
        return out


def service(broker: BrokerProcess, client_id: str = "svc") -> Client:
    return Client(broker.port, client_id, user=SERVICE.name, password=SERVICE.password)


def peer(broker: BrokerProcess, pki: Pki, identity: Identity | None = None,
         client_id: str = "peer", **kw: Any) -> Client:
    mesh_port = broker.settings.mesh_port
    assert mesh_port is not None
    return Client(mesh_port, client_id, ca=pki.ca, identity=identity or pki.peer, **kw)


def raw_tls_connack(port: int, ca: Path, identity: Identity | None,
                    version: ssl.TLSVersion) -> int:
    """An MQTT 3.1.1 CONNECT over TLS with ``identity`` (or no client certificate)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    ctx.maximum_version = version
    if identity is not None:
        ctx.load_cert_chain(str(identity.cert), str(identity.key))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw) as sock:
        sock.sendall(connect_packet("raw-tls"))
        data = b""
        while len(data) < 4 and (chunk := sock.recv(4 - len(data))):
            data += chunk
        return parse_connack(data)


# ------------------------------------------------------------------ tests

def test_peer_up_and_down_reach_the_service(broker: BrokerProcess, pki: Pki) -> None:
    with service(broker) as svc, peer(broker, pki) as west:
        assert ("DNS", NODE_NAME) in west.server_names()  # what a dialler checks
        assert svc.subscribe(MESH_UP_FILTER) == [1]
        assert west.subscribe(mesh_topic(PEER, "down")) == [1]

        assert west.publish(mesh_topic(PEER, "up"), b'{"v":1,"t":"hello"}') == 0
        assert svc.next_message() == (mesh_topic(PEER, "up"), b'{"v":1,"t":"hello"}')

        assert svc.publish(mesh_topic(PEER, "down"), b'{"v":1,"t":"vector"}') == 0
        assert west.next_message() == (mesh_topic(PEER, "down"), b'{"v":1,"t":"vector"}')


def test_peer_may_publish_only_to_its_own_up_topic(broker: BrokerProcess, pki: Pki) -> None:
    with service(broker) as svc, peer(broker, pki) as west:
        svc.subscribe("bartmesh/v1/#", "bart/v1/#")
        for topic in (mesh_topic("other", "up"), mesh_topic(PEER, "down"),
                      event_topic(PEER, "public", "alert"),
                      event_topic(NODE_NAME, "public", "alert"), f"bart/v1/{NODE_NAME}/health"):
            assert west.publish(topic) == NOT_AUTHORIZED, topic
        assert west.publish(mesh_topic(PEER, "up"), b"last") == 0
        # Only the allowed one reaches a subscriber.
        assert svc.next_message() == (mesh_topic(PEER, "up"), b"last")
        assert svc.drain(QUIET_S) == []


def test_peer_reads_only_its_own_down_topic(broker: BrokerProcess, pki: Pki) -> None:
    with service(broker) as svc, peer(broker, pki) as west:
        # Mosquitto 2.0.11 grants these subscriptions; read access is checked per message.
        west.subscribe(mesh_topic("other", "down"), "bart/v1/#", MESH_UP_FILTER, "#",
                       mesh_topic(PEER, "down"))
        for topic in (mesh_topic("other", "down"), mesh_topic("other", "up"),
                      mesh_topic(PEER, "up"), event_topic(NODE_NAME, "public", "alert"),
                      event_topic(PEER, "private", "report")):
            assert svc.publish(topic, b"not for you") == 0
        assert svc.publish(mesh_topic(PEER, "down"), b"yours") == 0
        assert west.next_message() == (mesh_topic(PEER, "down"), b"yours")
        # Overlapping subscriptions ("#" too) may deliver "yours" once more; nothing else.
        assert set(west.drain(QUIET_S)) <= {(mesh_topic(PEER, "down"), b"yours")}


def test_certificate_name_beats_the_user_name_in_connect(broker: BrokerProcess,
                                                         pki: Pki) -> None:
    # A peer that also sends the service account's credentials is still escamp-west.
    with service(broker) as svc, peer(broker, pki, user=SERVICE.name,
                                      password=SERVICE.password) as west:
        svc.subscribe(MESH_UP_FILTER)
        assert west.publish(event_topic(NODE_NAME, "public", "alert")) == NOT_AUTHORIZED
        assert west.publish(mesh_topic(SERVICE.name, "up")) == NOT_AUTHORIZED
        assert west.publish(mesh_topic(PEER, "up"), b"me") == 0
        assert svc.next_message() == (mesh_topic(PEER, "up"), b"me")


def test_a_certificate_named_like_the_service_account_has_only_mesh_rights(
        broker: BrokerProcess, pki: Pki) -> None:
    # The mesh listener's ACL has no user lines: a CN is never an account of the local one.
    with service(broker) as svc, \
            peer(broker, pki, pki.service_named, client_id="namesake") as namesake:
        svc.subscribe(MESH_UP_FILTER)
        assert namesake.publish(event_topic(NODE_NAME, "public", "alert")) == NOT_AUTHORIZED
        assert namesake.publish(mesh_topic(PEER, "up")) == NOT_AUTHORIZED
        assert namesake.publish(mesh_topic(SERVICE.name, "up"), b"n") == 0
        assert svc.next_message() == (mesh_topic(SERVICE.name, "up"), b"n")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_no_certificate_or_another_ca_cannot_connect(broker: BrokerProcess, pki: Pki,
                                                     version: ssl.TLSVersion) -> None:
    mesh_port = broker.settings.mesh_port
    assert mesh_port is not None
    assert raw_tls_connack(mesh_port, pki.ca, pki.peer, version) == 0  # the control
    for identity in (None, pki.impostor):
        with pytest.raises(OSError):  # ssl.SSLError, or EOF before any CONNACK
            raw_tls_connack(mesh_port, pki.ca, identity, version)
    with pytest.raises(OSError):  # plain MQTT on the mesh port: no CONNACK either
        probe("127.0.0.1", mesh_port, PEER, None, timeout=2.0)


def test_paho_without_a_valid_certificate_gets_no_session(broker: BrokerProcess,
                                                          pki: Pki) -> None:
    for identity in (None, pki.impostor):
        client = Client(broker.settings.mesh_port or 0, "nocert", ca=pki.ca, identity=identity)
        client.client.reconnect_delay_set(60, 60)
        dropped: queue.Queue[Any] = queue.Queue()
        client.client.on_disconnect = lambda _c, _u, _f, reason, _p, q=dropped: q.put(reason)
        try:
            client.client.connect("127.0.0.1", client.port, keepalive=30)
        except OSError:
            continue  # refused in the handshake itself
        client.client.loop_start()
        try:
            dropped.get(timeout=5)  # TLS 1.3: the broker's alert arrives after the handshake
        finally:
            client.client.loop_stop()
        assert client.connacks.empty(), f"a CONNACK for {identity}"


def test_local_listener_rules_unchanged(broker: BrokerProcess, pki: Pki) -> None:
    local = broker.port
    assert probe("127.0.0.1", local, SERVICE.name, SERVICE.password, timeout=2.0) == 0
    for user, password in ((PEER, None), (SERVICE.name, None), (None, None), (PEER, "x")):
        assert probe("127.0.0.1", local, user, password, timeout=2.0) != 0, user
    # A peer's certificate is worth nothing there: the local listener speaks no TLS.
    with pytest.raises(OSError):
        raw_tls_connack(local, pki.ca, pki.peer, ssl.TLSVersion.TLSv1_3)


def test_integration_account_gets_no_mesh_topics(broker: BrokerProcess, pki: Pki) -> None:
    with Client(broker.port, "siren", user=SIREN.name, password=SIREN.password) as siren, \
            service(broker) as svc, peer(broker, pki) as west:
        siren.subscribe("bartmesh/v1/#")
        svc.subscribe(MESH_UP_FILTER)
        assert siren.publish(mesh_topic(PEER, "down")) == NOT_AUTHORIZED
        assert siren.publish(mesh_topic(PEER, "up")) == NOT_AUTHORIZED
        assert west.publish(mesh_topic(PEER, "up"), b"x") == 0
        assert svc.next_message() == (mesh_topic(PEER, "up"), b"x")
        assert siren.drain(QUIET_S) == []


def test_files_private_idempotent_and_acl_exact(broker: BrokerProcess,
                                                settings: BrokerSettings) -> None:
    acl = settings.mesh_acl_path
    assert acl.read_text() == render_mesh_acl()
    for path in settings.state_dir.iterdir():
        if path.is_file() and not path.name.startswith("mosquitto.db"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert write_files(settings) == []
    os.chmod(acl, 0o644)
    assert write_files(settings) == []
    assert stat.S_IMODE(acl.stat().st_mode) == 0o600


def test_reload_keeps_the_mesh_listener_and_its_acl(broker: BrokerProcess,
                                                    settings: BrokerSettings,
                                                    pki: Pki) -> None:
    display = MqttUser("display", "display-secret", "integration")
    broker.reload(replace(settings, users=(*settings.users, display)))
    deadline = time.monotonic() + 5
    while probe("127.0.0.1", broker.port, display.name, display.password, timeout=2.0) != 0:
        assert time.monotonic() < deadline, "reload did not add the user"
        time.sleep(0.05)
    with service(broker) as svc, peer(broker, pki) as west:
        svc.subscribe(MESH_UP_FILTER)
        assert west.publish(mesh_topic("other", "up")) == NOT_AUTHORIZED
        assert west.publish(mesh_topic(PEER, "up"), b"after reload") == 0
        assert svc.next_message() == (mesh_topic(PEER, "up"), b"after reload")


def test_reload_refuses_listener_changes(broker: BrokerProcess, settings: BrokerSettings,
                                         tmp_path: Path) -> None:
    for change in ({"mesh_port": free_port()}, {"mesh_cafile": tmp_path / "other.pem"},
                   {"mesh_bind_address": "0.0.0.0"}):
        with pytest.raises(ConfigError):
            broker.reload(replace(settings, **change))
    assert broker.settings == settings


def test_a_newly_trusted_ca_counts_after_a_restart(tmp_path: Path, pki: Pki) -> None:
    # Mosquitto 2.0.11 does not re-read cafile on SIGHUP: trust changes restart the broker.
    binary = require_binary("mosquitto", "/usr/sbin/mosquitto")
    bundle = tmp_path / "trusted.pem"
    bundle.write_bytes(pki.ca.read_bytes())
    settings = replace(mesh_settings(tmp_path, pki), mesh_cafile=bundle)
    assert settings.mesh_port is not None
    with BrokerProcess(settings, binary) as proc:
        with pytest.raises(OSError):
            raw_tls_connack(settings.mesh_port, pki.ca, pki.impostor, ssl.TLSVersion.TLSv1_3)
        bundle.write_bytes(pki.ca.read_bytes() + pki.other_ca.read_bytes())
        proc.stop()
        proc.start()
        assert raw_tls_connack(settings.mesh_port, pki.ca, pki.impostor,
                               ssl.TLSVersion.TLSv1_3) == 0
        assert raw_tls_connack(settings.mesh_port, pki.ca, pki.peer,
                               ssl.TLSVersion.TLSv1_3) == 0


def test_missing_mesh_key_fails_the_start_and_keeps_the_snapshot(
        tmp_path: Path, pki: Pki) -> None:
    binary = require_binary("mosquitto", "/usr/sbin/mosquitto")
    good = mesh_settings(tmp_path, pki)
    with BrokerProcess(good, binary):
        pass  # leaves a valid snapshot behind
    assert good.db_path.exists()
    snapshot = good.db_path.read_bytes()
    bad = replace(good, mesh_key=tmp_path / "missing.key")
    with pytest.raises(BrokerStartError, match=r"missing\.key"):
        BrokerProcess(bad, binary).start(timeout=5)
    assert good.db_path.read_bytes() == snapshot
    assert not list(good.state_dir.glob("mosquitto.db.corrupt-*"))
