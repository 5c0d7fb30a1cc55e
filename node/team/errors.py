"""Exceptions of the team package: one root, specific subclasses.

:class:`TeamError` is a :class:`node.errors.NodeError`, so the CLI prints any
of them as a one-line message. Routes translate them into page messages.
"""

from __future__ import annotations

from common import logins

from ..errors import NodeError


class TeamError(NodeError):
    """Root of every error raised by ``node.team``."""


class InvalidName(TeamError):
    """A team member's name is empty, too long or has characters we do not allow."""


class NameTaken(TeamError):
    """A team account with this name (ignoring case) exists already."""


class UnknownMember(TeamError):
    """There is no team account with this name."""


class WeakPassword(TeamError):
    """A new password is too short, too long, or the same as the old one."""


class LoginFailed(TeamError, logins.LoginFailed):
    """Name or password is wrong (deliberately does not say which)."""


class LockedOut(LoginFailed, logins.LockedOut):
    """Too many wrong passwords for this name: no login until ``until`` (Unix ms)."""


class Throttled(LoginFailed, logins.Throttled):
    """Too many failed logins from this client address: wait ``retry_after`` seconds."""
