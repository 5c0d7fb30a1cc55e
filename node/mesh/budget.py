"""How many public events of one origin a node takes from others (docs/mesh.md,
"A peer's rate").

A member node whose keys were stolen signs valid events; nothing else stops it
from flooding its area with them until it is revoked. Every node therefore
keeps, per origin, a token bucket for the events of that origin it takes from
peers (the mesh's live relay and neighbours' events on its own Mosquitto:
``live``) and a second, much deeper one for what catch-up brings
(``catchup``). An event beyond its bucket is refused: not stored, not shown,
not passed on, counted (``bart_node_peer_events_over_budget_total``); the gap
it leaves is filled by a later catch-up once the bucket has refilled.

The live bucket is split by class: a panic-button alarm (an ``alert`` with
``source: button``) never waits behind an origin's other events, so a storm
of residents' warnings on an honest node cannot hold back its alarms (the
catch-up bucket is one, deep enough for both).
Central's origin is exempt. Only events that verified are charged (a forged
event under an honest origin's name costs that origin nothing); an empty
bucket is checked first, so that a flood is refused without its signatures
being checked.

Used on the event loop (relay, MQTT) and on catch-up's checking thread:
one lock, held for a few arithmetic operations.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sync import Event

from ..config import MeshSettings

Path = Literal["live", "catchup"]
#: How a refused event came, the ``via`` label of the metric.
Via = Literal["mesh", "catchup", "mqtt"]


def event_class(event: Event, path: Path) -> str:
    """Live: ``alarm`` for a panic-button alarm, else ``other`` (each has its own
    bucket); catch-up: ``all`` (one bucket)."""
    if path == "catchup":
        return "all"
    if event.kind == "alert" and event.body.get("source") == "button":
        return "alarm"
    return "other"


@dataclass
class _Bucket:
    tokens: float
    at: float


class OriginBudget:
    """Token buckets per (origin, class, path); see the module docstring.

    >>> t = [0.0]
    >>> budget = OriginBudget(rate_per_min=30, burst=2, catchup_burst=5, clock=lambda: t[0])
    >>> from sync import KeyPair, make_event
    >>> body = {"source": "team", "category": "suspicious", "severity": "moderate",
    ...         "title": "T", "text": "", "areas": []}
    >>> e = make_event(KeyPair.generate(), origin="n", stream="public", seq=1, kind="alert",
    ...                ts=1_800_000_000_000, body=body)
    >>> [budget.take(e, "live") for _ in range(3)], budget.allows(e, "catchup")
    ([True, True, False], True)
    >>> t[0] = 2.0  # 30 a minute: one back after 2 s
    >>> budget.take(e, "live"), budget.take(e, "live")
    (True, False)
    """

    def __init__(self, *, rate_per_min: float, burst: int, catchup_burst: int,
                 exempt: Callable[[str], bool] = lambda _origin: False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate_per_s = rate_per_min / 60.0
        self.depth: dict[Path, int] = {"live": burst, "catchup": catchup_burst}
        self.exempt = exempt
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str, Path], _Bucket] = {}
        #: (origin, via) -> events refused for rate since the node started.
        self.refused: dict[tuple[str, str], int] = {}

    @classmethod
    def of(cls, mesh: MeshSettings, exempt: Callable[[str], bool]) -> OriginBudget:
        """The budget ``[mesh]`` in node.toml sets."""
        return cls(rate_per_min=mesh.origin_rate_per_min, burst=mesh.origin_burst,
                   catchup_burst=mesh.catchup_burst, exempt=exempt)

    def _tokens(self, key: tuple[str, str, Path], now: float) -> float:
        bucket = self._buckets.get(key)
        depth = self.depth[key[2]]
        if bucket is None:
            return float(depth)
        return min(float(depth), bucket.tokens + (now - bucket.at) * self.rate_per_s)

    def allows(self, event: Event, path: Path) -> bool:
        """Whether ``event`` would be taken now (nothing is charged or remembered:
        call before verifying, for any origin)."""
        if self.exempt(event.origin):
            return True
        with self._lock:
            return self._tokens((event.origin, event_class(event, path), path), self.clock()) >= 1.0

    def take(self, event: Event, path: Path) -> bool:
        """Charge a verified, new ``event``; False (nothing charged) when over budget."""
        if self.exempt(event.origin):
            return True
        key = (event.origin, event_class(event, path), path)
        with self._lock:
            now = self.clock()
            tokens = self._tokens(key, now)
            if tokens < 1.0:
                return False
            self._buckets[key] = _Bucket(tokens - 1.0, now)
            return True

    def count_refused(self, event: Event, via: Via) -> int:
        """Count a refusal for rate; the number refused so far of this origin and way."""
        key = (event.origin, via)
        with self._lock:
            n = self.refused[key] = self.refused.get(key, 0) + 1
        return n

    def refused_counts(self) -> dict[tuple[str, str], int]:
        """A copy of the refusals, for ``/metrics``."""
        with self._lock:
            return dict(self.refused)
