"""A minimal MQTT 3.1.1 CONNECT/CONNACK exchange: is a broker really answering?

Used to wait for a freshly started Mosquitto without pulling paho's threads
into the process supervisor. The packet builders are pure; :func:`probe`
does one blocking TCP round trip. A CONNACK says that *a* broker answers;
:func:`holds_port` says whether it is the process we started (a broker left
by an earlier run answers on the same port with its old configuration).
"""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path
from typing import Final

from .errors import BrokerError

#: CONNACK return codes of MQTT 3.1.1 (§3.2.2.3).
CONNACK_ACCEPTED: Final = 0
CONNACK_NOT_AUTHORIZED: Final = 5


class ProbeError(BrokerError, OSError):
    """The peer accepted TCP but did not answer a CONNECT with a CONNACK."""


def _string(value: str) -> bytes:
    data = value.encode("utf-8")
    return struct.pack("!H", len(data)) + data


def _remaining_length(length: int) -> bytes:
    out = bytearray()
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def connect_packet(client_id: str, username: str | None = None,
                   password: str | None = None, keepalive: int = 10) -> bytes:
    """An MQTT 3.1.1 CONNECT packet with a clean session.

    >>> connect_packet("p").hex()
    '100d00044d5154540402000a000170'
    """
    flags = 0x02
    payload = _string(client_id)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
        if password is not None:
            flags |= 0x40
            payload += _string(password)
    variable = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    body = variable + payload
    return b"\x10" + _remaining_length(len(body)) + body


def parse_connack(data: bytes) -> int:
    """The return code of an MQTT 3.1.1 CONNACK; raise :class:`ProbeError` if it is not one.

    >>> parse_connack(bytes([0x20, 2, 0, 5]))
    5
    """
    if len(data) != 4 or data[0] != 0x20 or data[1] != 2:
        raise ProbeError(f"expected a CONNACK, got {data[:8].hex() or 'nothing'}")
    return data[3]


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return data


def probe(host: str, port: int, username: str | None = None, password: str | None = None,
          timeout: float = 1.0) -> int:
    """Send CONNECT to ``host:port`` and return the CONNACK code (then DISCONNECT).

    Raises :class:`OSError` (including :class:`ProbeError`) when nothing MQTT answers.
    """
    client_id = f"bart-probe-{os.getpid()}-{os.urandom(4).hex()}"
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(connect_packet(client_id, username, password))
        code = parse_connack(_recv_exactly(sock, 4))
        if code == CONNACK_ACCEPTED:
            sock.sendall(b"\xe0\x00")
        return code


#: TCP state LISTEN in /proc/net/tcp{,6} (include/net/tcp_states.h).
_TCP_LISTEN: Final = "0A"


def listening_inodes(port: int, proc_net: Path = Path("/proc/net")) -> set[int]:
    """Socket inodes listening on TCP ``port`` (any address, IPv4 and IPv6) in this
    network namespace."""
    inodes: set[int] = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc_net / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _TCP_LISTEN:
                continue
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(int(fields[9]))
    return inodes


def socket_inodes(pid: int) -> set[int] | None:
    """Inodes of the sockets process ``pid`` has open; None when we may not look."""
    inodes: set[int] = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return None
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def holds_port(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` holds the TCP listener on ``port``; None: cannot tell
    (no /proc, or another user's process)."""
    mine = socket_inodes(pid)
    if mine is None:
        return None
    return bool(mine & listening_inodes(port))
