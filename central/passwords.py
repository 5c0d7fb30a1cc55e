"""Staff passwords, one-time passwords and name rules (pure; no I/O).

The implementation is :mod:`common.passwords`, shared with the node's team
accounts so that the two cannot drift; this module adds the staff rules (a
password of at least :data:`MIN_PASSWORD` characters, longer than the team's:
staff accounts open police and municipality data; names may hold dots, and
their case-folded key must fit too) and raises central's exceptions.

>>> encoded = hash_password("correct horse battery", n=2**10)
>>> verify_password("correct horse battery", encoded), verify_password("wrong", encoded)
(True, False)
>>> normalise_name("  Anouk   de Vries ")
'Anouk de Vries'
"""

from __future__ import annotations

from typing import Final

from common import passwords as _common
from common.passwords import hash_password, verify_password  # for callers and doctests

from .errors import CentralError

#: Staff accounts open police and municipality data: longer than the team's minimum.
MIN_PASSWORD: Final = 12


class InvalidName(CentralError, _common.InvalidName):
    """A staff name is empty, too long or has characters we do not allow."""


class WeakPassword(CentralError, _common.WeakPassword):
    """A new password is too short, too long, or the same as the old one."""


def normalise_name(name: str) -> str:
    """A valid staff name (NFC, single spaces), or :class:`InvalidName`.

    1–40 characters: letters (any script), digits, spaces, hyphens and dots.
    """
    return _common.normalise_name(name, punctuation=" -.", key_must_fit=True,
                                  error=InvalidName)


def name_key(name: str) -> str:
    """The case-insensitive key a name is stored and found under."""
    return normalise_name(name).casefold()


def check_new_password(new: str, old: str = "") -> None:
    """Raise :class:`WeakPassword` unless ``new`` is acceptable."""
    _common.check_new_password(new, old, min_length=MIN_PASSWORD, error=WeakPassword)


__all__ = ["MIN_PASSWORD", "InvalidName", "WeakPassword", "check_new_password",
           "hash_password", "name_key", "normalise_name", "verify_password"]
