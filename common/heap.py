"""The C heap of a long-running process: freed memory handed back to the system.

glibc keeps freed memory in its allocator's free lists, counted in the
process's RSS, until something at the top of the heap is freed or the heap is
trimmed. Node and central share these (issue 15, memory):

- :func:`settle_memory` once a server has started: start-up's garbage
  collected, what is left frozen out of the collector's reach, the heap trimmed;
- :func:`malloc_trim` after something that freed a lot (a crowd of connections
  gone, node/server.py; the store's page cache handed back, node/store.py);
- :func:`large_allocations_apart` before scrypt's 16 MiB (common/passwords.py).

Elsewhere than glibc each does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from contextlib import suppress
from typing import Any, Final

#: Allocations from this size on are mapped apart and go back to the system when
#: freed (glibc's ``M_MMAP_THRESHOLD``).
MMAP_THRESHOLD: Final = 1024 * 1024
_M_MMAP_THRESHOLD: Final = -3


@functools.cache
def _libc() -> Any | None:
    name = ctypes.util.find_library("c")  # runs ldconfig: once
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim  # noqa: B018 - AttributeError: not glibc
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def malloc_trim() -> None:
    """Return the free memory of every malloc arena to the system (a few ms)."""
    libc = _libc()
    if libc is not None:
        with suppress(OSError):
            libc.malloc_trim(0)


def settle_memory() -> None:
    """Once start-up is done: collect its garbage, freeze what is left, trim the heap.

    Start-up (imports, the app, the templates, the catalogues, migrations) leaves
    freed memory in the allocator's free lists: handed back, ~2 MB. What survives
    it lives as long as the process, so :func:`gc.freeze` moves it out of the
    collector's reach: a full collection then walks only what came after (~0.2 s
    of a node's loop for the start-up objects otherwise, which the automatic
    collections would repeat now and then).
    """
    gc.collect()
    gc.freeze()
    malloc_trim()


@functools.cache
def large_allocations_apart() -> None:
    """Serve every allocation of :data:`MMAP_THRESHOLD` or more by a mapping of its own.

    glibc does so from 128 KiB, but when such a mapping is freed it raises its
    threshold to the freed size: from the second scrypt hash on, its 16 MiB came
    from the heap and stayed there, in each thread that ever hashed. One staff or
    team login (a one-time password checked, a new one hashed) left a central
    worker 32 MB larger and a node 16–32 MB larger (tests/integration/
    test_login_memory.py). A fixed threshold ends the raising.
    """
    libc = _libc()
    if libc is not None:
        with suppress(OSError):
            libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


__all__ = ["MMAP_THRESHOLD", "large_allocations_apart", "malloc_trim", "settle_memory"]
