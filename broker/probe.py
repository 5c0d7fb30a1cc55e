"""A minimal MQTT 3.1.1 CONNECT/CONNACK exchange: is a broker really answering?

Used to wait for a freshly started Mosquitto without pulling paho's threads
into the process supervisor. The packet builders are pure; :func:`probe`
does one blocking TCP round trip.
"""

from __future__ import annotations

import os
import socket
import struct
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
