"""The per-origin budget of peers' public events (node/mesh/budget.py; docs/mesh.md,
"A peer's rate"), with a clock the test moves."""

from __future__ import annotations

from typing import Any

from node.config import MeshSettings
from node.mesh.budget import OriginBudget
from sync import Event, KeyPair, make_event

KEYS = KeyPair.generate()
TS = 1_800_000_000_000


def _alert(origin: str = "node-x", seq: int = 1, source: str = "team") -> Event:
    body: dict[str, Any] = {"source": source, "category": "suspicious", "severity": "moderate",
                            "title": "T", "text": "", "areas": []}
    return make_event(KEYS, origin=origin, stream="public", seq=seq + 1, kind="alert", ts=TS,
                      body=body)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _budget(clock: Clock, **kw: Any) -> OriginBudget:
    return OriginBudget(**{"rate_per_min": 30, "burst": 60, "catchup_burst": 20_000,
                           "clock": clock, **kw})


def test_the_defaults_are_the_documented_numbers() -> None:
    m = MeshSettings()
    assert (m.origin_rate_per_min, m.origin_burst, m.catchup_burst) == (30.0, 60, 20_000)


def test_sixty_at_once_then_thirty_a_minute() -> None:
    clock = Clock()
    budget = _budget(clock)
    assert all(budget.take(_alert(seq=i), "live") for i in range(60))
    assert not budget.take(_alert(seq=61), "live")
    clock.t += 60.0
    assert sum(budget.take(_alert(seq=62 + i), "live") for i in range(100)) == 30
    clock.t += 3600.0  # never more than the depth
    assert sum(budget.take(_alert(seq=200 + i), "live") for i in range(100)) == 60


def test_alarms_have_their_own_live_bucket_and_origins_are_apart() -> None:
    clock = Clock()
    budget = _budget(clock)
    assert sum(budget.take(_alert(seq=i), "live") for i in range(200)) == 60
    assert all(budget.take(_alert(seq=300 + i, source="button"), "live") for i in range(60))
    assert not budget.take(_alert(seq=400, source="button"), "live")
    assert budget.take(_alert(origin="node-y"), "live")


def test_catch_up_is_one_deep_bucket_of_its_own() -> None:
    clock = Clock()
    budget = _budget(clock, catchup_burst=100)
    assert sum(budget.take(_alert(seq=i), "live") for i in range(100)) == 60
    assert sum(budget.take(_alert(seq=i, source=("button", "team")[i % 2]), "catchup")
               for i in range(150)) == 100


def test_exempt_origins_are_never_refused_and_peeking_charges_nothing() -> None:
    clock = Clock()
    budget = _budget(clock, burst=1, exempt=lambda origin: origin == "central")
    assert all(budget.take(_alert(origin="central", seq=i), "live") for i in range(1000))
    assert all(budget.allows(_alert(origin=f"stranger-{i}"), "live") for i in range(1000))
    assert budget.take(_alert(), "live") and not budget.allows(_alert(seq=2), "live")
    assert budget.count_refused(_alert(seq=2), "mesh") == 1
    assert budget.count_refused(_alert(seq=3), "mesh") == 2
    assert budget.refused_counts() == {("node-x", "mesh"): 2}
