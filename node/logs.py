"""What the running node changes in other libraries' logging, in one place.

Importing a Bart module changes no logger of another library (a test imports
every module and checks); ``bart node run`` and ``bart demo`` call
:func:`tame_libraries` once logging is set up, after which:

- ``httpx`` logs at WARNING and above: it logs one INFO line per request, and
  the uplink makes one every few seconds (SD cards wear out);
- ``zeroconf`` logs a failed send (an interface that went down: a cut mesh
  link) as one line without its traceback, loudly the first time per kind and
  quietly after (STYLE rule 12).

>>> import logging
>>> tame_libraries(); tame_libraries()
>>> logging.getLogger("httpx").level == logging.WARNING
True
>>> sum(isinstance(f, ZeroconfTracebacks) for f in logging.getLogger("zeroconf").filters)
1
"""

from __future__ import annotations

import logging
from typing import Final

__all__ = ["ZeroconfTracebacks", "tame_libraries"]

#: Most kinds of zeroconf warning remembered (bounded memory).
MAX_KINDS: Final = 256


class ZeroconfTracebacks(logging.Filter):
    """python-zeroconf logs a failed send with its traceback, on every send. Keep
    one line, without the traceback, loudly the first time per kind and quietly
    after (repeats only when the root logger is at DEBUG)."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        if record.levelno >= logging.WARNING:
            key = str(record.msg)[:60]
            if key in self._seen:  # repeats: dropped unless debugging (DEBUG logs all)
                return logging.getLogger().isEnabledFor(logging.DEBUG)
            if len(self._seen) < MAX_KINDS:
                self._seen.add(key)
        return True


def tame_libraries() -> None:
    """Quiet ``httpx`` and ``zeroconf`` as the node wants them (idempotent)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)
    zeroconf = logging.getLogger("zeroconf")
    if not any(isinstance(f, ZeroconfTracebacks) for f in zeroconf.filters):
        zeroconf.addFilter(ZeroconfTracebacks())
