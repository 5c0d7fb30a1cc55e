"""Rendering of mosquitto.conf, the password file and the ACL (pure)."""

from __future__ import annotations

import base64
import getpass
import itertools
import re
from pathlib import Path

import pytest

from broker import (
    AUTOSAVE_INTERVAL,
    BrokerSettings,
    ConfigError,
    MqttUser,
    hash_password,
    passwd_matches,
    render_acl,
    render_config,
    render_mesh_acl,
    render_passwd,
)

pytestmark = pytest.mark.timeout(30)

# Made with the real tool (Mosquitto 2.0.11): `mosquitto_passwd -b pw alice s3cret`.
MOSQUITTO_PASSWD_LINE = (
    "alice:$7$101$CBrQIcho20U05W1H$xZyK9YeczbLQFupvfR9JP4plSMZLUh7VLog9bcjiOWGIotA8y5IVEQjf"
    "eep6nQHlfg0twPASxdEOFbaJ3opcEg=="
)

NODE = MqttUser("node", "node-secret", "service")
SIREN = MqttUser("siren", "siren-secret", "integration")


def settings(**kw: object) -> BrokerSettings:
    base: dict[str, object] = {"state_dir": Path("/var/lib/bart/mqtt"), "port": 18830,
                               "users": (NODE, SIREN), "run_as_user": "bart"}
    base.update(kw)
    return BrokerSettings(**base)  # type: ignore[arg-type]


def directives(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_config_has_every_decision() -> None:
    lines = directives(render_config(settings()))
    for expected in [
        "per_listener_settings false",
        "allow_anonymous false",
        "password_file /var/lib/bart/mqtt/passwd",
        "acl_file /var/lib/bart/mqtt/acl",
        "user bart",
        "persistence true",
        "persistence_location /var/lib/bart/mqtt",
        "persistence_file mosquitto.db",
        f"autosave_interval {AUTOSAVE_INTERVAL}",
        "log_dest stderr",
        "connection_messages false",
        "max_packet_size 65536",
        "max_inflight_messages 100",
        "max_queued_messages 1000",
        "set_tcp_nodelay true",
        "listener 18830 127.0.0.1",
        "protocol mqtt",
    ]:
        assert expected in lines
    assert 60 <= AUTOSAVE_INTERVAL <= 1800
    log_types = {line.split()[1] for line in lines if line.startswith("log_type ")}
    assert log_types and log_types <= {"error", "warning", "notice"}
    # Global options come before the listener section; the listener is last.
    assert lines[-2:] == ["listener 18830 127.0.0.1", "protocol mqtt"]
    assert lines[0] == "per_listener_settings false"
    assert not any(re.search(r"\s0$", line) for line in lines if line.startswith("max_"))
    assert not any(line.startswith(("connection ", "bridge", "topic ")) for line in lines)


def test_config_defaults_and_variants() -> None:
    text = render_config(settings(run_as_user=None, persistence=False, bind_address="0.0.0.0",
                                  max_packet_size=4096, max_queued_messages=50))
    lines = directives(text)
    assert f"user {getpass.getuser()}" in lines
    assert "persistence false" in lines
    assert not any(line.startswith(("persistence_location", "autosave")) for line in lines)
    assert "listener 18830 0.0.0.0" in lines
    assert "max_packet_size 4096" in lines
    assert "max_queued_messages 50" in lines


@pytest.mark.parametrize("kw", [
    {"max_inflight_messages": 0}, {"max_queued_messages": 0}, {"max_packet_size": 0},
    {"port": 0}, {"port": 70000}, {"bind_address": "127.0.0.1\nallow_anonymous true"},
    {"run_as_user": "bart\nallow_anonymous true"}, {"state_dir": Path("/tmp/x\ny")},
    {"users": (NODE, MqttUser("node", "other", "integration"))},
])
def test_unsafe_settings_refused(kw: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        settings(**kw)


@pytest.mark.parametrize("name", ["", "a:b", "a b", "#x", "a\nb", "x" * 65])
def test_bad_user_names_refused(name: str) -> None:
    with pytest.raises(ConfigError):
        MqttUser(name, "pw", "service")


def test_bad_user_fields_refused() -> None:
    with pytest.raises(ConfigError):
        MqttUser("u", "", "service")
    with pytest.raises(ConfigError):
        MqttUser("u", "pw", "admin")  # type: ignore[arg-type]


def test_password_not_in_repr() -> None:
    assert "node-secret" not in repr(NODE)
    assert "node-secret" not in repr(settings())


def test_acl() -> None:
    text = render_acl(settings())
    lines = directives(text)
    assert lines == [
        "user node",
        "topic readwrite bart/v1/#",
        "topic readwrite bartmesh/v1/#",
        "user siren",
        "topic read bart/v1/+/public/#",
        "topic read bart/v1/+/health",
    ]
    assert not any(line.startswith("pattern") for line in lines)


def test_acl_gives_integrations_no_write() -> None:
    users = tuple(MqttUser(f"int{i}", "pw", "integration") for i in range(3))
    lines = directives(render_acl(settings(users=users)))
    assert all(line.startswith(("user ", "topic read ")) for line in lines)
    assert not any("write" in line for line in lines)
    assert not any("bartmesh" in line for line in lines)


def test_acl_without_users_grants_nothing() -> None:
    assert directives(render_acl(settings(users=()))) == []


def test_hash_password_matches_mosquitto_passwd() -> None:
    name, hashed = MOSQUITTO_PASSWD_LINE.split(":", 1)
    _, seven, iterations, salt, _key = hashed.split("$")
    assert (seven, iterations) == ("7", "101")
    assert hash_password("s3cret", base64.b64decode(salt), int(iterations)) == hashed
    assert hash_password("s3cret!", base64.b64decode(salt)) != hashed
    assert passwd_matches(MOSQUITTO_PASSWD_LINE + "\n", (MqttUser(name, "s3cret", "service"),))


def test_hash_password_refuses_bad_salt() -> None:
    with pytest.raises(ConfigError):
        hash_password("pw", b"short")


def test_render_passwd_with_fixed_salts() -> None:
    counter = itertools.count(1)

    def salts(n: int) -> bytes:
        return bytes([next(counter)]) * n

    text = render_passwd(settings(), salt_source=salts)
    lines = text.splitlines()
    assert lines == [
        f"node:{hash_password('node-secret', bytes([1]) * 12)}",
        f"siren:{hash_password('siren-secret', bytes([2]) * 12)}",
    ]
    assert all(re.fullmatch(r"[a-z]+:\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==", line)
               for line in lines)
    assert "secret" not in text


def test_render_passwd_uses_fresh_salts() -> None:
    assert render_passwd(settings()) != render_passwd(settings())


def test_passwd_matches() -> None:
    users = (NODE, SIREN)
    text = render_passwd(settings())
    assert passwd_matches(text, users)
    assert not passwd_matches(text, (NODE,))
    assert not passwd_matches(text, (NODE, SIREN, MqttUser("x", "pw", "service")))
    assert not passwd_matches(text, (NODE, MqttUser("siren", "changed", "integration")))
    assert not passwd_matches(text + text, users)
    assert not passwd_matches("node:plaintext\n", (NODE,))
    assert passwd_matches("", ())


# -- the mesh listener (docs/mesh.md, "Transport") -------------------------------------

MESH = {"mesh_port": 8884, "mesh_cafile": Path("/var/lib/bart/mesh/ca.pem"),
        "mesh_cert": Path("/var/lib/bart/mesh/node.pem"),
        "mesh_key": Path("/var/lib/bart/mesh/node.key")}

MESH_BLOCK = [
    "listener 8884 0.0.0.0",
    "protocol mqtt",
    "allow_anonymous false",
    "acl_file /var/lib/bart/mqtt/acl-mesh",
    "cafile /var/lib/bart/mesh/ca.pem",
    "certfile /var/lib/bart/mesh/node.pem",
    "keyfile /var/lib/bart/mesh/node.key",
    "require_certificate true",
    "use_identity_as_username true",
    "tls_version tlsv1.2",
]

LOCAL_BLOCK = [
    "listener 18830 127.0.0.1",
    "protocol mqtt",
    "allow_anonymous false",
    "password_file /var/lib/bart/mqtt/passwd",
    "acl_file /var/lib/bart/mqtt/acl",
]


def listener_blocks(lines: list[str]) -> list[list[str]]:
    """The directives of each ``listener`` section, in order."""
    blocks: list[list[str]] = []
    for line in lines:
        if line.startswith("listener "):
            blocks.append([])
        if blocks:
            blocks[-1].append(line)
    return blocks


def test_mesh_listener_block() -> None:
    lines = directives(render_config(settings(**MESH)))
    assert lines[0] == "per_listener_settings true"
    assert listener_blocks(lines) == [LOCAL_BLOCK, MESH_BLOCK]
    # Nothing about logins before the first listener: every listener has its own.
    head = lines[:lines.index(LOCAL_BLOCK[0])]
    assert not any(line.startswith(("allow_anonymous", "password_file", "acl_file"))
                   for line in head)
    # No password file at all on the mesh listener: the certificate is the login.
    assert not any(line.startswith("password_file") for line in MESH_BLOCK)


def test_mesh_listener_with_the_point_listener() -> None:
    lines = directives(render_config(settings(
        **MESH, mesh_bind_address="10.0.0.5", tls_port=8883,
        tls_cert=Path("/var/lib/bart/tls/node.pem"), tls_key=Path("/var/lib/bart/tls/node.key"))))
    local, points, mesh = listener_blocks(lines)
    assert local == LOCAL_BLOCK
    assert points[0] == "listener 8883 0.0.0.0"
    assert "password_file /var/lib/bart/mqtt/passwd-points" in points
    assert "require_certificate true" not in points  # point devices log in with passwords
    assert mesh == ["listener 8884 10.0.0.5", *MESH_BLOCK[1:]]


def test_mesh_paths_are_absolute() -> None:
    lines = directives(render_config(settings(**{
        **MESH, "mesh_cafile": Path("rel/ca.pem")})))
    cafile = next(line for line in lines if line.startswith("cafile "))
    assert Path(cafile.split(" ", 1)[1]).is_absolute()


def test_no_mesh_listener_by_default() -> None:
    text = render_config(settings())
    assert "require_certificate" not in text
    assert "acl-mesh" not in text
    assert settings().mesh_port is None
    assert settings().mesh_bind_address == "0.0.0.0"


def test_mesh_acl_grants_each_peer_only_its_own_topics() -> None:
    assert directives(render_mesh_acl()) == [
        "pattern write bartmesh/v1/%u/up",
        "pattern read bartmesh/v1/%u/down",
    ]


def test_service_acl_is_the_same_with_or_without_the_mesh() -> None:
    assert render_acl(settings(**MESH)) == render_acl(settings())


@pytest.mark.parametrize("missing", ["mesh_cafile", "mesh_cert", "mesh_key"])
def test_mesh_listener_needs_every_file(missing: str) -> None:
    with pytest.raises(ConfigError, match="mesh_cafile, mesh_cert and mesh_key"):
        settings(**{**MESH, missing: None})


@pytest.mark.parametrize("kw", [
    {"mesh_port": 0}, {"mesh_port": 65536}, {"mesh_port": 18830},
    {"tls_port": 8884, "tls_cert": Path("/c"), "tls_key": Path("/k")},
    {"mesh_bind_address": "0.0.0.0\nallow_anonymous true"},
    {"mesh_bind_address": "0.0.0.0 x"}, {"mesh_bind_address": ""},
    {"mesh_cafile": Path("/ca.pem\nrequire_certificate false")},
    {"mesh_key": Path("/k ")}, {"mesh_cert": Path("/c\0")},
])
def test_unsafe_mesh_settings_refused(kw: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        settings(**{**MESH, **kw})


def test_mesh_files_without_mesh_port_are_not_used() -> None:
    # Files given without a port are accepted (the node may hold them) but render nothing.
    text = render_config(settings(**{**MESH, "mesh_port": None}))
    assert "cafile" not in text and "per_listener_settings false" in text
