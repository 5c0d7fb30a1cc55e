"""python-zeroconf from its Python sources, not its compiled (Cython) modules.

python-zeroconf ships each hot module twice: compiled with Cython, and as the
plain Python it is compiled from (what it runs where Cython is not available).
Loaded compiled, mDNS discovery cost a node ~4 MiB of resident memory (issue
15): ~2.6 MiB of pages of the sixteen ``.so`` files and their Python objects;
from the sources, ~1.2 MiB (measured in one process after the node's imports,
``/proc/self/status`` after ``gc.collect()``). The price is CPU: parsing a
four-record answer takes ~13 µs instead of ~2.6 µs on the bench machine; a
node sees a few mDNS packets a second (its peers every two minutes, phones on
its hotspot now and then), so well under 1 % of a Pi's core even on a busy
network.

Only ``zeroconf``'s submodules are affected, and only when zeroconf was not
imported yet: a mix of compiled and pure modules would not load (the compiled
ones import each other's C types).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import SOURCE_SUFFIXES, FileFinder, ModuleSpec, SourceFileLoader
from types import ModuleType

PACKAGE = "zeroconf"


class PurePython(MetaPathFinder):
    """Finds ``zeroconf.*`` modules among their sources (``.py``, with the ``.pyc``
    pip wrote beside them) and nowhere else: never a compiled extension."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if not fullname.startswith(PACKAGE + ".") or not path:
            return None
        for entry in path:
            spec = FileFinder(entry, (SourceFileLoader, SOURCE_SUFFIXES)).find_spec(
                fullname, target)
            if spec is not None:
                return spec
        return None


def use_pure_python() -> bool:
    """Load zeroconf from its sources from now on; False when it is loaded already."""
    if PACKAGE in sys.modules:
        return False
    if not any(isinstance(finder, PurePython) for finder in sys.meta_path):
        sys.meta_path.insert(0, PurePython())
    return True
