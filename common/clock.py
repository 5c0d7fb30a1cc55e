"""The wall clock in the one unit Bart stores times in: Unix milliseconds (integers).

Events, central's staff accounts, the node's team accounts and the migration
tables all keep times as integer milliseconds since the epoch; code that
decides by time takes a ``clock_ms`` callable (this one by default) so that
tests can move time by hand.

>>> now_ms() > 1_704_067_200_000   # after 2024-01-01
True
"""

from __future__ import annotations

import time

__all__ = ["now_ms"]


def now_ms() -> int:
    """The wall clock now, in Unix milliseconds."""
    return time.time_ns() // 1_000_000
