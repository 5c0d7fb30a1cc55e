"""A tiny DNS client: one A query over UDP, enough to check the hotspot's DNS.

``bart node doctor`` asks the node's dnsmasq for a random name and expects
the node's own address back (every name answers the node on the hotspot).
The standard library has no resolver that can be pointed at one server, and
one question with one answer does not justify a dependency; the codec is
pure (:func:`build_query`, :func:`parse_response`) and refuses anything
malformed, the socket part is :func:`query_a`.

>>> q = build_query("Portal.Example", 0x1234)
>>> q[:2], q[-4:]
(b'\\x124', b'\\x00\\x01\\x00\\x01')
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import struct
import time
from typing import Final

from .errors import NodeError

TYPE_A: Final = 1
CLASS_IN: Final = 1
#: The largest answer read: a plain (non-EDNS) DNS message over UDP.
MAX_MESSAGE: Final = 512
_MAX_LABELS: Final = 128
_RCODES: Final = {1: "format error", 2: "server failure", 3: "no such name",
                  4: "not implemented", 5: "refused"}


class DnsError(NodeError):
    """No usable DNS answer: timeout, refusal or a malformed message."""


def build_query(name: str, qid: int) -> bytes:
    """A standard query (recursion desired) for the A record of ``name``."""
    labels = name.rstrip(".").split(".")
    if not name or len(name) > 253 or any(not 0 < len(label) < 64 for label in labels):
        raise ValueError(f"not a DNS name: {name!r}")
    qname = b"".join(bytes([len(label)]) + label.encode("ascii") for label in labels) + b"\0"
    return struct.pack("!HHHHHH", qid & 0xFFFF, 0x0100, 1, 0, 0, 0) + qname + \
        struct.pack("!HH", TYPE_A, CLASS_IN)


def _skip_name(data: bytes, offset: int) -> int:
    """Offset just past the (possibly compressed) name at ``offset``."""
    for _ in range(_MAX_LABELS):
        if offset >= len(data):
            raise DnsError("truncated name")
        length = data[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:  # a pointer ends the name here
            if offset + 2 > len(data):
                raise DnsError("truncated name pointer")
            return offset + 2
        if length & 0xC0:
            raise DnsError("bad label type")
        offset += 1 + length
    raise DnsError("name has too many labels")


def parse_response(data: bytes, qid: int) -> list[str]:
    """The IPv4 addresses in the answer section of a response to query ``qid``.

    Raises :class:`DnsError` for a malformed message, a response to another
    query, or an error code (``NXDOMAIN``, ``REFUSED`` …).
    """
    if len(data) < 12 or len(data) > 65535:
        raise DnsError("message too short")
    rid, flags, qdcount, ancount, _ns, _ar = struct.unpack("!HHHHHH", data[:12])
    if rid != qid & 0xFFFF or not flags & 0x8000:
        raise DnsError("not an answer to our question")
    rcode = flags & 0x000F
    if rcode:
        raise DnsError(_RCODES.get(rcode, f"error code {rcode}"))
    if qdcount > 4 or ancount > 64:
        raise DnsError("implausible record counts")
    offset = 12
    for _ in range(qdcount):
        offset = _skip_name(data, offset) + 4
    found = []
    for _ in range(ancount):
        offset = _skip_name(data, offset)
        if offset + 10 > len(data):
            raise DnsError("truncated record")
        rtype, rclass, _ttl, rdlength = struct.unpack("!HHIH", data[offset:offset + 10])
        offset += 10
        if offset + rdlength > len(data):
            raise DnsError("truncated record data")
        if rtype == TYPE_A and rclass == CLASS_IN and rdlength == 4:
            found.append(str(ipaddress.IPv4Address(data[offset:offset + 4])))
        offset += rdlength
    return found


def query_a(server: str, name: str, *, port: int = 53, timeout: float = 2.0,
            attempts: int = 2) -> list[str]:
    """Ask ``server`` for the A records of ``name`` over UDP; :class:`DnsError` if none."""
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    last = "no answer"
    for _ in range(attempts):
        qid = secrets.randbelow(0x10000)
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((server, port))
            sock.send(build_query(name, qid))
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    data = sock.recv(MAX_MESSAGE)
                except TimeoutError:
                    break
                except OSError as exc:  # e.g. ICMP port unreachable: nothing listens
                    raise DnsError(f"{server}:{port}: {exc.strerror or exc}") from exc
                try:
                    return parse_response(data, qid)
                except DnsError as exc:
                    last = str(exc)
                    if "not an answer" in last:
                        continue  # a stray or late datagram: keep waiting for ours
                    raise
        last = f"no answer from {server}:{port} within {timeout:g} s"
    raise DnsError(last)
