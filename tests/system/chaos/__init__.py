"""The chaos run's parts (tests/system/test_chaos.py, docs/chaos.md).

- :mod:`.history` — what every client was acknowledged and which faults were
  active when, printed readably when the checker finds something;
- :mod:`.workload` — residents' reports and alerts through the portals and a
  panic button held on node-a, each answer recorded;
- :mod:`.nemesis` — seeded random faults: partitions, packet loss, SIGKILLs,
  a zero-filled ``mosquitto.db``, a full disk; and the healing of all of them;
- :mod:`.checker` — what must hold after healing.
"""

from .checker import Checker, Verdict
from .history import History, Op
from .nemesis import Nemesis
from .workload import Workload

__all__ = ["Checker", "History", "Nemesis", "Op", "Verdict", "Workload"]
