"""Discovery's pure part: adverts, TXT parsing and limits, the peer table (no sockets)."""

from __future__ import annotations

import ipaddress
import logging
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.mesh.discovery import (
    FINGERPRINT,
    MAX_ADDRESSES,
    SERVICE_TYPE,
    Advert,
    Discovery,
    DiscoveryError,
    Found,
    InvalidAdvert,
    PeerTable,
    UnsupportedProto,
    _choose_interfaces,
    instance_of,
    order_addresses,
    parse_advert,
    service_name,
)
from sync.keys import fingerprint

ME = Advert(name="escamp-zandloper", area="ESC-01", port=8884, fp="QX7K-3MFA-P2RT")
PEER = Advert(name="escamp-duinhaas", area="ESC-02", port=18884, fp="AB2C-DEFG-HJK9")


def txt(advert: Advert, drop: str = "", **changes: bytes | None) -> dict[bytes, bytes | None]:
    """The TXT properties as zeroconf hands them over (bytes), with changes.

    A value None is a key without ``=`` (RFC 6763 §6.4); ``drop`` leaves a key out.
    """
    props: dict[bytes, bytes | None] = {k.encode(): v.encode() for k, v in advert.txt().items()}
    props.pop(drop.encode(), None)
    props.update({key.encode(): value for key, value in changes.items()})
    return props


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------ Advert


def test_the_txt_record_is_small_and_parses_back() -> None:
    assert ME.txt() == {"node": "escamp-zandloper", "area": "ESC-01", "port": "8884",
                        "fp": "QX7K-3MFA-P2RT", "proto": "1"}
    size = sum(1 + len(k) + 1 + len(v) for k, v in ME.txt().items())
    assert size < 100
    assert parse_advert(ME.name, txt(ME), 8884) == ME
    assert parse_advert(ME.name, txt(ME)) == ME  # SRV port not known: not compared


@pytest.mark.parametrize("field,value", [
    ("name", "Escamp"), ("name", "-escamp"), ("name", "escamp-"), ("name", "esc_amp"),
    ("name", "a" * 64), ("name", ""), ("name", "escamp\n"),
    ("area", "esc-01"), ("area", "ESC_01"), ("area", "A" * 17), ("area", ""),
    ("port", 0), ("port", 65536), ("port", -1), ("port", True), ("port", "8884"),
    ("fp", "QX7K-3MFA-P2R"), ("fp", "qx7k-3mfa-p2rt"), ("fp", "QX7K3MFAP2RT"),
    ("fp", "QX7K-3MFA-P2RI"), ("fp", "QX7K-3MFA-P2R0"), ("fp", "QX7K-3MFA-P2RT\n"),
    ("proto", 0), ("proto", 1001), ("proto", True),
])
def test_an_advert_refuses_values_out_of_range(field: str, value: object) -> None:
    fields = {"name": ME.name, "area": ME.area, "port": ME.port, "fp": ME.fp, "proto": 1}
    fields[field] = value
    with pytest.raises(InvalidAdvert):
        Advert(**fields)  # type: ignore[arg-type]


def test_names_up_to_63_characters() -> None:
    assert Advert(name="a" * 63, area="A", port=1, fp=ME.fp).name == "a" * 63
    assert Advert(name="a", area="ESC-01-NOORD-ABC", port=65535, fp=ME.fp).port == 65535


@settings(max_examples=200)
@given(st.binary(min_size=32, max_size=32))
def test_every_key_fingerprint_fits_the_pattern(key: bytes) -> None:
    assert FINGERPRINT.fullmatch(fingerprint(key))


# ------------------------------------------------------------------ parse_advert


@pytest.mark.parametrize("key", ["node", "area", "port", "fp", "proto"])
def test_every_key_is_required(key: str) -> None:
    with pytest.raises(InvalidAdvert, match="missing from the TXT record") as info:
        parse_advert(ME.name, txt(ME, drop=key), ME.port)
    assert info.value.key == key


@pytest.mark.parametrize("changes,key", [
    ({"port": None}, "port"),                  # a key without "=": no value
    ({"port": b""}, "port"), ({"port": b"0x22"}, "port"), ({"port": b" 8884"}, "port"),
    ({"port": b"+8884"}, "port"), ({"port": b"888400"}, "port"), ({"port": b"0"}, "port"),
    ({"port": b"65536"}, "port"), ({"port": b"\xd9\xa8"}, "port"),  # Arabic-Indic 8
    ({"area": b"esc-01"}, "area"), ({"area": b"\xc3\x89SC"}, "area"),
    ({"fp": b"QX7K-3MFA"}, "fp"), ({"fp": b"QX7K-3MFA-P2RT-AAAA"}, "fp"),
    ({"node": b"escamp-duinhaas"}, "node"),    # TXT name is not the instance name
    ({"proto": b"one"}, "proto"), ({"proto": b"-1"}, "proto"), ({"proto": b"0"}, "proto"),
    ({"proto": b"12345"}, "proto"), ({"proto": b"1001"}, "proto"),
])
def test_malformed_txt_is_refused_with_the_key(changes: dict[str, bytes | None],
                                               key: str) -> None:
    with pytest.raises(InvalidAdvert) as info:
        props = txt(ME) | {k.encode(): v for k, v in changes.items()}
        parse_advert(ME.name, props, ME.port)
    assert info.value.key == key
    assert not isinstance(info.value, UnsupportedProto)


def test_the_srv_port_must_match_the_txt_port() -> None:
    with pytest.raises(InvalidAdvert, match="differs from SRV port 8885"):
        parse_advert(ME.name, txt(ME), 8885)


def test_another_protocol_version_is_unsupported_not_malformed() -> None:
    with pytest.raises(UnsupportedProto) as info:
        parse_advert(ME.name, txt(ME, proto=b"2"), ME.port)
    assert info.value.key == "proto"
    assert "mesh protocol 2" in str(info.value)


@pytest.mark.parametrize("instance", ["Escamp-zandloper", "escamp zandloper", "escamp.x",
                                      "a" * 64, "", "é"])
def test_an_instance_name_that_is_not_a_slug_is_refused(instance: str) -> None:
    with pytest.raises(InvalidAdvert) as info:
        parse_advert(instance, txt(ME, node=instance.encode()), ME.port)
    assert info.value.key == "name"


def test_keys_are_case_insensitive_and_unknown_keys_are_allowed() -> None:
    props = {k.upper(): v for k, v in txt(ME).items()}
    props[b"display"] = b"Buurthuis De Zandloper"
    props[b"future"] = None
    props[b"\xff\xfe"] = b"\x00"
    assert parse_advert(ME.name, props, ME.port) == ME
    # The first of two spellings of a key counts, as zeroconf keeps the first of duplicates.
    props = {b"PORT": b"8884", **txt(ME, port=b"bad")}
    assert parse_advert(ME.name, props, ME.port) == ME


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from([b"node", b"area", b"port", b"fp", b"proto", b"x"])
                       | st.binary(max_size=8),
                       st.none() | st.binary(max_size=20), max_size=8),
       st.text(max_size=70), st.none() | st.integers(-1, 70_000))
def test_any_txt_record_gives_an_advert_or_invalid_advert(
        props: dict[bytes, bytes | None], instance: str, srv_port: int | None) -> None:
    try:
        advert = parse_advert(instance, props, srv_port)
    except InvalidAdvert:
        return
    assert advert.name == instance


# ------------------------------------------------------------------ names, addresses


def test_service_and_instance_names() -> None:
    assert SERVICE_TYPE == "_bart-mesh._tcp.local."
    assert service_name("escamp-zandloper") == "escamp-zandloper._bart-mesh._tcp.local."
    assert instance_of("escamp-zandloper._bart-mesh._tcp.local.") == "escamp-zandloper"
    assert instance_of("Escamp._BART-MESH._tcp.local.") == "Escamp"
    assert instance_of("x._http._tcp.local.") is None
    assert instance_of("._bart-mesh._tcp.local.") is None
    assert instance_of("_bart-mesh._tcp.local.") is None


def test_addresses_ipv4_first_unique_sorted_bounded() -> None:
    assert order_addresses(["fd00::2", "10.0.0.9", "not an address", "10.0.0.1", "10.0.0.9",
                            "fe80::1%eth0", "", "10.0.0.10"]) == (
        "10.0.0.1", "10.0.0.9", "10.0.0.10", "fd00::2", "fe80::1%eth0")
    many = [f"10.0.0.{i}" for i in range(20)]
    assert len(order_addresses(many)) == MAX_ADDRESSES
    assert order_addresses([]) == ()


def test_addresses_on_our_networks_first_and_our_own_dropped() -> None:
    local = [ipaddress.ip_interface(i) for i in
             ("127.0.0.1/8", "10.42.0.1/24", "192.168.1.20/24", "fd00::20/64")]
    # Every hotspot node has 10.42.0.1: never the peer's address as seen from here.
    assert order_addresses(["10.42.0.1", "172.17.0.1", "192.168.1.7", "127.0.0.1",
                            "fd00::7", "2001:db8::7", "::1"], local) == (
        "192.168.1.7", "172.17.0.1", "127.0.0.1", "fd00::7", "2001:db8::7", "::1")
    assert order_addresses(["10.42.0.1"], local) == ()
    # Two nodes on one host (the demo, the tests): loopback is kept.
    assert order_addresses(["127.0.0.1"], local) == ("127.0.0.1",)


def test_a_peer_with_only_our_own_address_is_ignored() -> None:
    table = PeerTable(ME.name)
    table.local = [ipaddress.ip_interface("10.42.0.1/24"),
                   ipaddress.ip_interface("192.168.1.20/24")]
    assert not table.update(PEER.name, txt(PEER), PEER.port, ["10.42.0.1"])
    assert table.update(PEER.name, txt(PEER), PEER.port, ["10.42.0.1", "192.168.1.7"])
    assert table.peers[PEER.name].addresses == ("192.168.1.7",)


# ------------------------------------------------------------------ PeerTable


def test_a_peer_is_found_refreshed_and_changed() -> None:
    clock = Clock()
    table = PeerTable(ME.name, clock=clock)
    assert table.update(PEER.name, txt(PEER), PEER.port, ["fd00::5", "10.0.0.5"])
    assert table.peers == {PEER.name: Found(
        name=PEER.name, area="ESC-02", port=18884, fp="AB2C-DEFG-HJK9", proto=1,
        addresses=("10.0.0.5", "fd00::5"), last_seen=1000.0)}
    clock.now = 1010.0
    assert not table.update(PEER.name, txt(PEER), PEER.port, ["10.0.0.5", "fd00::5"])
    assert table.peers[PEER.name].last_seen == 1010.0  # refreshed, not a change
    assert table.update(PEER.name, txt(PEER), PEER.port, ["10.0.0.6"])
    assert table.peers[PEER.name].addresses == ("10.0.0.6",)
    peers = table.peers
    peers.clear()  # a copy: the caller cannot change the table
    assert PEER.name in table.peers
    assert table.remove(PEER.name, "test")
    assert not table.remove(PEER.name, "test")
    assert table.peers == {}


def test_own_advert_is_ignored_silently(caplog: pytest.LogCaptureFixture) -> None:
    table = PeerTable(ME.name)
    with caplog.at_level(logging.DEBUG, logger="node.mesh.discovery"):
        assert not table.wanted(ME.name)
        assert not table.update(ME.name, txt(ME), ME.port, ["10.0.0.1"])
    assert table.peers == {}
    assert caplog.records == []


def test_ignored_adverts_warn_once_then_debug(caplog: pytest.LogCaptureFixture) -> None:
    table = PeerTable(ME.name)
    with caplog.at_level(logging.DEBUG, logger="node.mesh.discovery"):
        for _ in range(3):
            assert not table.update(PEER.name, txt(PEER, port=b"x"), PEER.port, ["10.0.0.5"])
            assert not table.wanted("Bad_Name")
            assert not table.update(PEER.name, txt(PEER, proto=b"7"), PEER.port, ["10.0.0.5"])
    levels = [(r.levelname, r.getMessage()) for r in caplog.records]
    warnings = [m for lvl, m in levels if lvl == "WARNING"]
    assert len(warnings) == 3, levels
    assert any("'escamp-duinhaas'" in m and "port: 'x' is not a decimal port" in m
               for m in warnings)
    assert any("'Bad_Name'" in m and "not a node name" in m for m in warnings)
    assert any("mesh protocol 7 is not spoken here" in m for m in warnings)
    assert [lvl for lvl, _ in levels].count("DEBUG") == 6
    assert table.peers == {}


def test_log_memory_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    table = PeerTable(ME.name)
    with caplog.at_level(logging.DEBUG, logger="node.mesh.discovery"):
        for i in range(1000):
            table.wanted(f"Bad{i}")
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 257  # 256 remembered, then one "further ones at debug level"
    assert "further new ones are logged at debug level" in warnings[-1].getMessage()
    assert len(table._quiet._counts) == 256


def test_an_advert_that_goes_bad_drops_the_peer() -> None:
    table = PeerTable(ME.name)
    assert table.update(PEER.name, txt(PEER), PEER.port, ["10.0.0.5"])
    assert table.update(PEER.name, txt(PEER, fp=b"nope"), PEER.port, ["10.0.0.5"])
    assert table.peers == {}
    assert table.update(PEER.name, txt(PEER), PEER.port, ["10.0.0.5"])
    assert table.update(PEER.name, txt(PEER), PEER.port, ["no address"])
    assert table.peers == {}


def test_at_most_max_peers_then_room_for_the_next(caplog: pytest.LogCaptureFixture) -> None:
    table = PeerTable(ME.name, max_peers=64)

    def offer(i: int) -> bool:
        a = Advert(name=f"node-{i}", area="ESC-01", port=8884, fp=PEER.fp)
        return table.update(a.name, txt(a), a.port, [f"10.0.1.{i}"])

    with caplog.at_level(logging.WARNING, logger="node.mesh.discovery"):
        assert all(offer(i) for i in range(64))
        assert not any(offer(i) for i in range(64, 70))
    assert set(table.peers) == {f"node-{i}" for i in range(64)}
    assert len([r for r in caplog.records if "more than 64 peers" in r.getMessage()]) == 6
    assert not offer(5)  # a peer already held is refreshed while full
    assert table.remove("node-3", "test")
    assert offer(64)  # offered again (the next sweep does): room now
    assert not offer(65)
    table.clear()
    assert table.peers == {}


# ------------------------------------------------------------------ Discovery's arguments


def test_discovery_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="ttl"):
        Discovery(ME, ttl=0)
    with pytest.raises(ValueError, match="check_s"):
        Discovery(ME, check_s=0)
    with pytest.raises(DiscoveryError, match="list"):
        Discovery(ME, interfaces="127.0.0.1")
    d = Discovery(ME)
    assert d.advert is ME and d.peers == {} and not d.running


def test_interfaces_by_address_or_name() -> None:
    assert _choose_interfaces(["127.0.0.1"]) == (["127.0.0.1"], ["127.0.0.1"])
    if os.path.exists("/sys/class/net/lo"):
        assert _choose_interfaces(["lo", "127.0.0.1"]) == (["127.0.0.1"], ["127.0.0.1"])
    with pytest.raises(DiscoveryError, match="no such interface"):
        _choose_interfaces(["no-such-if0"])
    with pytest.raises(DiscoveryError, match="empty"):
        _choose_interfaces([])
    _, advertised = _choose_interfaces(None)
    assert advertised and all(":" not in a for a in advertised)
