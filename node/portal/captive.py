"""Captive portal: the node answers the "am I online?" probes of phones and laptops.

A phone that joins the node's Wi-Fi asks a well-known URL whether it is
online (Android ``/generate_204``, Apple ``/hotspot-detect.html``, Windows
``/connecttest.txt`` …). dnsmasq answers every name with the node's address
and nftables sends port 80 here, so those requests arrive at this app with
the probe's own ``Host``. Routing on the ``Host`` header:

* a request for one of the node's own names (its address, host name,
  ``localhost``, an mDNS ``.local`` name, a single-label name) is the portal
  itself and passes on untouched;
* a request for any other host is answered here: a ``302`` to the portal
  (``Cache-Control: no-store``), which makes the phone open its sign-in
  sheet on the portal;
* once the resident is *done* — made a report (a POST that succeeded), or
  tapped "Klaar" (``GET /klaar``, linked on every page) — that client's
  probes get the exact answer its OS expects from the internet ("signed in":
  ``204`` for Android, Apple's ``Success`` page, ``Microsoft Connect Test``
  …) for ``captive_grace_s`` seconds, so that the sheet does not pop up again
  and iOS does not leave the network when the sheet is closed. Not on merely
  opening a page: Android's sign-in sheet probes again after each page load
  and closes itself as soon as the answer says "online", which would take
  the portal away from a resident who is still reading or typing. Other
  hosts keep landing on the portal: there is no internet behind this
  network.

``GET /api/v1/captive`` is the RFC 8908 captive-portal API
(``application/captive+json``) for clients that use it instead of probes.

The decisions are pure (:func:`parse_host`, :func:`find_probe`,
:class:`CaptiveClients`, :meth:`CaptivePolicy.decide`);
:class:`CaptivePortal` is the thin ASGI shell in front of the app.

>>> parse_host(b"ConnectivityCheck.GStatic.com.:80")
'connectivitycheck.gstatic.com'
>>> find_probe("captive.apple.com", "/hotspot-detect.html").family
'apple'
"""

from __future__ import annotations

import base64
import hashlib
import html
import ipaddress
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import NodeSettings
from .i18n import Catalogue, negotiate

API_PATH: Final = "/api/v1/captive"
CAPTIVE_JSON: Final = "application/captive+json"
#: Clients remembered at most (a hotspot's DHCP range is a few hundred).
MAX_CLIENTS: Final = 4096
#: Longest ``Host`` header taken apart (a DNS name is at most 253 characters).
MAX_HOST: Final = 300
#: "Klaar" (done): the link on every portal page that signs the phone in.
DONE_PATH = "/klaar"

#: Scope key that marks a request an outer :class:`CaptivePortal` already handled.
SCOPE_KEY: Final = "bart.captive"

_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")

Family = Literal["android", "apple", "windows", "firefox", "networkmanager", "ubuntu",
                 "fedora"]


@dataclass(frozen=True, slots=True)
class Probe:
    """What one OS asks and what it must get back to believe it is online."""

    family: Family
    status: int
    body: bytes
    content_type: str
    #: Always answered with the portal (Windows opens ``/redirect`` in a browser).
    always_portal: bool = False
    headers: tuple[tuple[bytes, bytes], ...] = ()


_ANDROID = Probe("android", 204, b"", "")
_APPLE = Probe("apple", 200,
               b"<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>\n",
               "text/html")
_WINDOWS_CONNECT = Probe("windows", 200, b"Microsoft Connect Test", "text/plain")
_WINDOWS_NCSI = Probe("windows", 200, b"Microsoft NCSI", "text/plain")
_WINDOWS_REDIRECT = Probe("windows", 302, b"", "", always_portal=True)
_FIREFOX_SUCCESS = Probe("firefox", 200, b"success\n", "text/plain")
# Firefox compares this body byte for byte (captivedetect.canonicalContent).
_FIREFOX_CANONICAL = Probe(
    "firefox", 200,
    b'<meta http-equiv="refresh" content="0;url=https://support.mozilla.org/kb/captive-portal"/>',
    "text/html")
# NetworkManager checks that the body starts with its expected text; older
# versions look at this header instead.
_NM = Probe("networkmanager", 200, b"NetworkManager is online\n", "text/plain",
            headers=((b"x-networkmanager-status", b"online"),))
_UBUNTU = Probe("ubuntu", 204, b"", "")  # Ubuntu's NetworkManager expects an empty 204
_FEDORA = Probe("fedora", 200, b"OK\n", "text/plain")

_ANDROID_HOSTS = ("connectivitycheck.gstatic.com", "www.gstatic.com",
                  "connectivitycheck.android.com", "clients1.google.com", "clients3.google.com",
                  "www.google.com", "play.googleapis.com", "www.androidbak.net")
_APPLE_HOSTS = ("captive.apple.com", "www.apple.com", "www.appleiphonecell.com",
                "www.itools.info", "www.ibook.info", "www.airport.us", "www.thinkdifferent.us")
_WINDOWS_HOSTS = ("www.msftconnecttest.com", "msftconnecttest.com", "ipv6.msftconnecttest.com")
_NCSI_HOSTS = ("www.msftncsi.com", "msftncsi.com", "ipv6.msftncsi.com")


def _table() -> dict[tuple[str, str], Probe]:
    table: dict[tuple[str, str], Probe] = {}
    for host in _ANDROID_HOSTS:
        table[host, "/generate_204"] = table[host, "/gen_204"] = _ANDROID
    for host in _APPLE_HOSTS:
        table[host, "/hotspot-detect.html"] = _APPLE
        table[host, "/library/test/success.html"] = _APPLE
    table["captive.apple.com", "/"] = _APPLE
    for host in _WINDOWS_HOSTS:
        table[host, "/connecttest.txt"] = _WINDOWS_CONNECT
        table[host, "/redirect"] = _WINDOWS_REDIRECT
    for host in _NCSI_HOSTS:
        table[host, "/ncsi.txt"] = _WINDOWS_NCSI
        table[host, "/redirect"] = _WINDOWS_REDIRECT
    table["detectportal.firefox.com", "/success.txt"] = _FIREFOX_SUCCESS
    table["detectportal.firefox.com", "/canonical.html"] = _FIREFOX_CANONICAL
    table["nmcheck.gnome.org", "/check_network_status.txt"] = _NM
    table["network-test.debian.org", "/nm"] = _NM
    table["ping.archlinux.org", "/nm-check.txt"] = _NM
    table["www.archlinux.org", "/check_network_status.txt"] = _NM
    table["connectivity-check.ubuntu.com", "/"] = _UBUNTU
    table["fedoraproject.org", "/static/hotspot.txt"] = _FEDORA
    return table


#: (host, path) of every probe we know, with the answer that means "online".
PROBES: Final[Mapping[tuple[str, str], Probe]] = _table()
#: Probe paths that some vendors ask on hosts of their own (Samsung, Xiaomi,
#: Huawei use ``/generate_204`` on their own names): recognised on any
#: foreign host. ``/redirect`` is left out: it is a page a person sees.
PROBE_PATHS: Final[Mapping[str, Probe]] = {
    "/generate_204": _ANDROID,
    "/gen_204": _ANDROID,
    "/hotspot-detect.html": _APPLE,
    "/library/test/success.html": _APPLE,
    "/connecttest.txt": _WINDOWS_CONNECT,
    "/ncsi.txt": _WINDOWS_NCSI,
    "/success.txt": _FIREFOX_SUCCESS,
    "/canonical.html": _FIREFOX_CANONICAL,
    "/check_network_status.txt": _NM,
    "/nm-check.txt": _NM,
}


def parse_host(raw: bytes | None) -> str | None:
    """The host name of a ``Host`` header: lower case, without port or final dot.

    ``None`` for a header that is not a plain DNS name or IP address (or is
    too long); an empty header gives ``""``.

    >>> parse_host(b"[fe80::1]:8080"), parse_host(b"10.42.0.1"), parse_host(b"a b")
    ('fe80::1', '10.42.0.1', None)
    """
    if raw is None:
        return ""
    if len(raw) > MAX_HOST:
        return None
    try:
        text = raw.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return None
    if text.startswith("["):
        inner, sep, rest = text[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        try:
            return str(ipaddress.IPv6Address(inner))
        except ValueError:
            return None
    name, sep, port = text.rpartition(":")
    if sep:
        if not port.isdigit() or len(port) > 5:
            return None
        text = name
    text = text.rstrip(".")
    if not text:
        return ""
    if len(text) > 253 or not all(_LABEL.match(label) for label in text.split(".")):
        return None
    return text


def find_probe(host: str, path: str) -> Probe | None:
    """The probe a request for ``host`` + ``path`` is, if any."""
    return PROBES.get((host, path)) or PROBES.get((host, path.rstrip("/") or "/")) \
        or PROBE_PATHS.get(path)


def is_own_name(host: str, own: frozenset[str]) -> bool:
    """True for the node's own names: configured names, mDNS, single-label names."""
    return host in own or "." not in host or host.endswith(".local")


class CaptiveClients:
    """Clients that opened the portal, each remembered for ``grace_s`` seconds.

    Bounded: at most ``max_clients`` addresses; the oldest go first, and
    expired entries are dropped as new ones arrive.

    >>> now = [0.0]
    >>> clients = CaptiveClients(60, clock=lambda: now[0], max_clients=2)
    >>> clients.mark("10.42.0.20"); clients.remaining("10.42.0.20")
    60.0
    >>> now[0] = 61.0; clients.remaining("10.42.0.20") is None
    True
    """

    def __init__(self, grace_s: float, *, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = MAX_CLIENTS) -> None:
        self.grace_s = grace_s
        self.clock = clock
        self.max_clients = max_clients
        self._until: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def mark(self, client: str) -> None:
        """``client`` opened the portal now: its probes say "online" for a while."""
        if self.grace_s <= 0:
            return
        now = self.clock()
        self._until.pop(client, None)
        self._until[client] = now + self.grace_s
        # Entries are in expiry order (all get the same grace): drop from the front.
        while self._until:
            oldest, until = next(iter(self._until.items()))
            if until > now and len(self._until) <= self.max_clients:
                break
            del self._until[oldest]

    def remaining(self, client: str) -> float | None:
        """Seconds left for ``client``, or ``None`` when it has not opened the portal."""
        until = self._until.get(client)
        if until is None:
            return None
        left = until - self.clock()
        if left <= 0:
            del self._until[client]
            return None
        return left


Decision = Literal["pass", "portal", "online"]


@dataclass(frozen=True, slots=True)
class CaptivePolicy:
    """Which names are the node's own, and where the portal is.

    ``portal_address`` is the hotspot address phones reach the node on (port
    80 there); a request that arrived on another address is sent to the
    address and port it came in on, so the node also works on a LAN.
    ``https_url`` is the portal over HTTPS when it is set up
    (``hotspot.https_url``): the RFC 8908 API then names it as the portal.
    """

    own_names: frozenset[str]
    portal_address: str | None = None
    fallback: tuple[str, int] = ("127.0.0.1", 8080)
    https_url: str | None = None

    @classmethod
    def from_settings(cls, settings: NodeSettings) -> CaptivePolicy:
        """The policy for a node's settings (hotspot address and names included)."""
        names = {"localhost", "127.0.0.1", "::1", f"{settings.name}.local"}
        wildcard = settings.http_host in ("0.0.0.0", "::", "")  # noqa: S104 - not binding
        for value in (settings.http_host if not wildcard else "", settings.point_host):
            host = parse_host(value.encode()) if value else None
            if host:
                names.add(host)
        hotspot = settings.hotspot
        address = str(hotspot.address.ip)
        names.add(address)
        https_url = hotspot.https_url.rstrip("/") + "/" if hotspot.https_url else None
        if https_url:
            # The name phones were given by DHCP option 114 for the API.
            name = parse_host((urlsplit(https_url).hostname or "").encode())
            if name:
                names.add(name)
        fallback_host = "127.0.0.1" if wildcard else settings.http_host
        return cls(own_names=frozenset(names), portal_address=address,
                   fallback=(fallback_host, settings.http_port), https_url=https_url)

    def portal_url(self, server: tuple[str, int | None] | None) -> str:
        """The portal's URL as seen by a client whose connection reached ``server``."""
        if self.portal_address and (server is None or server[0] == self.portal_address):
            return f"http://{self.portal_address}/"
        host, port = server if server and server[1] else self.fallback
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}/" if port == 80 else f"http://{host}:{port}/"

    def decide(self, host: str | None, path: str, server_host: str | None,
               online: bool) -> tuple[Decision, Probe | None]:
        """What to do with a request for ``host`` + ``path``.

        ``online`` tells whether the client opened the portal within its grace.
        """
        if host is not None and (host == "" or host == server_host
                                 or is_own_name(host, self.own_names)):
            return "pass", None
        probe = find_probe(host, path) if host else None
        if probe is not None and online and not probe.always_portal:
            return "online", probe
        return "portal", probe


#: The redirect body's only style (a link big enough for a thumb), allowed by its hash.
_STYLE: Final = ("body{margin:16px;font:18px/1.45 system-ui,sans-serif}"
                 "a{display:inline-block;min-height:48px;padding:12px 0;font-weight:700}")
_STYLE_HASH: Final = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
_HEADERS: Final = ((b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"),
                   (b"referrer-policy", b"no-referrer"),
                   (b"content-security-policy",
                    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; "
                    "frame-ancestors 'none'".encode()))


class CaptivePortal:
    """ASGI middleware: probes and foreign hosts answered here; the portal passes on.

    One instance may stand in front of another (``create_asgi`` puts one in
    front of the lean report handler); the inner one then lets the request
    pass. Both share one :class:`CaptiveClients` table.
    """

    def __init__(self, app: ASGIApp, *, policy: CaptivePolicy, clients: CaptiveClients,
                 catalogue: Catalogue) -> None:
        self.app = app
        self.policy = policy
        self.clients = clients
        self.catalogue = catalogue
        # The same few Host headers arrive again and again: parse each once.
        self._hosts: dict[bytes | None, str | None] = {}

    def _host(self, raw: bytes | None) -> str | None:
        host = self._hosts.get(raw, "\0")
        if host == "\0":
            host = parse_host(raw)
            if len(self._hosts) >= 256:
                self._hosts.clear()
            self._hosts[raw] = host
        return host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get(SCOPE_KEY):
            await self.app(scope, receive, send)
            return
        scope[SCOPE_KEY] = True
        raw_host: bytes | None = None
        accept_language: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"host":
                raw_host = value
            elif name == b"accept-language":
                accept_language = value
        server = scope.get("server")
        client = scope.get("client")
        address = client[0] if client else ""
        host = self._host(raw_host)
        remaining = self.clients.remaining(address) if address else None
        decision, probe = self.policy.decide(host, scope["path"],
                                             server[0] if server else None,
                                             remaining is not None)
        if decision == "pass":
            if scope["path"] == DONE_PATH and scope["method"] in ("GET", "HEAD") and address:
                # "Klaar": the resident is done in the sign-in window; from now on
                # the probes say online and the phone may close the window.
                self.clients.mark(address)
                await _answer(send, 303, b"", "text/plain; charset=utf-8",
                              scope["method"] == "HEAD", ((b"location", b"/"),))
                return
            if scope["method"] == "POST" and address:
                await self.app(scope, receive, self._marking(send, address))
            else:
                await self.app(scope, receive, send)
            return
        head = scope["method"] == "HEAD"
        if decision == "online" and probe is not None:
            await _answer(send, probe.status, probe.body, probe.content_type, head,
                          probe.headers)
            return
        url = self.policy.portal_url(server)
        lang = negotiate(accept_language.decode("latin-1") if accept_language else None,
                         None, None)
        await _answer(send, 302, self._redirect_body(url, lang), "text/html; charset=utf-8",
                      head, ((b"location", url.encode()),))

    def _marking(self, send: Send, address: str) -> Send:
        """Wrap ``send``: a POST that succeeded (a report made) signs the client in."""
        async def marking(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                self.clients.mark(address)
            await send(message)

        return marking

    def _redirect_body(self, url: str, lang: str) -> bytes:
        t = self.catalogue.translator(lang)
        link = html.escape(url)
        title = html.escape(t("captive.title"))
        return (f'<!DOCTYPE html><html lang="{t.lang}" dir="{t.dir}"><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width">'
                f"<title>{title}</title><style>{_STYLE}</style>"
                f"<main><h1>{title}</h1><p>{html.escape(t('captive.text'))}</p>"
                f'<p><a href="{link}">{html.escape(t("captive.link"))}</a></p></main></html>\n'
                ).encode()


async def _answer(send: Send, status: int, body: bytes, content_type: str, head: bool,
                  extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
    headers = [*_HEADERS, (b"content-length", str(len(body)).encode()), *extra]
    if content_type:
        headers.append((b"content-type", content_type.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


# -- RFC 8908 API ---------------------------------------------------------------

router = APIRouter()


def captive_state(policy: CaptivePolicy, clients: CaptiveClients, client: str | None,
                  server: tuple[str, int | None] | None) -> dict[str, Any]:
    """The RFC 8908 API object for ``client`` (pure: the route only serialises it)."""
    url = policy.https_url or policy.portal_url(server)
    remaining = clients.remaining(client) if client else None
    state: dict[str, Any] = {"captive": remaining is None, "user-portal-url": url,
                             "venue-info-url": url, "can-extend-session": True}
    if remaining is not None:
        state["seconds-remaining"] = int(remaining)
    return state


@router.get(API_PATH, summary="Captive-portal API (RFC 8908)",
            response_description="application/captive+json")
async def captive_api(request: Request) -> JSONResponse:
    """Whether this device still counts as "captive" (has not opened the portal within
    ``captive_grace_s``), and where the portal is (RFC 8908)."""
    state = captive_state(request.app.state.captive_policy, request.app.state.captive_clients,
                          request.client.host if request.client else None,
                          request.scope.get("server"))
    return JSONResponse(state, media_type=CAPTIVE_JSON, headers={"Cache-Control": "no-store"})
