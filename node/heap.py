"""Hand freed heap memory back to the system (glibc ``malloc_trim``; elsewhere nothing).

Freed memory stays in the C allocator's free lists, counted in the process's
RSS, until something at the top of the heap is freed or it is trimmed: the node
trims after start-up, after a crowd of connections has gone (node/server.py)
and after its store handed a full page cache back (node/store.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable
from contextlib import suppress


@functools.cache
def _trim_function() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")  # runs ldconfig: once
    if not name:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # AttributeError: not glibc
        return None
    return trim


def malloc_trim() -> None:
    """Return the free memory of every malloc arena to the system (a few ms)."""
    trim = _trim_function()
    if trim is not None:
        with suppress(OSError):
            trim(0)
