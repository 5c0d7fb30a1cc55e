"""The prevention team's side of a node: accounts, sessions, audit log, team pages.

Accounts live in ``<data_dir>/team.db`` (:class:`TeamAccounts`, also used by
the ``bart node team`` commands); the pages are the router in
:mod:`node.team.routes`, imported separately so that the CLI needs no
FastAPI. See docs/team.md.
"""

from __future__ import annotations

from .accounts import AuditEntry, Member, TeamAccounts
from .errors import (
    InvalidName,
    LockedOut,
    LoginFailed,
    NameTaken,
    TeamError,
    Throttled,
    UnknownMember,
    WeakPassword,
)

TEAM_DB = "team.db"

__all__ = [
    "TEAM_DB",
    "AuditEntry",
    "InvalidName",
    "LockedOut",
    "LoginFailed",
    "Member",
    "NameTaken",
    "TeamAccounts",
    "TeamError",
    "Throttled",
    "UnknownMember",
    "WeakPassword",
]
