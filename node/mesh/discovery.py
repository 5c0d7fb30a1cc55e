"""Find neighbouring nodes with mDNS / DNS-SD, and be found (docs/mesh.md, "Discovery").

Every node advertises one service of type :data:`SERVICE_TYPE`
(``_bart-mesh._tcp.local.``): the instance name is the node's name, the SRV
port its Mosquitto mesh listener, and the TXT record says who it is::

    node=escamp-zandloper  area=ESC-01  port=8884  fp=QX7K-3MFA-P2RT  proto=1

At the same time it browses for the same service type and keeps a table of
the peers it sees (:class:`Found`), at most :data:`MAX_PEERS`. Adverts that
are its own, malformed, of a mesh protocol it does not speak or named with
something that is not a slug are ignored, each logged once loudly and then
quietly. Discovery only says "a node that calls itself X is at these
addresses": trust comes later, from the mesh session's certificate and the
roster (docs/mesh.md), never from an advert.

The pure part (:class:`Advert`, :func:`parse_advert`, :class:`PeerTable`)
takes and returns values; :class:`Discovery` is the thin asyncio shell over
python-zeroconf's ``AsyncZeroconf`` that feeds it.

Example (two nodes on this host's loopback)::

    import asyncio

    async def main() -> None:
        me = Advert(name="escamp-zandloper", area="ESC-01", port=8884, fp="QX7K-3MFA-P2RT")
        async with Discovery(me, on_change=print, interfaces=["127.0.0.1"]):
            await asyncio.sleep(10)  # print() is called with {name: Found} on every change

    asyncio.run(main())
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final

import ifaddr

from common.quietlog import QuietLog
from sync.bodies import AREA, SLUG
from sync.mesh import MESH_VERSION

from ..errors import NodeError
from ._purezc import use_pure_python

use_pure_python()  # before zeroconf is imported: see node/mesh/_purezc.py

from zeroconf import (  # noqa: E402 - after use_pure_python()
    Error as ZeroconfError,
)
from zeroconf import (  # noqa: E402
    InterfaceChoice,
    IPVersion,
    NonUniqueNameException,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf  # noqa: E402

log = logging.getLogger(__name__)

SERVICE_TYPE: Final = "_bart-mesh._tcp.local."
#: The mesh protocol version this node speaks (the ``proto`` of the mesh ``hello``).
PROTO: Final = MESH_VERSION
SUPPORTED_PROTOS: Final = frozenset({PROTO})
#: Most peers held; more are ignored until one is lost (bounded memory).
MAX_PEERS: Final = 64
#: Most addresses kept per peer.
MAX_ADDRESSES: Final = 8
#: TTL of our records. RFC 6762 suggests 75 min for PTR/TXT; a node that
#: vanishes without a goodbye (power cut) should leave its peers' tables within
#: minutes, not an hour.
DEFAULT_TTL_S: Final = 120
#: How often each known advert is checked (read from the cache, asked for once expired).
DEFAULT_CHECK_S: Final = 15.0
#: How long to wait for a peer's SRV, TXT and address records.
RESOLVE_TIMEOUT_MS: Final = 3000
#: The alphabet of :func:`sync.keys.fingerprint`: no I, O, 0, 1.
FINGERPRINT: Final = re.compile(r"[A-HJ-NP-Z2-9]{4}-[A-HJ-NP-Z2-9]{4}-[A-HJ-NP-Z2-9]{4}")
TXT_KEYS: Final = ("node", "area", "port", "fp", "proto")
_PORT = re.compile(r"[0-9]{1,5}")
_PROTO = re.compile(r"[0-9]{1,4}")
#: Distinct (advert, reason) pairs remembered for "log once" (bounded memory).
_MAX_QUIET_KEYS: Final = 256


class DiscoveryError(NodeError):
    """Discovery could not start or was used wrongly."""


class InvalidAdvert(DiscoveryError):
    """An advert's name or TXT record is missing a key, malformed or out of range."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class UnsupportedProto(InvalidAdvert):
    """An advert is well formed but names a mesh protocol version this node does not speak."""


class NameConflict(DiscoveryError):
    """Another responder on the network already advertises this node's name."""


# ---------------------------------------------------------------- pure part


@dataclass(frozen=True)
class Advert:
    """What a node says about itself in its TXT record; checked on construction."""

    name: str
    area: str
    port: int
    fp: str
    proto: int = PROTO

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not SLUG.fullmatch(self.name):
            raise InvalidAdvert("node", f"{_show(self.name)} is not a node name (slug, ≤ 63)")
        if not isinstance(self.area, str) or not AREA.fullmatch(self.area):
            raise InvalidAdvert("area", f"{_show(self.area)} is not an area code")
        if isinstance(self.port, bool) or not isinstance(self.port, int) \
                or not 1 <= self.port <= 65535:
            raise InvalidAdvert("port", f"{_show(self.port)} is not a port (1..65535)")
        if not isinstance(self.fp, str) or not FINGERPRINT.fullmatch(self.fp):
            raise InvalidAdvert("fp", f"{_show(self.fp)} is not a key fingerprint")
        if isinstance(self.proto, bool) or not isinstance(self.proto, int) \
                or not 1 <= self.proto <= 1000:
            raise InvalidAdvert("proto", f"{_show(self.proto)} is not a protocol version")

    def txt(self) -> dict[str, str]:
        """The TXT record's keys and values, in a fixed order (about 70 bytes)."""
        return {"node": self.name, "area": self.area, "port": str(self.port), "fp": self.fp,
                "proto": str(self.proto)}


@dataclass(frozen=True)
class Found:
    """A peer seen on the network; its addresses best first (:func:`order_addresses`).

    ``last_seen`` is the clock's time when the advert was first seen or last
    changed: python-zeroconf reports changes, not every refresh of a record.
    """

    name: str
    area: str
    port: int
    fp: str
    proto: int
    addresses: tuple[str, ...]
    last_seen: float


def _show(value: object) -> str:
    """A value for a log line or error: repr, cut short (it may come from anyone)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def service_name(name: str) -> str:
    """The full DNS-SD instance name of a node: ``{name}._bart-mesh._tcp.local.``."""
    return f"{name}.{SERVICE_TYPE}"


def instance_of(name: str) -> str | None:
    """The instance label of a full service name of our type, or None for another type."""
    if len(name) <= len(SERVICE_TYPE) + 1 or not name.lower().endswith("." + SERVICE_TYPE):
        return None
    return name[: -len(SERVICE_TYPE) - 1]


def parse_advert(instance: str, properties: Mapping[bytes, bytes | None],
                 srv_port: int | None = None) -> Advert:
    """Check an advert's instance name and TXT record; raise :class:`InvalidAdvert`.

    Keys are matched case-insensitively (RFC 6763 §6.4) and keys we do not
    know are allowed (a newer node may add some). ``srv_port``, when given,
    must equal the TXT ``port``. A well-formed advert of a protocol version
    not in :data:`SUPPORTED_PROTOS` raises :class:`UnsupportedProto`.

    >>> parse_advert("escamp-zandloper", {b"node": b"escamp-zandloper", b"area": b"ESC-01",
    ...     b"port": b"8884", b"fp": b"QX7K-3MFA-P2RT", b"proto": b"1"}, 8884).area
    'ESC-01'
    """
    if not SLUG.fullmatch(instance):
        raise InvalidAdvert("name", f"{_show(instance)} is not a node name (slug, ≤ 63)")
    txt: dict[str, str] = {}
    for raw_key, raw_value in properties.items():
        try:
            key = raw_key.decode("ascii").lower()
        except UnicodeDecodeError:
            continue  # not one of ours: unknown keys are allowed
        if key not in TXT_KEYS or key in txt:
            continue
        if raw_value is None:
            raise InvalidAdvert(key, "has no value")
        try:
            txt[key] = raw_value.decode("ascii")
        except UnicodeDecodeError:
            raise InvalidAdvert(key, f"{_show(raw_value)} is not ASCII") from None
    missing = [key for key in TXT_KEYS if key not in txt]
    if missing:
        raise InvalidAdvert(missing[0], "missing from the TXT record")
    if txt["node"] != instance:
        raise InvalidAdvert("node", f"{_show(txt['node'])} is not the instance name "
                                    f"{_show(instance)}")
    if not _PORT.fullmatch(txt["port"]):
        raise InvalidAdvert("port", f"{_show(txt['port'])} is not a decimal port")
    if not _PROTO.fullmatch(txt["proto"]):
        raise InvalidAdvert("proto", f"{_show(txt['proto'])} is not a decimal version")
    advert = Advert(name=txt["node"], area=txt["area"], port=int(txt["port"]), fp=txt["fp"],
                    proto=int(txt["proto"]))
    if srv_port is not None and srv_port != advert.port:
        raise InvalidAdvert("port", f"TXT port {advert.port} differs from SRV port {srv_port}")
    if advert.proto not in SUPPORTED_PROTOS:
        raise UnsupportedProto("proto", f"mesh protocol {advert.proto} is not spoken here "
                                        f"(speaks {sorted(SUPPORTED_PROTOS)})")
    return advert


LocalInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def order_addresses(addresses: Iterable[str],
                    local: Sequence[LocalInterface] = ()) -> tuple[str, ...]:
    """A peer's addresses to dial, best first: unique, well formed, at most MAX_ADDRESSES.

    ``local`` is this host's own interfaces (address and prefix). IPv4 comes
    before IPv6; within each, addresses on a network this host is on come
    first and loopback last. An address this host has itself (loopback
    aside) is dropped: it cannot reach the peer — every node with a hotspot
    has 10.42.0.1, and advertises it unless its interfaces are chosen.

    >>> order_addresses(["10.42.0.1", "fd00::5", "192.168.1.7", "172.17.0.1"],
    ...                 [ipaddress.ip_interface("10.42.0.1/24"),
    ...                  ipaddress.ip_interface("192.168.1.20/24")])
    ('192.168.1.7', '172.17.0.1', 'fd00::5')
    """
    own = {i.ip for i in local if not i.ip.is_loopback}
    networks = [i.network for i in local if not i.ip.is_loopback]
    ranked: dict[str, tuple[int, bool, bool, int]] = {}
    for text in addresses:
        try:
            addr = ipaddress.ip_address(text)  # keeps a scope (fe80::1%eth0): needed to dial
            bare = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            continue
        if bare in own:
            continue
        on_link = any(bare.version == net.version and bare in net for net in networks)
        ranked.setdefault(str(addr), (bare.version, bare.is_loopback, not on_link, int(bare)))
    ordered = sorted(ranked, key=lambda text: (ranked[text], text))
    return tuple(ordered[:MAX_ADDRESSES])


def local_interfaces() -> list[LocalInterface]:
    """This host's addresses with their prefixes (read now: DHCP may change them)."""
    found: list[LocalInterface] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            address = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            try:
                found.append(ipaddress.ip_interface(f"{address.split('%', 1)[0]}/"
                                                    f"{ip.network_prefix}"))
            except ValueError:
                continue
    return found


class PeerTable:
    """The peers seen on the network, checked and bounded; no I/O.

    :meth:`update` and :meth:`remove` return whether :attr:`peers` changed
    (a newer ``last_seen`` alone is not a change). While the table holds
    ``max_peers``, new peers are ignored; the caller offers them again later.
    """

    def __init__(self, own_name: str, *, max_peers: int = MAX_PEERS,
                 clock: Callable[[], float] = time.time) -> None:
        self.own_name = own_name
        self.max_peers = max_peers
        self._clock = clock
        self._peers: dict[str, Found] = {}
        self._quiet = QuietLog(log, max_keys=_MAX_QUIET_KEYS)
        #: This host's interfaces: how a peer's addresses are ranked (order_addresses).
        self.local: list[LocalInterface] = []

    @property
    def peers(self) -> dict[str, Found]:
        """A copy of the table: node name → :class:`Found`."""
        return dict(self._peers)

    def ignore(self, instance: str, key: str, reason: str) -> None:
        """Log an ignored advert: once loudly, then quietly."""
        self._quiet.say(f"{instance}\0{key}", "mDNS: ignored advert %s: %s", _show(instance),
                        reason)

    def wanted(self, instance: str) -> bool:
        """Whether an advert of this name is worth resolving (not ours, a slug)."""
        if instance == self.own_name:
            return False
        if not SLUG.fullmatch(instance):
            self.ignore(instance, "name", "the name is not a node name (slug, ≤ 63)")
            return False
        return True

    def update(self, instance: str, properties: Mapping[bytes, bytes | None],
               srv_port: int | None, addresses: Iterable[str]) -> bool:
        """Take a resolved advert: add or refresh the peer, or ignore the advert."""
        if instance == self.own_name:
            return False
        try:
            advert = parse_advert(instance, properties, srv_port)
        except InvalidAdvert as exc:
            self.ignore(instance, exc.key, str(exc))
            return self.remove(instance, "its advert is no longer valid")
        ordered = order_addresses(addresses, self.local)
        if not ordered:
            self.ignore(instance, "addresses", "no usable address")
            return self.remove(instance, "no usable address")
        old = self._peers.get(instance)
        if old is None and len(self._peers) >= self.max_peers:
            self.ignore(instance, "peers", f"more than {self.max_peers} peers")
            return False
        found = Found(name=advert.name, area=advert.area, port=advert.port, fp=advert.fp,
                      proto=advert.proto, addresses=ordered, last_seen=self._clock())
        self._peers[instance] = found
        changed = old is None or _key(old) != _key(found)
        if changed:
            log.info("mesh peer %s %s (area %s, fp %s) at %s port %d",
                     "found" if old is None else "changed", found.name, found.area, found.fp,
                     ", ".join(found.addresses), found.port)
        return changed

    def remove(self, instance: str, why: str) -> bool:
        """Drop a peer (goodbye, no answer, or an advert gone bad)."""
        if self._peers.pop(instance, None) is None:
            return False
        log.info("mesh peer lost: %s (%s)", instance, why)
        return True

    def clear(self) -> None:
        """Forget every peer (discovery stopped)."""
        self._peers.clear()


def _key(found: Found) -> tuple[object, ...]:
    return (found.area, found.port, found.fp, found.proto, found.addresses)


# ---------------------------------------------------------------- I/O shell

PeersCallback = Callable[[dict[str, Found]], None]


def _choose_interfaces(
        interfaces: Sequence[str] | None) -> tuple[list[str] | InterfaceChoice, list[str]]:
    """zeroconf's ``interfaces=`` and the addresses to advertise.

    ``None``: every interface, advertising every IPv4 address but loopback
    (loopback alone when there is nothing else). Otherwise each item is an
    address (IPv4 or IPv6) or an interface name (``eth0``: its IPv4 addresses,
    read once, at start).
    """
    adapters = ifaddr.get_adapters()
    if interfaces is None:
        found = [str(ip.ip) for adapter in adapters for ip in adapter.ips
                 if ip.is_IPv4 and not ipaddress.ip_address(str(ip.ip)).is_loopback]
        return InterfaceChoice.All, list(dict.fromkeys(found)) or ["127.0.0.1"]
    if isinstance(interfaces, str):
        raise DiscoveryError("interfaces must be a list of addresses or interface names")
    chosen: list[str] = []
    for item in interfaces:
        try:
            ipaddress.ip_address(item)
        except ValueError:
            addrs = [str(ip.ip) for adapter in adapters if item in (adapter.name, adapter.nice_name)
                     for ip in adapter.ips if ip.is_IPv4]
            if not addrs:
                raise DiscoveryError(f"interface {item!r}: no such interface, "
                                     "or it has no IPv4 address") from None
            chosen.extend(addrs)
        else:
            chosen.append(item)
    if not chosen:
        raise DiscoveryError("interfaces: an empty list (use None for every interface)")
    chosen = list(dict.fromkeys(chosen))
    return chosen, [a.split("%", 1)[0] for a in chosen]


class Discovery:
    """Advertise this node and browse for peers over mDNS / DNS-SD (asyncio).

    ``on_change`` is called in the event loop with a fresh ``{name: Found}``
    of every peer after each change (found, changed, lost); it must not
    block, and an exception from it is logged, not raised. ``interfaces``:
    addresses or interface names to use, ``None`` for all.

    A peer is lost at once when it says goodbye (it closed). One that
    vanishes (power cut, cable) is lost when its records, of TTL ``ttl``
    seconds, have expired and it does not answer a query for them: every
    ``check_s`` seconds each known advert is read from zeroconf's cache and
    asked for again once expired, so a vanished peer goes at most about
    ``ttl + check_s + 3`` seconds after it last answered. (python-zeroconf's browser alone would
    keep it for at least 1125 s: it raises every PTR TTL to that minimum.)

    :meth:`start` returns once the name has been probed and the advert
    announced (about 2 s); it raises :class:`NameConflict` when another
    responder already has our name and :class:`DiscoveryError` when the
    sockets cannot be opened. :meth:`close` sends goodbyes. Both are
    idempotent; a closed Discovery may be started again.
    """

    def __init__(self, advert: Advert, on_change: PeersCallback | None = None, *,
                 interfaces: Sequence[str] | None = None, ttl: int = DEFAULT_TTL_S,
                 check_s: float = DEFAULT_CHECK_S, max_peers: int = MAX_PEERS,
                 clock: Callable[[], float] = time.time) -> None:
        if not 1 <= ttl <= 4500:
            raise ValueError(f"ttl must be 1..4500 s, not {ttl}")
        if not 0 < check_s <= 3600:
            raise ValueError(f"check_s must be in (0, 3600], not {check_s}")
        if interfaces is not None and isinstance(interfaces, str):
            raise DiscoveryError("interfaces must be a list of addresses or interface names")
        self._advert = advert
        self._on_change = on_change
        self._interfaces = None if interfaces is None else list(interfaces)
        self._ttl = ttl
        self._check_s = check_s
        self._max_peers = max_peers
        self._table = PeerTable(advert.name, max_peers=max_peers, clock=clock)
        self._lock = asyncio.Lock()
        self._aiozc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._sweeper: asyncio.Task[None] | None = None
        # Service names the browser reported and did not remove: what the sweep checks.
        self._known: dict[str, None] = {}
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._quiet = QuietLog(log, max_keys=_MAX_QUIET_KEYS)

    @property
    def advert(self) -> Advert:
        """This node's own advert."""
        return self._advert

    @property
    def peers(self) -> dict[str, Found]:
        """A copy of the peers seen now: node name → :class:`Found`."""
        return self._table.peers

    @property
    def running(self) -> bool:
        """Whether :meth:`start` succeeded and :meth:`close` was not called since."""
        return self._aiozc is not None

    async def __aenter__(self) -> Discovery:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the mDNS sockets, browse, and advertise this node (idempotent)."""
        async with self._lock:
            if self._aiozc is not None:
                return
            zc_interfaces, addresses = _choose_interfaces(self._interfaces)
            self._table.local = local_interfaces()
            try:
                self._aiozc = AsyncZeroconf(interfaces=zc_interfaces)
            except OSError as exc:
                raise DiscoveryError(f"cannot open the mDNS sockets: {exc}") from exc
            ok = False
            try:
                self._browser = AsyncServiceBrowser(self._aiozc.zeroconf, SERVICE_TYPE,
                                                    handlers=[self._on_state_change])
                info = AsyncServiceInfo(
                    SERVICE_TYPE, service_name(self._advert.name), port=self._advert.port,
                    properties=self._advert.txt(), parsed_addresses=addresses,
                    host_ttl=self._ttl, other_ttl=self._ttl)
                announced = await self._aiozc.async_register_service(info)
                await announced
                self._sweeper = asyncio.get_running_loop().create_task(
                    self._sweep(self._aiozc.zeroconf), name="bart-mdns-sweep")
                ok = True
                log.info("mDNS: advertising %s (%s) on %s port %d", self._advert.name,
                         SERVICE_TYPE, ", ".join(addresses), self._advert.port)
            except NonUniqueNameException:
                raise NameConflict(f"another responder already advertises "
                                   f"{service_name(self._advert.name)}") from None
            except (OSError, ZeroconfError) as exc:
                raise DiscoveryError(f"cannot advertise on mDNS: {exc}") from exc
            finally:
                if not ok:
                    await self._shutdown()

    async def close(self) -> None:
        """Stop browsing, send goodbyes and close the sockets (idempotent)."""
        async with self._lock:
            await self._shutdown()

    async def _shutdown(self) -> None:
        tasks = list(self._resolving.values())
        self._resolving.clear()
        if self._sweeper is not None:
            tasks.append(self._sweeper)
            self._sweeper = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        browser, self._browser = self._browser, None
        aiozc, self._aiozc = self._aiozc, None
        try:
            if browser is not None:
                await browser.async_cancel()
            if aiozc is not None:
                await aiozc.async_close()  # goodbyes first, then the sockets
        except Exception:  # closing must finish whatever the network does
            log.warning("mDNS: error while closing", exc_info=True)
        self._known.clear()
        self._table.clear()

    # zeroconf calls this in the event loop, for every PTR of our type that
    # appears, changes (its SRV/TXT/addresses) or goes (goodbye or expiry).
    def _on_state_change(self, zeroconf: Zeroconf, service_type: str, name: str,
                         state_change: ServiceStateChange) -> None:
        try:
            instance = instance_of(name)
            if instance is None:
                return
            if state_change is ServiceStateChange.Removed:
                self._known.pop(name, None)
                task = self._resolving.pop(name, None)
                if task is not None:
                    task.cancel()
                if self._table.remove(instance, "goodbye, or its records expired"):
                    self._changed()
                return
            if not self._table.wanted(instance):
                return
            if name not in self._known:
                if len(self._known) >= 4 * self._max_peers:
                    self._table.ignore(instance, "known", "too many adverts on the network")
                    return
                self._known[name] = None
            self._check(zeroconf, instance, name)
        except Exception:  # a bad packet must never stop discovery
            self._quiet.say(f"handler\0{name}", "mDNS: error handling %s", _show(name),
                            exc_info=True)

    def _check(self, zeroconf: Zeroconf, instance: str, name: str) -> None:
        """Take an advert from the cache when its records are fresh, else ask for them."""
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if info.load_from_cache(zeroconf):
            self._take(instance, info)
        elif name not in self._resolving:  # a running request reads the cache when done
            self._resolving[name] = asyncio.get_running_loop().create_task(
                self._resolve(zeroconf, instance, name),
                name=f"bart-mdns-resolve-{instance[:40]}")

    def _take(self, instance: str, info: AsyncServiceInfo) -> None:
        addresses = (info.parsed_scoped_addresses(IPVersion.V4Only)
                     + info.parsed_scoped_addresses(IPVersion.V6Only))
        if self._table.update(instance, info.properties, info.port, addresses):
            self._changed()

    async def _resolve(self, zeroconf: Zeroconf, instance: str, name: str) -> None:
        try:
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            if await info.async_request(zeroconf, RESOLVE_TIMEOUT_MS):
                self._take(instance, info)
            elif self._table.remove(instance, f"no answer within {RESOLVE_TIMEOUT_MS} ms "
                                              "after its records expired"):
                self._changed()
            else:
                log.debug("mDNS: %s did not answer within %d ms", _show(name),
                          RESOLVE_TIMEOUT_MS)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._quiet.say(f"resolve\0{name}", "mDNS: error resolving %s", _show(name),
                            exc_info=True)
        finally:
            if self._resolving.get(name) is asyncio.current_task():
                del self._resolving[name]

    async def _sweep(self, zeroconf: Zeroconf) -> None:
        # The browser reports a PTR's goodbye, not a peer that vanished: its SRV,
        # TXT and address records (our ``ttl``) expire long before its PTR.
        while True:
            await asyncio.sleep(self._check_s)
            try:
                self._table.local = local_interfaces()
            except OSError:
                log.debug("mDNS: cannot read this host's interfaces", exc_info=True)
            for name in list(self._known):
                try:
                    instance = instance_of(name)
                    if instance is not None:
                        self._check(zeroconf, instance, name)
                except Exception:
                    self._quiet.say(f"sweep\0{name}", "mDNS: error checking %s", _show(name),
                                    exc_info=True)

    def _changed(self) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(self._table.peers)
        except Exception:
            self._quiet.say("on_change", "mDNS: the on_change callback failed",
                            exc_info=True)
