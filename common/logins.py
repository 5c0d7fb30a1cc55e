"""What a refused login is, and how a session token is kept, for the node's team
accounts and central's staff accounts alike (issue 16: one copy, no drift).

Each side subclasses these under its own root error (``node.team.errors``,
``central.staff.accounts``), so that ``except TeamError`` and ``except
StaffError`` still catch them, while a page or a test can say
``except common.logins.LoginFailed`` for both.

>>> issubclass(LockedOut, LoginFailed) and issubclass(Throttled, LoginFailed)
True
>>> token_hash("abc")[:16]
'ba7816bf8f01cfea'
"""

from __future__ import annotations

import hashlib
from typing import Protocol, TypeVar


class LoginFailed(Exception):
    """Name or password is wrong (deliberately does not say which)."""


class LockedOut(LoginFailed):
    """Too many wrong passwords for this name: no login until ``until`` (Unix
    milliseconds on the account store's clock, at central and on the node)."""

    def __init__(self, message: str, until: float) -> None:
        super().__init__(message)
        self.until = until


class Throttled(LoginFailed):
    """Too many failed logins from this client address: wait ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def token_hash(token: str) -> str:
    """What is stored of a session token: its SHA-256, hex (the token itself never is)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class _Member(Protocol):
    @property
    def must_change(self) -> bool: ...


M = TypeVar("M", bound=_Member)


def require_login(member: M | None, path: str, *, login_url: str, choose_url: str) -> M:
    """``member``, logged in and past their one-time password; else an HTTP 303 to
    ``login_url``, or to ``choose_url`` (where one chooses a password) while they
    must still choose their own (on any page but that one).

    >>> require_login(None, "/x", login_url="/in", choose_url="/pw")
    Traceback (most recent call last):
    ...
    fastapi.exceptions.HTTPException: 303: log in first
    """
    # Imported here: the account stores (and central's projector, which records
    # alarms through them) use this module without a web framework in memory.
    from fastapi import HTTPException

    if member is None:
        raise HTTPException(303, "log in first", headers={"Location": login_url})
    if member.must_change and path != choose_url:
        raise HTTPException(303, "choose your own password first",
                            headers={"Location": choose_url})
    return member


__all__ = ["LockedOut", "LoginFailed", "Throttled", "require_login", "token_hash"]
