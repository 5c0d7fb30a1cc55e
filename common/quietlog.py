"""Log a reason loudly once, then quietly: the one helper for repeated trouble.

A peer that keeps sending a bad document, an advert that keeps being ignored,
a store that keeps failing: the first occurrence of each *key* is logged at
WARNING (someone should look), every repeat at DEBUG (the log of a Pi's SD
card must not fill with the same line). Memory is bounded whatever the
network sends (STYLE rule 12): at most ``max_keys`` keys are remembered; past
that, new keys are logged at DEBUG too, after one WARNING that says so — a
flood of distinct keys must not turn into a flood of warnings.

>>> import logging
>>> quiet = QuietLog(logging.getLogger("doctest"), max_keys=2)
>>> [quiet.say(k, "trouble %s", k) for k in ("a", "a", "b", "c")]
[True, False, True, False]
>>> quiet.repeats("a"), quiet.repeats("c")
(1, 0)
"""

from __future__ import annotations

import logging
from typing import Final

__all__ = ["QuietLog"]

MAX_KEYS: Final = 256


class QuietLog:
    """First occurrence of a key at WARNING, repeats at DEBUG; bounded memory."""

    def __init__(self, logger: logging.Logger, *, max_keys: int = MAX_KEYS) -> None:
        self._log = logger
        self._max = max_keys
        self._counts: dict[str, int] = {}
        self._full_warned = False

    def say(self, key: str, message: str, *args: object, exc_info: bool = False) -> bool:
        """Log ``message % args``; True when it went out at WARNING."""
        n = self._counts.get(key)
        if n is not None:
            self._counts[key] = n + 1
            self._log.debug(message, *args, exc_info=exc_info)
            return False
        if len(self._counts) >= self._max:
            if not self._full_warned:
                self._full_warned = True
                self._log.warning("more than %d distinct problems; further new ones are "
                                  "logged at debug level", self._max)
            self._log.debug(message, *args, exc_info=exc_info)
            return False
        self._counts[key] = 0
        self._log.warning(message, *args, exc_info=exc_info)
        return True

    def repeats(self, key: str) -> int:
        """How often ``key`` came again after its first (logged) occurrence."""
        return self._counts.get(key, 0)
