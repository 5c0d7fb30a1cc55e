"""MQTT 3.1.1 CONNECT/CONNACK packets of the readiness probe (pure)."""

from __future__ import annotations

import pytest

from broker.probe import ProbeError, connect_packet, parse_connack

pytestmark = pytest.mark.timeout(30)


def test_connect_without_credentials() -> None:
    # 0x10 CONNECT, remaining length 13, "MQTT", level 4, clean session, keepalive 10, id "p"
    assert connect_packet("p") == bytes.fromhex("100d00044d5154540402000a000170")


def test_connect_with_credentials() -> None:
    packet = connect_packet("c", "u", "pw")
    assert packet[0] == 0x10
    assert packet[1] == len(packet) - 2
    assert packet[9] == 0x02 | 0x80 | 0x40  # clean session, username, password
    assert packet.endswith(b"\x00\x01c\x00\x01u\x00\x02pw")


def test_long_remaining_length_uses_varint() -> None:
    packet = connect_packet("c", "u", "p" * 200)
    assert packet[1] & 0x80 and packet[2] == 1
    assert (packet[1] & 0x7F) + 128 * packet[2] == len(packet) - 3


@pytest.mark.parametrize("code", [0, 4, 5])
def test_parse_connack(code: int) -> None:
    assert parse_connack(bytes([0x20, 2, 0, code])) == code


@pytest.mark.parametrize("data", [b"", b"\x20\x02\x00", b"HTTP", b"\x30\x02\x00\x00"])
def test_parse_connack_refuses_other_bytes(data: bytes) -> None:
    with pytest.raises(ProbeError):
        parse_connack(data)
