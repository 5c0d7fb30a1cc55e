"""Team passwords, one-time passwords and name rules (pure; no I/O).

The implementation is :mod:`common.passwords`, shared with central's staff
accounts so that the two cannot drift; this module adds the team's rules (a
password of at least :data:`MIN_PASSWORD` characters; names of letters,
digits, spaces and hyphens) and raises the team's exceptions.

>>> encoded = hash_password("correct horse battery", n=2**10)
>>> encoded.startswith("scrypt$1024$8$1$")
True
>>> verify_password("correct horse battery", encoded), verify_password("wrong", encoded)
(True, False)
>>> normalise_name("  Fatma   Yılmaz ")
'Fatma Yılmaz'
"""

from __future__ import annotations

from typing import Final

from common import passwords as _common
from common.passwords import hash_password, verify_password  # for callers and doctests

from .errors import InvalidName, WeakPassword

MIN_PASSWORD: Final = 10


def normalise_name(name: str) -> str:
    """A valid team member's name (NFC, single spaces), or :class:`InvalidName`.

    1–40 characters: letters (any script), digits, spaces and hyphens.
    """
    return _common.normalise_name(name, punctuation=" -", error=InvalidName)


def name_key(name: str) -> str:
    """The case-insensitive key a name is stored and found under."""
    return normalise_name(name).casefold()


def check_new_password(new: str, old: str = "") -> None:
    """Raise :class:`WeakPassword` unless ``new`` is acceptable."""
    _common.check_new_password(new, old, min_length=MIN_PASSWORD, error=WeakPassword)


__all__ = ["MIN_PASSWORD", "check_new_password", "hash_password", "name_key", "normalise_name",
           "verify_password"]
