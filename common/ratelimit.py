"""The abuse-limit policy of node and central, in one place (pure; no I/O).

One set of numbers, so that the two sides cannot drift (issue 17, "abuse
limits"):

* **lookups** (a receipt code, a report's status): a token bucket per client
  address, :data:`LOOKUP_BURST` at once, refilled at
  :data:`LOOKUPS_PER_MINUTE`; then 429 (:class:`RateLimiter`);
* **logins** (team on the node, staff at central): per name
  :data:`LOGIN_MAX_FAILURES` wrong passwords lock it for
  :func:`lockout_seconds`; per client address :data:`LOGIN_CLIENT_MAX_FAILURES`
  failures within :data:`LOGIN_CLIENT_WINDOW_S` and it waits before any
  password is checked. Every answer costs exactly one password hash
  (``common.passwords.verify_login``), whoever the name belongs to;
* **connections** (the node's HTTP server, ``node/server.py``): at most
  :data:`MAX_CONNECTIONS_PER_CLIENT` open connections and
  :data:`MAX_STREAMS_PER_CLIENT` live streams per client address,
  :data:`MAX_STREAMS` streams in all; a request's headers must arrive within
  :data:`HEADER_TIMEOUT_S` and its body within :data:`BODY_TIMEOUT_S`;
* **proxies**: ``X-Forwarded-For`` counts only from an address in the
  ``trusted_proxies`` setting (:func:`check_trusted_proxies`); by default from
  none, so a client can never choose the address its limits are counted under.

>>> limiter = RateLimiter(LOOKUPS_PER_MINUTE, burst=LOOKUP_BURST, clock=lambda: 0.0)
>>> sum(limiter.allow("10.0.0.7") for _ in range(40))
30
>>> check_trusted_proxies(["127.0.0.1", " 10.0.0.0/8 "])
['127.0.0.1', '10.0.0.0/8']
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Final

#: Receipt and status lookups per client address: a burst of 30, then one a second.
LOOKUPS_PER_MINUTE: Final = 60
LOOKUP_BURST: Final = 30

#: Wrong passwords per name before it is locked (15 min, doubling, at most 24 h).
LOGIN_MAX_FAILURES: Final = 5
LOGIN_LOCKOUT_S: Final = 15 * 60
LOGIN_LOCKOUT_MAX_S: Final = 24 * 3600
#: A name's failures are forgotten after a day without one.
LOGIN_FORGET_FAILURES_S: Final = 24 * 3600
#: Failed logins per client address within the window before it must wait.
LOGIN_CLIENT_MAX_FAILURES: Final = 20
LOGIN_CLIENT_WINDOW_S: Final = 10 * 60

#: Open HTTP connections per client address. A browser opens at most 6 per host,
#: plus a live stream or two and the phone's captive-portal probes.
MAX_CONNECTIONS_PER_CLIENT: Final = 32
#: Live streams (Server-Sent Events) per client address: a few tabs.
MAX_STREAMS_PER_CLIENT: Final = 4
#: Live streams in all (~40 KB each on a node: 20 MiB at the cap).
MAX_STREAMS: Final = 500
#: Seconds a client has to send a request's headers, and then its body.
HEADER_TIMEOUT_S: Final = 10.0
BODY_TIMEOUT_S: Final = 30.0
#: Trusted proxies at most (addresses or networks).
MAX_TRUSTED_PROXIES: Final = 64


def lockout_seconds(lockouts: int) -> float:
    """How long the ``lockouts``-th lockout in a row lasts: 15 min, doubling, ≤ 24 h.

    >>> [int(lockout_seconds(n) // 60) for n in (1, 2, 3, 8)]
    [15, 30, 60, 1440]
    """
    return float(min(LOGIN_LOCKOUT_S * 2 ** min(max(lockouts, 1) - 1, 16),
                     LOGIN_LOCKOUT_MAX_S))


def check_trusted_proxies(values: Iterable[str]) -> list[str]:
    """The ``trusted_proxies`` setting, checked: IP addresses or networks (CIDR).

    Raises ValueError in words for anything else (a host name, ``*``): a
    wildcard would let every client choose its own address.

    >>> check_trusted_proxies(["*"])
    Traceback (most recent call last):
    ...
    ValueError: trusted_proxies: '*' is not an IP address or network (e.g. 127.0.0.1 or 10.0.0.0/8)
    """
    out: list[str] = []
    for raw in values:
        text = str(raw).strip()
        try:
            if "/" in text:
                ipaddress.ip_network(text, strict=False)
            else:
                ipaddress.ip_address(text)
        except ValueError:
            raise ValueError(f"trusted_proxies: {text[:60]!r} is not an IP address or "
                             "network (e.g. 127.0.0.1 or 10.0.0.0/8)") from None
        out.append(text)
    if len(out) > MAX_TRUSTED_PROXIES:
        raise ValueError(f"trusted_proxies: at most {MAX_TRUSTED_PROXIES} entries")
    return out


class RateLimiter:
    """Token bucket per client address; bounded number of tracked clients."""

    def __init__(self, per_minute: int, *, burst: int | None = None,
                 clock: Callable[[], float] = time.monotonic, max_clients: int = 4096) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst if burst is not None else max(per_minute // 2, 1))
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @classmethod
    def lookups(cls, *, enabled: bool = True) -> RateLimiter:
        """The lookup policy (receipt codes, status): 30 at once, then 60 a minute."""
        return cls(LOOKUPS_PER_MINUTE if enabled else 0, burst=LOOKUP_BURST)

    def allow(self, client: str) -> bool:
        """Take one token for ``client``; False when it has none left."""
        if self.rate <= 0:
            return True
        now = self.clock()
        tokens, last = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        ok = tokens >= 1.0
        self._buckets[client] = (tokens - 1.0 if ok else tokens, now)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return ok

    def refund(self, client: str) -> None:
        """Give back the token :meth:`allow` took for a request that did not count
        (a report refused for what was in it: a resident correcting the form must
        not run out of reports); never above the burst."""
        if self.rate <= 0 or client not in self._buckets:
            return
        tokens, last = self._buckets[client]
        self._buckets[client] = (min(self.burst, tokens + 1.0), last)
