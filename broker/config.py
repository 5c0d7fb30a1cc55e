"""Pure rendering of Mosquitto's configuration, password and ACL files.

:func:`render_config`, :func:`render_acl` and :func:`render_passwd` take a
:class:`BrokerSettings` and return text; only :func:`write_files` touches the
disk. The choices follow DESIGN.md §9: the broker is a fast fan-out, SQLite is
the truth, so persistence is a convenience saved every few minutes; queue limits
are never 0 (unlimited); ``user`` is the account that runs the node so that a
broker started as root can still read its own files.

Listeners (DESIGN.md §5): the local one for the node's own accounts; while
point devices exist, one with TLS for them; with ``mesh_port``, one with mutual
TLS for peer nodes (docs/mesh.md, "Transport"). As soon as there is more than
one, ``per_listener_settings true`` gives each its own password and ACL file,
so an account of one listener cannot log in on another.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import pwd
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from .errors import ConfigError
from .topics import (
    ALL_EVENTS_FILTER,
    HEALTH_FILTER,
    MESH_ALL_FILTER,
    MESH_PREFIX,
    PUBLIC_EVENTS_FILTER,
    check_origin,
    point_topic,
)

CONF_NAME: Final = "mosquitto.conf"
PASSWD_NAME: Final = "passwd"  # noqa: S105 - a file name, not a secret
ACL_NAME: Final = "acl"
POINT_PASSWD_NAME: Final = "passwd-points"  # noqa: S105 - a file name, not a secret
POINT_ACL_NAME: Final = "acl-points"
MESH_ACL_NAME: Final = "acl-mesh"
DB_NAME: Final = "mosquitto.db"
#: Changes between persistence snapshots (with autosave_on_changes; not seconds).
AUTOSAVE_INTERVAL: Final = 300
#: Mosquitto 2.0's PBKDF2-SHA512 password hash: ``$7$`` id, 12-byte salt, 64-byte key.
PBKDF2_ID: Final = 7
SALT_BYTES: Final = 12
HASH_BYTES: Final = 64
DEFAULT_ITERATIONS: Final = 101

# Names end up on lines of the passwd and ACL files: no ':' (passwd separator),
# no whitespace (ACL `user` lines) and nothing Mosquitto would read as a comment.
_USER_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HASH_LINE: Final = re.compile(
    r"^(?P<name>[^:]+):\$7\$(?P<iter>[0-9]+)\$(?P<salt>[A-Za-z0-9+/=]+)\$(?P<hash>[A-Za-z0-9+/=]+)$"
)


@dataclass(frozen=True)
class MqttUser:
    """An account on the node's broker.

    ``service``: node code; ``integration``: read-only public events;
    ``point``: one point device (``point`` names it), which may only publish its
    own button presses and read its own light state.
    """

    name: str
    password: str = field(repr=False)
    role: Literal["service", "integration", "point"]
    point: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _USER_NAME.fullmatch(self.name):
            raise ConfigError(f"MQTT user name {self.name!r} must match {_USER_NAME.pattern}")
        if not isinstance(self.password, str) or not self.password:
            raise ConfigError(f"MQTT user {self.name!r} needs a non-empty password")
        if self.role not in ("service", "integration", "point"):
            raise ConfigError(f"MQTT user {self.name!r}: unknown role {self.role!r}")
        if (self.role == "point") != (self.point is not None):
            raise ConfigError(f"MQTT user {self.name!r}: a point user names exactly its point")
        if self.point is not None:
            check_origin(self.point)


@dataclass(frozen=True)
class BrokerSettings:
    """Everything needed to render and run one node's Mosquitto."""

    state_dir: Path
    port: int
    bind_address: str = "127.0.0.1"
    users: tuple[MqttUser, ...] = ()
    run_as_user: str | None = None
    persistence: bool = True
    max_packet_size: int = 65536
    max_inflight_messages: int = 100
    max_queued_messages: int = 1000
    #: A second listener with TLS for point devices on the hotspot (None: none).
    tls_port: int | None = None
    tls_bind_address: str = "0.0.0.0"  # noqa: S104 - point devices reach it over Wi-Fi
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: A listener with mutual TLS for mesh peers (None: none); see docs/mesh.md.
    mesh_port: int | None = None
    mesh_bind_address: str = "0.0.0.0"  # noqa: S104 - peers reach it over the network
    #: The CAs whose certificates peers may log in with (central's; trusted peers').
    mesh_cafile: Path | None = None
    #: This node's own mesh certificate and key (it serves them to diallers).
    mesh_cert: Path | None = None
    mesh_key: Path | None = None

    def __post_init__(self) -> None:
        ports = [("port", self.port), ("tls_port", self.tls_port),
                 ("mesh_port", self.mesh_port)]
        for label, port in ports:
            if port is not None and not 1 <= port <= 65535:
                raise ConfigError(f"{label} {port} is out of range")
        used = [port for _, port in ports if port is not None]
        if len(set(used)) != len(used):
            # Mosquitto would fail to bind and the start be taken for a bad snapshot.
            raise ConfigError(f"listener ports must differ: {', '.join(map(str, used))}")
        for label, value in (("state_dir", str(self.state_dir)),
                             ("bind_address", self.bind_address),
                             ("tls_bind_address", self.tls_bind_address),
                             ("mesh_bind_address", self.mesh_bind_address),
                             ("run_as_user", self.run_as_user or "x"),
                             *((name, str(path)) for name, path in (
                                 ("tls_cert", self.tls_cert), ("tls_key", self.tls_key),
                                 ("mesh_cafile", self.mesh_cafile),
                                 ("mesh_cert", self.mesh_cert), ("mesh_key", self.mesh_key),
                             ) if path is not None)):
            if not value or any(ch in value for ch in "\r\n\t\0") or value != value.strip():
                raise ConfigError(f"{label} {value!r} cannot be written into mosquitto.conf")
        for label, value in (("bind_address", self.bind_address),
                             ("tls_bind_address", self.tls_bind_address),
                             ("mesh_bind_address", self.mesh_bind_address)):
            if " " in value:
                raise ConfigError(f"{label} {value!r} contains a space")
        names = [u.name for u in self.users]
        if len(set(names)) != len(names):
            raise ConfigError("MQTT user names must be unique")
        # 0 means "unlimited" to Mosquitto: never what a Pi with 512 MB wants (DESIGN §9).
        for label, number in (("max_packet_size", self.max_packet_size),
                              ("max_inflight_messages", self.max_inflight_messages),
                              ("max_queued_messages", self.max_queued_messages)):
            if number <= 0:
                raise ConfigError(f"{label} must be positive, not {number}")
        if self.tls_port is not None and (self.tls_cert is None or self.tls_key is None):
            raise ConfigError("a TLS listener needs tls_cert and tls_key")
        if self.mesh_port is not None and None in (self.mesh_cafile, self.mesh_cert,
                                                   self.mesh_key):
            raise ConfigError("a mesh listener needs mesh_cafile, mesh_cert and mesh_key")
        if self.max_packet_size < 20:
            raise ConfigError("max_packet_size below 20 bytes would refuse every CONNECT")

    @property
    def conf_path(self) -> Path:
        """Where ``mosquitto.conf`` is written."""
        return self.state_dir / CONF_NAME

    @property
    def passwd_path(self) -> Path:
        """Where the password file is written."""
        return self.state_dir / PASSWD_NAME

    @property
    def acl_path(self) -> Path:
        """Where the ACL file is written."""
        return self.state_dir / ACL_NAME

    @property
    def mesh_acl_path(self) -> Path:
        """Where the mesh listener's ACL file is written."""
        return self.state_dir / MESH_ACL_NAME

    @property
    def per_listener(self) -> bool:
        """True when there is more than the local listener: each has its own users."""
        return self.tls_port is not None or self.mesh_port is not None

    @property
    def db_path(self) -> Path:
        """Mosquitto's persistence snapshot."""
        return self.state_dir / DB_NAME

    def service_user(self) -> MqttUser | None:
        """The first user with the ``service`` role, if any."""
        return next((u for u in self.users if u.role == "service"), None)

    def account(self) -> str:
        """The OS account Mosquitto runs as: ``run_as_user`` or the current one."""
        if self.run_as_user:
            return self.run_as_user
        try:
            return pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            return getpass.getuser()


def render_config(s: BrokerSettings) -> str:
    """The text of ``mosquitto.conf`` for ``s`` (Mosquitto 2.0 syntax)."""
    state = s.state_dir.absolute()
    split = s.per_listener
    lines = [
        "# Rendered by Bart (broker.config); changes here are overwritten.",
        # With a TLS or mesh listener each listener has its own users: the node's
        # service account cannot log in from the hotspot or the mesh at all.
        f"per_listener_settings {'true' if split else 'false'}",
        *([] if split else [
            "allow_anonymous false",
            f"password_file {state / PASSWD_NAME}",
            f"acl_file {state / ACL_NAME}",
        ]),
        # The account that runs the node, so that a broker started as root does not
        # switch to 'mosquitto' and lose access to these files (DESIGN §9).
        f"user {s.account()}",
        "",
        "# SQLite is the node's truth; the broker's snapshot is a convenience.",
    ]
    if s.persistence:
        lines += [
            "persistence true",
            f"persistence_location {state}",
            f"persistence_file {DB_NAME}",
            f"autosave_interval {AUTOSAVE_INTERVAL}",
            # Count changes, not seconds: an idle broker never rewrites its file
            # (measured: a rewrite every 300 s was a third of the idle write budget).
            "autosave_on_changes true",
        ]
    else:
        lines.append("persistence false")
    lines += [
        "",
        "# stderr is captured by the supervisor; errors and warnings only (SD-card wear).",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "connection_messages false",
        "log_timestamp false",
        "",
        "# Never 0 (= unlimited): bounded memory, and 2.0.11 queue bugs (DESIGN §9).",
        f"max_packet_size {s.max_packet_size}",
        f"max_inflight_messages {s.max_inflight_messages}",
        f"max_queued_messages {s.max_queued_messages}",
        "set_tcp_nodelay true",
        "",
        f"listener {s.port} {s.bind_address}",
        "protocol mqtt",
        *([] if not split else [
            "allow_anonymous false",
            f"password_file {state / PASSWD_NAME}",
            f"acl_file {state / ACL_NAME}",
        ]),
        "",
    ]
    if s.tls_port is not None and s.tls_cert is not None and s.tls_key is not None:
        lines += [
            "# Point devices: MQTT over TLS; only point users, each with its own ACL.",
            f"listener {s.tls_port} {s.tls_bind_address}",
            "protocol mqtt",
            "allow_anonymous false",
            f"password_file {state / POINT_PASSWD_NAME}",
            f"acl_file {state / POINT_ACL_NAME}",
            f"certfile {s.tls_cert.absolute()}",
            f"keyfile {s.tls_key.absolute()}",
            "tls_version tlsv1.2",
            "",
        ]
    if (s.mesh_port is not None and s.mesh_cafile is not None and s.mesh_cert is not None
            and s.mesh_key is not None):
        lines += [
            "# Mesh peers: mutual TLS; the certificate's CN is the user name, no passwords.",
            f"listener {s.mesh_port} {s.mesh_bind_address}",
            "protocol mqtt",
            # Still false: it refuses clients without a user name, and with
            # use_identity_as_username every certificate client has one (its CN).
            "allow_anonymous false",
            f"acl_file {state / MESH_ACL_NAME}",
            f"cafile {s.mesh_cafile.absolute()}",
            f"certfile {s.mesh_cert.absolute()}",
            f"keyfile {s.mesh_key.absolute()}",
            "require_certificate true",
            "use_identity_as_username true",
            "tls_version tlsv1.2",
            "",
        ]
    return "\n".join(lines)


def render_acl(s: BrokerSettings, users: tuple[MqttUser, ...] | None = None) -> str:
    """The ACL file: services read and write the scheme, integrations only read public."""
    lines = [
        "# Rendered by Bart (broker.config); changes here are overwritten.",
        "# No top-level topic or pattern lines: anonymous access and",
        "# user-independent grants do not exist on a node's broker.",
    ]
    for user in s.users if users is None else users:
        lines += ["", f"user {user.name}"]
        if user.role == "service":
            # Mesh topics too: the node reads peers' up topics and answers on down.
            lines += [f"topic readwrite {ALL_EVENTS_FILTER}",
                      f"topic readwrite {MESH_ALL_FILTER}"]
        elif user.role == "point" and user.point is not None:
            lines += [f"topic write {point_topic('+', user.point, 'press')}",
                      f"topic read {point_topic('+', user.point, 'state')}"]
        else:
            lines += [f"topic read {PUBLIC_EVENTS_FILTER}", f"topic read {HEALTH_FILTER}"]
    lines.append("")
    return "\n".join(lines)


def render_mesh_acl() -> str:
    """The mesh listener's ACL: each peer its own up (write) and down (read) topic.

    Only ``pattern`` lines: they apply to every user of this file, and a peer's
    user name is its certificate's common name (``use_identity_as_username``),
    so ``%u`` is the peer. Nothing of ``bart/v1`` is granted to any peer.
    """
    return "\n".join([
        "# Rendered by Bart (broker.config); changes here are overwritten.",
        "# Mesh listener: %u is the peer's certificate common name (its node name).",
        f"pattern write {MESH_PREFIX}/%u/up",
        f"pattern read {MESH_PREFIX}/%u/down",
        "",
    ])


def hash_password(password: str, salt: bytes, iterations: int = DEFAULT_ITERATIONS) -> str:
    """Mosquitto 2.0's ``$7$`` hash of ``password``: PBKDF2-HMAC-SHA512, 64-byte key.

    The result is the part after ``name:`` on a password-file line, as written
    by ``mosquitto_passwd`` (``$7$<iterations>$<base64 salt>$<base64 key>``).
    """
    if len(salt) != SALT_BYTES:
        raise ConfigError(f"salt must be {SALT_BYTES} bytes, not {len(salt)}")
    if iterations < 1:
        raise ConfigError("iterations must be positive")
    key = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, HASH_BYTES)
    return (f"${PBKDF2_ID}${iterations}${base64.b64encode(salt).decode('ascii')}"
            f"${base64.b64encode(key).decode('ascii')}")


def render_passwd(s: BrokerSettings,
                  salt_source: Callable[[int], bytes] = os.urandom,
                  users: tuple[MqttUser, ...] | None = None) -> str:
    """The password file: one ``name:$7$…`` line per user, fresh salt from ``salt_source``."""
    return "".join(
        f"{u.name}:{hash_password(u.password, salt_source(SALT_BYTES))}\n"
        for u in (s.users if users is None else users)
    )


def passwd_matches(text: str, users: tuple[MqttUser, ...]) -> bool:
    """True if password-file ``text`` holds exactly ``users`` with their current passwords.

    Lets :func:`write_files` keep an existing file (salts differ on every
    render, so comparing text would rewrite it on every start).
    """
    wanted = {u.name: u.password for u in users}
    seen: set[str] = set()
    for line in text.splitlines():
        match = _HASH_LINE.match(line)
        if match is None or match["name"] not in wanted or match["name"] in seen:
            return False
        seen.add(match["name"])
        try:
            salt = base64.b64decode(match["salt"], validate=True)
            expected = hash_password(wanted[match["name"]], salt, int(match["iter"]))
        except (ValueError, ConfigError):
            return False
        if not hmac.compare_digest(expected, line.split(":", 1)[1]):
            return False
    return seen == set(wanted)


def _write_atomic(path: Path, text: str, owner: tuple[int, int] | None) -> bool:
    """Write ``text`` to ``path`` via a 0600 temporary file and rename; False if unchanged."""
    data = text.encode("utf-8")
    try:
        if path.read_bytes() == data:
            os.chmod(path, 0o600)
            if owner is not None:
                os.chown(path, *owner)
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        if owner is not None:
            os.fchown(fd, *owner)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True


def _owner(s: BrokerSettings) -> tuple[int, int] | None:
    """uid/gid to hand the files to when root renders them for another account."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(s.account())
    except KeyError as exc:
        raise ConfigError(f"run_as_user {s.account()!r} is not an account here") from exc
    return None if entry.pw_uid == 0 else (entry.pw_uid, entry.pw_gid)


def write_files(s: BrokerSettings) -> list[Path]:
    """Write conf, passwd and ACL files into ``s.state_dir`` (mode 0600, atomically).

    Idempotent: a file whose content is already right is not rewritten (the
    password file counts as right when every user's password still verifies),
    so repeated starts cost no SD-card writes. Returns the paths rewritten.
    """
    s.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    owner = _owner(s)
    if owner is not None:
        os.chown(s.state_dir, *owner)
    changed: list[Path] = []
    # Per listener: node users on the local listener, point users on TLS; mesh
    # peers have no password file (their certificate is their login).
    # Without a TLS listener, point users keep their login on the local one.
    local = (tuple(u for u in s.users if u.role != "point") if s.tls_port is not None
             else s.users)
    points = tuple(u for u in s.users if u.role == "point")
    files = [(s.passwd_path, s.acl_path, local)]
    if s.tls_port is not None:
        files.append((s.state_dir / POINT_PASSWD_NAME, s.state_dir / POINT_ACL_NAME, points))
    for passwd_path, acl_path, users in files:
        try:
            current = passwd_path.read_text("utf-8")
        except (FileNotFoundError, UnicodeDecodeError):
            current = None
        passwd = (current if current is not None and passwd_matches(current, users)
                  else render_passwd(s, users=users))
        for path, text in ((passwd_path, passwd), (acl_path, render_acl(s, users))):
            if _write_atomic(path, text, owner):
                changed.append(path)
    if s.mesh_port is not None and _write_atomic(s.mesh_acl_path, render_mesh_acl(), owner):
        changed.append(s.mesh_acl_path)
    if _write_atomic(s.conf_path, render_config(s), owner):
        changed.append(s.conf_path)
    return changed
